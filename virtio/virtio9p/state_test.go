package virtio9p

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// saveState pauses the device, saves its state and resumes it.
func (h *harness) saveState() ([]byte, error) {
	h.t.Helper()
	if err := h.dev.Pause(); err != nil {
		h.t.Fatal(err)
	}
	defer func() {
		if err := h.dev.Resume(); err != nil {
			h.t.Fatal(err)
		}
	}()
	return h.dev.SaveState()
}

// TestSaveStateRefusesOpenSession: a running device refuses; a guest that
// versioned but did not attach, or that holds fids, makes SaveState fail
// with ErrSessionOpen naming the share; once it clunked every fid (an
// unmount) the state is saved.
func TestSaveStateRefusesOpenSession(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{Tag: "corral-root"})
	if _, err := h.dev.SaveState(); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("SaveState of a running device = %v", err)
	}
	c := h.client(0, 8192, 8192) // Tversion
	_, err := h.saveState()
	if !errors.Is(err, ErrSessionOpen) || !strings.Contains(err.Error(), `"corral-root"`) || !strings.Contains(err.Error(), "not attached") {
		t.Fatalf("SaveState after Tversion = %v", err)
	}
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	_, d, err := root.Walk([]string{"d"})
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := d.Walk([]string{"b"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.saveState()
	want := `virtio-9p: share "corral-root": 9P session open: the guest has 3 open fids; unmount it before a snapshot (9P file handles cannot be carried into a snapshot)`
	if !errors.Is(err, ErrSessionOpen) || err.Error() != want {
		t.Fatalf("SaveState with fids attached = %v\nwant %s", err, want)
	}
	if err := h.dev.RestoreState([]byte("whatever")); err == nil {
		t.Fatal("RestoreState of garbage accepted")
	}
	for _, f := range []interface{ Close() error }{b, d} {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err = h.saveState(); err == nil || !strings.Contains(err.Error(), "1 open fid;") {
		t.Fatalf("SaveState with the root attached = %v", err)
	}
	if err := root.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.saveState(); err != nil {
		t.Fatalf("SaveState after every fid was clunked: %v", err)
	}
	if n := h.fs.Files(); n != 0 {
		t.Fatalf("the transport counts no fid, the tree has %d files open", n)
	}
	// A failed walk installs no fid; a Tremove drops its fid even when
	// it fails (as the server does).
	h.drv.ResetHeap()
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTattach, 1, uint32(7), uint32(0xffffffff), "", "", uint32(0)), wlen: 64})); typ != tRattach {
		t.Fatalf("Tattach answered with type %d", typ)
	}
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTwalk, 1, uint32(7), uint32(8), uint16(1), "nonexistent"), wlen: 64})); typ != tRlerror {
		t.Fatalf("Twalk to nothing answered with type %d", typ)
	}
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTremove, 1, uint32(7)), wlen: 64})); typ != tRlerror {
		t.Fatalf("Tremove of the root answered with type %d", typ)
	}
	if _, err := h.saveState(); err != nil {
		t.Fatalf("SaveState after a failed Tremove of the last fid: %v", err)
	}
}

// TestSaveRestoreUnmounted: a share the guest mounted and unmounted
// saves; a Tversion the guest queued while paused is in the saved queue;
// the state restores into a fresh device over a copy of guest memory
// (what virtiopci.Transport.RestoreState does: queue.Restore, Activate
// paused, RestoreState, Resume), which serves nothing before Resume, then
// answers that Tversion and a new mount's Tattach, Twalk, Tlopen and
// Tread. State of another share, or with another read-only flag, is
// refused naming the field.
func TestSaveRestoreUnmounted(t *testing.T) {
	dir := shareDir(t)
	opts := hostfs.Options{ReadOnly: true}
	h := newHarness(t, dir, opts, Config{Tag: "snap"})
	h.mountFile()
	h.readBee()
	for _, fid := range []uint32{2, 1} {
		if typ, _, _ := reply(t, h.do(chain{msg: msg(tTclunk, 1, fid), wlen: 64})); typ != tTclunk+1 {
			t.Fatalf("Tclunk answered with type %d", typ)
		}
	}
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	h.drv.ResetHeap()
	_, vw := h.post(msg(tTversion, 9, uint32(8192), "9P2000.L"), 64)
	h.dev.Notify(0)
	state, err := h.dev.SaveState()
	if err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	qs := h.q.State()
	if qs.NextAvail != qs.NextUsed {
		t.Fatalf("paused with %d chains in flight", qs.NextAvail-qs.NextUsed)
	}
	mem2 := copyMem(t, h.mem)
	if err := h.dev.Close(); err != nil {
		t.Fatal(err)
	}

	open := func(tag string, opts hostfs.Options) *Device {
		fs, err := hostfs.New(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(Config{Tag: tag, FS: fs})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	for _, c := range []struct {
		tag  string
		opts hostfs.Options
		want string
	}{
		{"other", opts, `tag "snap" saved`},
		{"snap", hostfs.Options{}, "read-only true saved"},
	} {
		err := open(c.tag, c.opts).RestoreState(state)
		if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RestoreState into share %q (%+v) = %v; want %q", c.tag, c.opts, err, c.want)
		}
	}

	d2 := open("snap", opts)
	feat := h.dev.Features()
	q2, err := queue.Restore(mem2, qs.Layout, virtio.QueueOptions(feat, d2.MaxQueueSize()), qs)
	if err != nil {
		t.Fatal(err)
	}
	h.dev, h.mem, h.drv.Mem, h.q = d2, mem2, mem2, q2
	err = d2.Activate(context.Background(), virtio.Activation{
		Mem: mem2, Features: feat, Queues: []*queue.Queue{q2}, Interrupt: h.irq, Paused: true,
		Fail: func(err error) { t.Errorf("restored device failed: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.RestoreState(state); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	d2.Notify(0)
	h.noneUsed(50*time.Millisecond, "restored, before Resume")
	if err := d2.Resume(); err != nil {
		t.Fatal(err)
	}
	_, n := h.wait()
	if typ, tag, _ := reply(t, h.replyAt(vw, n)); typ != tRversion || tag != 9 {
		t.Fatalf("the Tversion queued before the snapshot answered with type %d tag %d", typ, tag)
	}
	h.mountFile()
	h.readBee()
	again, err := h.saveState()
	if err == nil || !errors.Is(err, ErrSessionOpen) {
		t.Fatalf("SaveState of the restored device with the share mounted = %v, %q", err, again)
	}
}

// copyMem returns a copy of mem (a restored guest's memory).
func copyMem(t *testing.T, mem *guestmem.Memory) *guestmem.Memory {
	t.Helper()
	m2, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Close() })
	b, err := mem.Slice(0, testMem)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return m2
}

// stateSeeds are FuzzRestoreState's seeds: states of shares "share"
// (writable and read-only) and broken ones.
func stateSeeds() [][]byte {
	good := []byte{StateVersion, 0, 0, 5, 's', 'h', 'a', 'r', 'e'}
	ro := bytes.Clone(good)
	ro[stFlags] = stFlagReadOnly
	badVersion := bytes.Clone(good)
	badVersion[stVersion] = 2
	badFlags := bytes.Clone(good)
	badFlags[stFlags] = 0x80
	return [][]byte{
		good, ro, badVersion, badFlags,
		good[:stTag],                           // tag length 5, no bytes
		{StateVersion, 0, 0, 3, 'a', ' ', 'b'}, // a tag sharetag refuses
		{StateVersion, 0, 0, 0},                // empty tag
		append(bytes.Clone(good), 'x'),         // a byte past the tag
	}
}

func TestStateSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzRestoreState", stateSeeds())
}

// FuzzRestoreState: arbitrary bytes never panic; a device with tag
// "share" takes only its own SaveState encoding (writable), and any state
// decodeState accepts re-encodes byte for byte.
func FuzzRestoreState(f *testing.F) {
	fs, err := hostfs.New(f.TempDir(), hostfs.Options{})
	if err != nil {
		f.Fatal(err)
	}
	d, err := New(Config{Tag: "share", FS: fs})
	if err != nil {
		f.Fatal(err)
	}
	defer d.Close()
	own, err := d.SaveState()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := d.RestoreState(data)
		if err == nil && !bytes.Equal(data, own) {
			t.Fatalf("took %q; the device saves %q", data, own)
		}
		if err != nil && !errors.Is(err, ErrState) {
			t.Fatalf("error %v does not match ErrState", err)
		}
		tag, ro, err := decodeState(data)
		if err != nil {
			return
		}
		re := []byte{StateVersion, 0, 0, byte(len(tag))}
		if ro {
			re[stFlags] = stFlagReadOnly
		}
		if re = append(re, tag...); !bytes.Equal(re, data) {
			t.Fatalf("decoded %q as tag %q read-only %v, which encodes as %q", data, tag, ro, re)
		}
	})
}
