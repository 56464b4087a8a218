// Command udpsink counts the UDP datagrams that reach one address, for the
// guest→host side of bench/net-pps.sh. It exits after -idle without a
// datagram once the first has come, after -duration in all, or on
// SIGINT/SIGTERM, and prints one line:
//
//	udpsink: N datagrams (B bytes of frames) in S s first to last: R pps, M MB/s
//
// Frame bytes are the UDP payload plus 42 (Ethernet, IPv4 and UDP headers),
// so they compare with the guest's own figure for the frames it sent; the
// rates count the datagrams after the first over the first-to-last span. With
// -ready FILE it creates FILE once the socket is bound.
//
// Usage: udpsink -listen IP:PORT [-idle 2s] [-duration 60s] [-ready FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// frameOver is what a UDP payload carries in front of it on Ethernet:
// Ethernet, IPv4 without options, UDP headers.
const frameOver = 14 + 20 + 8

// rcvBuf is the socket receive buffer asked for (see setRcvBuf).
const rcvBuf = 8 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "udpsink:", err)
		os.Exit(1)
	}
}

// tally counts datagrams and notes the first and last arrival.
type tally struct {
	n, bytes    uint64
	after       uint64 // frame bytes after the first datagram: the rate's numerator
	first, last time.Time
}

func (t *tally) add(payload int, at time.Time) {
	b := uint64(payload + frameOver)
	if t.n == 0 {
		t.first = at
	} else {
		t.after += b
	}
	t.n++
	t.bytes += b
	t.last = at
}

// String is the report line.
func (t *tally) String() string {
	el := t.last.Sub(t.first).Seconds()
	pps, mbs := 0.0, 0.0
	if t.n > 1 && el > 0 {
		pps = float64(t.n-1) / el
		mbs = float64(t.after) / el / 1e6
	}
	return fmt.Sprintf("udpsink: %d datagrams (%d bytes of frames) in %.3f s first to last: %.0f pps, %.2f MB/s",
		t.n, t.bytes, el, pps, mbs)
}

// setRcvBuf asks for a receive buffer of n bytes: with SO_RCVBUFFORCE
// (CAP_NET_ADMIN, so past net.core.rmem_max) if allowed, else SO_RCVBUF.
// Best effort: a small buffer still counts, with more drops.
func setRcvBuf(conn *net.UDPConn, n int) {
	rc, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
		})
		if err == nil && serr == nil {
			return
		}
	}
	_ = conn.SetReadBuffer(n)
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("udpsink", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to bind, IP:PORT (required)")
	idle := fs.Duration("idle", 2*time.Second, "stop after this long without a datagram, once one came")
	duration := fs.Duration("duration", 60*time.Second, "stop after this long in all")
	ready := fs.String("ready", "", "create this file once the socket is bound")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", *listen, err)
	}
	if *idle <= 0 || *duration <= 0 {
		return fmt.Errorf("-idle %v, -duration %v: want positive durations", *idle, *duration)
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("listen %v: %w", ap, err)
	}
	defer conn.Close()
	setRcvBuf(conn, rcvBuf)
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			return fmt.Errorf("-ready: %w", err)
		}
	}
	end := time.Now().Add(*duration)
	go func() { // a signal ends the blocking read
		<-ctx.Done()
		conn.SetReadDeadline(time.Now())
	}()
	var t tally
	buf := make([]byte, 65536)
	for ctx.Err() == nil {
		dl := end
		if t.n > 0 && t.last.Add(*idle).Before(dl) {
			dl = t.last.Add(*idle)
		}
		// Deadlines per datagram cost a timer update; renew them every 64.
		if t.n%64 == 0 || t.n == 1 {
			conn.SetReadDeadline(dl)
		}
		n, err := conn.Read(buf)
		now := time.Now()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if now.Before(dl) && ctx.Err() == nil {
					conn.SetReadDeadline(dl) // the one that fired predates the last datagrams
					continue
				}
				break
			}
			return fmt.Errorf("read on %v: %w", ap, err)
		}
		t.add(n, now)
	}
	fmt.Fprintln(stdout, t.String())
	return nil
}
