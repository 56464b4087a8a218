package kvm

import "testing"

func TestRunningIoctlsLeaveOutCreation(t *testing.T) {
	got := map[uintptr]string{}
	for _, r := range RunningIoctls() {
		if _, ok := requestNames[r.Number]; !ok {
			t.Errorf("%s (%#x) is not a request this package issues", r.Name, r.Number)
		}
		got[r.Number] = r.Name
	}
	for _, req := range []uintptr{kvmCreateVM, kvmCreateVCPU, kvmSetUserMemoryRegion, kvmCreateIRQChip, kvmCreatePIT2, kvmSetCPUID2} {
		if n, ok := got[req]; ok {
			t.Errorf("%s is a setup request but RunningIoctls lists it", n)
		}
	}
	if got[kvmRun] != "KVM_RUN" {
		t.Errorf("KVM_RUN missing: %v", got)
	}
}
