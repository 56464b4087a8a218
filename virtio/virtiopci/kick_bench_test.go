package virtiopci

import (
	"encoding/binary"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/virtio/blk"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// irqfdInterrupts are MSI-X vectors that write an eventfd on Trigger, as
// the VMM's irqfd vectors do, so the benchmark's "vCPU" is a thread asleep
// in a read, not a goroutine woken through the Go scheduler.
type irqfdInterrupts struct {
	fds  []int
	intx fakeINTx
}

type irqfdVector struct{ fd int }

func (v irqfdVector) Update(uint64, uint32, bool) error { return nil }
func (v irqfdVector) Close() error                      { return nil }
func (v irqfdVector) Trigger() error {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_, err := unix.Write(v.fd, one[:])
	return err
}

func (f *irqfdInterrupts) NewMSIVector() (MSIVector, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f.fds = append(f.fds, fd)
	return irqfdVector{fd}, nil
}

func (f *irqfdInterrupts) INTx() devices.IRQLine { return &f.intx }

// BenchmarkKickToInterrupt measures one virtio-blk request from the kick to
// its interrupt as a VM sees it: a thread-locked goroutine (the "vCPU")
// writes the queue's bound eventfd (as KVM does on the guest's notify
// write), sleeps in a read of the queue vector's irqfd-like eventfd, then
// takes the used entry; one request in flight, a 4 KiB read from the page
// cache. cpu-ns/op is the process's CPU time (user + system, every thread)
// per request, and cpu-ns/op beside the "vCPU" excludes that thread's:
// the device's wake-ups, the read and the completion.
func BenchmarkKickToInterrupt(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ints := &irqfdInterrupts{}
	r := newKickRigWith(b, newTestMem(b), true, ints)
	b.Cleanup(func() {
		for _, fd := range ints.fds {
			unix.Close(fd)
		}
	})
	d, mem := r.d, r.mem
	hdr, data, st := d.Alloc(16, 16), d.Alloc(4096, 4096), d.Alloc(1, 1)
	var hb [16]byte
	binary.LittleEndian.PutUint32(hb[0:], blk.TypeIn)
	mem.WriteAt(hb[:], hdr)
	segs := []testdriver.Seg{{Addr: hdr, Len: 16}, {Addr: data, Len: 4096, Write: true}, {Addr: st, Len: 1, Write: true}}
	fd, ok := r.binder.bound[kickBase+notifyOffset]
	if !ok {
		b.Fatal("no eventfd bound")
	}
	irqfd := ints.fds[0]
	var one, got [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	want := d.UsedIdx()
	do := func() {
		d.Add(segs...)
		d.EnableInterrupts()
		if _, err := unix.Write(fd, one[:]); err != nil {
			b.Fatal(err)
		}
		want++
		for d.UsedIdx() != want {
			if _, err := unix.Read(irqfd, got[:]); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, ok := d.Used(); !ok {
			b.Fatal("no used entry")
		}
	}
	for range 100 {
		do()
	}
	measureCPU(b, "req/s", func() {
		for range b.N {
			do()
		}
	})
}

// measureCPU times loop (b.N operations, run on the calling thread: the
// "vCPU") and reports the process's CPU per operation, the part of it
// beside that thread, and operations per second as unit.
func measureCPU(b *testing.B, unit string, loop func()) {
	var ru0, ru1, th0, th1 syscall.Rusage
	b.ReportAllocs()
	b.ResetTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	syscall.Getrusage(unix.RUSAGE_THREAD, &th0)
	loop()
	syscall.Getrusage(unix.RUSAGE_THREAD, &th1)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	b.StopTimer()
	cpu := func(a, z *syscall.Rusage) float64 {
		return float64(z.Utime.Nano() + z.Stime.Nano() - a.Utime.Nano() - a.Stime.Nano())
	}
	all, vcpu := cpu(&ru0, &ru1), cpu(&th0, &th1)
	b.ReportMetric(all/float64(b.N), "cpu-ns/op")
	b.ReportMetric((all-vcpu)/float64(b.N), "beside-ns/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}
