package agentvsqemu

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

var (
	flagCorral  = flag.String("corral", "", "corral binary (default $CORRAL, else corral on PATH)")
	flagRuns    = flag.Int("runs", 5, "rounds of the exec measurement (corral and QEMU alternating)")
	flagRuns9p  = flag.Int("runs9p", 3, "rounds of the 9p read")
	flagSizeMiB = flag.Int("size", 256, "MiB in the 9p file")
	flagQEMU9p  = flag.String("qemu9p", "pc;microvm,pcie=on", "QEMU machines (-M) for the 9p read, ';'-separated")
	flagPprof   = flag.String("pprof", "", "TestProfile: write CPU profiles of an in-process Corral (agentvm) to FILE-exec.pprof and FILE-9p.pprof and print them base64 on stdout")
	flagTimeout = flag.Duration("vmtimeout", 5*time.Minute, "bound on one VM's run")
	// A/B rows of the 9p read: another corral binary (a baseline build),
	// and the -corral binary with extra environment (GOMAXPROCS=2...).
	flagCorralBase = flag.String("corralbase", "", "Test9pRead: also measure this corral binary (row \"corral base\")")
	flagCorralEnv  = flag.String("corralenv", "", "Test9pRead: also measure -corral (and -corralbase) with these NAME=VALUE,... in the environment")
)

// setup is what the measurements need, found once per test.
type setup struct {
	kernel, agent, corral, qemu string
	busybox                     []byte
	extra                       string // kernel parameters this host needs beyond kernel.CmdlinePlain
	qemuCPU                     string // QEMU's -cpu for this host's test kernel
}

// hostKernel fills in s's kernel ($CORRAL_KERNEL, else the cached test
// kernel this host needs: kernel.FindHost), the parameters it needs beyond
// the plain command line (a nested KVM's, and $CORRAL_TCGKVM_CMDLINE's) and
// QEMU's CPU model for it.
func (s *setup) hostKernel(t *testing.T) {
	t.Helper()
	c, err := kernel.ChooseHost()
	if err != nil {
		t.Fatal(err)
	}
	if s.kernel = os.Getenv("CORRAL_KERNEL"); s.kernel == "" {
		if s.kernel, _, err = kernel.FindHost(); err != nil {
			testenv.Missing(t, testenv.Tools, "needs the test kernel ($CORRAL_KERNEL or %s): %v", c.BuildHint(), err)
		}
	}
	full, err := kernel.HostCmdline()
	if err != nil {
		t.Fatal(err)
	}
	s.extra = strings.TrimSpace(strings.TrimPrefix(full, kernel.CmdlinePlain))
	s.qemuCPU = c.QEMUCPU()
}

// execQuiet is what corral exec adds to the kernel's parameters
// (execKernelParams in cmd/corral): a quiet boot, whose ~160 console lines
// cost either VMM's guest seconds here.
const execQuiet = "quiet"

// verbose brings the boot messages back for a run that reads the printk
// line "Run /init" (InitToCommand), under both VMMs.
const verbose = "loglevel=7"

// cmdline is the QEMU guest's command line: the one corral exec gives
// this kernel, before the agent's own keys.
func (s setup) cmdline() string {
	return strings.TrimSpace(kernel.CmdlinePlain + " " + execQuiet + " " + s.extra)
}

func needSetup(t *testing.T) setup {
	t.Helper()
	var s setup
	// A benchmark, not a test: without the binaries its script builds it
	// skips, whatever $CORRAL_REQUIRE says.
	if s.agent = os.Getenv(agentvm.AgentEnv); s.agent == "" {
		t.Skipf("a benchmark (bench/agent-vs-qemu.sh, bench/linux-mq.sh run it): needs a static guest agent in $%s (CGO_ENABLED=0 go build ./cmd/corral-agent)", agentvm.AgentEnv)
	}
	s.corral = corralBinary(t)
	testenv.MustHaveKVM(t)
	s.hostKernel(t)
	if s.qemu = os.Getenv("QEMU"); s.qemu == "" {
		s.qemu = testenv.MustHaveQEMU(t)
	}
	testenv.MustHaveFile(t, rootfs.DefaultBusybox, "busybox-static")
	var err error
	if s.busybox, err = os.ReadFile(rootfs.DefaultBusybox); err != nil {
		t.Fatal(err)
	}
	return s
}

// initrd writes a QEMU guest initramfs with init as /init.
func (s setup) initrd(t *testing.T, name, init string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteInitramfs(f, s.busybox, init); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// result is one VMM process's run.
type result struct {
	wall    time.Duration // fork/exec to reaped
	cpu     time.Duration // user + system of the process
	minflt  int64         // the process's minor page faults (guest memory's first touches among them)
	majflt  int64         // and major ones
	stdout  []byte
	console []byte // corral: its --console file; QEMU: its stdout
	// hugeMiB and rssMiB are the most AnonHugePages and Rss of the process
	// seen (smaps_rollup, sampled each second): how much of the guest's
	// RAM the host backs with transparent huge pages.
	hugeMiB, rssMiB float64
	// hostRead is the host's time from ReadStartMsg to the read's
	// result line on stdout (0: not both seen): the guest's clock is
	// checked against it.
	hostRead time.Duration
}

// timed runs name with args and measures it from just before the fork to
// the reaping; a non-zero exit is an error naming the end of stderr.
func timed(name string, args ...string) (result, error) {
	return timedEnv(nil, name, args...)
}

// timedEnv is timed with env added to the process's environment.
func timedEnv(env []string, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stderr bytes.Buffer
	stdout := NewLineTimer(ReadStartMsg, Marker+" read ")
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	t0 := time.Now()
	err := cmd.Start()
	var huge, rss float64
	if err == nil {
		stop, sampled := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					h, r := smapsMiB(cmd.Process.Pid)
					huge, rss = max(huge, h), max(rss, r)
				}
			}
		}()
		err = cmd.Wait()
		close(stop)
		<-sampled
	}
	r := result{wall: time.Since(t0), stdout: stdout.Bytes(), hugeMiB: huge, rssMiB: rss}
	r.hostRead, _ = stdout.Between(0, 1)
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w; stderr: %s; stdout ends: %s", filepath.Base(name), err, tail(stderr.Bytes(), 8), tail(stdout.Bytes(), 8))
	}
	return r, nil
}

// smapsMiB returns the process's AnonHugePages and Rss in MiB (0 if
// it is gone).
func smapsMiB(pid int) (huge, rss float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		var kb float64
		fmt.Sscan(f[1], &kb)
		switch f[0] {
		case "AnonHugePages:":
			huge = kb / 1024
		case "Rss:":
			rss = kb / 1024
		}
	}
	return huge, rss
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// corralExec runs corral exec with its console in a file, which the
// result holds.
func (s setup) corralExec(t *testing.T, args ...string) (result, error) {
	return s.corralExecWith(t, s.corral, nil, args...)
}

// corralExecWith is corralExec with another binary and extra environment.
func (s setup) corralExecWith(t *testing.T, bin string, env []string, args ...string) (result, error) {
	con := filepath.Join(t.TempDir(), "console")
	// A boot each time, as QEMU's: TestWarmExec measures warm restores.
	// --workdir /: the test's directory may be under /tmp, the guest's own.
	all := []string{"exec", "--cold", "--console", con, "--workdir", "/"}
	if s.extra != "" {
		all = append(all, "--cmdline", s.extra)
	}
	r, err := timedEnv(env, bin, append(all, args...)...)
	r.console, _ = os.ReadFile(con)
	if err != nil {
		return r, fmt.Errorf("%w\nconsole ends:\n%s", err, tail(r.console, 15))
	}
	return r, nil
}

// runQEMU runs q, its Cmdline appended to s.cmdline(); it must have
// powered off (not panicked or been killed).
func (s setup) runQEMU(q QEMU) (result, error) {
	q.Kernel, q.Cmdline, q.MemoryMB, q.CPU = s.kernel, strings.TrimSpace(s.cmdline()+" "+q.Cmdline), int(corral.DefaultMemory>>20), s.qemuCPU
	r, err := timed(s.qemu, q.Args()...)
	r.console = r.stdout
	if err == nil && !bytes.Contains(r.console, []byte("reboot: Power down")) {
		err = fmt.Errorf("qemu -M %s: no power-off on the console; it ends:\n%s", q.Machine, tail(r.console, 15))
	}
	return r, err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestExec: `corral exec -- true` against QEMU microvm with an init that
// runs true, start to exit; then KmsgCmd under both to get the
// guest's time from "Run /init" to the command.
func TestExec(t *testing.T) {
	s := needSetup(t)
	trueRD := s.initrd(t, "true.cpio", InitTrue)
	upRD := s.initrd(t, "kmsg.cpio", InitScript(KmsgCmd, false))
	var cTrue, qTrue, cCPU, qCPU, cUp, qUp []float64
	for i := 0; i < *flagRuns; i++ {
		steps := []func(){
			func() {
				r, err := s.corralExec(t, "--", "true")
				if err != nil {
					t.Errorf("round %d: corral exec -- true: %v", i, err)
					return
				}
				cTrue, cCPU = append(cTrue, ms(r.wall)), append(cCPU, ms(r.cpu))
			},
			func() {
				r, err := s.runQEMU(QEMU{Machine: "microvm", Initrd: trueRD})
				if err != nil {
					t.Errorf("round %d: qemu true: %v", i, err)
					return
				}
				qTrue, qCPU = append(qTrue, ms(r.wall)), append(qCPU, ms(r.cpu))
			},
		}
		if i%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, f := range steps {
			f()
		}
		t.Logf("round %d: corral %v ms, qemu %v ms", i, last(cTrue), last(qTrue))
	}
	// Run /init to the command: fewer rounds, the figure varies less.
	for i := 0; i < (*flagRuns+1)/2; i++ {
		r, err := s.corralExecWith(t, s.corral, []string{"CORRAL_CMDLINE=" + verbose}, "--", "sh", "-c", KmsgCmd)
		if d, ok := InitToCommand(r.console); err == nil && ok {
			cUp = append(cUp, d)
		} else {
			t.Errorf("round %d: corral exec -- sh -c %q: %v (Run /init or the command's line not on the console)\n%s", i, KmsgCmd, err, tail(r.console, 10))
		}
		r, err = s.runQEMU(QEMU{Machine: "microvm", Initrd: upRD, Cmdline: verbose})
		if d, ok := InitToCommand(r.console); err == nil && ok {
			qUp = append(qUp, d)
		} else {
			t.Errorf("round %d: qemu sh -c %q: %v (Run /init or the command's line not on the console)\n%s", i, KmsgCmd, err, tail(r.console, 10))
		}
	}
	c, q := Summarize(cTrue), Summarize(qTrue)
	table("exec: `true` in a fresh Linux guest, VMM process start to exit",
		[]string{"row", "start→exit ms", "VMM CPU ms", "Run /init→command ms"},
		[][]string{
			{"corral exec -- true", c.Format(0), Summarize(cCPU).Format(0), Summarize(cUp).Format(0)},
			{"qemu -M microvm (init: true; poweroff -f)", q.Format(0), Summarize(qCPU).Format(0), Summarize(qUp).Format(0)},
			{"ratio corral/qemu", Ratio(c, q), Ratio(Summarize(cCPU), Summarize(qCPU)), Ratio(Summarize(cUp), Summarize(qUp))},
		})
}

func last(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", xs[len(xs)-1])
}

// table prints a table on stdout (the tcgkvm console), each line marked.
func table(title string, head []string, rows [][]string) {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	out := Marker + " " + title + "\n"
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		out += Marker + " | " + l + "\n"
	}
	fmt.Print(out)
}

// shareFile writes the file the 9p read reads: size MiB of a repeated
// pseudo-random MiB, in a directory of its own.
func shareFile(t *testing.T, sizeMiB int) string {
	t.Helper()
	dir := t.TempDir()
	block := make([]byte, 1<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range block {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		block[i] = byte(x)
	}
	f, err := os.Create(filepath.Join(dir, "file"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < sizeMiB; i++ {
		if _, err := f.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Test9pRead: dd of the share's file in 1 MiB blocks, timed in the guest,
// Corral against each QEMU machine in -qemu9p, alternating.
func Test9pRead(t *testing.T) {
	s := needSetup(t)
	dir := shareFile(t, *flagSizeMiB)
	cmd := ReadCmd(ShareGuest + "/file")
	rd := s.initrd(t, "read.cpio", InitScript(cmd, true))
	machines := strings.Split(*flagQEMU9p, ";")
	for _, f := range []string{"enabled", "defrag"} {
		b, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/" + f)
		t.Logf("host transparent_hugepage/%s: %s", f, strings.TrimSpace(string(b)))
	}
	type row struct{ mibps, hostMiBps, guestS, wallS, cpuS, hugeMiB []float64 }
	rows := map[string]*row{"corral": {}}
	// Extra corral rows: name, binary, environment.
	type variant struct {
		name, bin string
		env       []string
	}
	var variants []variant
	if *flagCorralBase != "" {
		variants = append(variants, variant{"corral base", *flagCorralBase, nil})
	}
	if *flagCorralEnv != "" {
		env := strings.Split(*flagCorralEnv, ",")
		variants = append(variants, variant{"corral " + *flagCorralEnv, s.corral, env})
		if *flagCorralBase != "" {
			variants = append(variants, variant{"corral base " + *flagCorralEnv, *flagCorralBase, env})
		}
	}
	for _, v := range variants {
		rows[v.name] = &row{}
	}
	for _, m := range machines {
		rows[m] = &row{}
	}
	add := func(name string, r result, err error) {
		if err == nil {
			var rr ReadResult
			if rr, err = ParseRead(r.stdout); err == nil {
				w := rows[name]
				w.mibps, w.guestS = append(w.mibps, rr.MiBps()), append(w.guestS, rr.Seconds())
				w.wallS, w.cpuS = append(w.wallS, r.wall.Seconds()), append(w.cpuS, r.cpu.Seconds())
				w.hugeMiB = append(w.hugeMiB, r.hugeMiB)
				hostMiBps := float64(rr.Bytes) / (1 << 20) / r.hostRead.Seconds()
				if r.hostRead > 0 {
					w.hostMiBps = append(w.hostMiBps, hostMiBps)
				}
				t.Logf("%s: %.1f MiB/s (%.2f s in the guest; %.2f s, %.1f MiB/s on the host's clock; %.1f s start to exit, AnonHugePages %.0f of Rss %.0f MiB)",
					name, rr.MiBps(), rr.Seconds(), r.hostRead.Seconds(), hostMiBps, r.wall.Seconds(), r.hugeMiB, r.rssMiB)
				return
			}
		}
		t.Errorf("%s: %v\nconsole ends:\n%s", name, err, tail(r.console, 10))
	}
	for i := 0; i < *flagRuns9p; i++ {
		steps := []func(){func() {
			r, err := s.corralExec(t, "--share", dir+":"+ShareGuest+",ro", "--", "sh", "-c", cmd)
			add("corral", r, err)
		}}
		for _, v := range variants {
			steps = append(steps, func() {
				r, err := s.corralExecWith(t, v.bin, v.env, "--share", dir+":"+ShareGuest+",ro", "--", "sh", "-c", cmd)
				add(v.name, r, err)
			})
		}
		for _, m := range machines {
			steps = append(steps, func() {
				r, err := s.runQEMU(QEMU{Machine: m, Initrd: rd, Share: dir})
				add(m, r, err)
			})
		}
		if i%2 == 1 {
			for a, b := 0, len(steps)-1; a < b; a, b = a+1, b-1 {
				steps[a], steps[b] = steps[b], steps[a]
			}
		}
		for _, f := range steps {
			f()
		}
	}
	c := rows["corral"]
	line := func(name string, w *row, ratio string) []string {
		return []string{name, Summarize(w.mibps).Format(1), Summarize(w.hostMiBps).Format(1), Summarize(w.guestS).Format(2), Summarize(w.wallS).Format(1),
			Summarize(w.cpuS).Format(1), Summarize(w.hugeMiB).Format(0), ratio}
	}
	out := [][]string{line("corral exec --share DIR:/share,ro", c, "")}
	for _, v := range variants {
		out = append(out, line(v.name, rows[v.name], ""))
	}
	for _, m := range machines {
		q := rows[m]
		out = append(out, line("qemu -M "+m+" virtio-9p-pci", q,
			Ratio(Summarize(c.mibps), Summarize(q.mibps))+" (host clock "+Ratio(Summarize(c.hostMiBps), Summarize(q.hostMiBps))+")"))
	}
	table(fmt.Sprintf("9p: dd of a %d MiB file, bs=1M, read-only share, msize 512 KiB", *flagSizeMiB),
		[]string{"row", "guest MiB/s", "host-clock MiB/s", "guest s", "start→exit s", "VMM CPU s", "AnonHugePages MiB", "corral/qemu MiB/s"}, out)
}

// TestProfile runs the exec and 9p paths in this process through agentvm
// (corral exec's machinery without the CLI) under the CPU profiler, to
// say where Corral's time goes; only with -pprof. The profiles are printed
// base64 between marker lines so they can be cut from a tcgkvm console.
func TestProfile(t *testing.T) {
	if *flagPprof == "" {
		t.Skip("only with -pprof FILE")
	}
	s := needSetup(t)
	dir := shareFile(t, *flagSizeMiB)
	mc := corral.Config{Kernel: s.kernel, Cmdline: s.cmdline(), Console: &bytes.Buffer{}}
	ctx := context.Background()

	profile(t, *flagPprof+"-exec.pprof", func() {
		vm, err := agentvm.Start(ctx, agentvm.Config{Machine: mc, Agent: s.agent, Root: agentvm.RootHost()})
		if err != nil {
			t.Fatal(err)
		}
		if err := vm.Command("true").Run(); err != nil {
			t.Error(err)
		}
		if err := vm.Close(); err != nil {
			t.Error(err)
		}
	})

	mc.Console = &bytes.Buffer{}
	vm, err := agentvm.Start(ctx, agentvm.Config{Machine: mc, Agent: s.agent, Root: agentvm.RootHost(),
		Shares: []agentvm.Share{{Host: dir, Guest: ShareGuest, ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	// The read at the process's GOMAXPROCS, then with a P more than the
	// vCPUs: a vCPU in KVM_RUN holds its P until sysmon retakes it.
	procs := runtime.GOMAXPROCS(0)
	for _, p := range []struct {
		name  string
		procs int
	}{{"9p", procs}, {"9p-procs2", max(procs, 2)}} {
		runtime.GOMAXPROCS(p.procs)
		before := vm.Machine().Exits()
		profile(t, *flagPprof+"-"+p.name+".pprof", func() {
			out, err := vm.Command("sh", "-c", ReadCmd(ShareGuest+"/file")).Output()
			rr, perr := ParseRead(out)
			if err != nil || perr != nil {
				t.Errorf("9p read: %v, %v", err, perr)
			}
			t.Logf("9p read in process, GOMAXPROCS %d: %.1f MiB/s", p.procs, rr.MiBps())
		})
		var exits []string
		for r, n := range vm.Machine().Exits() {
			if d := n - before[r]; d > 0 {
				exits = append(exits, fmt.Sprintf("%s %d", r, d))
			}
		}
		slices.Sort(exits)
		t.Logf("vCPU exits to the VMM during the read: %s", strings.Join(exits, ", "))
	}
	runtime.GOMAXPROCS(procs)

	// An execution trace of a shorter read: how long each goroutine of
	// the request path waits to run (go tool trace -pprof=sched).
	tf := *flagPprof + "-9p.trace"
	f, err := os.Create(tf)
	if err != nil {
		t.Fatal(err)
	}
	if err := trace.Start(f); err != nil {
		t.Fatal(err)
	}
	out, err := vm.Command("sh", "-c", strings.Replace(ReadCmd(ShareGuest+"/file"), "bs=1M", "bs=1M count=48", 1)).Output()
	trace.Stop()
	f.Close()
	if rr, perr := ParseRead(out); err != nil || perr != nil {
		t.Errorf("traced 9p read: %v, %v", err, perr)
	} else {
		t.Logf("traced 9p read: %.1f MiB/s", rr.MiBps())
	}
	printBase64(t, tf)
}

func profile(t *testing.T, path string, f func()) {
	pf, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	f()
	pprof.StopCPUProfile()
	if err := pf.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %.1f s profiled", path, time.Since(t0).Seconds())
	printBase64(t, path)
}

// printBase64 prints the file base64 between marker lines, to be cut
// from a tcgkvm console.
func printBase64(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(path)
	enc := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(enc) > 0 {
		n := min(len(enc), 76)
		fmt.Fprintf(&out, "%s pprof %s %s\n", Marker, name, enc[:n])
		enc = enc[n:]
	}
	fmt.Print(out.String())
}

// corralBinary is the corral binary a benchmark runs: -corral, $CORRAL or
// corral on PATH; without one the benchmark skips (its script builds one).
func corralBinary(t *testing.T) string {
	t.Helper()
	if p := *flagCorral; p != "" {
		return p
	}
	if p := os.Getenv("CORRAL"); p != "" {
		return p
	}
	p, err := exec.LookPath("corral")
	if err != nil {
		t.Skip("a benchmark (its script in bench/ runs it): needs a corral binary: -corral, $CORRAL or corral on PATH (CGO_ENABLED=0 go build ./cmd/corral)")
	}
	return p
}
