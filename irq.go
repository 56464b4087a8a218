package corral

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/kvm"
)

// irqLine is a legacy interrupt line of the in-kernel irqchip (a GSI).
type irqLine struct {
	vm  *kvm.VM
	gsi uint32
}

// SetLevel drives the line through KVM_IRQ_LINE.
func (l irqLine) SetLevel(high bool) error { return l.vm.IRQLine(l.gsi, high) }

// firstMSIGSI is the first GSI past the IOAPIC's 24 pins, used for MSI routes.
const firstMSIGSI = 24

// maxMSIGSI bounds the GSIs handed to MSI vectors (KVM allows 1024 routes).
const maxMSIGSI = 1024

// msiRouter owns the VM's GSI routing table: the legacy irqchip routes plus
// one MSI route per unmasked vector. KVM_SET_GSI_ROUTING replaces the whole
// table, so every change rewrites it under one lock.
type msiRouter struct {
	vm *kvm.VM

	mu     sync.Mutex
	routes map[uint32]kvm.Route // MSI routes by GSI
	used   map[uint32]bool      // GSIs held by live vectors

	// dying: the VM is being released and its fd closed next, which tears
	// down every irqfd, ioeventfd and route at once. Closing vectors and
	// notify bindings then skips their own ioctls: each deassign or route
	// rewrite waits for an SRCU grace period (14 vectors and 8 notify
	// bindings of a warm machine took ~30-55 ms of its stop under TCG).
	dying atomic.Bool
}

func newMSIRouter(vm *kvm.VM) *msiRouter {
	return &msiRouter{vm: vm, routes: map[uint32]kvm.Route{}, used: map[uint32]bool{}}
}

// commit writes the table; the caller holds mu.
func (r *msiRouter) commit() error {
	table := kvm.DefaultIRQChipRoutes()
	for gsi := uint32(firstMSIGSI); gsi < maxMSIGSI; gsi++ {
		if rt, ok := r.routes[gsi]; ok {
			table = append(table, rt)
		}
	}
	return r.vm.SetGSIRouting(table)
}

// NewMSIVector allocates a GSI with an eventfd bound to it by irqfd. The
// vector delivers nothing until Update gives it an unmasked message.
func (r *msiRouter) NewMSIVector() (*msiVector, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	gsi := uint32(0)
	for g := uint32(firstMSIGSI); g < maxMSIGSI; g++ {
		if !r.used[g] {
			gsi = g
			break
		}
	}
	if gsi == 0 {
		return nil, fmt.Errorf("corral: no free GSI for an MSI vector (%d in use)", len(r.used))
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("corral: eventfd for MSI vector: %w", err)
	}
	if err := r.vm.IRQFD(efd, gsi, false); err != nil {
		unix.Close(efd)
		return nil, err
	}
	r.used[gsi] = true
	return &msiVector{r: r, gsi: gsi, efd: efd}, nil
}

// msiVector is one MSI(-X) vector: a GSI whose route the guest programs and
// an irqfd the device signals from any goroutine without a vCPU exit.
type msiVector struct {
	r      *msiRouter
	gsi    uint32
	efd    int
	closed bool // Close ran; guarded by r.mu
}

// Update reprograms the vector's message; masked removes its route so
// signals are dropped by KVM (the transport keeps the pending bit).
func (v *msiVector) Update(addr uint64, data uint32, masked bool) error {
	v.r.mu.Lock()
	defer v.r.mu.Unlock()
	if masked {
		if _, ok := v.r.routes[v.gsi]; !ok {
			return nil
		}
		delete(v.r.routes, v.gsi)
	} else {
		rt := kvm.Route{GSI: v.gsi, IsMSI: true, MSIAddr: addr, MSIData: data}
		if old, ok := v.r.routes[v.gsi]; ok && old == rt {
			return nil
		}
		v.r.routes[v.gsi] = rt
	}
	return v.r.commit()
}

// Trigger signals the vector's eventfd; KVM injects the interrupt.
func (v *msiVector) Trigger() error {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(v.efd, one[:]); err != nil && err != unix.EAGAIN {
		return fmt.Errorf("corral: signal MSI eventfd of GSI %d: %w", v.gsi, err)
	}
	return nil
}

// Close unbinds and frees the vector; while the router is dying only the
// eventfd is closed (the VM's release unbinds it). Later calls do nothing.
func (v *msiVector) Close() error {
	v.r.mu.Lock()
	defer v.r.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	dying := v.r.dying.Load()
	var err error
	if !dying {
		err = v.r.vm.IRQFD(v.efd, v.gsi, true)
	}
	unix.Close(v.efd)
	delete(v.r.used, v.gsi)
	if _, routed := v.r.routes[v.gsi]; routed {
		delete(v.r.routes, v.gsi)
		if !dying {
			if cerr := v.r.commit(); err == nil {
				err = cerr
			}
		}
	}
	return err
}
