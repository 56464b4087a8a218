// Command tcpsend streams zeros to a TCP listener over several connections
// at once, for the guest→host TCP stream of bench/agentvsqemu's
// TestLinuxMQ (a static binary in the guests' initramfs; busybox nc writes
// in buffers of a few KiB, so the guest's own system calls would set the
// pace). Each connection sends its share of -bytes in -buf writes, then
// closes its write side and waits for the receiver to close, so the
// command ends only once the receiver has counted everything. It prints
// one line:
//
//	tcpsend: sent B bytes over C connections in S s
//
// Usage: tcpsend -to IP:PORT [-bytes 128M] [-conns 2] [-buf 128K]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tcpsend:", err)
		os.Exit(1)
	}
}

// parseSize parses a byte count with an optional K, M or G (binary) suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M or G", s)
	}
	return n * mult, nil
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tcpsend", flag.ContinueOnError)
	to := fs.String("to", "", "receiver IP:PORT")
	total := fs.String("bytes", "128M", "bytes to send in all (K, M, G suffixes)")
	conns := fs.Int("conns", 2, "connections, sending at once")
	bufs := fs.String("buf", "128K", "bytes per write")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *to == "" || fs.NArg() > 0 {
		return errors.New("usage: tcpsend -to IP:PORT [-bytes 128M] [-conns 2] [-buf 128K]")
	}
	n, err := parseSize(*total)
	if err != nil {
		return err
	}
	bn, err := parseSize(*bufs)
	if err != nil {
		return err
	}
	if *conns < 1 || int64(*conns) > n {
		return fmt.Errorf("-conns %d: want 1..%d", *conns, n)
	}
	t0 := time.Now()
	deadline := t0.Add(*timeout)
	errs := make(chan error, *conns)
	for i := range *conns {
		share := n / int64(*conns)
		if i == 0 {
			share += n % int64(*conns)
		}
		go func() { errs <- send(*to, share, int(bn), deadline) }()
	}
	for range *conns {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "tcpsend: sent %d bytes over %d connections in %.3f s\n", n, *conns, time.Since(t0).Seconds())
	return nil
}

// send writes n zero bytes to addr in writes of buf bytes, half-closes,
// and waits for the receiver's close.
func send(addr string, n int64, buf int, deadline time.Time) error {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	b := make([]byte, buf)
	for left := n; left > 0; {
		w, err := c.Write(b[:min(int64(len(b)), left)])
		left -= int64(w)
		if err != nil {
			return fmt.Errorf("%s: after %d of %d bytes: %w", addr, n-left, n, err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("%s: closing the write side: %w", addr, err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		return fmt.Errorf("%s: waiting for the receiver's close: %w", addr, err)
	}
	return nil
}
