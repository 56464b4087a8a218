package corral

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/kvm"
)

// sampleVCPUError is a triple fault in 64-bit code with full state.
func sampleVCPUError() *VCPUError {
	return &VCPUError{
		VCPU:  2,
		What:  "guest triple fault (KVM_EXIT_SHUTDOWN)",
		Regs:  &kvm.Regs{RIP: 0x100abc, RSP: 0x7ff0, RAX: 0xdead, R15: 0xf15, RFLAGS: 0x2},
		Sregs: &kvm.Sregs{CR0: 0x80050033, CR3: 0x9000, CR4: 0x20, EFER: 0x500, CS: kvm.Segment{Selector: 0x10, L: 1}},
		Code:  []byte{0x0f, 0x0b, 0x90},
	}
}

func TestVCPUErrorIsOneLine(t *testing.T) {
	cause := errors.New("kvm: KVM_RUN vCPU 2: bad address")
	cases := []struct {
		err  *VCPUError
		want string
	}{
		{sampleVCPUError(), "vCPU 2: guest triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x100abc"},
		{&VCPUError{VCPU: 0, What: "KVM_RUN failed", Err: cause, StateErr: errors.New("registers: EBADF")},
			"vCPU 0: KVM_RUN failed: kvm: KVM_RUN vCPU 2: bad address"},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
		e := Exit{Reason: ExitGuestFault, Err: c.err}
		if s := e.String(); strings.Contains(s, "\n") || !strings.HasPrefix(s, "guest-fault: vCPU") {
			t.Errorf("Exit.String() = %q, want one line starting with the reason", s)
		}
	}
	if !errors.Is(cases[1].err, cause) {
		t.Error("VCPUError does not unwrap to its cause")
	}
}

func TestVCPUErrorAs(t *testing.T) {
	orig := sampleVCPUError()
	e := Exit{Reason: ExitGuestFault, Err: orig}
	wrapped := fmt.Errorf("corral run: %w", e.Err)
	var ve *VCPUError
	if !errors.As(wrapped, &ve) || ve != orig {
		t.Fatalf("errors.As(%v) = %v, want the VCPUError", wrapped, ve)
	}
	if ve.Regs.RIP != 0x100abc || !bytes.Equal(ve.Code, []byte{0x0f, 0x0b, 0x90}) {
		t.Errorf("state lost: RIP %#x code % x", ve.Regs.RIP, ve.Code)
	}
}

func TestVCPUErrorDump(t *testing.T) {
	d := sampleVCPUError().Dump()
	for _, want := range []string{
		"vCPU 2: guest triple fault",
		"RIP=0000000000100abc", "RSP=0000000000007ff0", "RAX=000000000000dead", "R15=0000000000000f15",
		"CR0=80050033", "CR3=0000000000009000", "EFER=500", "CS=0010", "L=1",
		"code at RIP: 0f 0b 90",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("Dump lacks %q:\n%s", want, d)
		}
	}
	if strings.HasSuffix(d, "\n") || strings.Count(d, "\n") < 7 {
		t.Errorf("Dump is %d lines with a final newline %v:\n%s", strings.Count(d, "\n")+1, strings.HasSuffix(d, "\n"), d)
	}
	for _, line := range strings.Split(d, "\n") {
		if !strings.HasPrefix(line, "  ") {
			t.Errorf("line %q is not indented", line)
		}
	}
	// Without state, the dump says why and prints no made-up registers.
	d = (&VCPUError{VCPU: 1, What: "KVM_RUN failed", StateErr: errors.New("registers: EBADF")}).Dump()
	if !strings.Contains(d, "state unavailable: registers: EBADF") || strings.Contains(d, "RIP=") {
		t.Errorf("Dump without state:\n%s", d)
	}
}

// TestVCPUErrorLogsAsGroup checks that the error logs as a group of
// attributes, one record on one line, not a multi-line string.
func TestVCPUErrorLogsAsGroup(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("vm.ending", "exit", "guest-fault", slog.Any("vcpu_state", sampleVCPUError()))
	var rec struct {
		State map[string]any `json:"vcpu_state"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	want := map[string]any{"vcpu": 2.0, "rip": "0x100abc", "rsp": "0x7ff0", "r15": "0xf15", "cr3": "0x9000", "cs": "0x10", "cs_long": true, "code": "0f 0b 90"}
	for k, v := range want {
		if rec.State[k] != v {
			t.Errorf("vcpu_state.%s = %v, want %v (record %s)", k, rec.State[k], v, buf.Bytes())
		}
	}
	buf.Reset()
	slog.New(slog.NewTextHandler(&buf, nil)).Info("vm.ending", "vcpu_state", sampleVCPUError())
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), "vcpu_state.rip=0x100abc") {
		t.Errorf("text record is %d lines: %s", n, buf.String())
	}
}

func TestExitReasonNames(t *testing.T) {
	seen := map[string]ExitReason{}
	for r := ExitPowerOff; r <= ExitGuestFault; r++ {
		s := r.String()
		if strings.HasPrefix(s, "ExitReason(") {
			t.Errorf("%d has no name", int(r))
		}
		if o, dup := seen[s]; dup {
			t.Errorf("%d and %d are both %q", int(o), int(r), s)
		}
		seen[s] = r
	}
	if ExitGuestFault.String() != "guest-fault" {
		t.Errorf("ExitGuestFault = %q", ExitGuestFault.String())
	}
}
