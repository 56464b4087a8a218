package corral

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
	"github.com/corral-vmm/corral/virtio/blk"
)

// bootGuest starts a test guest and returns the machine and its console.
func bootGuest(t *testing.T, cfg Config) (*Machine, *console.Buffer) {
	t.Helper()
	out := console.NewBuffer(0)
	cfg.Console = out
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := m.Start(ctx); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, out
}

// waitExit waits for the machine to end; a generous bound turns a hang into
// a failure rather than a stuck test run.
func waitExit(t *testing.T, m *Machine, out *console.Buffer) Exit {
	t.Helper()
	select {
	case <-m.Done():
		e, _ := m.Wait() // an ExitError keeps its Err in e for the caller's check
		return e
	case <-time.After(60 * time.Second):
		t.Fatalf("machine did not end within 60s; console:\n%s", out)
	}
	return Exit{}
}

func TestHelloDebugExit(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "hello")
	for _, code := range []uint8{0, 7, 255} {
		m, out := bootGuest(t, Config{Kernel: k, Cmdline: fmt.Sprintf("exit=%d", code)})
		e := waitExit(t, m, out)
		if e.Reason != ExitDebug || e.Code != code {
			t.Errorf("exit=%d: machine ended with %v", code, e)
		}
		for _, want := range []string{"corral-guest: hello", fmt.Sprintf("cmdline: exit=%d", code)} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("console lacks %q:\n%s", want, out)
			}
		}
	}
}

func TestSMPAllCPUsReportIn(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "smp")
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("cpus=%d", n), func(t *testing.T) {
			m, out := bootGuest(t, Config{Kernel: k, CPUs: n, Cmdline: fmt.Sprintf("cpus=%d", n)})
			e := waitExit(t, m, out)
			if e.Reason != ExitDebug || e.Code != guests.ExitOK {
				t.Fatalf("machine ended with %v; console:\n%s", e, out)
			}
			if want := fmt.Sprintf("smp: %d cpus online", n); !strings.Contains(out.String(), want) {
				t.Errorf("console lacks %q:\n%s", want, out)
			}
			for i := 1; i < n; i++ {
				if want := fmt.Sprintf("cpu %d up", i); !strings.Contains(out.String(), want) {
					t.Errorf("console lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestRTCTellsTheDate(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "rtc")
	before := time.Now().UTC().Add(-2 * time.Second)
	m, out := bootGuest(t, Config{Kernel: k})
	e := waitExit(t, m, out)
	after := time.Now().UTC().Add(2 * time.Second)
	if e.Reason != ExitDebug || e.Code != guests.ExitOK {
		t.Fatalf("machine ended with %v; console:\n%s", e, out)
	}
	match := regexp.MustCompile(`rtc: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)`).FindStringSubmatch(out.String())
	if match == nil {
		t.Fatalf("no rtc line:\n%s", out)
	}
	got, err := time.Parse(time.DateTime, match[1])
	if err != nil {
		t.Fatal(err)
	}
	if got.Before(before.Truncate(time.Second)) || got.After(after) {
		t.Errorf("guest read %v from the RTC; host time was between %v and %v", got, before, after)
	}
}

// TestTripleFaultIsGuestFault checks that a triple fault ends the machine
// as the guest's fault, not a reset or a VMM failure, with the vCPU's state
// on a *VCPUError.
func TestTripleFaultIsGuestFault(t *testing.T) {
	testenv.MustHaveKVM(t)
	m, out := bootGuest(t, Config{Kernel: guests.BuildT(t, "fault")})
	e := waitExit(t, m, out)
	if e.Reason != ExitGuestFault {
		t.Fatalf("machine ended with %v, want a guest fault; console:\n%s", e, out)
	}
	var ve *VCPUError
	if !errors.As(e.Err, &ve) {
		t.Fatalf("Exit.Err %v is not a *VCPUError", e.Err)
	}
	if !strings.Contains(ve.What, "triple fault") || ve.Regs == nil || ve.Sregs == nil || strings.Contains(ve.Error(), "\n") {
		t.Errorf("VCPUError %q (regs %v, sregs %v): want a one-line triple fault with registers", ve, ve.Regs, ve.Sregs)
	}
}

// TestStopBusyAndHaltedGuests checks that Stop gets vCPUs out of KVM_RUN
// whether the guest spins or is halted with interrupts off.
func TestStopBusyAndHaltedGuests(t *testing.T) {
	testenv.MustHaveKVM(t)
	for _, g := range []struct{ name, line string }{{"spin", "spinning"}, {"halt", "halted"}} {
		t.Run(g.name, func(t *testing.T) {
			m, out := bootGuest(t, Config{Kernel: guests.BuildT(t, g.name), CPUs: 2})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := out.WaitFor(ctx, g.line); err != nil {
				t.Fatal(err)
			}
			m.Stop()
			if e := waitExit(t, m, out); e.Reason != ExitStopped {
				t.Fatalf("machine ended with %v, want stopped", e)
			}
		})
	}
}

func TestContextCancelStops(t *testing.T) {
	testenv.MustHaveKVM(t)
	out := console.NewBuffer(0)
	m, err := New(Config{Kernel: guests.BuildT(t, "spin"), Console: out})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
	cancel()
	if e := waitExit(t, m, out); e.Reason != ExitStopped {
		t.Fatalf("machine ended with %v, want stopped", e)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "notes.txt")
	os.WriteFile(notKernel, []byte(strings.Repeat("not a kernel\n", 100)), 0o644)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no kernel", Config{}, "no kernel"},
		{"missing kernel", Config{Kernel: filepath.Join(dir, "absent")}, "no such file"},
		{"directory", Config{Kernel: dir}, "not a regular file"},
		{"empty kernel", Config{Kernel: empty}, "empty"},
		{"not a kernel", Config{Kernel: notKernel}, "not a Linux bzImage or PVH ELF"},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v; want ErrConfig mentioning %q", c.name, err, c.want)
		}
	}
	err := (&Config{Kernel: notKernel}).Validate()
	if !errors.Is(err, boot.ErrNotKernel) {
		t.Errorf("not a kernel: %v does not wrap boot.ErrNotKernel", err)
	}
	k := guests.BuildT(t, "hello")
	for _, bad := range []Config{{Kernel: k, CPUs: MaxCPUs + 1}, {Kernel: k, Memory: 1 << 20}, {Kernel: k, Memory: 64<<20 + 1}, {Kernel: k, Cmdline: "a\x00b"}} {
		if err := bad.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig", bad, err)
		}
	}
	if err := (&Config{Kernel: k}).Validate(); err != nil {
		t.Errorf("a good config: %v", err)
	}
}

// lifecycleMemory is the guest RAM of the lifecycle machines.
const lifecycleMemory = 40 << 20

// TestLifecycleReleasesEverything starts and stops 100 machines, one at a
// time and ten at a time, and checks that file descriptors, mappings and
// goroutines return to the baseline.
func TestLifecycleReleasesEverything(t *testing.T) {
	testenv.MustHaveKVM(t)
	if testing.Short() {
		t.Skip("skipping 200 machine lifecycles in -short mode")
	}
	k := guests.BuildT(t, "hello")
	var mu sync.Mutex
	var mapped []hostMapping // what every machine mapped (RAM, kvm_run)
	run := func() error {
		m, err := New(Config{Kernel: k, Cmdline: "exit=3", Memory: lifecycleMemory})
		if err != nil {
			return err
		}
		mu.Lock()
		mapped = append(mapped, m.hostMappings()...)
		mu.Unlock()
		if err := m.Start(context.Background()); err != nil {
			m.Close()
			return err
		}
		select {
		case <-m.Done():
		case <-time.After(60 * time.Second):
			m.Stop()
			return fmt.Errorf("machine did not end within 60s")
		}
		if e, err := m.Wait(); err != nil || e.Reason != ExitDebug || e.Code != 3 {
			return fmt.Errorf("machine ended with %v", e)
		}
		return nil
	}
	// One machine first, so lazily created runtime state (threads,
	// signal handlers, caches) is in the baseline.
	if err := run(); err != nil {
		t.Fatal(err)
	}
	base := settle(t, countResources(t))
	if base.kvmMaps != 0 {
		t.Fatalf("%d KVM mappings remain after one machine ended", base.kvmMaps)
	}
	// Checked only while no machine runs: a running one may map where an
	// ended one was.
	leaks := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if left := stillMapped(readMaps(t), mapped); len(left) > 0 {
			t.Errorf("%s: %d of %d machine mappings still mapped, first %#x-%#x %q", when, len(left), len(mapped), left[0].lo, left[0].hi, left[0].path)
		}
	}
	leaks("after one machine")
	for i := 0; i < 100; i++ {
		if err := run(); err != nil {
			t.Fatalf("sequential machine %d: %v", i, err)
		}
	}
	if r := settle(t, base); r.fds > base.fds || r.kvmMaps > base.kvmMaps || r.goroutines > base.goroutines {
		t.Errorf("after 100 sequential machines: %+v, baseline %+v", r, base)
	}
	leaks("after 100 sequential machines")
	for batch := 0; batch < 10; batch++ {
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := run(); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("batch %d: %v", batch, err)
		}
	}
	if r := settle(t, base); r.fds > base.fds || r.kvmMaps > base.kvmMaps || r.goroutines > base.goroutines {
		t.Errorf("after 100 machines ten at a time: %+v, baseline %+v", r, base)
	}
	leaks("after 100 machines ten at a time")
}

// TestCloseUnstarted releases a machine that never ran.
func TestCloseUnstarted(t *testing.T) {
	testenv.MustHaveKVM(t)
	m, err := New(Config{Kernel: guests.BuildT(t, "hello")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if e, err := m.Wait(); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Wait after Close = %v, %v; want ErrNotStarted", e, err)
	}
	if err := m.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if err := m.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
}

func TestDiskErrors(t *testing.T) {
	dir := t.TempDir()
	if err := (&Config{Kernel: "x", Disks: []Disk{{Path: filepath.Join(dir, "absent.img")}}}).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("missing disk image: %v, want ErrConfig", err)
	}
	for _, s := range []string{"", ",ro", "a.img,bogus", "a.img,serial=x,zz"} {
		if _, err := ParseDisk(s); err == nil {
			t.Errorf("ParseDisk(%q) accepted", s)
		}
	}
	d, err := ParseDisk("a.img,ro,serial=disk-7")
	if err != nil || d != (Disk{Path: "a.img", ReadOnly: true, Serial: "disk-7"}) {
		t.Errorf("ParseDisk = %+v, %v", d, err)
	}
}

// TestDiskLockedByAnotherMachine checks that a second machine cannot open
// an image a running machine writes, and can once it has ended.
func TestDiskLockedByAnotherMachine(t *testing.T) {
	testenv.MustHaveKVM(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	k := guests.BuildT(t, "halt")
	m1, out := bootGuest(t, Config{Kernel: k, Disks: []Disk{{Path: img}}})
	_, err := New(Config{Kernel: k, Disks: []Disk{{Path: img}}})
	if !errors.Is(err, blk.ErrImageLocked) {
		t.Fatalf("second machine on a locked image: %v, want blk.ErrImageLocked", err)
	}
	m1.Stop()
	waitExit(t, m1, out)
	m2, err := New(Config{Kernel: k, Disks: []Disk{{Path: img, ReadOnly: true}}})
	if err != nil {
		t.Fatalf("image still locked after the machine ended: %v", err)
	}
	m2.Close()
}
