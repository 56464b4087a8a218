package main

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "7K": 7 << 10, "128M": 128 << 20, "2G": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "M", "1T", "1.5M", "99999999999G"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestRunSendsEverything: the connections together deliver exactly
// -bytes (the remainder of an uneven split included), and run returns
// only after the receiver closed each.
func TestRunSendsEverything(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var got, conns, nonzero atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b := make([]byte, 64<<10)
				for {
					n, err := c.Read(b)
					got.Add(int64(n))
					if !bytes.Equal(b[:n], make([]byte, n)) {
						nonzero.Add(1)
					}
					if err == io.EOF {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}()
	var out strings.Builder
	const total = 5<<20 + 3
	if err := run([]string{"-to", l.Addr().String(), "-bytes", "5242883", "-conns", "3", "-buf", "40K"}, &out); err != nil {
		t.Fatal(err)
	}
	if got.Load() != total || conns.Load() != 3 || nonzero.Load() != 0 {
		t.Errorf("received %d bytes over %d connections (%d reads not zeros); want %d over 3", got.Load(), conns.Load(), nonzero.Load(), total)
	}
	if !strings.HasPrefix(out.String(), "tcpsend: sent 5242883 bytes over 3 connections in ") {
		t.Errorf("output %q", out.String())
	}
	l.Close()
	wg.Wait()
}

func TestRunRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := run([]string{"-to", addr, "-bytes", "1M"}, io.Discard); err == nil {
		t.Error("run to a closed port succeeded")
	}
	for _, args := range [][]string{{}, {"-to", addr, "-conns", "0"}, {"-to", addr, "-bytes", "2", "-conns", "3"}, {"-to", addr, "extra"}} {
		if err := run(args, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
