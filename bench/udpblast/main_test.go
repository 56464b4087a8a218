package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	c, err := parse([]string{"-to", "10.0.0.2:9", "-from", "10.0.0.1", "-size", "1500", "-pps", "1000", "-duration", "2s", "-count", "7"})
	if err != nil {
		t.Fatal(err)
	}
	if c.to.String() != "10.0.0.2:9" || c.from.String() != "10.0.0.1" || c.size != 1500 || c.pps != 1000 ||
		c.duration != 2*time.Second || c.count != 7 {
		t.Errorf("parse = %+v", c)
	}
	for _, bad := range [][]string{
		{},
		{"-to", "10.0.0.2"},
		{"-to", "10.0.0.2:9", "-size", "45"},
		{"-to", "10.0.0.2:9", "-size", "1515"},
		{"-to", "10.0.0.2:9", "-pps", "-1"},
		{"-to", "10.0.0.2:9", "-duration", "0s"},
		{"-to", "10.0.0.2:9", "-from", "x"},
	} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestPacer(t *testing.T) {
	p := pacer{pps: 1000}
	for _, c := range []struct {
		el   time.Duration
		want uint64
	}{{0, 0}, {time.Millisecond, 1}, {1500 * time.Microsecond, 1}, {time.Second, 1000}, {10 * time.Second, 10000}} {
		if got := p.due(c.el); got != c.want {
			t.Errorf("due(%v) = %d, want %d", c.el, got, c.want)
		}
	}
	if got := (pacer{}).due(0); got != ^uint64(0) {
		t.Errorf("unpaced due(0) = %d", got)
	}
}

func TestPayloadSize(t *testing.T) {
	if n := len(payload(64)); n != 22 {
		t.Errorf("64-byte frame: payload %d, want 22", n)
	}
	if n := len(payload(1514)); n != 1472 {
		t.Errorf("1514-byte frame: payload %d, want 1472", n)
	}
}

// TestRunSendsNumbered sends a few datagrams over loopback and checks their
// sizes, numbers and the report.
func TestRunSendsNumbered(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip("no loopback UDP:", err)
	}
	defer pc.Close()
	var out bytes.Buffer
	err = run(context.Background(), []string{"-to", pc.LocalAddr().String(), "-size", "100", "-count", "5", "-duration", "10s"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "udpblast: sent 5 datagrams (500 bytes of frames)") {
		t.Errorf("report %q", out.String())
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for i := 0; i < 5; i++ {
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if n != 100-frameOver || binary.BigEndian.Uint32(buf) != uint32(i) {
			t.Errorf("datagram %d: %d bytes, number %d", i, n, binary.BigEndian.Uint32(buf))
		}
	}
}
