package agentvsqemu

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/netnstest"
)

var (
	flagMQRuns      = flag.Int("mqruns", 3, "TestLinuxMQ: rounds (corral and QEMU alternating)")
	flagMQDisk      = flag.Int("mqdisk", 256, "TestLinuxMQ: MiB in the raw disk image")
	flagMQStream    = flag.Int("mqstream", 128, "TestLinuxMQ: MiB the guest streams to the host")
	flagMQConns     = flag.Int("mqconns", 2, "TestLinuxMQ: TCP connections of the stream")
	flagMQCPUs      = flag.Int("mqcpus", 2, "TestLinuxMQ: vCPUs of both guests")
	flagMQMem       = flag.Int("mqmem", 512, "TestLinuxMQ: MiB of guest RAM")
	flagMQBlkQueues = flag.Int("mqblkq", 2, "TestLinuxMQ: virtio-blk request queues on both")
	flagMQNetQueues = flag.Int("mqnetq", 1, "TestLinuxMQ: virtio-net queue pairs on both (corral gets them through -mqcorralnet)")
	flagMQCorralNet = flag.String("mqcorralnet", "", "TestLinuxMQ: options appended to corral's --net (e.g. its queue count)")
	flagMQCorralArg = flag.String("mqcorralargs", "", "TestLinuxMQ: more arguments of corral run, space-separated (e.g. --seccomp log)")
	flagMQCorralEnv = flag.String("mqcorralenv", "", "TestLinuxMQ: also run corral with these NAME=VALUE,... in its environment (a row of its own, e.g. GOMAXPROCS=4)")
	flagMQQEMU      = flag.String("mqqemu", "pc", "TestLinuxMQ: QEMU -M")
	flagMQPprof     = flag.String("mqpprof", "", "TestLinuxMQProfile: CPU profiles of an in-process Corral to FILE-blk.pprof and FILE-net.pprof (also printed base64)")
	flagTCPSend     = flag.String("tcpsend", "", "TestLinuxMQ: static tcpsend binary (CGO_ENABLED=0 go build ./bench/tcpsend)")
)

// The stream's addresses, the same in every run: each run has a network
// namespace of its own.
const (
	mqHost     = "10.202.0.1"
	mqGuest    = "10.202.0.2"
	mqPort     = "5201"
	mqMAC      = "52:54:00:20:20:02"
	mqQEMUTap  = "qtap0"
	mqSinkAddr = mqHost + ":" + mqPort
)

// mqSetup is what TestLinuxMQ and its profile share.
type mqSetup struct {
	setup
	disk, initrd string
}

func needMQ(t *testing.T) mqSetup {
	t.Helper()
	s := needSetup(t)
	ts := *flagTCPSend
	if ts == "" {
		ts = os.Getenv("TCPSEND")
	}
	if ts == "" {
		t.Skip("a benchmark (bench/linux-mq.sh runs it): needs a static tcpsend: -tcpsend or $TCPSEND (CGO_ENABLED=0 go build ./bench/tcpsend)")
	}
	tsb, err := os.ReadFile(ts)
	if err != nil {
		t.Fatal(err)
	}
	m := mqSetup{setup: s}
	m.disk = filepath.Join(shareFile(t, *flagMQDisk), "file")
	init := MQInit(MQGuest{IP: mqGuest + "/24", Sink: mqSinkAddr, Bytes: int64(*flagMQStream) << 20, Conns: *flagMQConns, DiskMiB: *flagMQDisk})
	m.initrd = filepath.Join(t.TempDir(), "mq.cpio")
	f, err := os.Create(m.initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteMQInitramfs(f, s.busybox, tsb, init); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return m
}

// corralArgs is `corral run`'s command line for the benchmark.
func (m mqSetup) corralArgs() []string {
	nt := fmt.Sprintf("host=%s/24,ip=%s,mac=%s,dhcp=off", mqHost, mqGuest, mqMAC)
	if *flagMQCorralNet != "" {
		nt += "," + *flagMQCorralNet
	}
	args := []string{"run", "--kernel", m.kernel, "--initrd", m.initrd, "--cmdline", m.cmdline(),
		"--cpus", fmt.Sprint(*flagMQCPUs), "--memory", fmt.Sprintf("%dM", *flagMQMem),
		"--disk", fmt.Sprintf("%s,ro,queues=%d", m.disk, *flagMQBlkQueues), "--net", nt}
	return append(args, strings.Fields(*flagMQCorralArg)...)
}

func (m mqSetup) qemuArgs() []string {
	return MQQEMU{Machine: *flagMQQEMU, Kernel: m.kernel, Initrd: m.initrd, Cmdline: m.cmdline(), MemoryMB: *flagMQMem,
		CPUs: *flagMQCPUs, Disk: m.disk, BlkQueues: *flagMQBlkQueues, Tap: mqQEMUTap, NetQueues: *flagMQNetQueues, MAC: mqMAC, CPU: m.qemuCPU}.Args()
}

// addQEMUTap creates QEMU's TAP in the current network namespace, with
// the host's address, multiqueue when it will have more than one pair.
func addQEMUTap(queues int) error {
	la := netlink.NewLinkAttrs()
	la.Name = mqQEMUTap
	tap := &netlink.Tuntap{LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI}
	if queues > 1 {
		tap.Queues, tap.Flags = queues, netlink.TUNTAP_MULTI_QUEUE_DEFAULTS
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("adding TAP %s: %w", mqQEMUTap, err)
	}
	for _, f := range tap.Fds {
		f.Close() // persistent: QEMU attaches its own queues
	}
	addr, err := netlink.ParseAddr(mqHost + "/24")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(tap, addr); err != nil {
		return fmt.Errorf("address on %s: %w", mqQEMUTap, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return fmt.Errorf("%s up: %w", mqQEMUTap, err)
	}
	return nil
}

// mqRun is one VMM run of the benchmark.
type mqRun struct {
	wall, cpu time.Duration
	console   *LineTimer
	sink      SinkResult
	phases    map[string]Phase
	info      MQInfo
	hostNet   string // the netns's interfaces and TCP counters as the stream ended
}

// markHook is a console writer that calls fn once, right after mark has
// appeared in what the LineTimer was given.
type markHook struct {
	lt   *LineTimer
	mark int
	fn   func()
	done bool
}

func (h *markHook) Write(p []byte) (int, error) {
	n, err := h.lt.Write(p)
	if !h.done && !h.lt.At[h.mark].IsZero() {
		h.done = true
		h.fn()
	}
	return n, err
}

// snmpFields picks OutSegs and RetransSegs from the Tcp header and value
// lines of /proc/net/snmp run together.
func snmpFields(s string) string {
	f := strings.Fields(s)
	if len(f) < 2 {
		return s
	}
	i := slices.Index(f[1:], "Tcp:") + 1
	if i <= 0 || len(f) != 2*i {
		return s
	}
	var out []string
	for k := 1; k < i; k++ {
		if f[k] == "OutSegs" || f[k] == "RetransSegs" || f[k] == "InSegs" {
			out = append(out, f[k]+"="+f[i+k])
		}
	}
	return strings.Join(out, " ")
}

// netnsStats returns the interfaces (but lo) and the Tcp counters of the
// network namespace of thread tid of this process: while a VM runs, its
// TAP's counters (Corral's TAP vanishes with the VM).
func netnsStats(tid int) string {
	var out []string
	dir := fmt.Sprintf("/proc/self/task/%d/net/", tid)
	if b, err := os.ReadFile(dir + "dev"); err == nil {
		for _, l := range strings.Split(string(b), "\n")[2:] {
			if f := strings.Fields(l); len(f) > 0 && f[0] != "lo:" {
				out = append(out, strings.Join(f, " "))
			}
		}
	}
	if b, err := os.ReadFile(dir + "snmp"); err == nil {
		var tcp []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Tcp:") {
				tcp = append(tcp, l)
			}
		}
		out = append(out, "TCP "+snmpFields(strings.Join(tcp, " ")))
	}
	return strings.Join(out, " | ")
}

// hostSeconds is phase name's time on the host's clock, from its start
// line's arrival to its result line's (0 when either is missing).
func (r mqRun) hostSeconds(name string) float64 {
	i := slices.Index(MQPhases, name)
	d, ok := r.console.Between(2*i, 2*i+1)
	if !ok {
		return 0
	}
	return d.Seconds()
}

// runMQ runs the VMM (name and args) in a fresh network namespace with
// the sink listening (and QEMU's TAP made first when tap is set), and
// parses what the guest reported.
func runMQ(t *testing.T, tap bool, env []string, name string, args ...string) (r mqRun, err error) {
	netnstest.Run(t, func() {
		if tap {
			if err = addQEMUTap(*flagMQNetQueues); err != nil {
				return
			}
		}
		var sink *Sink
		if sink, err = NewSink("0.0.0.0:" + mqPort); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		if env != nil {
			cmd.Env = append(os.Environ(), env...)
		}
		r.console = NewLineTimer(MQMarks()...)
		tid := unix.Gettid() // netnstest.Run's locked thread, in the namespace
		hook := &markHook{lt: r.console, mark: 2*slices.Index(MQPhases, PhaseTCP) + 1, fn: func() { r.hostNet = netnsStats(tid) }}
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = hook, &stderr
		t0 := time.Now()
		err = cmd.Run()
		r.wall = time.Since(t0)
		r.sink = sink.Close()
		if cmd.ProcessState != nil {
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
		}
		if err != nil {
			err = fmt.Errorf("%s: %w; stderr: %s; console ends:\n%s", filepath.Base(name), err, tail([]byte(stderr.String()), 8), tail(r.console.Bytes(), 15))
			return
		}
		err = r.check()
	})
	return r, err
}

// check parses the console and checks that the guest saw the queue
// counts asked for and that the sink got the whole stream.
func (r *mqRun) check() error {
	var err error
	r.phases, r.info, err = ParseMQ(r.console.Bytes())
	if err != nil {
		return fmt.Errorf("%w\nconsole ends:\n%s", err, tail(r.console.Bytes(), 15))
	}
	if r.info.NProc != *flagMQCPUs || r.info.VdaQueues != *flagMQBlkQueues || r.info.RxQueues != *flagMQNetQueues || r.info.TxQueues != *flagMQNetQueues {
		return fmt.Errorf("guest sees %+v; want %d CPUs, %d blk queues, %d net queue pairs", r.info, *flagMQCPUs, *flagMQBlkQueues, *flagMQNetQueues)
	}
	if want := int64(*flagMQStream) << 20; r.sink.Bytes != want || r.sink.Err != nil {
		return fmt.Errorf("sink got %d of %d bytes over %d connections: %v", r.sink.Bytes, want, r.sink.Conns, r.sink.Err)
	}
	for _, p := range MQPhases {
		if _, ok := r.phases[p]; !ok {
			return fmt.Errorf("no result for phase %s\nconsole ends:\n%s", p, tail(r.console.Bytes(), 15))
		}
	}
	return nil
}

// TestLinuxMQ: issue 15's Linux multiqueue figures, `corral run` against
// QEMU (-mqqemu) with the same kernel, initramfs, vCPUs, memory and queue
// counts, alternating which goes first each round.
func TestLinuxMQ(t *testing.T) {
	m := needMQ(t)
	t.Logf("corral %s", strings.Join(m.corralArgs(), " "))
	t.Logf("qemu %s", strings.Join(m.qemuArgs(), " "))
	type series struct {
		guest, host map[string][]float64 // MiB/s by phase, guest clock and host clock
		sink        []float64            // tcp MiB/s on the sink's clock
		wall, cpu   []float64            // VMM process, s
	}
	newSeries := func() *series {
		return &series{guest: map[string][]float64{}, host: map[string][]float64{}}
	}
	rows := map[string]*series{"corral": newSeries(), "qemu": newSeries()}
	add := func(row string, i int, r mqRun, err error) {
		if err != nil {
			t.Errorf("round %d: %s: %v", i, row, err)
			return
		}
		w := rows[row]
		var line []string
		for _, p := range MQPhases {
			ph := r.phases[p]
			w.guest[p] = append(w.guest[p], ph.MiBps())
			hs := r.hostSeconds(p)
			if hs > 0 {
				w.host[p] = append(w.host[p], float64(ph.Bytes)/(1<<20)/hs)
			}
			line = append(line, fmt.Sprintf("%s %.1f (host %.1f)", p, ph.MiBps(), float64(ph.Bytes)/(1<<20)/hs))
		}
		w.sink = append(w.sink, r.sink.MiBps())
		w.wall, w.cpu = append(w.wall, r.wall.Seconds()), append(w.cpu, r.cpu.Seconds())
		fmt.Printf("%s sample round=%d vmm=%s %s; sink %.1f MiB/s; start→exit %.1f s, VMM CPU %.1f s\n",
			Marker, i, row, strings.Join(line, ", "), r.sink.MiBps(), r.wall.Seconds(), r.cpu.Seconds())
		if i == 0 {
			t.Logf("%s guest: %+v", row, r.info)
		}
		var reqs []string
		for _, p := range MQPhases[:3] {
			kib, n := r.info.AvgReadKiB(p)
			reqs = append(reqs, fmt.Sprintf("%s %d reads of %.0f KiB", p, n, kib))
		}
		t.Logf("round %d %s: vda %s; guest TCP %s; host: %s", i, row, strings.Join(reqs, ", "), snmpFields(r.info.SNMP), r.hostNet)
	}
	// The VMM rows: corral, corral with -mqcorralenv, qemu.
	type vmm struct {
		name string
		env  []string
		qemu bool
	}
	vmms := []vmm{{name: "corral"}}
	if *flagMQCorralEnv != "" {
		vmms = append(vmms, vmm{name: "corral " + *flagMQCorralEnv, env: strings.Split(*flagMQCorralEnv, ",")})
		rows[vmms[1].name] = newSeries()
	}
	vmms = append(vmms, vmm{name: "qemu", qemu: true})
	for i := 0; i < *flagMQRuns; i++ {
		order := slices.Clone(vmms)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, v := range order {
			var r mqRun
			var err error
			if v.qemu {
				r, err = runMQ(t, true, nil, m.qemu, m.qemuArgs()...)
			} else {
				r, err = runMQ(t, false, v.env, m.corral, m.corralArgs()...)
			}
			add(v.name, i, r, err)
		}
	}
	q := rows["qemu"]
	head := []string{"MiB/s (guest clock)"}
	for _, v := range vmms {
		head = append(head, v.name)
	}
	for _, v := range vmms[:len(vmms)-1] {
		head = append(head, v.name+"/qemu", "host clock")
	}
	var out [][]string
	line := func(name string, digits int, get func(*series) []float64) {
		l := []string{name}
		for _, v := range vmms {
			l = append(l, Summarize(get(rows[v.name])).Format(digits))
		}
		for _, v := range vmms[:len(vmms)-1] {
			l = append(l, Ratio(Summarize(get(rows[v.name])), Summarize(get(q))), "")
		}
		out = append(out, l)
	}
	for _, p := range MQPhases {
		line(p, 1, func(s *series) []float64 { return s.guest[p] })
		// The host clock's ratio beside the guest clock's.
		for k, v := range vmms[:len(vmms)-1] {
			out[len(out)-1][len(vmms)+2*k+2] = Ratio(Summarize(rows[v.name].host[p]), Summarize(q.host[p]))
		}
	}
	line("tcp, sink's clock", 1, func(s *series) []float64 { return s.sink })
	line("start→exit s", 1, func(s *series) []float64 { return s.wall })
	line("VMM CPU s", 1, func(s *series) []float64 { return s.cpu })
	table(fmt.Sprintf("linux-mq: %d vCPUs, %d MiB RAM, %d MiB disk with %d queues, %d MiB TCP over %d connections and %d queue pairs; corral run vs qemu -M %s",
		*flagMQCPUs, *flagMQMem, *flagMQDisk, *flagMQBlkQueues, *flagMQStream, *flagMQConns, *flagMQNetQueues, *flagMQQEMU), head, out)
}

// lockedWriter serialises a LineTimer's writes with reads of its marks.
type lockedWriter struct {
	mu sync.Mutex
	lt *LineTimer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lt.Write(p)
}

// seen reports whether mark i has appeared.
func (w *lockedWriter) seen(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.lt.At[i].IsZero()
}

// TestLinuxMQProfile runs the benchmark's guest in this process through
// the corral package under Go's CPU profiler, one profile over the three
// disk phases and one over the TCP stream, to say where Corral's time
// goes; only with -mqpprof.
func TestLinuxMQProfile(t *testing.T) {
	if *flagMQPprof == "" {
		t.Skip("only with -mqpprof FILE")
	}
	m := needMQ(t)
	netnstest.Run(t, func() {
		sink, err := NewSink("0.0.0.0:" + mqPort)
		if err != nil {
			t.Fatal(err)
		}
		con := &lockedWriter{lt: NewLineTimer(MQMarks()...)}
		vm, err := corral.New(corral.Config{Kernel: m.kernel, Initrd: m.initrd, Cmdline: m.cmdline(), CPUs: *flagMQCPUs,
			Memory: uint64(*flagMQMem) << 20, Console: con,
			Disks: []corral.Disk{{Path: m.disk, ReadOnly: true, Queues: *flagMQBlkQueues}},
			Nets: []corral.Net{{Host: netip.MustParsePrefix(mqHost + "/24"), IP: netip.MustParseAddr(mqGuest),
				MAC: must(net.ParseMAC(mqMAC)), NoDHCP: true, Queues: *flagMQNetQueues}}})
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Close()
		if err := vm.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Mark 2i is phase i's start, 2i+1 its result: blk is phases 0-2,
		// net phase 3.
		spans := []struct {
			name       string
			start, end int
		}{{"blk", 0, 5}, {"net", 6, 7}}
		deadline := time.Now().Add(*flagTimeout)
		wait := func(mark int) {
			for !con.seen(mark) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q on the console within %v; it ends:\n%s", con.lt.Marks[mark], *flagTimeout, tail(con.lt.Bytes(), 15))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		for _, sp := range spans {
			wait(sp.start)
			before := vm.Exits()
			path := *flagMQPprof + "-" + sp.name + ".pprof"
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			wait(sp.end)
			pprof.StopCPUProfile()
			f.Close()
			var exits []string
			for r, n := range vm.Exits() {
				if d := n - before[r]; d > 0 {
					exits = append(exits, fmt.Sprintf("%s %d", r, d))
				}
			}
			slices.Sort(exits)
			t.Logf("%s: %.1f s profiled; vCPU exits to the VMM: %s", path, time.Since(t0).Seconds(), strings.Join(exits, ", "))
			printBase64(t, path)
		}
		ex, err := vm.Wait()
		r := mqRun{console: con.lt, sink: sink.Close()}
		t.Logf("exit %+v, %v; sink %+v", ex, err, r.sink)
		if err := r.check(); err != nil {
			t.Error(err)
		}
		for _, p := range MQPhases {
			t.Logf("in process: %s %.1f MiB/s", p, r.phases[p].MiBps())
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
