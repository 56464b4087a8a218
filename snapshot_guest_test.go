package corral

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/hostnet"
	"github.com/vishvananda/netlink"

	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/snapshot"
	"github.com/corral-vmm/corral/tests/guests"
)

// countStep is how many increments the count guest makes between lines: a
// few lines a second under emulation.
const countStep = 1 << 22

var countLine = regexp.MustCompile(`(?m)^count (\d+) mem (ok|BAD.*)$`)

// counts returns the count lines' values, and whether any said mem BAD.
func counts(out string) (vals []uint64, bad bool) {
	for _, m := range countLine.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		vals = append(vals, v)
		bad = bad || m[2] != "ok"
	}
	return vals, bad
}

// waitCount waits until the console shows a count line above min.
func waitCount(t *testing.T, out *console.Buffer, min uint64, what string) uint64 {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if vals, _ := counts(out.String()); len(vals) > 0 && vals[len(vals)-1] > min {
			return vals[len(vals)-1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: no count above %d within 90s; console:\n%s", what, min, out)
	return 0
}

// settled waits until the console has not grown for a while: what the
// guest wrote before a pause has reached the host.
func settled(out *console.Buffer) string {
	last := out.String()
	for {
		time.Sleep(300 * time.Millisecond)
		s := out.String()
		if s == last {
			return s
		}
		last = s
	}
}

// snapshotCounter boots the count guest up to limit, pauses it after its
// third line and snapshots it into dir. It returns the running (paused)
// machine, its console and the last count it printed before the pause.
func snapshotCounter(t *testing.T, dir string, limit uint64) (*Machine, *console.Buffer, uint64) {
	t.Helper()
	k := guests.BuildT(t, "count")
	m, out := bootGuest(t, Config{Kernel: k, Cmdline: fmt.Sprintf("step=%d limit=%d", countStep, limit), NoInventory: true})
	waitCount(t, out, 2*countStep, "original")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if !m.Paused() {
		t.Fatal("Paused() is false after Pause")
	}
	vals, _ := counts(settled(out))
	saved := vals[len(vals)-1]
	// Nothing runs while paused.
	time.Sleep(500 * time.Millisecond)
	if now, _ := counts(out.String()); now[len(now)-1] != saved {
		t.Fatalf("the paused guest went on counting: %d after %d", now[len(now)-1], saved)
	}
	if err := m.Snapshot(ctx, dir); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return m, out, saved
}

// TestSnapshotRestoreCounter is issue 13's counting guest: snapshot it,
// restore it three times, and each copy goes on from the saved count with
// its memory intact; the original resumes too.
func TestSnapshotRestoreCounter(t *testing.T) {
	testenv.MustHaveKVM(t)
	dir := filepath.Join(t.TempDir(), "snap")
	const limit = 40 * countStep
	m, out, saved := snapshotCounter(t, dir, limit)
	if err := m.Snapshot(context.Background(), filepath.Join(t.TempDir(), "again")); err != nil {
		t.Fatalf("a second snapshot of the paused machine: %v", err)
	}
	if err := m.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	check := func(what string, m *Machine, out *console.Buffer, from uint64) {
		t.Helper()
		e := waitExit(t, m, out)
		if e.Reason != ExitDebug || e.Code != 0 {
			t.Errorf("%s ended with %v; console:\n%s", what, e, out)
		}
		vals, bad := counts(out.String())
		if bad {
			t.Errorf("%s: memory check failed; console:\n%s", what, out)
		}
		var after []uint64
		for _, v := range vals {
			if v > from {
				after = append(after, v)
			}
		}
		// It went on from the saved count: its first line after it is the
		// next step (or the one after, when the pause caught a line half
		// written), never a count from 1.
		if len(after) == 0 || after[0] > from+2*countStep || after[len(after)-1] != limit {
			t.Errorf("%s: counts after %d are %v, want %d.. up to %d", what, from, after, from+countStep, limit)
		}
		if !strings.Contains(out.String(), fmt.Sprintf("count: done %d", limit)) {
			t.Errorf("%s: no 'count: done'; console:\n%s", what, out)
		}
	}
	check("original", m, out, saved)
	for i := 0; i < 3; i++ {
		rout := console.NewBuffer(0)
		r, err := Restore(context.Background(), dir, RestoreConfig{Console: rout, NoInventory: true, VerifyMemory: i == 0})
		if err != nil {
			t.Fatalf("Restore %d: %v", i, err)
		}
		if r.ID() == m.ID() {
			t.Errorf("restored machine has the source's ID %s", r.ID())
		}
		if err := r.Start(context.Background()); err != nil {
			r.Close()
			t.Fatalf("Start of restore %d: %v", i, err)
		}
		check(fmt.Sprintf("restore %d", i), r, rout, saved)
		vals, _ := counts(rout.String())
		if len(vals) > 0 && vals[0] <= saved {
			t.Errorf("restore %d printed count %d, not above the saved %d", i, vals[0], saved)
		}
		r.Close()
	}
}

// TestRestoreTwentyConcurrently restores one snapshot 20 times at once:
// all run, and the memory each adds to this process is far below its
// guest RAM (their pages come from one shared file until written).
func TestRestoreTwentyConcurrently(t *testing.T) {
	testenv.MustHaveKVM(t)
	dir := filepath.Join(t.TempDir(), "snap")
	m, _, saved := snapshotCounter(t, dir, 0)
	m.Close()
	const n = 20
	base := pss(t)
	var wg sync.WaitGroup
	ms := make([]*Machine, n)
	outs := make([]*console.Buffer, n)
	errs := make([]error, n)
	t0 := time.Now()
	for i := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = console.NewBuffer(0)
			r, err := Restore(context.Background(), dir, RestoreConfig{Console: outs[i], NoInventory: true})
			if err == nil {
				if err = r.Start(context.Background()); err != nil {
					r.Close()
				}
			}
			ms[i], errs[i] = r, err
		}()
	}
	wg.Wait()
	restoreTime := time.Since(t0)
	t.Cleanup(func() {
		for _, r := range ms {
			if r != nil {
				r.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i := range ms {
		waitCount(t, outs[i], saved, fmt.Sprintf("restore %d", i))
	}
	added := pss(t) - base
	ram := ms[0].Config().Memory
	t.Logf("%d restores of a %d MiB guest in %v: proportional set size grew %.1f MiB in all, %.2f MiB per VM",
		n, ram>>20, restoreTime.Round(time.Millisecond), float64(added)/(1<<20), float64(added)/n/(1<<20))
	if per := added / n; per > int64(ram/8) {
		t.Errorf("each restored VM added %d KiB, more than 1/8 of its %d MiB of RAM", per>>10, ram>>20)
	}
	for i, o := range outs {
		if _, bad := counts(o.String()); bad {
			t.Errorf("restore %d: memory check failed:\n%s", i, o)
		}
	}
}

// pss is this process's proportional set size in bytes: shared file
// pages count once across their mappings.
func pss(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("smaps_rollup: %q: %v", sc.Text(), err)
			}
			return kb << 10
		}
	}
	t.Fatal("smaps_rollup has no Pss line")
	return 0
}

// TestSnapshotNeedsPause: Snapshot refuses a running machine, Pause and
// Resume refuse an ended one.
func TestSnapshotNeedsPause(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "count")
	m, out := bootGuest(t, Config{Kernel: k, Cmdline: fmt.Sprintf("step=%d limit=%d", countStep, 3*countStep), NoInventory: true})
	if err := m.Snapshot(context.Background(), filepath.Join(t.TempDir(), "s")); !errors.Is(err, ErrNotPaused) {
		t.Errorf("Snapshot of a running machine: %v, want ErrNotPaused", err)
	}
	waitExit(t, m, out)
	if err := m.Pause(context.Background()); !errors.Is(err, ErrEnded) {
		t.Errorf("Pause of an ended machine: %v, want ErrEnded", err)
	}
}

// TestRestoreDamagedSnapshot: a real machine's snapshot, truncated at
// many points or with a byte flipped in each section or in its memory,
// gives a one-line error naming what is wrong, never a guest that runs
// (issue 13).
func TestRestoreDamagedSnapshot(t *testing.T) {
	testenv.MustHaveKVM(t)
	good := filepath.Join(t.TempDir(), "snap")
	m, _, _ := snapshotCounter(t, good, 0)
	m.Close()
	state, err := os.ReadFile(filepath.Join(good, "state"))
	if err != nil {
		t.Fatal(err)
	}
	memory, err := os.ReadFile(filepath.Join(good, "memory"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	type damage struct {
		what          string
		state, memory []byte // memory nil: the good one
		want          string // in the error
	}
	var cases []damage
	// Truncations: at every section's start, end and middle, and at 64
	// points spread over the file.
	cuts := map[int]bool{0: true, 1: true, len(state) - 1: true}
	for i := 0; i < 64; i++ {
		cuts[i*len(state)/64] = true
	}
	for _, name := range snap.Sections() {
		data, err := snap.Section(name)
		if err != nil {
			t.Fatal(err)
		}
		at := bytes.Index(state, data)
		if at < 0 || len(data) == 0 {
			t.Fatalf("section %q not found in the state file", name)
		}
		cuts[at], cuts[at+len(data)/2], cuts[at+len(data)-1] = true, true, true
		flipped := bytes.Clone(state)
		flipped[at+len(data)/2] ^= 0x10
		cases = append(cases, damage{"flipped byte in section " + name, flipped, nil, strconv.Quote(name)})
	}
	snap.Close()
	for cut := range cuts {
		cases = append(cases, damage{fmt.Sprintf("state truncated to %d bytes", cut), state[:cut], nil, "state"})
	}
	// Memory: a flipped byte in a written page (caught by VerifyMemory),
	// and a truncated file (caught at once).
	firstData := bytes.IndexFunc(memory[4096:], func(r rune) bool { return r != 0 }) + 4096
	flippedMem := bytes.Clone(memory)
	flippedMem[firstData] ^= 0x01
	cases = append(cases,
		damage{"flipped byte in memory", state, flippedMem, "checksum mismatch"},
		damage{"memory truncated", state, memory[:len(memory)/2], "memory"})

	for _, c := range cases {
		dir := filepath.Join(t.TempDir(), "bad")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "state"), c.state, 0o644); err != nil {
			t.Fatal(err)
		}
		if c.memory == nil {
			// The memory file is untouched: a link costs nothing.
			if err := os.Link(filepath.Join(good, "memory"), filepath.Join(dir, "memory")); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(filepath.Join(dir, "memory"), c.memory, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Restore(context.Background(), dir, RestoreConfig{NoInventory: true, VerifyMemory: true})
		if err == nil {
			r.Close()
			t.Errorf("%s: Restore succeeded", c.what)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) || !strings.Contains(msg, dir) {
			t.Errorf("%s: error %q, want one line naming %s and %q", c.what, msg, dir, c.want)
		}
		os.RemoveAll(dir)
	}
	t.Logf("%d damaged snapshots refused", len(cases))
}

// TestSnapshotRestoreNIC: a guest that leased its address from the
// built-in DHCP server is snapshotted; the restored copy gets a new host
// side, keeps its MAC, the server's lease table and the host's MAC, and
// receives frames on the new link.
func TestSnapshotRestoreNIC(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "net")
	t.Setenv(hostnet.StateDirEnv, t.TempDir())
	vmEnd, peer := socketPairFiles(t)
	defer peer.Close()
	m, out := bootGuest(t, Config{Kernel: k, Cmdline: "rxcount=2 rxport=9 timeout=120000", Nets: []Net{{File: vmEnd}}, NoInventory: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := out.WaitFor(ctx, "net: rxcount ready on"); err != nil {
		t.Fatalf("%v; console:\n%s", err, out)
	}
	// The plan reserves the guest's address for its MAC, so the table may
	// hold no dynamic record; whatever it holds must come back.
	before := m.Networks()[0]
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if err := m.Snapshot(ctx, dir); err != nil {
		t.Fatal(err)
	}
	m.Close()

	vmEnd2, peer2 := socketPairFiles(t)
	defer peer2.Close()
	rout := console.NewBuffer(0)
	r, err := Restore(ctx, dir, RestoreConfig{Console: rout, NoInventory: true, Nets: []Net{{File: vmEnd2}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	after := r.Networks()[0]
	if after.MAC.String() != before.MAC.String() || after.Guest != before.Guest || after.Host != before.Host {
		t.Errorf("restored NIC %+v, want MAC %s, guest %s, host %s", after, before.MAC, before.Guest, before.Host)
	}
	if len(after.Leases) != len(before.Leases) {
		t.Errorf("restored leases %+v, want %+v", after.Leases, before.Leases)
	}
	for i := range min(len(after.Leases), len(before.Leases)) {
		a, b := after.Leases[i], before.Leases[i]
		if a.IP != b.IP || a.Client != b.Client || a.State != b.State || a.Owner != b.Owner {
			t.Errorf("restored lease %+v, want %+v", a, b)
		}
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The guest's router is the host side's MAC from before the snapshot.
	_, hostMAC := hostnet.MACs(m.ID(), 0)
	for seq := uint32(1); seq <= 2; seq++ {
		var p [4]byte
		binary.BigEndian.PutUint32(p[:], seq)
		if _, err := peer2.Write(udpFrame(after.MAC, hostMAC, after.Host.Addr().As4(), after.Guest.As4(), 40000, 9, p[:])); err != nil {
			t.Fatal(err)
		}
	}
	e := waitExit(t, r, rout)
	if e.Reason != ExitDebug || e.Code != guests.ExitOK || !strings.Contains(rout.String(), "net: rxcount 2 frames") {
		t.Errorf("restored guest ended with %v; console:\n%s", e, rout)
	}
}

// TestSnapshotRestoreNICTap: restored without RestoreConfig.Nets, a NIC
// on a TAP gets a fresh TAP with the saved host address and host MAC (the
// guest's router in its ARP cache), and the guest receives datagrams the
// host sends through it.
func TestSnapshotRestoreNICTap(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "net")
	netnstest.Run(t, func() {
		t.Setenv(hostnet.StateDirEnv, t.TempDir())
		m, out := bootGuest(t, Config{Kernel: k, Cmdline: "rxcount=2 rxport=9 timeout=120000", Nets: []Net{{}}, NoInventory: true})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := out.WaitFor(ctx, "net: rxcount ready on"); err != nil {
			t.Fatalf("%v; console:\n%s", err, out)
		}
		before := m.Networks()[0]
		_, hostMAC := hostnet.MACs(m.ID(), 0)
		if err := m.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "snap")
		if err := m.Snapshot(ctx, dir); err != nil {
			t.Fatal(err)
		}
		m.Close() // its TAP goes with it

		rout := console.NewBuffer(0)
		r, err := Restore(ctx, dir, RestoreConfig{Console: rout, NoInventory: true})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		after := r.Networks()[0]
		if after.Tap == "" || after.MAC.String() != before.MAC.String() || after.Guest != before.Guest || after.Host != before.Host {
			t.Fatalf("restored NIC %+v, want a TAP with MAC %s, guest %s, host %s", after, before.MAC, before.Guest, before.Host)
		}
		link, err := netlink.LinkByName(after.Tap)
		if err != nil {
			t.Fatal(err)
		}
		if got := link.Attrs().HardwareAddr.String(); got != hostMAC.String() {
			t.Errorf("restored TAP %s has MAC %s, want the source's host MAC %s", after.Tap, got, hostMAC)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: after.Guest.AsSlice(), Port: 9})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for seq := uint32(1); seq <= 2; seq++ {
			var p [4]byte
			binary.BigEndian.PutUint32(p[:], seq)
			if _, err := c.Write(p[:]); err != nil {
				t.Fatal(err)
			}
		}
		e := waitExit(t, r, rout)
		if e.Reason != ExitDebug || e.Code != guests.ExitOK || !strings.Contains(rout.String(), "net: rxcount 2 frames") {
			t.Errorf("restored guest ended with %v; console:\n%s", e, rout)
		}
	})
}
