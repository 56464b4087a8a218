package corral

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestMSIVectorCloseTwice: a second Close of a vector does nothing: it
// used to close the vector's eventfd number again, which by then may be
// another file's.
func TestMSIVectorCloseTwice(t *testing.T) {
	r := newMSIRouter(nil)
	r.dying.Store(true) // no VM: no KVM call may be made
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	r.used[firstMSIGSI] = true
	v := &msiVector{r: r, gsi: firstMSIGSI, efd: efd}
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	other, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // takes the lowest free number: efd's
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	if other != efd {
		t.Skipf("the new eventfd got %d, not the closed %d: nothing to show", other, efd)
	}
	r.used[firstMSIGSI] = true // the GSI handed to another vector meanwhile
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := unix.FcntlInt(uintptr(other), unix.F_GETFD, 0); err != nil {
		t.Errorf("the second Close closed another file's descriptor %d (F_GETFD: %v)", other, err)
	}
	if !r.used[firstMSIGSI] {
		t.Errorf("the second Close freed GSI %d, held by another vector", firstMSIGSI)
	}
}
