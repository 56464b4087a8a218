package replay

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/dhcp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite golden files")

var (
	nic     = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	srvMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	baseArg = []string{"--server", "10.0.2.2/24", "--server-mac", "02:00:00:00:00:01", "--pool", "10.0.2.15-10.0.2.30",
		"--router", "10.0.2.2", "--dns", "10.0.2.3,10.0.2.4", "--lease", "2h", "--mac", "52:54:00:12:34:56", "--mtu", "1500"}
)

func checksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var sum uint32
	for i := 0; i < len(all); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(all[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// frame wraps a DHCP payload in broadcast Ethernet/IPv4/UDP from the NIC.
func frame(payload []byte) []byte {
	b := append(append(append([]byte{}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), nic...), 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	copy(ip[16:], []byte{255, 255, 255, 255})
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 68)
	binary.BigEndian.PutUint16(udp[2:], 67)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	binary.BigEndian.PutUint16(udp[6:], checksum(ip[12:20], []byte{0, 17, byte(len(udp) >> 8), byte(len(udp))}, udp))
	return append(append(b, ip...), udp...)
}

func dhcpMsg(t *testing.T, mt dhcpv4.MessageType, xid byte, mods ...dhcpv4.Modifier) []byte {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0, 0, 0, xid}),
		dhcpv4.WithHwAddr(nic), dhcpv4.WithMessageType(mt),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return frame(m.ToBytes())
}

// pcapRec is one record to write.
type pcapRec struct {
	ts      time.Duration
	data    []byte
	origLen int // 0 = len(data)
}

// writePcap lays out a pcap file in the given byte order and resolution.
func writePcap(order binary.ByteOrder, nano bool, linkType uint32, recs []pcapRec) []byte {
	h := make([]byte, 24)
	magic := uint32(magicMicro)
	if nano {
		magic = magicNano
	}
	order.PutUint32(h[0:], magic)
	order.PutUint16(h[4:], 2)
	order.PutUint16(h[6:], 4)
	order.PutUint32(h[16:], 65535)
	order.PutUint32(h[20:], linkType)
	for _, r := range recs {
		rh := make([]byte, 16)
		order.PutUint32(rh[0:], uint32(r.ts/time.Second))
		frac := r.ts % time.Second
		if !nano {
			frac /= time.Microsecond
		}
		order.PutUint32(rh[4:], uint32(frac))
		order.PutUint32(rh[8:], uint32(len(r.data)))
		ol := r.origLen
		if ol == 0 {
			ol = len(r.data)
		}
		order.PutUint32(rh[12:], uint32(ol))
		h = append(append(h, rh...), r.data...)
	}
	return h
}

func runMain(t *testing.T, args ...string) (int, []Line, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	var lines []Line
	dec := json.NewDecoder(&out)
	for dec.More() {
		var l Line
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("output is not JSON lines: %v", err)
		}
		lines = append(lines, l)
	}
	return code, lines, errb.String()
}

// handshake returns DISCOVER, REQUEST and a corrupted frame.
func handshakeFrames(t *testing.T) [][]byte {
	discover := dhcpMsg(t, dhcpv4.MessageTypeDiscover, 1)
	request := dhcpMsg(t, dhcpv4.MessageTypeRequest, 2,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 2))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 2, 15))))
	bad := append([]byte{}, discover...)
	bad[24] ^= 0xff // IPv4 header checksum
	return [][]byte{discover, request, bad}
}

func TestReplayPcapVariants(t *testing.T) {
	fr := handshakeFrames(t)
	variants := map[string][]byte{
		"le-usec.pcap": writePcap(binary.LittleEndian, false, 1, []pcapRec{{1e9, fr[0], 0}, {2e9, fr[1], 0}, {3e9, fr[2], 0}}),
		"be-usec.pcap": writePcap(binary.BigEndian, false, 1, []pcapRec{{1e9, fr[0], 0}, {2e9, fr[1], 0}, {3e9, fr[2], 0}}),
		"le-nsec.pcap": writePcap(binary.LittleEndian, true, 1, []pcapRec{{1e9 + 7, fr[0], 0}, {2e9, fr[1], 0}, {3e9, fr[2], 0}}),
		"be-nsec.pcap": writePcap(binary.BigEndian, true, 1, []pcapRec{{1e9, fr[0], 0}, {2e9 + 3, fr[1], 0}, {3e9, fr[2], 0}}),
	}
	dir := t.TempDir()
	for name, data := range variants {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		code, lines, stderr := runMain(t, append(baseArg, path)...)
		if code != 0 || len(lines) != 3 {
			t.Fatalf("%s: exit %d, %d lines, stderr %s", name, code, len(lines), stderr)
		}
		want := []string{"offer", "ack", "drop_ip_checksum"}
		for i, l := range lines {
			if l.File != path || l.Index != i || l.Verdict != want[i] {
				t.Errorf("%s line %d: %+v", name, i, l)
			}
		}
		if len(lines[2].Replies) != 0 {
			t.Errorf("%s: reply to a dropped frame", name)
		}
		for _, l := range lines[:2] {
			if len(l.Replies) != 1 {
				t.Fatalf("%s: %d replies", name, len(l.Replies))
			}
			b, err := hex.DecodeString(l.Replies[0])
			if err != nil {
				t.Fatal(err)
			}
			m, err := dhcpv4.FromBytes(b[42:])
			if err != nil {
				t.Fatalf("%s: reply does not decode: %v", name, err)
			}
			if m.YourIPAddr.String() != "10.0.2.15" || m.IPAddressLeaseTime(0) != 2*time.Hour || len(m.DNS()) != 2 {
				t.Errorf("%s: reply %s", name, m.Summary())
			}
		}
	}
}

// TestReplayGolden pins the exact output for a capture and a raw frame file.
// Regenerate with go test ./dhcp/replay -run TestReplayGolden -update.
func TestReplayGolden(t *testing.T) {
	fr := handshakeFrames(t)
	dir := t.TempDir()
	pcapPath := filepath.Join(dir, "handshake.pcap")
	cut := fr[0][:100]
	if err := os.WriteFile(pcapPath, writePcap(binary.LittleEndian, false, 1,
		[]pcapRec{{10e9, fr[0], 0}, {11e9, fr[1], 0}, {12e9, cut, len(fr[0])}, {13e9, fr[2], 0}}), 0o644); err != nil {
		t.Fatal(err)
	}
	rawPath := filepath.Join(dir, "discover.bin")
	if err := os.WriteFile(rawPath, dhcpMsg(t, dhcpv4.MessageTypeDiscover, 9, dhcpv4.WithBroadcast(true)), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	args := append(append([]string{}, baseArg...), "--reserve", "52:54:00:12:34:56=10.0.2.50,guest", "--domain", "corral.test", pcapPath, rawPath)
	if code := Main(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	got := strings.ReplaceAll(out.String(), dir+"/", "")
	golden := filepath.Join("testdata", "replay.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
	// Independently of the golden file: the keys and verdicts.
	lines := strings.Split(strings.TrimSpace(got), "\n")
	verdicts := []string{"offer", "nak", "capture_truncated", "drop_ip_checksum", "offer"}
	if len(lines) != len(verdicts) {
		t.Fatalf("%d lines", len(lines))
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if len(m) != 4 || m["verdict"] != verdicts[i] || m["file"] == nil || m["index"] == nil || m["replies"] == nil {
			t.Errorf("line %d: %s", i, l)
		}
	}
}

func TestReplayErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fr := handshakeFrames(t)
	good := writePcap(binary.LittleEndian, false, 1, []pcapRec{{1e9, fr[0], 0}})
	tests := []struct {
		name    string
		args    []string
		code    int
		lines   int
		stderrs string
	}{
		{"no server", []string{"--pool", "10.0.2.15-10.0.2.30", write("a.pcap", good)}, 2, 0, "required"},
		{"no files", baseArg, 2, 0, "no FILE"},
		{"bad reserve", append(append([]string{}, baseArg...), "--reserve", "nonsense", write("b.pcap", good)), 2, 0, "MAC=IP"},
		{"bad config", []string{"--server", "10.0.2.2/24", "--pool", "10.0.3.1-10.0.3.9", write("c.pcap", good)}, 2, 0, "invalid config"},
		{"missing file", append(append([]string{}, baseArg...), filepath.Join(dir, "nope")), 1, 0, "no such file"},
		{"pcapng", append(append([]string{}, baseArg...), write("d.pcapng", []byte{0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})), 1, 0, "pcapng"},
		{"link type 113", append(append([]string{}, baseArg...), write("e.pcap", writePcap(binary.LittleEndian, false, 113, nil))), 1, 0, "link type 113"},
		{"FCS flag", append(append([]string{}, baseArg...), write("f.pcap", writePcap(binary.LittleEndian, false, 1|1<<26|4<<28, nil))), 1, 0, "FCS"},
		{"truncated record", append(append([]string{}, baseArg...), write("g.pcap", good[:len(good)-5])), 1, 0, "cut short"},
		{"huge record", append(append([]string{}, baseArg...), write("h.pcap", func() []byte {
			b := append([]byte{}, good...)
			binary.LittleEndian.PutUint32(b[24+8:], 1<<30)
			return b
		}())), 1, 0, "exceeds"},
		{"good file after a bad one", append(append([]string{}, baseArg...), filepath.Join(dir, "nope"), write("i.pcap", good)), 1, 1, "no such file"},
		{"raw frame too big", append(append([]string{}, baseArg...), write("j.bin", make([]byte, maxRawFrame+1))), 1, 0, "more than"},
		{"empty raw frame", append(append([]string{}, baseArg...), write("k.bin", nil)), 0, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, lines, stderr := runMain(t, tc.args...)
			if code != tc.code || len(lines) != tc.lines || !strings.Contains(stderr, tc.stderrs) {
				t.Errorf("exit %d (want %d), %d lines (want %d), stderr %q (want %q)", code, tc.code, len(lines), tc.lines, stderr, tc.stderrs)
			}
		})
	}
}

// The replay clock follows capture timestamps: a lease expires between
// records two hours apart.
func TestReplayClock(t *testing.T) {
	fr := handshakeFrames(t)
	renew := func(xid byte) []byte {
		m, _ := dhcpv4.New(dhcpv4.WithTransactionID(dhcpv4.TransactionID{0, 0, 0, xid}), dhcpv4.WithHwAddr(nic),
			dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 2, 15))))
		return frame(m.ToBytes())
	}
	otherFrame := func(id byte) []byte {
		mac := net.HardwareAddr{2, 0, 0, 0, 0, id}
		m, _ := dhcpv4.New(dhcpv4.WithTransactionID(dhcpv4.TransactionID{0, 0, 0, id}), dhcpv4.WithHwAddr(mac),
			dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 2, 15))))
		b := frame(m.ToBytes())
		copy(b[6:12], mac)
		return b
	}
	p := filepath.Join(t.TempDir(), "clock.pcap")
	os.WriteFile(p, writePcap(binary.LittleEndian, false, 1, []pcapRec{
		{100e9, fr[0], 0}, {101e9, fr[1], 0}, // bound for 2h at t=101s
		{102e9, otherFrame(7), 0},            // another client wants .15: gets something else
		{101e9 + 3*3600e9, otherFrame(8), 0}, // 3h later the lease is over: .15 is free
		{101e9 + 3*3600e9 + 1e9, renew(8), 0},
	}), 0o644)
	args := append([]string{"--server", "10.0.2.2/24", "--pool", "10.0.2.15-10.0.2.30", "--lease", "2h", "--authoritative"}, p)
	code, lines, stderr := runMain(t, args...)
	if code != 0 || len(lines) != 5 {
		t.Fatalf("exit %d lines %d: %s", code, len(lines), stderr)
	}
	yi := func(l Line) string {
		b, _ := hex.DecodeString(l.Replies[0])
		m, err := dhcpv4.FromBytes(b[42:])
		if err != nil {
			t.Fatal(err)
		}
		return m.YourIPAddr.String()
	}
	if yi(lines[2]) == "10.0.2.15" || yi(lines[3]) != "10.0.2.15" || lines[4].Verdict != "nak" {
		t.Errorf("clock not followed: %v %v %s", yi(lines[2]), yi(lines[3]), lines[4].Verdict)
	}
	// Without --authoritative the client whose record went with its lease is
	// not answered at all (RFC 2131 4.3.2).
	code, lines, stderr = runMain(t, append(args[:len(args)-2:len(args)-2], p)...)
	if code != 0 || len(lines) != 5 || lines[4].Verdict != "ignored_unknown_client" || len(lines[4].Replies) != 0 {
		t.Errorf("not authoritative: exit %d, %d lines, last %+v: %s", code, len(lines), lines[len(lines)-1], stderr)
	}
}

// FuzzPcap feeds arbitrary bytes through the pcap reader into a server.
func FuzzPcap(f *testing.F) {
	fr := [][]byte{frame(make([]byte, 300)), {1, 2, 3}}
	f.Add(writePcap(binary.LittleEndian, false, 1, []pcapRec{{1e9, fr[0], 0}, {2e9, fr[1], 5}}))
	f.Add(writePcap(binary.BigEndian, true, 1, []pcapRec{{1e9, fr[0], 0}}))
	f.Add(writePcap(binary.BigEndian, false, 1, nil)[:20])
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a})
	huge := writePcap(binary.LittleEndian, false, 1, []pcapRec{{1e9, fr[1], 0}})
	binary.LittleEndian.PutUint32(huge[32:], 0xffffffff)
	f.Add(huge)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := newPcapReader(bytes.NewReader(data))
		if err == nil {
			for n := 0; ; n++ {
				rec, err := p.next()
				if err != nil {
					break
				}
				if len(rec.data) > maxRecordLen || n > len(data)/pcapRecordHeaderLen {
					t.Fatalf("record %d of %d bytes from %d bytes of input", n, len(rec.data), len(data))
				}
			}
		}
		// The same bytes through the replay path: every line is valid JSON
		// with the four keys.
		srv, err := dhcp.New(dhcp.Config{Server: netip.MustParsePrefix("10.0.2.2/24"), ServerMAC: srvMAC,
			PoolFirst: netip.MustParseAddr("10.0.2.15"), PoolLast: netip.MustParseAddr("10.0.2.30"), AllowAnyMAC: true})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		r := &replayer{srv: srv, clk: &clock{}, enc: json.NewEncoder(&out), out: make([]byte, srv.ReplyBufferSize())}
		_ = r.pcap(context.Background(), "fuzz", bytes.NewReader(data))
		dec := json.NewDecoder(&out)
		for dec.More() {
			var m map[string]any
			if err := dec.Decode(&m); err != nil || len(m) != 4 {
				t.Fatalf("bad output line %v: %v", m, err)
			}
		}
	})
}

func TestUsage(t *testing.T) {
	code, _, stderr := runMain(t, "-h")
	if code != 0 || !strings.Contains(stderr, "--server") && !strings.Contains(stderr, "-server") {
		t.Errorf("-h: exit %d, %s", code, stderr)
	}
	if code, _, _ := runMain(t); code != 2 {
		t.Errorf("no args: exit %d", code)
	}
}
