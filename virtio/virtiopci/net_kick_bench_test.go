package virtiopci

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/virtionet"
)

// BenchmarkNetTxKickToInterrupt is BenchmarkKickToInterrupt for
// virtio-net's transmit queue: the thread-locked "vCPU" makes a burst of
// 64-byte frames available (header and frame in two descriptors, as Linux
// sends them), writes the transmit queue's bound eventfd, sleeps in a read
// of the queue vector's irqfd-like eventfd until every frame is in the used
// ring (taking them as they come, re-arming the interrupt before each
// sleep, as Linux's driver does; it kicks only when the device asked for
// it), then reads the frames from the far end of the socket-pair backend
// (the host kernel's side of a TAP). ns/op, cpu-ns/op and beside-ns/op are
// per frame, as in BenchmarkKickToInterrupt.
func BenchmarkNetTxKickToInterrupt(b *testing.B) {
	for _, burst := range []int{1, 32} {
		b.Run(fmt.Sprintf("burst-%d", burst), func(b *testing.B) { benchNetTxKick(b, burst) })
	}
}

func benchNetTxKick(b *testing.B, burst int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	peer := fds[1]
	b.Cleanup(func() { unix.Close(peer) })
	be, err := virtionet.NewFileBackend(os.NewFile(uintptr(fds[0]), "dev-end"), true)
	if err != nil {
		b.Fatal(err)
	}
	dev, err := virtionet.New(virtionet.Config{Backend: be, MAC: []byte{0x02, 'c', 'r', 0, 7, 2}})
	if err != nil {
		b.Fatal(err)
	}
	mem := newTestMem(b)
	ints := &irqfdInterrupts{}
	b.Cleanup(func() {
		for _, fd := range ints.fds {
			unix.Close(fd)
		}
	})
	binder := &fakeBinder{bound: map[uint64]int{}}
	g := newGuest(b, Config{Device: dev, Mem: mem, Interrupts: ints, Notify: binder})
	if err := g.tr.ConfigSpace().SetBARAddress(0, kickBase); err != nil {
		b.Fatal(err)
	}
	g.tr.ConfigSpace().SetCommand(pci.CommandMemory)
	for i := 0; i <= 1; i++ {
		g.programVector(i, 0xfee00000, 0x30+uint32(i))
	}
	g.msixControl(true, false)
	if !g.negotiate(virtio.FVersion1 | virtio.FEventIdx) {
		b.Fatal("negotiation failed")
	}
	g.w16(g.common+ccMSIXConfig, 1)
	d := testdriver.New(mem, 256, 0x10000, 4<<20, 0)
	d.EventIdx = true
	g.setupQueue(virtionet.TxQueue, 256, d.L.Desc, d.L.Avail, d.L.Used, 0)
	g.setStatus(g.status() | virtio.StatusDriverOK)

	const frameLen = 64
	frame := make([]byte, virtionet.HeaderLen+frameLen)
	copy(frame[virtionet.HeaderLen:], []byte{0x02, 'c', 'r', 0, 7, 1, 0x02, 'c', 'r', 0, 7, 2, 0x08, 0x00})
	pkts := make([]uint64, burst)
	for i := range pkts {
		pkts[i] = d.Alloc(uint64(len(frame)), 64)
		mem.WriteAt(frame, pkts[i])
	}
	fd, ok := binder.bound[kickBase+notifyOffset+virtionet.TxQueue*NotifyMultiplier]
	if !ok {
		b.Fatalf("no eventfd bound for the transmit queue: %v", binder.bound)
	}
	irqfd := ints.fds[0]
	var one, got [8]byte
	one[0] = 1
	buf := make([]byte, 2048)
	// do sends k frames as Linux's driver does: kick only when the device
	// asked for it (EVENT_IDX), take completions as they come and re-arm
	// the interrupt before sleeping, re-checking after.
	do := func(k int) {
		old := d.AvailIdx()
		for _, p := range pkts[:k] {
			d.Add(testdriver.Seg{Addr: p, Len: virtionet.HeaderLen}, testdriver.Seg{Addr: p + virtionet.HeaderLen, Len: frameLen})
		}
		if d.NeedKick(old) {
			if _, err := unix.Write(fd, one[:]); err != nil {
				b.Fatal(err)
			}
		}
		for done := 0; done < k; {
			if _, _, ok := d.Used(); ok {
				done++
				continue
			}
			d.EnableInterrupts()
			guestmem.Fence() // used_event before the used idx read, as virtio_mb() in Linux's enable_cb
			if _, _, ok := d.Used(); ok {
				done++
				continue
			}
			if _, err := unix.Read(irqfd, got[:]); err != nil {
				b.Fatal(err)
			}
		}
		for range k {
			if _, err := unix.Read(peer, buf); err != nil {
				b.Fatalf("host side: %v", err)
			}
		}
	}
	for range 100 {
		do(burst)
	}
	measureCPU(b, "pkt/s", func() {
		for n := 0; n < b.N; n += burst {
			do(min(burst, b.N-n))
		}
	})
}
