package corral

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/kvm"
)

// Addresses KVM needs for its own use on Intel hosts, in the MMIO hole above
// the local APIC where no device or RAM lives (see boot/layout.go).
const (
	kvmIdentityMapAddr = 0xfffb_c000 // one page
	kvmTSSAddr         = 0xfffb_d000 // three pages
)

// Lifecycle errors, for callers to branch on with errors.Is.
var (
	// ErrStarted is returned by Start on a machine that was already started.
	ErrStarted = errors.New("corral: machine already started")
	// ErrNotStarted is returned by Wait on a machine that Start has not
	// started (Wait would otherwise block forever).
	ErrNotStarted = errors.New("corral: machine not started")
	// ErrClosed is returned by Start, and by Close after the first, on a
	// machine that Close has released.
	ErrClosed = errors.New("corral: machine closed")
)

// Machine is one virtual machine. Create it with New, run it with Start,
// end it with Stop (or let the guest end it), collect the outcome with
// Wait, and Close it. All methods are safe for concurrent use.
type Machine struct {
	id   string
	name string
	cfg  Config
	log  *slog.Logger

	sys   *kvm.System
	vm    *kvm.VM
	mem   *guestmem.Memory
	vcpus []*kvm.VCPU
	pio   *devices.Bus
	mmio  *devices.Bus
	plat  *platform

	stopping  atomic.Bool // set once, before any vCPU is kicked
	vcpuWG    sync.WaitGroup
	unclaimed unclaimedCounter // guest accesses no device claimed
	exits     exitCounters     // vCPU exits by reason, for Metrics
	pause     pauseState       // Pause parks the vCPUs here (pause.go)
	glog      *guestlog.Logger // rate-limited log of what the guest causes
	done      chan struct{}    // closed when everything is released

	restored      *restoreInfo // the snapshot a Restore built this machine from; nil for New's
	msrIndices    []uint32     // KVM_GET_MSR_INDEX_LIST, read at setup: a confined VMM cannot ask later
	resumeOnStart bool         // the devices were restored paused: Start resumes them

	reg atomic.Pointer[registration] // set by Start once registered (inventory.go)
	ctl atomic.Pointer[controlState] // the control socket, once served (control.go)

	// mu guards the lifecycle fields below. The fields above it are set
	// by New and read-only afterwards, or synchronize themselves.
	mu         sync.Mutex
	started    bool  // Start succeeded
	closed     bool  // Close was called; Start now fails
	released   bool  // release ran or is running
	releaseErr error // what releasing returned, for Close
	exit       *Exit // the first reason the machine ended
	final      Exit  // the exit Wait returns, set before done is closed
}

// New validates cfg, creates the VM with its memory, devices and vCPUs, and
// loads the kernel. Nothing runs until Start. On error everything created
// so far is released.
func New(cfg Config) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	m := &Machine{id: id, name: cfg.Name, cfg: cfg, done: make(chan struct{})}
	m.pause.init()
	if m.name == "" {
		m.name = id
	}
	m.log = cfg.logger().With("vm", m.name)
	m.glog = guestlog.New(m.log, nil)
	ok := false
	defer func() {
		if !ok {
			m.release()
		}
	}()
	t0 := time.Now()
	if err := m.createVM(nil); err != nil {
		return nil, err
	}
	entry, err := m.loadKernel()
	if err != nil {
		return nil, err
	}
	if err := m.createPlatform(); err != nil {
		return nil, err
	}
	if err := m.createDisks(); err != nil {
		return nil, err
	}
	if err := m.createNets(); err != nil {
		return nil, err
	}
	if err := m.createVsock(); err != nil {
		return nil, err
	}
	if err := m.createShares(); err != nil {
		return nil, err
	}
	if err := m.createVCPUs(entry); err != nil {
		return nil, err
	}
	ok = true
	m.log.Info("vm.created", "id", m.id, "kernel", cfg.Kernel, "kind", entry.Kind.String(),
		"cpus", cfg.cpus(), "memory", FormatSize(cfg.memory()), "disks", len(cfg.Disks), "setup", time.Since(t0))
	return m, nil
}

func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("corral: machine ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Config returns the machine's configuration: New's, or for a restored
// machine the one Restore built from the snapshot and RestoreConfig.
func (m *Machine) Config() Config { return m.cfg }

// ID returns the machine's unique identifier (16 hex digits).
func (m *Machine) ID() string { return m.id }

// Name returns Config.Name, or the ID when that was empty.
func (m *Machine) Name() string { return m.name }

// createVM opens KVM, creates the VM with its interrupt controllers and
// maps guest memory into it: mem when given (a snapshot's), else fresh
// anonymous memory.
func (m *Machine) createVM(mem *guestmem.Memory) error {
	var err error
	m.mem = mem
	if m.sys, err = kvm.Open(m.cfg.KVMDevice); err != nil {
		return err
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return err
	}
	if err := m.vm.SetIdentityMapAddr(kvmIdentityMapAddr); err != nil {
		return err
	}
	if err := m.vm.SetTSSAddr(kvmTSSAddr); err != nil {
		return err
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return err
	}
	if err := m.vm.CreatePIT2(); err != nil {
		return err
	}
	if err := m.vm.SetGSIRouting(kvm.DefaultIRQChipRoutes()); err != nil {
		return err
	}
	var ranges []guestmem.Range
	for _, r := range boot.RAMRanges(m.cfg.memory()) {
		ranges = append(ranges, guestmem.Range{GPA: r.GPA, Size: r.Size})
	}
	if m.mem == nil {
		if m.mem, err = guestmem.Allocate(ranges...); err != nil {
			return err
		}
	} else if err := sameLayout(m.mem, ranges); err != nil {
		return err
	}
	for i, r := range m.mem.Regions() {
		if err := m.vm.SetUserMemoryRegion(uint32(i), r.GPA, r.Data); err != nil {
			return err
		}
	}
	return nil
}

// sameLayout checks that memory from a snapshot has the RAM ranges the
// machine's memory size gives.
func sameLayout(mem *guestmem.Memory, ranges []guestmem.Range) error {
	regs := mem.Regions()
	if len(regs) != len(ranges) {
		return fmt.Errorf("corral: guest memory has %d regions, the memory size gives %d", len(regs), len(ranges))
	}
	for i, r := range regs {
		if r.GPA != ranges[i].GPA || uint64(len(r.Data)) != ranges[i].Size {
			return fmt.Errorf("corral: guest memory region %d is %#x+%#x, the memory size gives %#x+%#x", i, r.GPA, len(r.Data), ranges[i].GPA, ranges[i].Size)
		}
	}
	return nil
}

// Start runs the vCPUs. The machine ends when the guest ends it, on Stop,
// or when ctx is done; Wait reports how.
func (m *Machine) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.started {
		return ErrStarted
	}
	t0 := time.Now()
	if err := m.register(); err != nil {
		return err
	}
	// At debug level: the inventory and audit writes are part of start-up
	// latency (bench/startstop).
	m.log.Debug("vm.registered", "id", m.id, "took", time.Since(t0).Round(time.Microsecond))
	if m.resumeOnStart {
		if err := m.plat.resumeDevices(); err != nil {
			return fmt.Errorf("corral: starting restored devices: %w", err)
		}
		m.resumeOnStart = false
	}
	m.started = true
	vcpusDone := make(chan struct{})
	m.vcpuWG.Add(len(m.vcpus))
	for _, v := range m.vcpus {
		go m.runVCPU(v)
	}
	m.plat.start()
	go func() {
		select {
		case <-ctx.Done():
			m.end(Exit{Reason: ExitStopped, Detail: "context: " + context.Cause(ctx).Error()})
		case <-vcpusDone:
		}
	}()
	go func() {
		m.vcpuWG.Wait()
		close(vcpusDone)
		m.release()
		m.mu.Lock()
		m.final = *m.exit
		m.mu.Unlock()
		m.log.Info("vm.ended", "id", m.id, "exit", m.final.String(), "unclaimed_accesses", m.unclaimed.snapshot().Total())
		t0 := time.Now()
		m.unregister(m.final)
		m.log.Debug("vm.unregistered", "id", m.id, "took", time.Since(t0).Round(time.Microsecond))
		close(m.done)
	}()
	m.startControl()
	m.startTTL(systemTTLClock{})
	m.log.Info("vm.started", "id", m.id)
	return nil
}

// end records the first reason the machine ends and kicks every vCPU out of
// the guest. Later calls change nothing.
func (m *Machine) end(e Exit) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.exit == nil {
		m.exit = &e
		attrs := []slog.Attr{slog.String("id", m.id), slog.String("exit", e.String())}
		var ve *VCPUError
		if errors.As(e.Err, &ve) {
			attrs = append(attrs, slog.Any("vcpu_state", ve))
		}
		m.log.LogAttrs(context.Background(), slog.LevelInfo, "vm.ending", attrs...)
	}
	if m.released {
		return
	}
	m.stopping.Store(true)
	for _, v := range m.vcpus {
		v.Kick()
	}
	m.pause.wake() // parked vCPUs see stopping and end
}

// Stop asks the machine to end. It returns at once; Wait returns when it has
// ended. Stopping an ended machine does nothing.
func (m *Machine) Stop() {
	m.end(Exit{Reason: ExitStopped, Detail: "Stop called"})
}

// Wait blocks until the machine has ended and released its resources, and
// returns how it ended. The error is ErrNotStarted, at once, when Start has
// not started the machine; it is Exit.Err when the VMM failed (ExitError);
// it is nil for every end the guest or the host chose, including a guest
// fault (ExitGuestFault, whose Exit.Err says what the guest did).
func (m *Machine) Wait() (Exit, error) {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if !started {
		return Exit{}, ErrNotStarted
	}
	<-m.done
	if m.final.Reason == ExitError {
		return m.final, m.final.Err
	}
	return m.final, nil
}

// Done returns a channel closed when the machine has ended and released
// its resources.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Close ends the machine if it runs, waits for it, and releases everything
// it holds; it returns what releasing failed at (errors.Join of each
// failure). It is also the way to dispose of a machine that New created but
// that never started. Later calls return ErrClosed.
func (m *Machine) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.closed = true
	if m.started {
		m.mu.Unlock()
		m.Stop()
		<-m.done
		m.waitControl()
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.releaseErr
	}
	m.mu.Unlock()
	m.release()
	close(m.done)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.releaseErr
}

// release frees vCPUs, devices, the VM and guest memory, once. No vCPU may
// be running.
func (m *Machine) release() {
	m.mu.Lock()
	if m.released {
		m.mu.Unlock()
		return
	}
	m.released = true
	m.mu.Unlock()
	// How long each part took, at debug level: a warm exec waits for all
	// of it (bench/results' warm-exec figures).
	t0 := time.Now()
	var took []any
	lap := func(what string) {
		now := time.Now()
		took = append(took, what, now.Sub(t0).Round(time.Microsecond))
		t0 = now
	}
	var errs []error
	if m.plat != nil {
		if m.vm != nil {
			m.plat.router.dying.Store(true) // m.vm is closed below
		}
		errs = append(errs, m.plat.close())
	}
	lap("platform")
	for _, v := range m.vcpus {
		errs = append(errs, v.Close())
	}
	lap("vcpus")
	closeIf := func(c io.Closer) {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	if m.vm != nil {
		closeIf(m.vm)
	}
	lap("vm")
	if m.sys != nil {
		closeIf(m.sys)
	}
	if m.mem != nil {
		closeIf(m.mem)
	}
	lap("memory")
	m.log.Debug("vm.release", append([]any{"id", m.id}, took...)...)
	err := errors.Join(errs...)
	if err != nil {
		m.log.Error("vm.release", "id", m.id, "err", err)
	}
	m.mu.Lock()
	m.releaseErr = err
	m.mu.Unlock()
}
