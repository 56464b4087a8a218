// Command tcgkvm runs Corral's KVM tests on a host without /dev/kvm: it
// boots a Debian kernel under QEMU TCG with an emulated AMD SVM CPU, loads
// kvm-amd there, and runs Go test binaries against that nested /dev/kvm.
//
//	go run ./tests/tcgkvm ./kvm .
//	go run ./tests/tcgkvm -run 'Hello|SMP' -- -test.timeout=10m .
//
// Arguments are package patterns (built with go test -c, CGO_ENABLED=0) or
// existing *.test binaries; arguments after -- go to every test binary. It
// exits 0 if every binary passed, 1 if any test failed, 2 if the VM could
// not run the tests (no /dev/kvm, crash, timeout, setup error).
// See tests/tcgkvm/README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/corral-vmm/corral/tests/guests"
)

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

type options struct {
	cache, kernelPkg, busybox, qemu, cpu, mem, consoleFile, run, accel, require string
	linuxKernel, agent, l2Cmdline, l1Append                                     string
	hostFiles, env                                                              string
	smp, nice, heartbeat, stallRetries, failRetries                             int
	timeout, nudge                                                              time.Duration
	keep                                                                        bool
	l2QEMU                                                                      bool
}

func run() (int, error) {
	var o options
	defCache := ""
	if d, err := os.UserCacheDir(); err == nil {
		defCache = filepath.Join(d, "corral", "tcgkvm")
	}
	flag.StringVar(&o.cache, "cache", defCache, "cache directory for the L1 kernel")
	flag.StringVar(&o.kernelPkg, "kernel-pkg", "", "Debian kernel package (default: what linux-image-amd64 depends on)")
	flag.StringVar(&o.busybox, "busybox", "/bin/busybox", "static busybox for the VM")
	flag.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", "QEMU binary")
	flag.StringVar(&o.cpu, "cpu", "max", "QEMU -cpu model; needs svm and npt (max, EPYC, qemu64,+svm,+npt)")
	flag.StringVar(&o.accel, "accel", "tcg,thread=single", "QEMU -accel (thread=multi wedged the L1 kernel in the lifecycle test)")
	flag.StringVar(&o.mem, "m", "2G", "VM memory")
	flag.IntVar(&o.smp, "smp", 1, "VM CPUs; with thread=single they share one host thread, and more than 1 lets QEMU 7.2 deliver an L2 guest's injected interrupt twice (README)")
	flag.IntVar(&o.nice, "nice", 10, "run QEMU under nice -n N (0: not)")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "kill the VM after this long")
	flag.DurationVar(&o.nudge, "nudge", time.Second, "write a newline to the VM's serial port this often (0: never): the interrupt wakes an L1 CPU QEMU 7.2 left halted, or stuck in an L2 guest, with its timer interrupt pending (README)")
	flag.StringVar(&o.consoleFile, "console", "", "also write the VM console to this file")
	flag.StringVar(&o.run, "run", "", "shorthand for -- -test.run=REGEXP")
	flag.IntVar(&o.heartbeat, "heartbeat", 30, "print an \"alive\" line from the VM every N seconds; silent for 2 of them, the VM is kicked (a newline on its serial port), for 3 killed as stalled (0: never)")
	flag.IntVar(&o.stallRetries, "stall-retries", 4, "when the L1 kernel stops (QEMU 7.2's nested SVM, README), boot again up to N times for the binaries that had not finished")
	flag.IntVar(&o.failRetries, "fail-retries", 0, "run a binary's failed tests again in a fresh boot, up to N times; a test that then passes is reported as flaky (TCG timing, README), one that fails every time fails the run")
	flag.StringVar(&o.require, "require", "kvm,root", "CORRAL_REQUIRE inside the VM (tests fail instead of skipping without these; kernel is added when a Linux kernel is shipped)")
	flag.StringVar(&o.linuxKernel, "linux-kernel", pickAuto, "Linux kernel for L2 guests, $CORRAL_KERNEL in the VM: a path, auto ($CORRAL_KERNEL, else the cached plain test kernel if built) or none")
	flag.StringVar(&o.agent, "agent", pickAuto, "static guest agent, $CORRAL_AGENT in the VM: a path, auto ($CORRAL_AGENT, else build cmd/corral-agent) or none")
	flag.StringVar(&o.l1Append, "l1-append", "", "kernel parameters appended to the L1 kernel's command line")
	flag.StringVar(&o.l2Cmdline, "l2-cmdline", "", "$CORRAL_TCGKVM_CMDLINE in the VM: kernel parameters Linux L2 guest fixtures append there")
	flag.StringVar(&o.hostFiles, "host-files", "", "comma-separated host commands (PATH, /usr/sbin, /sbin) or files to ship at their host paths, with the libraries a dynamic executable needs (e.g. mkfs.ext4,debugfs,/etc/mke2fs.conf for tests/e2e)")
	flag.StringVar(&o.env, "env", "", "comma-separated NAME=VALUE pairs to export in the VM before the tests run (e.g. CORRAL_SHIM=path for the shim's tests)")
	flag.BoolVar(&o.l2QEMU, "l2-qemu", false, "ship the -qemu binary (with its libraries and firmware) into the VM as $QEMU, for benchmarks beside Corral (bench/agentvsqemu)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (initramfs, test binaries)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: tcgkvm [flags] package|file.test... [-- test flags]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	targets, testArgs := splitArgs(flag.Args())
	if len(targets) == 0 {
		flag.Usage()
		return 2, errors.New("tcgkvm: no packages or test binaries given")
	}
	if o.run != "" {
		testArgs = append([]string{"-test.run=" + o.run}, testArgs...)
	}
	if o.cache == "" {
		return 2, errors.New("tcgkvm: no cache directory (set -cache)")
	}
	if err := os.MkdirAll(o.cache, 0o755); err != nil {
		return 2, fmt.Errorf("tcgkvm: %w", err)
	}
	ctx := context.Background()
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "tcgkvm: [%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	work, err := os.MkdirTemp("", "tcgkvm-")
	if err != nil {
		return 2, fmt.Errorf("tcgkvm: %w", err)
	}
	if o.keep {
		logf("work directory %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	if o.kernelPkg == "" {
		if o.kernelPkg, err = resolveKernelPackage(ctx); err != nil {
			return 2, err
		}
	}
	k, err := ensureKernel(ctx, o.cache, o.kernelPkg)
	if err != nil {
		return 2, err
	}
	logf("L1 kernel %s", k.Package)

	tests, err := buildTests(ctx, targets, filepath.Join(work, "bin"))
	if err != nil {
		return 2, err
	}
	logf("%d test binaries built", len(tests))

	linuxKernel, agent, err := linuxFiles(ctx, o)
	if err != nil {
		return 2, err
	}
	if linuxKernel == "" {
		logf("no Linux test kernel (tests/linux/build-kernel.sh --no-patches, or -linux-kernel): Linux guest tests will skip in the VM")
	} else {
		logf("Linux guest kernel %s, agent %s", linuxKernel, agent)
	}

	hostFiles, err := resolveHostFiles(o.hostFiles)
	if err != nil {
		return 2, err
	}
	spec := initramfsSpec{Busybox: o.busybox, Kernel: k, Tests: tests, TestArgs: testArgs, Heartbeat: o.heartbeat, Require: requireKernel(o.require, linuxKernel),
		LinuxKernel: linuxKernel, Agent: agent, L2Cmdline: o.l2Cmdline}
	spec.LinuxBzImage, spec.HostFiles = bzImageBeside(linuxKernel), hostFiles
	if spec.Env, err = parseEnv(o.env); err != nil {
		return 2, err
	}
	if o.l2QEMU {
		qf, bin, missing, err := qemuFiles(o.qemu)
		if err != nil {
			return 2, err
		}
		spec.HostFiles, spec.QEMU = mergeFiles(spec.HostFiles, qf), bin
		logf("QEMU for L2 guests: %s, %d files (firmware not on this host: %v)", bin, len(qf), missing)
	}
	if err := addGuests(ctx, &spec); err != nil {
		return 2, err
	}
	logf("%d prebuilt test guests", len(spec.Guests))

	c, err := bootAll(ctx, o, logf, k.Vmlinuz, filepath.Join(work, "initramfs.cpio"), spec)
	if err != nil {
		return 2, err
	}
	var flaky []string
	for round := 1; round <= o.failRetries && c.Done && c.Status != statusNoKVM; round++ {
		retry := failedTests(spec.Tests, c)
		if len(retry) == 0 {
			break
		}
		logf("running the failed tests of %d binaries again (fail retry %d of %d)", len(retry), round, o.failRetries)
		rs := spec
		rs.Tests = retry
		rc, err := bootAll(ctx, o, logf, k.Vmlinuz, filepath.Join(work, "initramfs.cpio"), rs)
		if err != nil {
			return 2, err
		}
		flaky = append(flaky, c.merge(rc)...)
	}
	for _, f := range flaky {
		logf("FLAKY: %s failed, then passed when run again", f)
	}
	if err := c.Err(); err != nil {
		if c.Done && c.Status != statusNoKVM {
			return 1, err
		}
		return 2, err
	}
	return 0, nil
}

// bootAll boots the VM for spec's tests, and again (up to o.stallRetries
// times) for the binaries that had not finished when the L1 kernel
// stopped; the console log it returns has every binary's result. A binary
// cut off by a stall goes on from where it was: the next boot skips the
// top-level tests it had already finished (-test.skip) and their results
// are kept, so each boot adds to the last instead of starting the binary
// over (with stalls every few Linux boots, a binary of many such tests
// might otherwise never finish).
func bootAll(ctx context.Context, o options, logf func(string, ...any), kernel, initrd string, spec initramfsSpec) (*consoleLog, error) {
	var finished []binaryResult // from boots the L1 kernel did not finish
	prior := map[string]binaryResult{}
	own := map[string][]string{} // each binary's own arguments
	for _, t := range spec.Tests {
		own[t.Name] = t.Args
	}
	for attempt := 0; ; attempt++ {
		if err := writeInitramfsFile(initrd, spec); err != nil {
			return nil, err
		}
		logf("booting the VM (cpu %s, %d cpus, %s)", o.cpu, o.smp, o.mem)
		c, err := boot(ctx, o, kernel, initrd)
		fmt.Fprint(os.Stderr, c.Summary())
		logf("VM ended")
		if errors.Is(err, errStalled) && attempt < o.stallRetries {
			done, left := splitFinished(spec.Tests, c)
			for _, d := range done {
				finished = append(finished, withPrior(prior, d))
			}
			for _, r := range c.Results {
				if r.Exit < 0 {
					prior[r.Name] = withPrior(prior, r)
				}
			}
			for i, t := range left {
				left[i].Args = resumeArgs(own[t.Name], prior[t.Name])
			}
			logf("the L1 kernel stopped (%v); booting again for the %d binaries that had not finished, skipping the tests they had finished (retry %d of %d)", err, len(left), attempt+1, o.stallRetries)
			spec.Tests = left
			continue
		}
		if err != nil {
			return nil, err
		}
		for i, r := range c.Results {
			c.Results[i] = withPrior(prior, r)
		}
		c.Results = append(finished, c.Results...)
		return c, nil
	}
}

// withPrior adds to r what its binary's top-level tests did in boots that
// stalled before it finished. A test that failed there fails r.
func withPrior(prior map[string]binaryResult, r binaryResult) binaryResult {
	p, ok := prior[r.Name]
	if !ok {
		return r
	}
	r.Pass += p.Pass
	r.Fail += p.Fail
	r.Skip += p.Skip
	r.Passed = append(slices.Clip(p.Passed), r.Passed...)
	r.FailedTests = append(slices.Clip(p.FailedTests), r.FailedTests...)
	r.Skips = append(slices.Clip(p.Skips), r.Skips...)
	if p.Fail > 0 && r.Exit == 0 {
		r.Exit = 1
	}
	return r
}

// resumeArgs is a binary's own arguments plus a -test.skip of the
// top-level tests p records as finished (passed, failed or skipped). It
// replaces a -test.skip given for all binaries after --.
func resumeArgs(own []string, p binaryResult) []string {
	names := slices.Concat(p.Passed, p.FailedTests, p.Skips)
	if len(names) == 0 {
		return own
	}
	slices.Sort(names)
	names = slices.Compact(names)
	return append(slices.Clip(own), "-test.skip="+exactly(names))
}

// exactly is a -test.run or -test.skip pattern matching the top-level
// tests names and nothing else.
func exactly(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return "^(" + strings.Join(quoted, "|") + ")$"
}

// failedTests is the binaries of tests whose run ended normally with
// failed tests, each to run only those again. A binary that did not get to
// its final FAIL line (a panic, a timeout, an os.Exit: later tests may
// never have run) is not run again: its failure stands.
func failedTests(tests []testBinary, c *consoleLog) []testBinary {
	failed := map[string][]string{}
	for _, r := range c.Results {
		if r.Exit == 1 && r.Ended && len(r.FailedTests) > 0 {
			failed[r.Name] = r.FailedTests
		}
	}
	var retry []testBinary
	for _, t := range tests {
		if names, ok := failed[t.Name]; ok {
			t.Args = append(slices.Clip(t.Args), "-test.run="+exactly(names))
			retry = append(retry, t)
		}
	}
	return retry
}

// writeInitramfsFile writes the VM's initramfs for spec to path.
func writeInitramfsFile(path string, spec initramfsSpec) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("tcgkvm: %w", err)
	}
	if err := writeInitramfs(f, spec); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tcgkvm: %w", err)
	}
	return nil
}

// splitFinished splits tests after a boot the L1 kernel did not finish:
// the results of the binaries that ran to their result line (passed or
// failed: a failure is not retried), and the binaries to run again, the
// one that was running included.
func splitFinished(tests []testBinary, c *consoleLog) (done []binaryResult, left []testBinary) {
	exited := map[string]binaryResult{}
	for _, r := range c.Results {
		if r.Exit >= 0 {
			exited[r.Name] = r
		}
	}
	for _, t := range tests {
		if r, ok := exited[t.Name]; ok {
			done = append(done, r)
		} else {
			left = append(left, t)
		}
	}
	return done, left
}

// splitArgs separates targets from the test flags after "--".
func splitArgs(args []string) (targets, testArgs []string) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:]
		}
	}
	return args, nil
}

// buildTests compiles each package pattern's tests statically into dir; an
// existing *.test file is used as is (it must be static: the VM has no libc).
// A path pattern inside a nested module (./shim/e2e) is built from that
// module's directory.
func buildTests(ctx context.Context, targets []string, dir string) ([]testBinary, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tcgkvm: %w", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("tcgkvm: %w", err)
	}
	var out []testBinary
	for _, t := range targets {
		if fi, err := os.Stat(t); err == nil && fi.Mode().IsRegular() && strings.HasSuffix(t, ".test") {
			out = append(out, testBinary{Name: filepath.Base(t), Path: t})
			continue
		}
		modDir, pattern, err := moduleOf(cwd, t)
		if err != nil {
			return nil, err
		}
		lister := exec.CommandContext(ctx, "go", "list", "-f",
			"{{.ImportPath}}\t{{.Dir}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}", pattern)
		lister.Dir = modDir
		list, err := lister.Output()
		if err != nil {
			return nil, fmt.Errorf("tcgkvm: go list %s: %w%s", t, err, exitStderr(err))
		}
		for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
			f := strings.Split(line, "\t")
			if len(f) != 4 || (f[2] == "0" && f[3] == "0") {
				continue
			}
			bin := filepath.Join(dir, fmt.Sprintf("%d-%s.test", len(out), filepath.Base(f[0])))
			cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, f[0])
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			cmd.Dir = modDir
			if b, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("tcgkvm: go test -c %s: %w\n%s", f[0], err, b)
			}
			tb := testBinary{Name: f[0], Path: bin}
			if fi, err := os.Stat(filepath.Join(f[1], "testdata")); err == nil && fi.IsDir() {
				tb.Testdata = filepath.Join(f[1], "testdata")
			}
			out = append(out, tb)
		}
	}
	return out, nil
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// addGuests builds every test guest on the host through the shared guest
// cache and records where the VM finds them, plus the gcc identity the
// cache keys on. Without gcc on the host the guests are left out and the
// guest-booting tests skip in the VM as they would here.
func addGuests(ctx context.Context, s *initramfsSpec) error {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return nil
	}
	ans, err := exec.CommandContext(ctx, gcc, "-dumpfullversion", "-dumpmachine").Output()
	if err != nil {
		return fmt.Errorf("tcgkvm: asking %s for its version: %w", gcc, err)
	}
	s.GCCPath, s.GCCAnswer = gcc, string(ans)
	root := guests.DefaultCacheDir()
	if root == "" {
		return errors.New("tcgkvm: no test guest cache directory (set CORRAL_GUEST_CACHE)")
	}
	for _, name := range guests.Names() {
		p, err := guests.Cache{Dir: root}.Build(ctx, name)
		if err != nil {
			return fmt.Errorf("tcgkvm: building test guest %s: %w", name, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("tcgkvm: test guest %s: %w", name, err)
		}
		s.Guests = append(s.Guests, guestELF{Rel: filepath.ToSlash(rel), Host: p})
	}
	return nil
}

// boot runs QEMU, echoing its console to stdout (and o.consoleFile), and
// returns what the console said.
// errStalled is a boot whose L1 kernel stopped: its console, heartbeat
// included, went silent. Seen with Linux L2 guests under QEMU 7.2's TCG
// nested SVM (docs/nested-kvm.md), never a test's own doing.
var errStalled = errors.New("tcgkvm: the L1 kernel stopped")

func boot(ctx context.Context, o options, kernel, initrd string) (*consoleLog, error) {
	c := &consoleLog{}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-accel", o.accel, "-cpu", o.cpu, "-smp", strconv.Itoa(o.smp), "-m", o.mem,
		"-no-reboot", "-kernel", kernel, "-initrd", initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 quiet " + o.l1Append),
	}
	monDir, err := os.MkdirTemp("", "tcgkvm-monitor-")
	if err != nil {
		return c, fmt.Errorf("tcgkvm: %w", err)
	}
	defer os.RemoveAll(monDir)
	monitor := filepath.Join(monDir, "hmp.sock")
	args = append(args, "-monitor", "unix:"+monitor+",server=on,wait=off")
	name := o.qemu
	if o.nice > 0 {
		args = append([]string{"-n", strconv.Itoa(o.nice), o.qemu}, args...)
		name = "nice"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var sink io.Writer = os.Stdout
	if o.consoleFile != "" {
		f, err := os.Create(o.consoleFile)
		if err != nil {
			return c, fmt.Errorf("tcgkvm: %w", err)
		}
		defer f.Close()
		sink = io.MultiWriter(os.Stdout, f)
	}
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return c, fmt.Errorf("tcgkvm: %w", err)
	}
	serialIn, err := cmd.StdinPipe()
	if err != nil {
		return c, fmt.Errorf("tcgkvm: %w", err)
	}
	defer serialIn.Close()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return c, fmt.Errorf("tcgkvm: starting %s: %w", o.qemu, err)
	}
	if o.nudge > 0 {
		go nudge(ctx, o.nudge, serialIn)
	}
	var last atomic.Int64 // when the console last printed a line
	last.Store(time.Now().UnixNano())
	var stalled atomic.Pointer[string]
	watchDone := make(chan struct{})
	if o.heartbeat > 0 {
		go func() {
			defer close(watchDone)
			why := watchConsole(ctx, time.Duration(o.heartbeat)*time.Second, &last, monitor, serialIn, cancel)
			stalled.Store(&why)
		}()
	} else {
		close(watchDone)
	}
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		last.Store(time.Now().UnixNano())
		fmt.Fprintln(sink, sc.Text())
		c.Line(sc.Text())
	}
	err = cmd.Wait()
	cancel()
	<-watchDone
	if why := stalled.Load(); why != nil && *why != "" {
		return c, fmt.Errorf("%w: %s; killed", errStalled, *why)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return c, fmt.Errorf("tcgkvm: VM still running after %v; killed", o.timeout)
	}
	if err != nil {
		return c, fmt.Errorf("tcgkvm: %s: %w: %s", o.qemu, err, strings.TrimSpace(stderr.String()))
	}
	return c, nil
}

// watchConsole watches a booted VM's console for silence. Silent for two
// heartbeats, the L1 kernel has stopped (its shell's sleep no longer
// wakes): it logs what the L1 CPU and its local APIC are doing (QEMU's
// monitor) and sends a newline to the serial port, an interrupt that may
// wake it. Silent for a third, it gives up: it calls kill and returns why.
// It returns "" when ctx ends first.
func watchConsole(ctx context.Context, heartbeat time.Duration, last *atomic.Int64, monitor string, serialIn io.Writer, kill func()) string {
	tick := time.NewTicker(heartbeat / 10)
	defer tick.Stop()
	var kicked time.Time
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-tick.C:
		}
		quiet := time.Since(time.Unix(0, last.Load()))
		switch {
		case !kicked.IsZero() && time.Unix(0, last.Load()).After(kicked):
			fmt.Fprintf(os.Stderr, "tcgkvm: the console spoke again %.1fs after the kick\n", time.Since(kicked).Seconds())
			kicked = time.Time{}
		case quiet >= 3*heartbeat:
			kill()
			return fmt.Sprintf("VM console silent for %v (no heartbeat), also after a kick", quiet.Round(time.Second))
		case kicked.IsZero() && quiet >= 2*heartbeat:
			fmt.Fprintf(os.Stderr, "tcgkvm: console silent for %v: L1 CPU: %s; sending a newline to its serial port\n", quiet.Round(time.Second), stallState(monitor))
			kicked = time.Now()
			serialIn.Write([]byte("\n"))
		}
	}
}

// nudge writes a newline to the VM's serial port every interval until ctx
// ends. Each is an interrupt in the L1 kernel, and its EOI makes QEMU look
// at the local APIC again: QEMU 7.2 sometimes leaves an interrupt pending
// there (the L1 timer's, in IRR) without telling the CPU, which then
// sleeps on in HLT or runs on in an L2 guest with its own timer stopped.
// The VM's /init neither echoes nor keeps what arrives.
func nudge(ctx context.Context, interval time.Duration, serialIn io.Writer) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := serialIn.Write([]byte("\n")); err != nil {
				return
			}
		}
	}
}
