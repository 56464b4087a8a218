package guests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
)

// The QEMU tests boot the guests under QEMU/KVM to prove them right
// independently of Corral. They need qemu-system-x86_64 and a usable
// /dev/kvm and skip otherwise (fail with CORRAL_REQUIRE=qemu, kvm).

const (
	qemuTimeout = 60 * time.Second
	qbootROM    = "/usr/share/qemu/qboot.rom"
	rtcLayout   = "2006-01-02 15:04:05"
	// rtcSlack bounds how far the guest's RTC may be past QEMU's -rtc base
	// (boot time, slow nested emulation).
	rtcSlack = 60 * time.Second
)

type qemuRun struct {
	machine string // -M value, e.g. "microvm" or "microvm,rtc=on" or "pc"
	kernel  string
	cmdline string // -append, omitted if empty
	cpus    int    // -smp, omitted if < 2
	extra   []string
	tcg     bool // fall back to TCG without /dev/kvm (guests that need no KVM timing)
}

// qemuArgs is the command line the tests (and bench/) use; see doc.go.
func (r qemuRun) args() []string {
	accel := []string{"-enable-kvm"}
	if r.tcg {
		accel = []string{"-accel", "kvm", "-accel", "tcg"} // the first that works
	}
	a := append(accel, "-cpu", "kvm64", "-M", r.machine, "-m", "64",
		"-nodefaults", "-nographic", "-no-reboot", "-serial", "stdio",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", r.kernel)
	if r.cmdline != "" {
		a = append(a, "-append", r.cmdline)
	}
	if r.cpus > 1 {
		a = append(a, "-smp", strconv.Itoa(r.cpus))
	}
	if strings.HasPrefix(r.machine, "pc") {
		if _, err := os.Stat(qbootROM); err == nil {
			a = append(a, "-bios", qbootROM)
		}
	}
	return append(a, r.extra...)
}

// needQEMU returns QEMU's path; the runs pass -enable-kvm.
func needQEMU(t testing.TB) string {
	t.Helper()
	q := testenv.MustHaveQEMU(t)
	testenv.MustHaveKVM(t)
	return q
}

// runQEMU boots r to completion and returns the console lines and QEMU's
// exit status.
func runQEMU(t *testing.T, qemu string, r qemuRun) ([]string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), qemuTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, r.args()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	lines := ConsoleLines(stdout.String())
	if ctx.Err() != nil {
		t.Fatalf("qemu %v: no exit within %v\nconsole:\n%s\nstderr:\n%s", r.args(), qemuTimeout, stdout.String(), stderr.String())
	}
	status := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("qemu %v: %v", r.args(), err)
	}
	t.Logf("qemu %s: status %d\n%s", strings.Join(r.args(), " "), status, stdout.String())
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("qemu stderr:\n%s", s)
	}
	return lines, status
}

// wantInOrder checks that want appear as whole lines of got, in this order.
func wantInOrder(t *testing.T, got []string, want ...string) {
	t.Helper()
	i := 0
	for _, l := range got {
		if i < len(want) && l == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("console lacks line %q (in order); got:\n%s", want[i], strings.Join(got, "\n"))
	}
}

func wantReadyFirst(t *testing.T, got []string) {
	t.Helper()
	if len(got) == 0 || got[0] != "corral-guest: ready" {
		t.Errorf("first console line is not %q: %q", "corral-guest: ready", got)
	}
}

func TestQEMUHello(t *testing.T) {
	qemu := needQEMU(t)
	kernel := BuildT(t, "hello")
	memmapLine := regexp.MustCompile(`^memmap: base=0x[0-9a-f]+ size=0x[0-9a-f]+ type=1$`)
	for _, tc := range []struct {
		machine, cmdline string
		exit             int
	}{
		{"microvm", "exit=7", 7},
		{"microvm", "", 0},
		{"microvm", "quiet exit=0x2a other=1", 42},
		{"pc", "exit=7", 7},
	} {
		t.Run(fmt.Sprintf("%s/%q", tc.machine, tc.cmdline), func(t *testing.T) {
			if tc.machine == "pc" {
				needQBoot(t)
			}
			lines, status := runQEMU(t, qemu, qemuRun{machine: tc.machine, kernel: kernel, cmdline: tc.cmdline})
			if want := QEMUStatus(tc.exit); status != want {
				t.Errorf("qemu status %d, want %d (guest exit %d)", status, want, tc.exit)
			}
			wantReadyFirst(t, lines)
			wantInOrder(t, lines, "corral-guest: hello", "cmdline: "+tc.cmdline,
				fmt.Sprintf("corral-guest: exit %d", tc.exit))
			if !slices.ContainsFunc(lines, memmapLine.MatchString) {
				t.Errorf("no RAM memmap line in:\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

func TestQEMUSMP(t *testing.T) {
	qemu := needQEMU(t)
	kernel := BuildT(t, "smp")
	wellFormed := regexp.MustCompile(`^(corral-guest: ready|smp: bsp apic \d+, trampoline 0x[0-9a-f]+, starting \d+ aps|cpu \d+ up|smp: \d+ cpus online|smp: timeout, \d+ of \d+ online)$`)
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprintf("cpus=%d", n), func(t *testing.T) {
			lines, status := runQEMU(t, qemu, qemuRun{machine: "microvm", kernel: kernel,
				cmdline: fmt.Sprintf("cpus=%d", n), cpus: n})
			if want := QEMUStatus(ExitOK); status != want {
				t.Errorf("qemu status %d, want %d", status, want)
			}
			wantReadyFirst(t, lines)
			wantInOrder(t, lines, fmt.Sprintf("smp: bsp apic 0, trampoline 0x8000, starting %d aps", n-1),
				fmt.Sprintf("smp: %d cpus online", n))
			var up []string
			for _, l := range lines {
				if !wellFormed.MatchString(l) {
					t.Errorf("malformed (interleaved?) console line %q", l)
				}
				if strings.HasPrefix(l, "cpu ") {
					up = append(up, l)
				}
			}
			slices.Sort(up)
			var want []string
			for k := 1; k < n; k++ {
				want = append(want, fmt.Sprintf("cpu %d up", k))
			}
			if !slices.Equal(up, want) {
				t.Errorf("APs reported %q, want %q", up, want)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		lines, status := runQEMU(t, qemu, qemuRun{machine: "microvm", kernel: kernel,
			cmdline: "cpus=3 timeout=300", cpus: 2})
		if want := QEMUStatus(ExitSMPTimeout); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "cpu 1 up", "smp: timeout, 2 of 3 online")
	})
}

func TestQEMURTC(t *testing.T) {
	qemu := needQEMU(t)
	kernel := BuildT(t, "rtc")
	for _, tc := range []struct {
		base, cmdline, mode string
	}{
		{"2031-07-09T21:45:30", "", "(bcd, 24h)"},
		{"2031-07-09T21:45:30", "binary=1", "(binary, 24h)"},
		{"2031-07-09T21:45:30", "h24=0", "(bcd, 12h)"},
		{"2031-07-09T21:45:30", "binary=1 h24=0", "(binary, 12h)"},
		{"2031-12-31T00:30:00", "h24=0", "(bcd, 12h)"}, // 12 AM
		{"2031-12-31T12:30:00", "h24=0", "(bcd, 12h)"}, // 12 PM
		{"1999-12-31T08:00:00", "binary=1", "(binary, 24h)"},
	} {
		t.Run(tc.base+"/"+tc.cmdline, func(t *testing.T) {
			base, err := time.Parse("2006-01-02T15:04:05", tc.base)
			if err != nil {
				t.Fatal(err)
			}
			lines, status := runQEMU(t, qemu, qemuRun{machine: "microvm,rtc=on", kernel: kernel,
				cmdline: tc.cmdline, extra: []string{"-rtc", "base=" + tc.base}})
			if want := QEMUStatus(ExitOK); status != want {
				t.Errorf("qemu status %d, want %d", status, want)
			}
			wantReadyFirst(t, lines)
			var got string
			for _, l := range lines {
				if strings.HasPrefix(l, "rtc: status-b ") && !strings.HasSuffix(l, tc.mode) {
					t.Errorf("status line %q, want mode %s", l, tc.mode)
				}
				if s, ok := strings.CutPrefix(l, "rtc: "); ok && !strings.HasPrefix(s, "status-b") {
					got = s
				}
			}
			when, err := time.Parse(rtcLayout, got)
			if err != nil {
				t.Fatalf("no parsable rtc line (%q): %v", got, err)
			}
			if d := when.Sub(base); d < 0 || d > rtcSlack {
				t.Errorf("guest read %s, QEMU's RTC started at %s (%v apart)", when, base, d)
			}
		})
	}
	t.Run("absent", func(t *testing.T) {
		lines, status := runQEMU(t, qemu, qemuRun{machine: "microvm,rtc=off", kernel: kernel})
		if want := QEMUStatus(ExitRTCAbsent); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "rtc: no rtc (status A and B read 0xff)")
	})
}

func TestQEMUFault(t *testing.T) {
	qemu := needQEMU(t)
	kernel := BuildT(t, "fault")
	lines, status := runQEMU(t, qemu, qemuRun{machine: "microvm", kernel: kernel})
	// -no-reboot turns the triple fault's reset into a clean QEMU exit.
	if status != 0 {
		t.Errorf("qemu status %d, want 0 (shutdown after triple fault)", status)
	}
	wantInOrder(t, lines, "corral-guest: ready", "corral-guest: triple-faulting (ud2, empty IDT)")
	if slices.Contains(lines, "corral-guest: survived ud2") {
		t.Error("guest survived ud2 with an empty IDT")
	}
}

// TestQEMUSpinHalt checks that spin and halt print their line and then keep
// the VM running until QEMU is killed.
func TestQEMUSpinHalt(t *testing.T) {
	qemu := needQEMU(t)
	for name, line := range map[string]string{"spin": "corral-guest: spinning", "halt": "corral-guest: halted"} {
		t.Run(name, func(t *testing.T) {
			kernel := BuildT(t, name)
			ctx, cancel := context.WithTimeout(t.Context(), qemuTimeout)
			defer cancel()
			r := qemuRun{machine: "microvm", kernel: kernel}
			cmd := exec.CommandContext(ctx, qemu, r.args()...)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			found := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(out)
				ok := false
				for sc.Scan() {
					if strings.TrimRight(sc.Text(), "\r") == line {
						ok = true
						break
					}
				}
				found <- ok
				io.Copy(io.Discard, out)
				exited <- cmd.Wait()
			}()
			defer func() {
				cmd.Process.Kill()
				<-exited
			}()
			if !<-found {
				t.Fatalf("console ended without %q", line)
			}
			select {
			case err := <-exited:
				exited <- err // for the deferred receive
				t.Fatalf("VM exited (%v) after %q; want it to keep running", err, line)
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}

// BenchmarkQEMUHello measures QEMU (microvm) booting hello to its exit, the
// reference figure for Corral's own boot benchmarks (see bench/).
func BenchmarkQEMUHello(b *testing.B) {
	qemu := needQEMU(b)
	kernel := BuildT(b, "hello")
	r := qemuRun{machine: "microvm", kernel: kernel, cmdline: "exit=7"}
	for b.Loop() {
		cmd := exec.CommandContext(b.Context(), qemu, r.args()...)
		out, err := cmd.Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != QEMUStatus(7) {
			b.Fatalf("qemu: %v\n%s", err, out)
		}
	}
}
