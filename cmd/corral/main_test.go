package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/internal/testkernel"
	"github.com/corral-vmm/corral/kvm"
	"github.com/corral-vmm/corral/tests/guests"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// sparseFile creates a file of size bytes that takes no disk space.
func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUsageErrors checks that each usage or configuration error exits 125
// with a message naming the problem. Configuration errors are found before
// KVM is opened, so these run on any host. Rows that test a flag use a
// kernel Validate accepts, so the message must come from the flag.
func TestUsageErrors(t *testing.T) {
	notKernel := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(notKernel, []byte("hello world, not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	bz := testkernel.WriteBzImage(t, testkernel.BzImage{CmdlineSize: 2047})
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"run"}, "no kernel given"},
		{[]string{"run", "--kernel", "/nonexistent"}, "no such file"},
		{[]string{"run", "--kernel", notKernel}, "not a Linux bzImage or PVH ELF"},
		{[]string{"run", "--kernel", bz, "--memory", "lots"}, "--memory: size \"lots\""},
		{[]string{"run", "--kernel", bz, "--memory", "0"}, "--memory 0: guest RAM cannot be 0"},
		{[]string{"run", "--kernel", bz, "--memory", "8M"}, "memory 8M is below the minimum"},
		{[]string{"run", "--kernel", bz, "--cpus", "0"}, "--cpus 0: must be between 1 and 254"},
		{[]string{"run", "--kernel", bz, "--cpus", "-3"}, "--cpus -3: must be between 1 and 254"},
		{[]string{"run", "--kernel", bz, "--cpus", "255"}, "--cpus 255: must be between 1 and 254"},
		{[]string{"run", "--kernel", bz, "--cpus", "two"}, "invalid value \"two\" for flag -cpus"},
		{[]string{"run", "--kernel", bz, "--log", "loud"}, "--log:"},
		{[]string{"run", "--kernel", bz, "--cmdline", strings.Repeat("a", 10<<10)},
			"command line is 10240 bytes, more than the 2047 this bzImage accepts (its cmdline_size)"},
		{[]string{"run", "--kernel", bz, "--initrd", sparseFile(t, 65<<20), "--memory", "64M"}, "initrd is 68157440 bytes, guest RAM 67108864"},
		{[]string{"run", "--kernel", bz, "--initrd", sparseFile(t, 40<<20), "--memory", "64M"}, "initrd of 41943040 bytes does not fit"},
		{[]string{"run", "--kernel", bz, "--net", "mac=00:00:00:00:00:00"}, "MAC 00:00:00:00:00:00 is not a non-zero unicast"},
		{[]string{"run", "--kernel", bz, "--net", "host=10.9.0.0/24"}, "host address 10.9.0.0 is the network address of 10.9.0.0/24"},
		{[]string{"run", "--kernel", bz, "--net", "tap=corral-much-too-long"}, "not a valid Linux interface name (at most 15 bytes"},
		{[]string{"run", "--kernel", bz, "--net", "bridge=nosuchbr0"}, "no such bridge: nosuchbr0 does not exist"},
		{[]string{"run", "--kernel", bz, "--net", "host=10.9.0.1/24,ip=10.9.1.5"}, "guest address 10.9.1.5 is outside the subnet 10.9.0.0/24"},
		{[]string{"run", "--kernel", bz, "--net", "fd=999"}, "is not open"},
		{[]string{"run", "--kernel", bz, "--vsock", "cid=x"}, "vsock \"cid=x\": cid: strconv.ParseUint"},
		{[]string{"run", "--kernel", bz, "--vsock", "port=5"}, "unknown option \"port=5\""},
		{[]string{"run", "--kernel", bz, "--vsock", "cid=2"}, "vsock: guest CID 2: want 3..4294967294"},
		{[]string{"run", "--kernel", bz, "--share", "/nonexistent-dir:data"}, "share 0 (data): stat /nonexistent-dir: no such file"},
		{[]string{"run", "--kernel", bz, "--share", "/tmp:bad/tag"}, "mount tag \"bad/tag\" has '/' at offset 3"},
		{[]string{"run", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"run", "--kernel", bz, "extra"}, "unexpected argument \"extra\""},
		{[]string{"dhcp"}, "corral dhcp replay"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("corral %.80q: status %d, stderr %q; want %d mentioning %q", c.args, code, stderr, exitUsage, c.want)
		}
	}
}

// TestMemoryAboveHostRAMWarns checks that --memory beyond the host's RAM is
// allowed, with a warning. The run's context is already cancelled, so with
// KVM the machine stops at once; without, New fails with 126.
func TestMemoryAboveHostRAMWarns(t *testing.T) {
	host, err := hostRAM()
	if err != nil {
		t.Fatal(err)
	}
	if host >= 1<<40 {
		t.Skipf("host has %d MiB of RAM, not less than the 1T maximum guest", host>>20)
	}
	bz := testkernel.WriteBzImage(t, testkernel.BzImage{CmdlineSize: 2047})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"run", "--kernel", bz, "--memory", "1T"}, strings.NewReader(""), &out, &errb)
	if code == exitUsage {
		t.Errorf("--memory 1T on a smaller host: usage error; stderr:\n%s", errb.String())
	}
	want := fmt.Sprintf("warning: --memory 1T is more than the host's %d MiB of RAM", host>>20)
	if !strings.Contains(errb.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, errb.String())
	}
	// Within the host's RAM: no warning.
	code, _, stderr := runCLI(t, "run", "--kernel", bz, "--memory", "8M")
	if code != exitUsage || strings.Contains(stderr, "warning") {
		t.Errorf("8M: status %d, stderr %q", code, stderr)
	}
}

// TestHelpDocumentsEverything checks that the help names every flag of
// `corral run` (walked from the flag set itself) and every exit status.
func TestHelpDocumentsEverything(t *testing.T) {
	code, out, _ := runCLI(t, "--help")
	if code != exitOK {
		t.Fatalf("--help: status %d", code)
	}
	fs, _ := newRunFlags(io.Discard)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(out, "\n  --"+f.Name+" ") {
			t.Errorf("help does not document --%s", f.Name)
		}
	})
	if n == 0 {
		t.Error("the flag set has no flags")
	}
	for _, status := range []int{exitOK, exitGuestFault, exitUsage, exitVMMFailure} {
		if !strings.Contains(out, fmt.Sprintf("\n  %-9d ", status)) {
			t.Errorf("help does not document exit status %d", status)
		}
	}
	for _, w := range []string{"128+n", "debug-exit", "Ctrl-A"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q", w)
		}
	}
	// `corral run --help` prints the same text.
	code, _, stderr := runCLI(t, "run", "--help")
	if code != exitOK || stderr != out {
		t.Errorf("corral run --help: status %d, and its text differs from corral --help", code)
	}
}

// TestExitStatus checks the mapping from how a machine ended to corral's
// status, and what it says on stderr.
func TestExitStatus(t *testing.T) {
	fault := &corral.VCPUError{VCPU: 1, What: "guest triple fault (KVM_EXIT_SHUTDOWN)",
		Regs: &kvm.Regs{RIP: 0x1000, RSP: 0x2000}, Sregs: &kvm.Sregs{CR0: 0x11}, Code: []byte{0x0f, 0x0b}}
	vmm := &corral.VCPUError{VCPU: 0, What: "KVM_RUN failed", Err: errors.New("kvm: KVM_RUN vCPU 0: bad address"),
		Regs: &kvm.Regs{RIP: 0x3000}}
	cases := []struct {
		name   string
		exit   corral.Exit
		sig    syscall.Signal
		status int
		stderr []string // substrings; nil: stderr must be empty
	}{
		{"debug exit", corral.Exit{Reason: corral.ExitDebug, Code: 42}, 0, 42, nil},
		{"power off", corral.Exit{Reason: corral.ExitPowerOff}, 0, exitOK, nil},
		{"reset", corral.Exit{Reason: corral.ExitReset, Detail: "guest reset"}, 0, exitOK, nil},
		{"console quit", corral.Exit{Reason: corral.ExitStopped}, 0, exitOK, nil},
		{"signal", corral.Exit{Reason: corral.ExitStopped}, syscall.SIGTERM, 128 + 15, []string{"stopped by terminated"}},
		{"guest fault", corral.Exit{Reason: corral.ExitGuestFault, Err: fault}, 0, exitGuestFault,
			[]string{"corral run: guest fault: vCPU 1: guest triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x1000\n", "RIP=0000000000001000", "RSP=0000000000002000", "CR0=00000011", "code at RIP: 0f 0b"}},
		{"VMM failure", corral.Exit{Reason: corral.ExitError, Err: vmm}, 0, exitVMMFailure,
			[]string{"corral run: machine failed: vCPU 0: KVM_RUN failed at RIP 0x3000: kvm: KVM_RUN vCPU 0: bad address\n", "RIP=0000000000003000"}},
		{"VMM failure without a vCPU", corral.Exit{Reason: corral.ExitError, Err: errors.New("corral: release: EBADF")}, 0, exitVMMFailure,
			[]string{"corral run: machine failed: corral: release: EBADF\n"}},
	}
	for _, c := range cases {
		var errb bytes.Buffer
		if got := exitStatus(c.exit, c.sig, &errb); got != c.status {
			t.Errorf("%s: status %d, want %d", c.name, got, c.status)
		}
		if c.stderr == nil && errb.Len() != 0 {
			t.Errorf("%s: stderr %q, want nothing", c.name, errb.String())
		}
		for _, w := range c.stderr {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("%s: stderr lacks %q:\n%s", c.name, w, errb.String())
			}
		}
	}
}

// TestRunGuestExitStatus boots the hello guest through the CLI and checks
// that its output reaches stdout and its debug-exit code becomes the status.
func TestRunGuestExitStatus(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "hello")
	code, out, stderr := runCLI(t, "run", "--kernel", k, "--cmdline", "exit=42", "--memory", "64M")
	if code != 42 {
		t.Fatalf("status %d, want 42; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(out, "corral-guest: hello") {
		t.Errorf("stdout lacks the guest's output:\n%s", out)
	}
	code, _, stderr = runCLI(t, "run", "--kernel", guests.BuildT(t, "fault"))
	if code != exitGuestFault || !strings.Contains(stderr, "guest fault: vCPU 0: guest triple fault") || !strings.Contains(stderr, "RIP=") {
		t.Errorf("triple-faulting guest: status %d, want %d with the registers; stderr:\n%s", code, exitGuestFault, stderr)
	}
}

// TestParseVsock checks the --vsock forms that are accepted.
func TestParseVsock(t *testing.T) {
	for in, want := range map[string]corral.Vsock{
		"on":                    {},
		"cid=7":                 {CID: 7},
		"cid=9,uds=/run/v.sock": {CID: 9, UDSPath: "/run/v.sock"},
		"uds=/tmp/x":            {UDSPath: "/tmp/x"},
	} {
		got, err := parseVsock(in)
		if err != nil || got != want {
			t.Errorf("parseVsock(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "off", "cid=", "cid=-1", "cid=4294967296", "uds="} {
		if _, err := parseVsock(bad); err == nil {
			t.Errorf("parseVsock(%q) accepted", bad)
		}
	}
}
