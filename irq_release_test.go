package corral

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/kvm"
)

// TestMSIVectorCloseWhileDying: once the machine's release has begun
// (router.dying), closing a vector makes no KVM call (the VM's own close
// unbinds every irqfd and route at once; each call of its own waits for an
// SRCU grace period): here the router has no VM at all, so a call would
// panic. The eventfd is still closed and the GSI freed.
func TestMSIVectorCloseWhileDying(t *testing.T) {
	r := newMSIRouter(nil)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	r.used[firstMSIGSI] = true
	r.routes[firstMSIGSI] = kvm.Route{GSI: firstMSIGSI, IsMSI: true, MSIAddr: 0xfee00000}
	v := &msiVector{r: r, gsi: firstMSIGSI, efd: efd}
	r.dying.Store(true)
	if err := v.Close(); err != nil {
		t.Fatalf("Close while dying: %v", err)
	}
	if _, err := unix.FcntlInt(uintptr(efd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("the vector's eventfd is still open (F_GETFD: %v)", err)
	}
	if r.used[firstMSIGSI] || len(r.routes) != 0 {
		t.Errorf("GSI %d still held: used %v, routes %v", firstMSIGSI, r.used, r.routes)
	}
}
