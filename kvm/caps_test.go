package kvm

import (
	"strings"
	"testing"
)

// TestRequiredCapsIsACopy checks that a caller changing the returned slice
// cannot change what Open checks.
func TestRequiredCapsIsACopy(t *testing.T) {
	a := RequiredCaps()
	if len(a) == 0 {
		t.Fatal("no required capabilities")
	}
	want := a[0]
	a[0] = Cap(9999)
	if b := RequiredCaps(); b[0] != want {
		t.Errorf("RequiredCaps()[0] = %v after a caller changed its copy, want %v", b[0], want)
	}
	for _, c := range RequiredCaps() {
		if !strings.HasPrefix(c.String(), "KVM_CAP_") {
			t.Errorf("required capability %d has no name: %v", int(c), c)
		}
	}
	if s := Cap(9999).String(); s != "KVM_CAP(9999)" {
		t.Errorf("unknown capability: %q", s)
	}
}
