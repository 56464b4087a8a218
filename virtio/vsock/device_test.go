package vsock

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

func TestNewChecksConfig(t *testing.T) {
	for _, c := range []Config{{CID: 1}, {CID: 2}, {CID: 0xffffffff}, {CID: 1 << 32}, {BufSize: 100}, {BufSize: MaxBufSize + 1}, {QueueSize: 3}, {MaxConns: -1}} {
		if d, err := New(c); err == nil {
			d.Close()
			t.Errorf("New(%+v) accepted", c)
		}
	}
	d, err := New(Config{CID: 42})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Type() != virtio.TypeVsock || d.NumQueues() != 3 || d.ConfigSize() != 8 {
		t.Errorf("type %d queues %d config %d", d.Type(), d.NumQueues(), d.ConfigSize())
	}
	var cfg [12]byte
	d.ReadConfig(0, cfg[:])
	if got := binary.LittleEndian.Uint64(cfg[:]); got != 42 || cfg[8] != 0 {
		t.Errorf("config space % x, want guest_cid 42", cfg)
	}
	d.ReadConfig(4, cfg[:4])
	if binary.LittleEndian.Uint32(cfg[:]) != 0 {
		t.Errorf("upper half of guest_cid = % x", cfg[:4])
	}
	if f := d.Features(); f&virtio.FVersion1 == 0 || f&0xffffff != 0 {
		t.Errorf("features %#x: want VERSION_1 and no device bits (stream only)", f)
	}
	if _, err := d.Dial(context.Background(), 1); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial before activation: %v, want ErrNotRunning", err)
	}
}

// A guest connection to a host listener: RESPONSE, data both ways, the
// guest's close (SHUTDOWN both) gives the host EOF after the data and gets
// an RST back; the connection leaves the table.
func TestGuestConnectsAndCloses(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	l, err := g.dev.Listen(5000)
	if err != nil {
		t.Fatal(err)
	}
	c := g.connectFromGuest(l, 1234, 5000)
	if got := c.RemoteAddr().String(); got != "3:1234" {
		t.Errorf("RemoteAddr %s", got)
	}
	msg := pattern(3000, 1)
	g.send(hdr(OpRW, 1234, 5000), msg)
	buf := make([]byte, 5000)
	n, err := io.ReadFull(c, buf[:len(msg)])
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "guest→host", buf[:n], msg)

	reply := pattern(1000, 9)
	if _, err := c.Write(reply); err != nil {
		t.Fatal(err)
	}
	p := g.expect(OpRW, 5000, 1234)
	mustEqual(t, "host→guest", p.payload, reply)
	if p.h.BufAlloc != DefaultBufSize || p.h.FwdCnt != 3000 {
		t.Errorf("data header credit: buf_alloc %d fwd_cnt %d, want %d 3000", p.h.BufAlloc, p.h.FwdCnt, DefaultBufSize)
	}

	g.send(hdr(OpRW, 1234, 5000), []byte("tail"))
	sh := hdr(OpShutdown, 1234, 5000)
	sh.Flags = ShutdownRcv | ShutdownSend
	g.send(sh, nil)
	g.expect(OpRST, 5000, 1234)
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "tail" {
		t.Fatalf("after the guest closed: read %q, %v; want \"tail\", EOF", rest, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrPeerClosed) {
		t.Errorf("Write after the guest closed: %v, want ErrPeerClosed", err)
	}
	waitDone(t, c)
	if got := g.counters(); got.Conns != 0 || got.Accepted != 1 {
		t.Errorf("counters %+v", got)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close of a connection the guest closed: %v", err)
	}
	g.quiet(20 * time.Millisecond)
}

func waitDone(t *testing.T, c *Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitTime):
		t.Fatal("connection never left the table")
	}
}

// A host Dial: REQUEST, RESPONSE, data both ways; the host's Close sends
// what was written, then SHUTDOWN both; the guest's RST finishes it.
func TestHostDialsAndCloses(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	c, hp := g.dialFromHost(52)
	if hp < ephemeralLo || hp >= ephemeralHi {
		t.Errorf("host port %d outside the ephemeral range", hp)
	}
	if got := c.LocalAddr().String(); got != "2:"+itoa(hp) {
		t.Errorf("LocalAddr %s", got)
	}
	if _, err := c.Write([]byte("hello guest")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	p := g.expect(OpRW, hp, 52)
	if string(p.payload) != "hello guest" {
		t.Errorf("payload %q", p.payload)
	}
	p = g.expect(OpShutdown, hp, 52)
	if p.h.Flags != ShutdownRcv|ShutdownSend {
		t.Errorf("SHUTDOWN flags %#x, want both", p.h.Flags)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	// Data the guest sends meanwhile is discarded, not fatal.
	g.send(hdr(OpRW, 52, hp), []byte("late"))
	g.send(hdr(OpRST, 52, hp), nil)
	waitDone(t, c)
	g.waitTxDone()
	if got := g.counters(); got.Conns != 0 || got.Dialed != 1 || got.Discarded != 4 {
		t.Errorf("counters %+v", got)
	}
	g.quiet(20 * time.Millisecond)
}

func itoa(v uint32) string { return Addr{Port: v}.String()[2:] }

// CloseWrite sends SHUTDOWN(SEND) only; the host still reads.
func TestHostHalfClose(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	c, hp := g.dialFromHost(7)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	p := g.expect(OpShutdown, hp, 7)
	if p.h.Flags != ShutdownSend {
		t.Errorf("flags %#x, want SEND", p.h.Flags)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	g.send(hdr(OpRW, 7, hp), []byte("answer"))
	b := make([]byte, 6)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "answer" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestDialRefusedAndCancelled(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	errc := make(chan error, 1)
	go func() {
		_, err := g.dev.Dial(context.Background(), 99)
		errc <- err
	}()
	p := g.recv()
	g.send(hdr(OpRST, 99, p.h.SrcPort), nil)
	if err := <-errc; !errors.Is(err, ErrRefused) {
		t.Errorf("Dial to a port the guest refuses: %v, want ErrRefused", err)
	}

	// A Dial whose context ends while the REQUEST is out: RST follows.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := g.dev.Dial(ctx, 100)
		errc <- err
	}()
	p = g.recv()
	if p.h.Op != OpRequest || p.h.DstPort != 100 {
		t.Fatalf("got %v, want a REQUEST to 100", p.h)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Dial: %v", err)
	}
	g.expect(OpRST, p.h.SrcPort, 100)
	// The guest's late RESPONSE is answered with RST: no connection.
	g.send(hdr(OpResponse, 100, p.h.SrcPort), nil)
	g.expect(OpRST, p.h.SrcPort, 100)
	if got := g.counters(); got.Conns != 0 || got.DialRefused != 1 {
		t.Errorf("counters %+v", got)
	}
}

// Anything for a port nobody listens on, or for no connection, gets RST;
// an RST is never answered.
func TestRSTForUnknown(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	g.send(hdr(OpRequest, 1000, 4444), nil)
	g.expect(OpRST, 4444, 1000)
	for _, op := range []Op{OpRW, OpCreditUpdate, OpCreditRequest, OpShutdown, OpResponse} {
		g.send(hdr(op, 1001, 4445), []byte{})
		g.expect(OpRST, 4445, 1001)
	}
	g.send(hdr(OpRST, 1002, 4446), nil)
	g.quiet(20 * time.Millisecond)
	if got := g.counters(); got.Refused != 1 || got.ResetNoConn != 5 {
		t.Errorf("counters %+v", got)
	}
}

// Hostile headers: wrong CIDs are dropped silently; a bad length, type or
// op is answered with RST and resets the connection it names.
func TestHostileHeaders(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(32)
	l, _ := g.dev.Listen(80)
	c := g.connectFromGuest(l, 5, 80)

	bad := hdr(OpRW, 5, 80)
	bad.SrcCID = 7
	g.send(bad, []byte("spoof"))
	bad = hdr(OpRequest, 5, 80)
	bad.DstCID = 9
	g.send(bad, nil)
	g.waitTxDone()
	g.quiet(20 * time.Millisecond)

	for i, mk := range []func() (Header, []byte){
		func() (Header, []byte) { h := hdr(OpRW, 6, 80); h.Len = 100; return h, make([]byte, 10) }, // len past the chain
		func() (Header, []byte) { h := hdr(OpRequest, 7, 80); h.Type = TypeSeqpacket; return h, nil },
		func() (Header, []byte) { h := hdr(99, 8, 80); return h, nil },
		func() (Header, []byte) { h := hdr(OpInvalid, 9, 80); return h, nil },
		func() (Header, []byte) {
			h := hdr(OpRW, 10, 80)
			h.Len = MaxPayload + 1
			return h, make([]byte, MaxPayload+1)
		},
	} {
		h, pl := mk()
		var b [HeaderLen]byte
		h.Encode(b[:])
		g.sendRaw(b[:], pl)
		g.expect(OpRST, 80, uint32(6+i))
	}
	// A bad packet on the live connection resets it.
	h := hdr(77, 5, 80)
	g.send(h, nil)
	g.expect(OpRST, 80, 5)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Errorf("Read after a reset: %v, want ErrReset", err)
	}
	got := g.counters()
	if got.DropAddress != 2 || got.ResetBadLen != 2 || got.ResetType != 1 || got.ResetOp != 3 || got.Conns != 0 {
		t.Errorf("counters %+v", got)
	}
	if len(g.failures()) != 0 {
		t.Errorf("hostile headers failed the device: %v", g.failures())
	}
}

// Host→guest credit: the device never sends past the guest's buf_alloc;
// with none left it asks (once) and waits; the writer blocks when the
// bounded buffer is full and goes on when the guest reports progress.
func TestHostToGuestCredit(t *testing.T) {
	g := newGuest(t, gopts{cfg: Config{BufSize: 16 << 10}})
	g.postRx(64)
	l, _ := g.dev.Listen(80)
	h := hdr(OpRequest, 5, 80)
	h.BufAlloc = 8 << 10
	g.send(h, nil)
	g.expect(OpResponse, 80, 5)
	c, _ := l.AcceptConn()

	data := pattern(40<<10, 3)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		wrote <- err
	}()
	var got []byte
	recvUntil := func(limit int) {
		for len(got) < limit {
			p := g.expect(OpRW, 80, 5)
			got = append(got, p.payload...)
		}
	}
	recvUntil(8 << 10)
	if len(got) != 8<<10 {
		t.Fatalf("device sent %d bytes against a credit of 8 KiB", len(got))
	}
	g.expect(OpCreditRequest, 80, 5)
	g.quiet(30 * time.Millisecond) // one request, then silence
	select {
	case err := <-wrote:
		t.Fatalf("Write of 40 KiB returned (%v) with 8 KiB taken and a 16 KiB buffer", err)
	default:
	}
	// The guest's application reads it all and says so.
	for fwd := uint32(8 << 10); ; fwd += 8 << 10 {
		cu := hdr(OpCreditUpdate, 5, 80)
		cu.BufAlloc, cu.FwdCnt = 8<<10, fwd
		g.send(cu, nil)
		recvUntil(int(fwd) + 8<<10)
		if len(got) >= len(data) {
			break
		}
		g.expect(OpCreditRequest, 80, 5)
	}
	mustEqual(t, "host→guest stream", got, data)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// Guest→host credit: the device offers BufSize; a host that does not read
// stops the guest; reading sends a CREDIT_UPDATE; a guest that sends past
// its credit has the connection reset, without a byte lost before that.
func TestGuestToHostCredit(t *testing.T) {
	const buf = 16 << 10
	g := newGuest(t, gopts{cfg: Config{BufSize: buf}})
	g.postRx(64)
	l, _ := g.dev.Listen(80)
	g.send(hdr(OpRequest, 5, 80), nil)
	p := g.expect(OpResponse, 80, 5)
	if p.h.BufAlloc != buf || p.h.FwdCnt != 0 {
		t.Fatalf("RESPONSE credit %d/%d", p.h.BufAlloc, p.h.FwdCnt)
	}
	c, _ := l.AcceptConn()
	data := pattern(buf, 5)
	g.send(hdr(OpRW, 5, 80), data[:buf/2])
	g.send(hdr(OpRW, 5, 80), data[buf/2:])
	// A credit request is answered at once, with nothing read yet.
	g.send(hdr(OpCreditRequest, 5, 80), nil)
	p = g.expect(OpCreditUpdate, 80, 5)
	if p.h.FwdCnt != 0 || p.h.BufAlloc != buf {
		t.Errorf("credit update %d/%d", p.h.BufAlloc, p.h.FwdCnt)
	}
	b := make([]byte, buf/2)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	p = g.expect(OpCreditUpdate, 80, 5)
	if p.h.FwdCnt != buf/2 {
		t.Errorf("credit update after reading half: fwd_cnt %d", p.h.FwdCnt)
	}
	// Use the new credit exactly, then lie past it by one byte.
	g.send(hdr(OpRW, 5, 80), pattern(buf/2, 6))
	g.send(hdr(OpRW, 5, 80), []byte{1})
	g.expect(OpRST, 80, 5)
	rest, err := io.ReadAll(c)
	if !errors.Is(err, ErrReset) || len(rest) != buf {
		t.Fatalf("after the credit violation read %d bytes, %v; want %d then ErrReset", len(rest), err, buf)
	}
	mustEqual(t, "buffered data", rest[:buf/2], data[buf/2:])
	if got := g.counters(); got.CreditViolations != 1 || got.TxBytes != 3*buf/2 {
		t.Errorf("counters %+v", got)
	}
}

// A guest that lies about its own credit cannot make the device send more
// than the guest took, nor buffer more than BufSize: a fwd_cnt past what
// was sent is ignored, a huge buf_alloc only lets the bounded buffer out.
func TestGuestLiesAboutCredit(t *testing.T) {
	g := newGuest(t, gopts{cfg: Config{BufSize: 8 << 10}})
	g.postRx(64)
	l, _ := g.dev.Listen(80)
	h := hdr(OpRequest, 5, 80)
	h.BufAlloc = 4 << 10
	g.send(h, nil)
	g.expect(OpResponse, 80, 5)
	c, _ := l.AcceptConn()
	go c.Write(pattern(64<<10, 1)) // blocks; ends with the test's Close

	total := 0
	for total < 4<<10 {
		total += len(g.expect(OpRW, 80, 5).payload)
	}
	g.expect(OpCreditRequest, 80, 5)
	// fwd_cnt far past the 4 KiB sent: ignored, counted; no data follows.
	cu := hdr(OpCreditUpdate, 5, 80)
	cu.BufAlloc, cu.FwdCnt = 4<<10, 1<<30
	g.send(cu, nil)
	g.quiet(30 * time.Millisecond)
	if got := g.counters(); got.CreditLies != 1 {
		t.Errorf("CreditLies %d", got.CreditLies)
	}
	// A buf_alloc of 4 GiB lets through what the host wrote, one bounded
	// buffer at a time, and nothing more than that.
	cu.BufAlloc, cu.FwdCnt = 0xffffffff, 4<<10
	g.send(cu, nil)
	for total < 64<<10 {
		p := g.recv()
		if p.h.Op != OpRW {
			t.Fatalf("got %v", p.h)
		}
		total += len(p.payload)
		if p.h.Len > MaxPayload || p.h.Len > uint32(g.rxSize) {
			t.Fatalf("packet of %d bytes", p.h.Len)
		}
		if len(g.rxBufs) < 8 {
			g.postRx(32)
		}
	}
	if total != 64<<10 {
		t.Errorf("device sent %d bytes, the host wrote %d", total, 64<<10)
	}
	// Shrinking buf_alloc below what is in flight means no credit, not a
	// huge one.
	cu.BufAlloc, cu.FwdCnt = 10, 4<<10
	g.send(cu, nil)
	c.Write([]byte("more"))
	g.expect(OpCreditRequest, 80, 5)
	g.quiet(20 * time.Millisecond)
}

// With no receive buffers, the device takes guest packets only while it
// has room for the RSTs it owes; the guest's transmit ring backs up. When
// buffers come, every RST is delivered and the rest is taken.
func TestFullRing(t *testing.T) {
	g := newGuest(t, gopts{qsize: 256})
	const n = 150
	// send reaps completed chains as it goes (txTaken counts them all).
	for i := range n {
		g.send(hdr(OpRequest, uint32(1000+i), 4444), nil)
	}
	// The device takes rstCap packets, then stops; wait for the first
	// part (a loaded machine may take a while), then check it stopped.
	for deadline := time.Now().Add(5 * time.Second); g.txTaken < rstCap && time.Now().Before(deadline); {
		g.reapTx()
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	g.reapTx()
	if taken := g.txTaken; taken != rstCap {
		t.Fatalf("device took %d packets with no receive buffers, want %d", taken, rstCap)
	}
	g.postRx(n)
	for i := range n {
		g.expect(OpRST, 4444, uint32(1000+i))
	}
	g.waitTxDone()
	if got := g.counters(); got.Refused != n || got.TxPackets != n {
		t.Errorf("counters %+v", got)
	}
}

// A full connection table and a full backlog refuse with RST.
func TestCaps(t *testing.T) {
	g := newGuest(t, gopts{cfg: Config{MaxConns: 2, Backlog: 1}})
	g.postRx(16)
	l, _ := g.dev.Listen(80)
	g.send(hdr(OpRequest, 1, 80), nil)
	g.expect(OpResponse, 80, 1)
	g.send(hdr(OpRequest, 2, 80), nil) // backlog full: nobody accepted 1
	g.expect(OpRST, 80, 2)
	l.AcceptConn()
	g.send(hdr(OpRequest, 3, 80), nil)
	g.expect(OpResponse, 80, 3)
	g.send(hdr(OpRequest, 4, 80), nil) // table full
	g.expect(OpRST, 80, 4)
	if _, err := g.dev.Dial(context.Background(), 9); !errors.Is(err, ErrTooManyConns) {
		t.Errorf("Dial with a full table: %v", err)
	}
	if got := g.counters(); got.TableFull != 2 || got.Refused != 1 || got.Conns != 2 {
		t.Errorf("counters %+v", got)
	}
	if _, err := g.dev.Listen(80); err == nil {
		t.Error("second Listen on a port succeeded")
	}
	// Closing the listener closes the connection it still held.
	l.Close()
	p := g.expect(OpShutdown, 80, 3)
	_ = p
}

// The host closes and the guest never finishes: RST after CloseTimeout.
func TestCloseTimeout(t *testing.T) {
	g := newGuest(t, gopts{cfg: Config{CloseTimeout: 50 * time.Millisecond}})
	g.postRx(16)
	c, hp := g.dialFromHost(7)
	c.Close()
	g.expect(OpShutdown, hp, 7)
	g.expect(OpRST, hp, 7)
	waitDone(t, c)
}

// An RST from the guest mid-stream: buffered data first, then ErrReset; a
// blocked Write wakes with an error.
func TestGuestResetsMidStream(t *testing.T) {
	g := newGuest(t, gopts{cfg: Config{BufSize: 4 << 10}})
	g.postRx(16)
	l, _ := g.dev.Listen(80)
	h := hdr(OpRequest, 5, 80)
	h.BufAlloc = 0 // the guest gives no credit: writes block
	g.send(h, nil)
	g.expect(OpResponse, 80, 5)
	c, _ := l.AcceptConn()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, 64<<10))
		wrote <- err
	}()
	g.expect(OpCreditRequest, 80, 5)
	// Still no credit: with some, the device may send the blocked Write's
	// data before it sees the RST (it did once its worker woke sooner).
	rw := hdr(OpRW, 5, 80)
	rw.BufAlloc = 0
	g.send(rw, []byte("abc"))
	g.send(hdr(OpRST, 5, 80), nil)
	b, err := io.ReadAll(c)
	if string(b) != "abc" || !errors.Is(err, ErrReset) {
		t.Errorf("read %q, %v", b, err)
	}
	select {
	case err := <-wrote:
		if !errors.Is(err, ErrReset) {
			t.Errorf("blocked Write: %v", err)
		}
	case <-time.After(waitTime):
		t.Fatal("blocked Write did not wake")
	}
	g.quiet(20 * time.Millisecond) // no RST for an RST
}

// TRANSPORT_RESET: every connection ends (host side ErrReset, no RSTs)
// and the event reaches the guest once it posts an event buffer.
func TestTransportReset(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	l, _ := g.dev.Listen(80)
	c := g.connectFromGuest(l, 5, 80)
	g.dev.TransportReset()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Errorf("Read after a transport reset: %v", err)
	}
	g.quiet(20 * time.Millisecond)
	g.postEvent()
	var id, n uint32
	g.wait("the event", func() bool {
		var ok bool
		id, n, ok = g.evd.Used()
		return ok
	})
	ev, _ := g.mem.Uint32(g.evBufs[uint16(id)])
	if n != eventLen || ev != EventTransportReset {
		t.Errorf("event %#x len %d", ev, n)
	}
	if got := g.counters(); got.TransportResets != 1 || got.Conns != 0 {
		t.Errorf("counters %+v", got)
	}
	// The listener survives: new connections work.
	g.connectFromGuest(l, 6, 80)
}

// A device reset ends every connection and wakes blocked readers; the
// device works again after a new activation.
func TestDeviceReset(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	l, _ := g.dev.Listen(80)
	c := g.connectFromGuest(l, 5, 80)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := g.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, ErrReset) {
		t.Errorf("blocked Read after device reset: %v", err)
	}
	if _, err := g.dev.Dial(context.Background(), 1); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial after reset: %v", err)
	}
	g.activate()
	g.postRx(16)
	g.connectFromGuest(l, 6, 80)
}

// Chains of the wrong shape break the queue protocol and stop the device.
func TestMalformedChains(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(g *guest)
	}{
		{"short tx chain", func(g *guest) {
			gpa := g.txd.Alloc(64, 16)
			g.txd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen - 1})
			g.dev.Notify(TxQueue)
		}},
		{"writable tx chain", func(g *guest) {
			gpa := g.txd.Alloc(64, 16)
			g.txd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen}, testdriver.Seg{Addr: gpa + 48, Len: 8, Write: true})
			g.dev.Notify(TxQueue)
		}},
		{"readable rx chain", func(g *guest) {
			gpa := g.rxd.Alloc(128, 16)
			g.rxd.Add(testdriver.Seg{Addr: gpa, Len: 64}, testdriver.Seg{Addr: gpa + 64, Len: 64, Write: true})
			g.send(hdr(OpRequest, 1, 2), nil)
		}},
		{"small rx chain", func(g *guest) {
			gpa := g.rxd.Alloc(64, 16)
			g.rxd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen - 4, Write: true})
			g.send(hdr(OpRequest, 1, 2), nil)
		}},
		{"small event chain", func(g *guest) {
			gpa := g.evd.Alloc(4, 4)
			g.evd.Add(testdriver.Seg{Addr: gpa, Len: 2, Write: true})
			g.dev.TransportReset()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuest(t, gopts{})
			tc.do(g)
			err := g.expectFail()
			if queue.KindOf(err) != queue.BadRequest {
				t.Errorf("failure %v, want a BadRequest guest error", err)
			}
			if got := g.counters(); got.ProtocolErrors != 1 {
				t.Errorf("ProtocolErrors %d", got.ProtocolErrors)
			}
		})
	}
}

// Streams of many sizes both ways, through split and whole receive
// buffers, arrive intact.
func TestStreamsIntact(t *testing.T) {
	for _, split := range []bool{false, true} {
		g := newGuest(t, gopts{rxSplit: split, rxSize: 4096, cfg: Config{BufSize: 32 << 10}})
		g.postRx(128)
		l, _ := g.dev.Listen(80)
		c := g.connectFromGuest(l, 5, 80)
		data := pattern(300<<10+17, 11)
		go func() {
			c.Write(data)
			c.CloseWrite()
		}()
		var got []byte
		var fwd uint32
		for {
			p := g.recv()
			if len(g.rxBufs) < 32 {
				g.postRx(64)
			}
			if p.h.Op == OpShutdown {
				break
			}
			switch p.h.Op {
			case OpRW:
				got = append(got, p.payload...)
				fwd += p.h.Len
				cu := hdr(OpCreditUpdate, 5, 80)
				cu.FwdCnt = fwd
				g.send(cu, nil)
			case OpCreditRequest:
			default:
				t.Fatalf("got %v", p.h)
			}
		}
		mustEqual(t, "host→guest", got, data)

		// Guest → host in odd sizes, respecting the device's credit.
		up := pattern(200<<10+3, 12)
		done := make(chan []byte)
		go func() {
			b, _ := io.ReadAll(c)
			done <- b
		}()
		sent, peerFwd, bufAlloc := 0, uint32(0), uint32(32<<10)
		for sent < len(up) {
			free := int(bufAlloc) - (sent - int(peerFwd))
			if free <= 0 {
				p := g.recv()
				if len(g.rxBufs) < 32 {
					g.postRx(64)
				}
				peerFwd, bufAlloc = p.h.FwdCnt, p.h.BufAlloc
				continue
			}
			n := min(free, len(up)-sent, 1+sent%5000)
			g.send(hdr(OpRW, 5, 80), up[sent:sent+n])
			sent += n
		}
		sh := hdr(OpShutdown, 5, 80)
		sh.Flags = ShutdownSend
		g.send(sh, nil)
		mustEqual(t, "guest→host", <-done, up)
	}
}

// No goroutine outlives Close, with connections open, Dials and blocked
// reads and writes in flight.
func TestCloseEndsEverything(t *testing.T) {
	base := countGoroutines()
	func() {
		g := newGuest(t, gopts{cfg: Config{BufSize: 4 << 10}})
		g.postRx(16)
		l, _ := g.dev.Listen(80)
		c := g.connectFromGuest(l, 5, 80)
		go c.Read(make([]byte, 10))
		go c.Write(make([]byte, 1<<20))
		go g.dev.Dial(context.Background(), 77)
		go l.Accept()
		time.Sleep(20 * time.Millisecond)
		if err := g.dev.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(waitTime)
	for countGoroutines() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before", countGoroutines(), base)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
