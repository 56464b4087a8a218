package virtio9p

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// rlerrno returns the errno of an Rlerror reply with tag, failing the test
// on anything else.
func rlerrno(t *testing.T, b []byte, tag uint16) uint32 {
	t.Helper()
	typ, got, body := reply(t, b)
	if typ != tRlerror || got != tag || len(body) != 4 {
		t.Fatalf("reply type %d tag %d body %d bytes; want Rlerror tag %d", typ, got, len(body), tag)
	}
	return binary.LittleEndian.Uint32(body)
}

// An Rversion "unknown" (msize 0) leaves the server's message size as it
// was: a Tversion larger than that is refused by the transport, not fed to
// the server (which would end the connection). Found by Fuzz9PTransport.
func TestVersionUnknownKeepsServerLimit(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{MaxMessageSize: 8192})
	h.version(4096)
	typ, _, body := reply(t, h.do(chain{msg: msg(tTversion, noTag, uint32(8192), "bogus"), wlen: 64}))
	if typ != tRversion || binary.LittleEndian.Uint32(body) != 0 {
		t.Fatalf("bogus version: type %d msize %d, want Rversion 0", typ, binary.LittleEndian.Uint32(body))
	}
	big := msg(tTversion, noTag, uint32(8192), "9P2000.L", make([]byte, 5000))
	if e := rlerrno(t, h.do(chain{msg: big, wlen: 64}), noTag); e != errEMSGSIZE {
		t.Errorf("5 KiB Tversion after msize 4096: errno %d, want EMSGSIZE", e)
	}
	if e := rlerrno(t, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64}), 1); e != errEPROTO {
		t.Errorf("attach after a failed version: errno %d, want EPROTO", e)
	}
	h.version(8192)
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64})); typ != tRattach {
		t.Fatalf("attach: type %d", typ)
	}
}

// A message that follows a Tversion still in flight is held to that
// Tversion's msize too: the server may have applied it already.
func TestVersionInFlightLimitsFollowers(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{MaxMessageSize: 8192, MaxInFlight: 4})
	h.version(8192)
	h.drv.ResetHeap()
	w1 := h.submit(chain{msg: msg(tTversion, noTag, uint32(4096), "9P2000.L"), wlen: 64})
	w2 := h.submit(chain{msg: msg(tTversion, 5, uint32(8192), "9P2000.L", make([]byte, 6000)), wlen: 64})
	h.dev.Notify(0)
	h.wait()
	h.wait()
	b1, _ := h.mem.Slice(w1, 17)
	if b1[hdrType] != tRversion || binary.LittleEndian.Uint32(b1[hdrLen:]) != 4096 {
		t.Fatalf("first Tversion: type %d msize %d", b1[hdrType], binary.LittleEndian.Uint32(b1[hdrLen:]))
	}
	b2, _ := h.mem.Slice(w2, rlerrorLen)
	if e := rlerrno(t, b2, 5); e != errEMSGSIZE {
		t.Errorf("6 KiB message behind a Tversion of msize 4096: errno %d, want EMSGSIZE", e)
	}
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64})); typ != tRattach {
		t.Fatalf("attach: type %d", typ)
	}
}

// After a reply the transport drops (the server could not decode the
// request), the connection still becomes quiet, so Reset need not wait
// out settle's deadline (and risk the library's shutdown race). Found by
// Fuzz9PTransport (its iterations wait for quiet before Reset).
func TestQuietAfterDroppedReply(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{})
	h.version(8192)
	h.expectFail(chain{msg: msg(tTwalk, 1, uint32(1), uint32(2), uint16(3)), wlen: 64})
	c := h.dev.active.Load()
	deadline := time.Now().Add(5 * time.Second)
	for !c.quiet() {
		if time.Now().After(deadline) {
			t.Fatal("connection not quiet 5s after the device failed")
		}
		time.Sleep(time.Millisecond)
	}
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
}

// A connection that never took a chain stops without settle's waits: the
// server received nothing, so no receiving goroutine can be starting (a
// warm exec's machine closes four such unmounted share slots). Once a
// message went through, stop settles as before.
func TestSettleOnlyAfterTraffic(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{})
	c := h.dev.active.Load()
	if c.settle() {
		t.Error("settle waited on a connection that never took a chain")
	}
	h.version(8192)
	if !c.settle() {
		t.Error("settle did not wait after a Tversion went through the server")
	}
}
