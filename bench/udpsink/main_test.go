package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTally(t *testing.T) {
	var ty tally
	t0 := time.Unix(1000, 0)
	ty.add(22, t0)
	ty.add(22, t0.Add(time.Second/2))
	ty.add(22, t0.Add(time.Second))
	if ty.n != 3 || ty.bytes != 3*64 || ty.after != 2*64 {
		t.Fatalf("tally %+v", ty)
	}
	// 2 datagrams after the first in 1 s: 2 pps, 128 bytes/s.
	want := "udpsink: 3 datagrams (192 bytes of frames) in 1.000 s first to last: 2 pps, 0.00 MB/s"
	if got := ty.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	var empty tally
	if got := empty.String(); !strings.HasPrefix(got, "udpsink: 0 datagrams") {
		t.Errorf("empty: %q", got)
	}
}

func TestRunCountsUntilIdle(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip("no loopback UDP:", err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"-listen", addr, "-idle", "300ms", "-duration", "20s", "-ready", ready}, &out)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("sink never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 10; i++ {
		c.Write(make([]byte, 22))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sink did not stop after -idle")
	}
	if !strings.HasPrefix(out.String(), "udpsink: 10 datagrams (640 bytes of frames)") {
		t.Errorf("report %q", out.String())
	}
}
