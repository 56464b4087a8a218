package virtio9p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// shareDir makes a share with a file, a directory and a link to /etc.
func shareDir(t testing.TB) string {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "share")
	if err := os.MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "b"), []byte("bee"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret", filepath.Join(dir, "up")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNewChecksConfig(t *testing.T) {
	fs, err := hostfs.New(t.TempDir(), hostfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	for _, cfg := range []Config{
		{Tag: "", FS: fs},
		{Tag: strings.Repeat("x", MaxTagLen+1), FS: fs},
		{Tag: "a b", FS: fs},
		{Tag: "t"},
		{Tag: "t", FS: fs, QueueSize: 100},
		{Tag: "t", FS: fs, MaxMessageSize: 100},
		{Tag: "t", FS: fs, MaxInFlight: MaxInFlight + 1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	d, err := New(Config{Tag: "hostshare", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if d.Type() != 9 || d.Features()&FMountTag == 0 || d.ConfigSize() != 2+9 {
		t.Errorf("type %d features %#x config %d", d.Type(), d.Features(), d.ConfigSize())
	}
	b := make([]byte, 16)
	d.ReadConfig(0, b)
	if binary.LittleEndian.Uint16(b) != 9 || string(b[2:11]) != "hostshare" || !bytes.Equal(b[11:], make([]byte, 5)) {
		t.Errorf("config %q", b)
	}
}

// TestClientRoundTrips drives the device with the p9 library's client,
// every message split over 100-byte descriptors.
func TestClientRoundTrips(t *testing.T) {
	dir := shareDir(t)
	h := newHarness(t, dir, hostfs.Options{}, Config{})
	c := h.client(1000, 64<<10, 64<<10)
	root, err := c.Attach("")
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	_, b, err := root.Walk([]string{"d", "b"})
	if err != nil {
		t.Fatalf("walk d/b: %v", err)
	}
	if _, _, err := b.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if n, err := b.ReadAt(buf, 0); err != nil || string(buf[:n]) != "bee" {
		t.Fatalf("read = %q, %v", buf[:n], err)
	}
	_, _, attr, err := b.GetAttr(p9.AttrMaskAll)
	if err != nil || attr.Size != 3 || !attr.Mode.IsRegular() {
		t.Fatalf("getattr: %+v %v", attr, err)
	}
	_, d, err := root.Walk([]string{"d"})
	if err != nil {
		t.Fatal(err)
	}
	nf, _, _, err := d.Create("new", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	data := bytes.Repeat([]byte("0123456789"), 5000) // several messages' worth
	if n, err := nf.WriteAt(data, 0); err != nil || n != len(data) {
		t.Fatalf("write: %d %v", n, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "d", "new")); !bytes.Equal(got, data) {
		t.Fatalf("host file has %d bytes, want %d", len(got), len(data))
	}
	_, dd, err := root.Walk([]string{"d"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dd.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	ents, err := dd.Readdir(0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{".", "..", "b", "new"}) {
		t.Errorf("readdir: %q", names)
	}
	if _, err := root.Mkdir("sub", 0o755, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	_, sub, _ := root.Walk([]string{"sub"})
	_, d, _ = root.Walk([]string{"d"}) // Tlcreate made the old fid the new file
	if err := d.RenameAt("new", sub, "moved"); err != nil {
		t.Fatalf("renameat: %v", err)
	}
	if err := sub.UnlinkAt("moved", 0); err != nil {
		t.Fatalf("unlinkat: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "moved")); !os.IsNotExist(err) {
		t.Errorf("moved still there: %v", err)
	}
	// Escapes: "..", links out.
	for _, p := range [][]string{{".."}, {"d", ".."}, {"etc", "passwd"}} {
		if _, _, err := root.Walk(p); err == nil {
			t.Errorf("walk %q succeeded", p)
		}
	}
	_, up, err := root.Walk([]string{"up"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := up.Open(p9.ReadOnly); err == nil { // the server refuses links (EINVAL) before hostfs (EPERM)
		t.Errorf("open link up succeeded")
	}
	if s, err := up.Readlink(); err != nil || s != "../secret" {
		t.Errorf("readlink up = %q %v", s, err)
	}
	if n := h.dev.Counters(); n.Requests == 0 || n.ReplyBytes == 0 || n.GuestErrors != 0 || n.ProtocolErrors != 0 {
		t.Errorf("counters %+v", n)
	}
}

func TestClientReadOnly(t *testing.T) {
	dir := shareDir(t)
	h := newHarness(t, dir, hostfs.Options{ReadOnly: true}, Config{})
	c := h.client(0, 64<<10, 64<<10)
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := root.Create("x", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID); !errors.Is(err, linux.EROFS) {
		t.Errorf("create: %v, want EROFS", err)
	}
	_, b, err := root.Walk([]string{"d", "b"})
	if err != nil {
		t.Fatalf("walk d/b: %v", err)
	}
	if _, _, err := b.Open(p9.WriteOnly); !errors.Is(err, linux.EROFS) {
		t.Errorf("open for writing: %v, want EROFS", err)
	}
	if err := root.UnlinkAt("d", 0x200); !errors.Is(err, linux.EROFS) {
		t.Errorf("rmdir: %v, want EROFS", err)
	}
}

// TestTransportAnswers: requests the transport answers itself, and the
// rewriting of tags, msize and counts.
func TestTransportAnswers(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{MaxMessageSize: 8192})
	errno := func(b []byte, tag uint16) uint32 {
		t.Helper()
		typ, gotTag, body := reply(t, b)
		if typ != tRlerror || gotTag != tag || len(body) != 4 {
			t.Fatalf("reply type %d tag %d body %d bytes; want Rlerror tag %d", typ, gotTag, len(body), tag)
		}
		return binary.LittleEndian.Uint32(body)
	}
	// Before Tversion.
	if e := errno(h.do(chain{msg: msg(tTattach, 3, uint32(0), uint32(0xffffffff), "", "", uint32(0)), wlen: 64}), 3); e != errEPROTO {
		t.Errorf("attach before version: errno %d, want EPROTO", e)
	}
	// Tversion asking for more than the device allows gets its cap.
	typ, tag, body := reply(t, h.do(chain{msg: msg(tTversion, noTag, uint32(1<<20), "9P2000.L"), wlen: 64}))
	if typ != tRversion || tag != noTag || binary.LittleEndian.Uint32(body) != 8192 {
		t.Fatalf("Rversion type %d tag %#x msize %d", typ, tag, binary.LittleEndian.Uint32(body))
	}
	// A size field past the readable bytes.
	m := msg(tTclunk, 9, uint32(1))
	binary.LittleEndian.PutUint32(m, 200)
	if e := errno(h.do(chain{msg: m, wlen: 64}), 9); e != errEBADMSG {
		t.Errorf("size past chain: errno %d, want EBADMSG", e)
	}
	// A message over msize.
	big := msg(tTwalk, 10, uint32(1), uint32(2), uint16(1), strings.Repeat("a", 9000))
	if e := errno(h.do(chain{msg: big, wlen: 64, split: 4096}), 10); e != errEMSGSIZE {
		t.Errorf("message over msize: errno %d, want EMSGSIZE", e)
	}
	// The guest's tag comes back, whatever it is.
	typ, tag, _ = reply(t, h.do(chain{msg: msg(tTattach, 0x1234, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64}))
	if typ != tRattach || tag != 0x1234 {
		t.Fatalf("attach: type %d tag %#x", typ, tag)
	}
	typ, _, _ = reply(t, h.do(chain{msg: msg(tTwalk, 1, uint32(1), uint32(2), uint16(2), "d", "b"), wlen: 64}))
	if typ != tRwalk {
		t.Fatalf("walk: type %d", typ)
	}
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTlopen, 1, uint32(2), uint32(0)), wlen: 64})); typ != tRlopen {
		t.Fatalf("lopen: type %d", typ)
	}
	// A read asking for 4 GiB gets at most msize less the header; the data
	// arrives in small writable segments.
	typ, _, body = reply(t, h.do(chain{msg: msg(tTread, 1, uint32(2), uint64(0), uint32(0xffffffff)), wlen: 70, wsplit: 5}))
	if typ != tRread || binary.LittleEndian.Uint32(body) != 3 || string(body[4:]) != "bee" {
		t.Fatalf("read: type %d body %q", typ, body)
	}
	// Tflush of a request not in flight answers at once.
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTflush, 5, uint16(77)), wlen: 64})); typ != tRflush {
		t.Fatalf("flush: type %d", typ)
	}
	if n := h.dev.Counters(); n.GuestErrors != 3 || n.ProtocolErrors != 0 {
		t.Errorf("counters %+v", n)
	}
}

// TestMalformedChainsFail: chains the transport cannot answer fail the
// device with a guest error, never a panic.
func TestMalformedChainsFail(t *testing.T) {
	versioned := func(t *testing.T) *harness {
		h := newHarness(t, shareDir(t), hostfs.Options{}, Config{})
		h.version(8192)
		return h
	}
	cases := []struct {
		name string
		c    chain
	}{
		{"short header", chain{msg: []byte{1, 2, 3}, wlen: 64}},
		{"no writable part", chain{msg: msg(tTclunk, 1, uint32(1))}},
		{"writable part too small for Rlerror", chain{msg: msg(tTclunk, 1, uint32(1)), wlen: 10}},
		{"reply larger than writable part", chain{msg: msg(tTversion, 1, uint32(8192), "9P2000.L"), wlen: 11}},
		{"undecodable walk", chain{msg: msg(tTwalk, 1, uint32(1), uint32(2), uint16(3)), wlen: 64}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := versioned(t)
			err := h.expectFail(tc.c)
			if !errors.Is(err, queue.ErrGuest) || !strings.Contains(err.Error(), "guest gave") {
				t.Fatalf("failure %v: want a guest error", err)
			}
			if n := h.dev.Counters(); n.ProtocolErrors == 0 {
				t.Errorf("counters %+v", n)
			}
		})
	}
}

// TestConcurrentRequests: more requests than MaxInFlight, all with the same
// guest tag, are all answered; Reset then closes every file.
func TestConcurrentRequests(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{MaxInFlight: 3})
	h.version(8192)
	reply(t, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64}))
	h.drv.ResetHeap()
	const n = 40
	var ws []uint64
	for i := 0; i < n; i++ {
		ws = append(ws, h.submit(chain{msg: msg(tTwalk, 7, uint32(1), uint32(100+i), uint16(1), "d"), wlen: 256}))
	}
	h.dev.Notify(0)
	for i := 0; i < n; i++ {
		id, ln := h.wait()
		_ = id
		if ln == 0 {
			t.Fatal("empty reply")
		}
	}
	for _, w := range ws {
		b, _ := h.mem.Slice(w, 9)
		if b[hdrType] != tRwalk || binary.LittleEndian.Uint16(b[hdrTag:]) != 7 {
			t.Fatalf("reply type %d tag %d", b[hdrType], binary.LittleEndian.Uint16(b[hdrTag:]))
		}
	}
	if h.fs.Files() != n+1 {
		t.Errorf("%d files held, want %d", h.fs.Files(), n+1)
	}
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if h.fs.Files() != 0 {
		t.Errorf("%d files held after Reset", h.fs.Files())
	}
	h.activate()
	h.version(8192)
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64})); typ != tRattach {
		t.Fatalf("attach after reset: type %d", typ)
	}
}

// TestXattrsUnsupported: a tree without extended attributes answers their
// requests with EOPNOTSUPP, as a file system without them does, not the
// p9 server's EINVAL (overlayfs fails a lookup on EINVAL: exec from an
// overlay with a 9p lower layer failed). They are not guest errors.
func TestXattrsUnsupported(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{})
	h.version(8192)
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64})); typ != tRattach {
		t.Fatalf("attach: type %d", typ)
	}
	for _, c := range []struct {
		name string
		m    []byte
	}{
		{"get trusted.overlay.metacopy", msg(tTxattrwalk, 2, uint32(1), uint32(2), "trusted.overlay.metacopy")},
		{"get security.capability", msg(tTxattrwalk, 3, uint32(1), uint32(3), "security.capability")},
		{"list", msg(tTxattrwalk, 4, uint32(1), uint32(4), "")},
		{"set user.x", msg(tTxattrcreate, 5, uint32(1), "user.x", uint64(1), uint32(0))},
	} {
		typ, _, body := reply(t, h.do(chain{msg: c.m, wlen: 64}))
		if typ != tRlerror || len(body) != 4 || binary.LittleEndian.Uint32(body) != errEOPNOTSUPP {
			t.Errorf("%s: reply type %d body %x, want Rlerror EOPNOTSUPP (95)", c.name, typ, body)
		}
	}
	// The fid still works: the refusals took nothing from it.
	if typ, _, _ := reply(t, h.do(chain{msg: msg(tTwalk, 6, uint32(1), uint32(7), uint16(1), "d"), wlen: 64})); typ != tRwalk {
		t.Errorf("walk after the xattr requests: type %d", typ)
	}
	if n := h.dev.Counters(); n.GuestErrors != 0 {
		t.Errorf("counters %+v: xattr requests are no guest errors", n)
	}
}
