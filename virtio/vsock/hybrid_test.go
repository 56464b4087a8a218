package vsock

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConnect(t *testing.T) {
	for line, want := range map[string]uint32{"CONNECT 52": 52, "CONNECT 0": 0, "CONNECT 4294967295": 0xffffffff, "CONNECT  7 ": 7, "CONNECT 8\r": 8} {
		if got, err := ParseConnect(line); err != nil || got != want {
			t.Errorf("ParseConnect(%q) = %d, %v; want %d", line, got, err, want)
		}
	}
	for _, line := range []string{"", "CONNECT", "CONNECT ", "connect 5", "CONNECT -1", "CONNECT 4294967296", "CONNECT 5 6", "CONNECT 0x10", "OK 5"} {
		if got, err := ParseConnect(line); err == nil {
			t.Errorf("ParseConnect(%q) = %d, accepted", line, got)
		}
	}
}

func hybridGuest(t *testing.T) (*guest, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	g := newGuest(t, gopts{cfg: Config{UDSPath: path}})
	g.postRx(32)
	return g, path
}

// Host → guest through the Unix socket: CONNECT, OK with the host port,
// data both ways (including bytes sent right behind the CONNECT line),
// half-closes passed on.
func TestHybridHostConnects(t *testing.T) {
	g, path := hybridGuest(t)
	uc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write([]byte("CONNECT 52\nearly")); err != nil {
		t.Fatal(err)
	}
	p := g.recv()
	if p.h.Op != OpRequest || p.h.DstPort != 52 {
		t.Fatalf("got %v", p.h)
	}
	hp := p.h.SrcPort
	g.send(hdr(OpResponse, 52, hp), nil)
	br := bufio.NewReader(uc)
	uc.SetReadDeadline(time.Now().Add(waitTime))
	line, err := br.ReadString('\n')
	if err != nil || line != "OK "+itoa(hp)+"\n" {
		t.Fatalf("answer %q, %v; want OK %d", line, err, hp)
	}
	p = g.expect(OpRW, hp, 52)
	if string(p.payload) != "early" {
		t.Errorf("first data %q", p.payload)
	}
	g.send(hdr(OpRW, 52, hp), []byte("from guest"))
	b := make([]byte, 10)
	if _, err := io.ReadFull(br, b); err != nil || string(b) != "from guest" {
		t.Fatalf("read %q, %v", b, err)
	}
	uc.(*net.UnixConn).CloseWrite()
	p = g.expect(OpShutdown, hp, 52)
	if p.h.Flags != ShutdownSend {
		t.Errorf("shutdown flags %#x", p.h.Flags)
	}
	sh := hdr(OpShutdown, 52, hp)
	sh.Flags = shutdownBoth
	g.send(sh, nil)
	g.expect(OpRST, hp, 52)
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the guest closed: %q, %v; want EOF", rest, err)
	}
}

// A bad request line or a refused port closes the socket without "OK".
func TestHybridRefusals(t *testing.T) {
	g, path := hybridGuest(t)
	for _, req := range []string{"HELLO\n", "CONNECT x\n", strings.Repeat("A", 200)} {
		uc, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		uc.Write([]byte(req))
		uc.SetReadDeadline(time.Now().Add(waitTime))
		if b, err := io.ReadAll(uc); err != nil || len(b) != 0 {
			t.Errorf("request %q: read %q, %v; want EOF", req, b, err)
		}
		uc.Close()
	}
	uc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("CONNECT 99\n"))
	p := g.recv()
	g.send(hdr(OpRST, 99, p.h.SrcPort), nil)
	uc.SetReadDeadline(time.Now().Add(waitTime))
	if b, err := io.ReadAll(uc); err != nil || len(b) != 0 {
		t.Errorf("refused CONNECT: read %q, %v; want EOF", b, err)
	}
}

// Guest → host: a connection to port P goes to the program listening on
// UDSPath_P; with nobody there the guest gets RST. An in-process Listen
// on a port takes precedence.
func TestHybridGuestConnects(t *testing.T) {
	g, path := hybridGuest(t)
	ln, err := net.Listen("unix", path+"_80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g.send(hdr(OpRequest, 7, 80), nil)
	g.expect(OpResponse, 80, 7)
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(waitTime))
	uc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	g.send(hdr(OpRW, 7, 80), []byte("ping"))
	b := make([]byte, 4)
	uc.SetReadDeadline(time.Now().Add(waitTime))
	if _, err := io.ReadFull(uc, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q, %v", b, err)
	}
	uc.Write([]byte("pong"))
	if p := g.expect(OpRW, 80, 7); string(p.payload) != "pong" {
		t.Errorf("payload %q", p.payload)
	}
	// The guest closes: the program reads EOF and its socket is closed.
	sh := hdr(OpShutdown, 7, 80)
	sh.Flags = shutdownBoth
	g.send(sh, nil)
	g.expect(OpRST, 80, 7)
	if rest, err := io.ReadAll(uc); err != nil || len(rest) != 0 {
		t.Errorf("after the guest closed: %q, %v", rest, err)
	}

	g.send(hdr(OpRequest, 8, 81), nil)
	g.expect(OpRST, 81, 8)
	if got := g.counters(); got.Refused != 1 || got.Accepted != 1 {
		t.Errorf("counters %+v", got)
	}

	l, _ := g.dev.Listen(80)
	g.connectFromGuest(l, 9, 80)
}

// Close removes the socket file and ends live Unix connections.
func TestHybridClose(t *testing.T) {
	base := countGoroutines()
	path := filepath.Join(t.TempDir(), "v.sock")
	g := newGuest(t, gopts{cfg: Config{UDSPath: path}})
	g.postRx(8)
	uc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("CONNECT 5\n"))
	p := g.recv()
	g.send(hdr(OpResponse, 5, p.h.SrcPort), nil)
	br := bufio.NewReader(uc)
	uc.SetReadDeadline(time.Now().Add(waitTime))
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if err := g.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	if b, err := io.ReadAll(br); len(b) != 0 {
		t.Errorf("live connection after Close: %q, %v", b, err)
	}
	deadline := time.Now().Add(waitTime)
	for countGoroutines() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before", countGoroutines(), base)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := New(Config{UDSPath: filepath.Join(t.TempDir(), "no", "such", "dir")}); err == nil {
		t.Error("New with an unusable UDSPath succeeded")
	}
}
