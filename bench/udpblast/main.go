// Command udpblast sends numbered UDP datagrams as fast as it may, for the
// host→guest side of bench/net-pps.sh. Each datagram's payload starts with
// its sequence number (big-endian uint32, from 0), so a receiver can tell
// how many were sent in the span it counted; the rest is zero.
//
// -size is the Ethernet frame the datagram makes on the wire (14 + 20 + 8 +
// payload bytes, 46..1514), so -size 64 sends 22-byte payloads. -pps paces
// the sending (0: no pacing); it stops after -duration, after -count
// datagrams, or on SIGINT/SIGTERM, and prints one line:
//
//	udpblast: sent N datagrams (B bytes of frames) in S s: R pps, M MB/s, E send errors
//
// Send errors (ENOBUFS, ECONNREFUSED from an ICMP) are counted, not fatal;
// a destination that becomes unreachable (its TAP removed) ends the run.
//
// Usage: udpblast -to IP:PORT [-from IP] [-size 64] [-pps 0] [-duration 10s] [-count 0]
package main

import (
	"context"
	"encoding/binary"
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

// Frame overhead in front of a UDP payload: Ethernet, IPv4 without options, UDP.
const (
	ethHeader  = 14
	ipv4Header = 20
	udpHeader  = 8
	frameOver  = ethHeader + ipv4Header + udpHeader
	minFrame   = frameOver + 4 // room for the sequence number
	maxFrame   = 1514
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "udpblast:", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	to       netip.AddrPort
	from     netip.Addr
	size     int
	pps      int
	duration time.Duration
	count    uint64
}

func parse(args []string) (config, error) {
	fs := flag.NewFlagSet("udpblast", flag.ContinueOnError)
	to := fs.String("to", "", "destination IP:PORT (required)")
	from := fs.String("from", "", "source address to bind (default: any)")
	size := fs.Int("size", 64, "Ethernet frame size the datagram makes, 46..1514")
	pps := fs.Int("pps", 0, "datagrams per second (0: as fast as possible)")
	duration := fs.Duration("duration", 10*time.Second, "stop after this long")
	count := fs.Uint64("count", 0, "stop after this many datagrams (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	var c config
	var err error
	if c.to, err = netip.ParseAddrPort(*to); err != nil {
		return c, fmt.Errorf("-to %q: %w", *to, err)
	}
	if *from != "" {
		if c.from, err = netip.ParseAddr(*from); err != nil {
			return c, fmt.Errorf("-from %q: %w", *from, err)
		}
	}
	if *size < minFrame || *size > maxFrame {
		return c, fmt.Errorf("-size %d: want %d..%d", *size, minFrame, maxFrame)
	}
	if *pps < 0 || *duration <= 0 {
		return c, fmt.Errorf("-pps %d, -duration %v: want pps >= 0 and a positive duration", *pps, *duration)
	}
	c.size, c.pps, c.duration, c.count = *size, *pps, *duration, *count
	return c, nil
}

// pacer says how many datagrams may have gone by a given time since start
// at pps per second (pps 0: unlimited).
type pacer struct{ pps int }

// due is the number of datagrams that may have been sent after elapsed.
func (p pacer) due(elapsed time.Duration) uint64 {
	if p.pps == 0 {
		return ^uint64(0)
	}
	return uint64(elapsed.Nanoseconds()/1000) * uint64(p.pps) / 1_000_000
}

// payload returns a zeroed payload for frame size, and fills in seq.
func payload(size int) []byte { return make([]byte, size-frameOver) }

func number(b []byte, seq uint64) { binary.BigEndian.PutUint32(b, uint32(seq)) }

// gone reports errors meaning the route to the receiver vanished, as when a
// VMM's TAP is removed at the end of its run: the end, not a failure.
func gone(err error) bool {
	return errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO)
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	var laddr *net.UDPAddr
	if c.from.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.from, 0))
	}
	conn, err := net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(c.to))
	if err != nil {
		return fmt.Errorf("dial %v: %w", c.to, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()

	buf := payload(c.size)
	p := pacer{c.pps}
	var sent, errs uint64
	start := time.Now()
	for ctx.Err() == nil && (c.count == 0 || sent < c.count) {
		if sent >= p.due(time.Since(start)) {
			time.Sleep(time.Millisecond)
			continue
		}
		// Check the context only every 256 datagrams: it takes a lock.
		for i := 0; i < 256 && (c.count == 0 || sent < c.count); i++ {
			number(buf, sent)
			if _, err := conn.Write(buf); err != nil {
				if gone(err) {
					fmt.Fprintf(stdout, "udpblast: %v is gone (%v): stopping\n", c.to, err)
					cancel()
					break
				}
				if !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ECONNREFUSED) &&
					!errors.Is(err, syscall.EAGAIN) {
					return fmt.Errorf("send to %v after %d datagrams: %w", c.to, sent, err)
				}
				errs++
				continue
			}
			sent++
			if c.pps != 0 && i%16 == 15 && sent >= p.due(time.Since(start)) {
				break
			}
		}
	}
	el := time.Since(start).Seconds()
	bytes := sent * uint64(c.size)
	fmt.Fprintf(stdout, "udpblast: sent %d datagrams (%d bytes of frames) in %.3f s: %.0f pps, %.2f MB/s, %d send errors\n",
		sent, bytes, el, float64(sent)/el, float64(bytes)/el/1e6, errs)
	return nil
}
