// Package replay implements `corral dhcp replay`: it feeds Ethernet frames
// from pcap captures or raw frame files to one dhcp.Server, in order, and
// prints one JSON line per frame with the server's verdict and replies.
package replay

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/corral-vmm/corral/dhcp"
)

// Limits on input files.
const (
	maxRawFrame = 64 << 10 // a raw frame file larger than this is refused
	// rawFrameStep is how far the replay clock moves for each raw frame file,
	// which carries no timestamp.
	rawFrameStep = time.Second
)

// VerdictCaptureTruncated is printed instead of a server verdict for a pcap
// record captured with fewer bytes than the frame had (snap length too small):
// the server never sees a frame the guest did not send.
const VerdictCaptureTruncated = "capture_truncated"

// Line is one JSON output line.
type Line struct {
	File    string   `json:"file"`    // input file as named on the command line
	Index   int      `json:"index"`   // record number in the capture, from 0; 0 for a raw frame
	Verdict string   `json:"verdict"` // reply type ("offer", "ack", "nak"), other outcome or drop counter name
	Replies []string `json:"replies"` // reply frames in lowercase hex, without FCS
}

// clock is the replay's dhcp.Clock, driven by capture timestamps.
type clock struct{ now time.Duration }

func (c *clock) Now() time.Duration { return c.now }

const usage = `usage: corral dhcp replay [flags] FILE...

Feeds each FILE's Ethernet frames to one DHCP server, in order, and prints one
JSON line per frame: {"file","index","verdict","replies"}. A FILE is a pcap
capture with Ethernet link type (tcpdump -w) or one raw Ethernet frame without
FCS. The server's clock follows the capture's timestamps (one second per raw
frame file). Without --mac the server serves any client MAC.

flags:
`

// Main runs the replay command with args (without the command name) and
// returns the process exit code: 0 on success, 1 if a file could not be read
// whole, 2 for bad usage or configuration.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corral dhcp replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		server    prefixFlag
		serverMAC = macFlag{hw: net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}}
		pool      poolFlag
		router    addrFlag
		dns       addrListFlag
		lease     = fs.Duration("lease", dhcp.DefaultLeaseTime, "lease `DURATION` (e.g. 12h)")
		macs      macListFlag
		mtu       = fs.Int("mtu", dhcp.DefaultMTU, "interface MTU `N`, also the cap on reply size")
		reserve   reserveFlag
		domain    = fs.String("domain", "", "domain `NAME` (option 15)")
		auth      = fs.Bool("authoritative", false, "NAK requests from clients with no record instead of ignoring them (RFC 2131 4.3.2)")
	)
	fs.Var(&server, "server", "server address and subnet `IP/PREFIX` (required)")
	fs.Var(&serverMAC, "server-mac", "server `MAC`")
	fs.Var(&pool, "pool", "dynamic pool `FIRST-LAST` (required)")
	fs.Var(&router, "router", "default gateway `IP`")
	fs.Var(&dns, "dns", "DNS servers `IP[,IP]`")
	fs.Var(&macs, "mac", "the NIC's own `MAC`; repeatable; absent = any client MAC")
	fs.Var(&reserve, "reserve", "static lease `MAC=IP[,HOSTNAME]`; repeatable")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if !server.p.IsValid() || !pool.first.IsValid() {
		fmt.Fprintln(stderr, "corral dhcp replay: --server and --pool are required")
		fs.Usage()
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "corral dhcp replay: no FILE given")
		fs.Usage()
		return 2
	}
	clk := &clock{}
	srv, err := dhcp.New(dhcp.Config{
		Server:        server.p,
		ServerMAC:     serverMAC.hw,
		PoolFirst:     pool.first,
		PoolLast:      pool.last,
		Router:        router.a,
		DNS:           dns.a,
		Domain:        *domain,
		LeaseTime:     *lease,
		MTU:           *mtu,
		Reservations:  reserve.r,
		AllowedMACs:   macs.hw,
		AllowAnyMAC:   len(macs.hw) == 0,
		Authoritative: *auth,
		Clock:         clk,
	})
	if err != nil {
		fmt.Fprintf(stderr, "corral dhcp replay: %v\n", err)
		return 2
	}
	r := &replayer{srv: srv, clk: clk, enc: json.NewEncoder(stdout), out: make([]byte, srv.ReplyBufferSize())}
	code := 0
	for _, name := range fs.Args() {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "corral dhcp replay: %v\n", ctx.Err())
			return 1
		}
		if err := r.file(ctx, name); err != nil {
			fmt.Fprintf(stderr, "corral dhcp replay: %s: %v\n", name, err)
			code = 1
		}
	}
	return code
}

// replayer holds the state shared by all files of one run.
type replayer struct {
	srv     *dhcp.Server
	clk     *clock
	enc     *json.Encoder
	out     []byte
	started bool          // a capture timestamp has been seen
	base    time.Duration // first capture timestamp
}

// file replays one FILE.
func (r *replayer) file(ctx context.Context, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	rd := io.MultiReader(bytes.NewReader(head[:n]), f)
	if isPcapMagic(head[:n]) || (n == 4 && bytes.Equal(head, []byte{0x0a, 0x0d, 0x0d, 0x0a})) {
		return r.pcap(ctx, name, rd)
	}
	frame, err := io.ReadAll(io.LimitReader(rd, maxRawFrame+1))
	if err != nil {
		return err
	}
	if len(frame) > maxRawFrame {
		return fmt.Errorf("neither a pcap capture nor a raw frame (more than %d bytes)", maxRawFrame)
	}
	r.clk.now += rawFrameStep
	return r.emit(name, 0, frame)
}

// pcap replays every record of a capture.
func (r *replayer) pcap(ctx context.Context, name string, rd io.Reader) error {
	p, err := newPcapReader(rd)
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rec, err := p.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		if !r.started {
			r.started, r.base = true, rec.ts-r.clk.now
		}
		if t := rec.ts - r.base; t > r.clk.now {
			r.clk.now = t // never backwards: the server holds its time anyway
		}
		if uint32(len(rec.data)) < rec.origLen {
			if err := r.enc.Encode(Line{File: name, Index: i, Verdict: VerdictCaptureTruncated, Replies: []string{}}); err != nil {
				return err
			}
			continue
		}
		if err := r.emit(name, i, rec.data); err != nil {
			return err
		}
	}
}

// emit runs one frame through the server and prints its line.
func (r *replayer) emit(name string, index int, frame []byte) error {
	reply, v := r.srv.HandleFrame(frame, r.out)
	l := Line{File: name, Index: index, Verdict: v.String(), Replies: []string{}}
	if reply != nil {
		l.Replies = append(l.Replies, hex.EncodeToString(reply))
	}
	return r.enc.Encode(l)
}
