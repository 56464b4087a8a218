package agentvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/agent/proto"
	"github.com/corral-vmm/corral/virtio/vsock"
)

// Bounds of the agent conversations agentvm has itself.
const (
	// helloTimeout bounds one greeting of the agent during Start.
	helloTimeout = 10 * time.Second
	// powerOffTimeout bounds asking the agent to power off in Close, and
	// then again the wait for the machine to end by itself.
	powerOffTimeout = 5 * time.Second
	// Backoff between tries to reach the agent.
	minBackoff = 10 * time.Millisecond
	maxBackoff = 250 * time.Millisecond
	// refusedBackoff is the longest backoff once the guest refuses, while
	// the agent's announcement (agent.ReadyPort) is awaited: each refused
	// try is a packet the booting guest's kernel takes and answers (on an
	// emulated guest kernel, 52 of them in a 20 s wait), and the
	// announcement ends the wait at once. An agent that does not announce
	// is still found, up to this much later.
	refusedBackoff = 2 * time.Second
)

// VM is a running machine whose agent answered. Its methods are safe for
// concurrent use.
type VM struct {
	m    *corral.Machine // nil in tests against a fake agent
	ring *consoleRing
	log  *slog.Logger

	// dial dials the agent once; waitAgent retries it in its own loop,
	// sessions through Dial, which retries a refusal.
	dial func(ctx context.Context) (net.Conn, error)
	done <-chan struct{} // closed when the machine has ended
	stop func() error    // stops and releases the machine
	// ready is closed when the booting agent announces that it listens
	// (agent.ReadyPort); nil when nothing listens for that.
	ready <-chan struct{}
	// writableDisk: a disk the guest may write, which a sync only hands
	// guest writes to; Close then waits for the guest's own power-off.
	writableDisk bool
	// noHostWrites: nothing the guest writes reaches the host (no
	// writable disk or share), so Close has nothing to sync and stops the
	// machine without a power-off request (a dial and two round trips).
	noHostWrites bool

	// keepProbe: waitAgent keeps the connection its Hello went on
	// (probe, at probeVersion) for setup, saving a dial and a Hello.
	keepProbe    bool
	probeMu      sync.Mutex
	probe        net.Conn
	probeVersion uint16
	// session is the Setup session's connection, left open by an agent
	// of proto.ExecAfterSetupVersion for the first command (at
	// sessionVersion); guarded by probeMu.
	session        net.Conn
	sessionVersion uint16
	// hostRoot is the host directory that is the guest's read-only 9p
	// root (set up at boot, or by a warm machine's Setup): commands get it
	// (client.Cmd.HostRoot), so the agent's first need not search PATH
	// over 9p.
	hostRoot      string
	hostRootTaken atomic.Bool // the first command got hostRoot

	closeOnce sync.Once
	closeErr  error
}

// Start boots the machine cfg describes with the agent as its init and
// returns once the agent has answered a protocol Hello. When the machine
// ends first, the kernel panics, cfg.AgentTimeout passes or ctx ends, it
// stops the machine and returns an *AgentError. Errors in cfg found before
// the machine exists wrap ErrConfig or corral.ErrConfig. ctx bounds only
// the start: the machine runs until Close.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	path, err := cfg.FindAgent()
	if err != nil {
		return nil, err
	}
	// On a kernel root the kernel runs the agent from its host path; else
	// it goes into the initramfs (agentBytes).
	init, kernelRoot := cfg.kernelRootInit(path)
	var agentBytes []byte
	if kernelRoot {
		err = checkAgentFile(path)
	} else {
		agentBytes, err = readAgent(path)
	}
	if err != nil {
		return nil, err
	}
	mc, err := cfg.machineConfig()
	if err != nil {
		return nil, err
	}
	if kernelRoot {
		mc.Cmdline = appendCmdline(mc.Cmdline, agent.KernelRootParams(rootTag, init)...)
	}
	vm, err := boot(ctx, cfg, mc, agentBytes, cfg.Confine)
	return vm.withHostRoot(cfg), err
}

// withHostRoot records, on a machine booted with a host directory as its
// read-only root, that directory for the first command
// (client.Cmd.HostRoot): the agent set that root up at boot, so it takes
// a path the host resolved there instead of searching PATH over 9p.
// vm may be nil (a failed boot).
func (vm *VM) withHostRoot(cfg Config) *VM {
	if vm != nil && (cfg.Root.kind == rootHost || cfg.Root.kind == rootDir) {
		vm.hostRoot = cfg.Root.path
	}
	return vm
}

// checkAgentFile checks that path is a static x86-64 executable, reading
// only its headers.
func checkAgentFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: agent: %v", ErrConfig, err)
	}
	defer f.Close()
	if err := initrd.CheckAgentAt(f); err != nil {
		return fmt.Errorf("%w: agent %s: %v", ErrConfig, path, err)
	}
	return nil
}

// readAgent reads and checks the agent at path (Config.FindAgent).
func readAgent(path string) ([]byte, error) {
	agentBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: agent: %v", ErrConfig, err)
	}
	if err := initrd.CheckAgent(agentBytes); err != nil {
		return nil, fmt.Errorf("%w: agent %s: %v", ErrConfig, path, err)
	}
	return agentBytes, nil
}

// boot creates the machine mc (agentvm's devices and keys in it) with
// the agent in its initrd (none when agentBytes is nil: a kernel root),
// confines the process if confine is set, runs it and waits for the
// agent, as Start says.
func boot(ctx context.Context, cfg Config, mc corral.Config, agentBytes []byte, confine func(*corral.Config) error) (*VM, error) {
	ring := newConsoleRing(mc.Console, ConsoleLines)
	mc.Console = ring

	var m *corral.Machine
	var err error
	if agentBytes == nil {
		m, err = corral.New(mc)
	} else {
		// The initrd lives in a memfd: nothing is left on disk, whatever
		// happens to this process. New reads it all into guest memory.
		ird, ierr := buildInitrd(mc.Initrd, agentBytes)
		if ierr != nil {
			return nil, ierr
		}
		mc.Initrd = fmt.Sprintf("/proc/self/fd/%d", ird.Fd())
		m, err = corral.New(mc)
		ird.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("agentvm: %w", err)
	}
	if confine != nil {
		cc := mc
		cc.Initrd = ""
		if err := confine(&cc); err != nil {
			m.Close()
			return nil, fmt.Errorf("agentvm: confining: %w", err)
		}
	}
	ready, stopReady := listenReady(m)
	if err := m.Start(context.Background()); err != nil {
		stopReady()
		m.Close()
		return nil, fmt.Errorf("agentvm: %w", err)
	}
	vm := newVM(m, ring, mc.Logger)
	vm.ready = ready
	err = vm.waitAgent(ctx, cfg.agentTimeout(), func() corral.Exit { x, _ := m.Wait(); return x })
	stopReady()
	if err != nil {
		m.Close()
		return nil, err
	}
	return vm, nil
}

// listenReady listens on the host's agent.ReadyPort for the agent's
// announcement that it listens: the returned channel is closed when it
// comes (nil when the machine has no vsock listener to give), and stop
// closes the listener and ends its goroutine.
func listenReady(m *corral.Machine) (ready <-chan struct{}, stop func()) {
	l, err := m.ListenVsock(agent.ReadyPort)
	if err != nil {
		return nil, func() {}
	}
	ch := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := l.Accept(); err == nil {
			c.Close()
			close(ch)
		}
	}()
	return ch, func() { l.Close(); <-done }
}

// newVM wraps a started machine.
func newVM(m *corral.Machine, ring *consoleRing, log *slog.Logger) *VM {
	vm := newAgentVM(func(ctx context.Context) (net.Conn, error) { return m.DialVsock(ctx, agent.DefaultPort) }, m.Done(), m.Close, ring, log)
	vm.m = m
	vm.writableDisk = hasWritableDisk(m.Config())
	vm.noHostWrites = !writesReachHost(m.Config())
	return vm
}

// newAgentVM wraps a machine's agent dialer, done channel and stop.
func newAgentVM(dial func(context.Context) (net.Conn, error), done <-chan struct{}, stop func() error, ring *consoleRing, log *slog.Logger) *VM {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &VM{ring: ring, log: log, dial: dial, done: done, stop: stop}
}

// refusedWindow is how long a dial the guest refuses is retried: the
// agent's listener can refuse for a moment while it is busy (a full accept
// queue, a vsock transport reset after a restore being handled), and a
// dial that was refused delivered nothing, so trying again is safe.
const refusedWindow = 3 * time.Second

// retryRefused wraps dial so that a connection the guest refuses
// (vsock.ErrRefused) is dialled again, with backoff, for up to window.
func retryRefused(dial func(context.Context) (net.Conn, error), window time.Duration) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		deadline := time.Now().Add(window)
		backoff := minBackoff
		for {
			c, err := dial(ctx)
			if err == nil || !errors.Is(err, vsock.ErrRefused) || time.Now().After(deadline) {
				return c, err
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, err
			}
			backoff = min(2*backoff, maxBackoff)
		}
	}
}

// agentTimeout is AgentTimeout or its default.
func (cfg *Config) agentTimeout() time.Duration {
	if cfg.AgentTimeout <= 0 {
		return DefaultAgentTimeout
	}
	return cfg.AgentTimeout
}

// buildInitrd writes the user's initrd (userPath, "" for none) and the
// agent's archive into a memfd.
func buildInitrd(userPath string, agentBytes []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("corral-initrd", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("agentvm: memfd for the initrd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "corral-initrd")
	var user io.Reader
	if userPath != "" {
		uf, err := os.Open(userPath)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: initrd: %v", ErrConfig, err)
		}
		defer uf.Close()
		user = uf
	}
	if err := initrd.Write(f, user, agentBytes); err != nil {
		f.Close()
		return nil, fmt.Errorf("agentvm: %w", err)
	}
	return f, nil
}

// waitAgent greets the agent until it answers, with a growing backoff: the
// one retry loop of the wait (each try dials once, refused or not), ended
// by timeout or ctx.
func (vm *VM) waitAgent(ctx context.Context, timeout time.Duration, exit func() corral.Exit) error {
	t0 := time.Now()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A dial in flight ends when the machine does, or the kernel panics.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-vm.done:
		case <-vm.ring.panicked:
		case <-stop:
		}
		cancel()
	}()
	fail := func(r Reason, lastErr error) error {
		e := &AgentError{Reason: r, Waited: time.Since(t0).Round(time.Millisecond).String(), LastErr: lastErr}
		if r == ReasonExited {
			e.Exit = exit()
		}
		e.AgentErrors = vm.ring.agentErrors()
		e.Console = vm.ring.tail(20)
		return e
	}
	backoff := minBackoff
	ready := vm.ready
	var lastErr error
	for {
		err := vm.hello(tctx)
		if err == nil {
			vm.log.Info("agentvm: agent answered", "after", time.Since(t0))
			return nil
		}
		if errors.Is(err, client.ErrVersion) || errors.Is(err, proto.ErrProtocol) {
			// An agent answered, and cannot be talked to: waiting will
			// not change it.
			return fmt.Errorf("agentvm: greeting the agent: %w", err)
		}
		if tctx.Err() == nil || lastErr == nil {
			lastErr = err // not the cancellation's own error
		}
		select {
		case <-vm.ring.panicked:
			return fail(ReasonPanic, lastErr)
		default:
		}
		select {
		case <-vm.done:
			return fail(ReasonExited, lastErr)
		default:
		}
		if ctx.Err() != nil {
			return fail(ReasonCanceled, lastErr)
		}
		if tctx.Err() != nil {
			return fail(ReasonTimeout, lastErr)
		}
		limit := maxBackoff
		if ready != nil && errors.Is(err, vsock.ErrRefused) {
			limit = refusedBackoff
		}
		select {
		case <-time.After(backoff):
		case <-ready:
			// The agent listens: try now, and back off from the start
			// should that fail.
			ready, backoff = nil, minBackoff/2
		case <-tctx.Done():
		}
		backoff = min(2*backoff, limit)
	}
}

// hello dials the agent and exchanges Hellos on a connection of its own,
// which it closes, or keeps as vm.probe with keepProbe.
func (vm *VM) hello(ctx context.Context) error {
	conn, err := vm.dial(ctx)
	if err != nil {
		return err
	}
	v, err := vm.greet(ctx, conn)
	if err != nil || !vm.keepProbe {
		conn.Close()
		return err
	}
	conn.SetDeadline(time.Time{})
	vm.probeMu.Lock()
	if vm.probe != nil {
		vm.probe.Close()
	}
	vm.probe, vm.probeVersion = conn, v
	vm.probeMu.Unlock()
	return nil
}

// takeProbe returns the kept probe connection and its protocol version,
// or nil; the caller owns it.
func (vm *VM) takeProbe() (net.Conn, uint16) {
	vm.probeMu.Lock()
	defer vm.probeMu.Unlock()
	c, v := vm.probe, vm.probeVersion
	vm.probe = nil
	return c, v
}

// greet exchanges Hellos on conn and returns the protocol version. A
// greeting ctx ended fails even if the Hello came: the deadline that ends
// it may land on conn after greet returns, too late for hello to clear it
// from a kept probe (whose Setup would then fail at once).
func (vm *VM) greet(ctx context.Context, conn net.Conn) (v uint16, err error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() && err == nil {
			v, err = 0, fmt.Errorf("greeting the agent: %w", ctx.Err())
		}
	}()
	conn.SetDeadline(time.Now().Add(helloTimeout))
	if err := proto.NewWriter(conn).Send(proto.TypeHello, 0, proto.Hello{Min: proto.MinVersion, Max: proto.Version}.Append(nil)); err != nil {
		return 0, fmt.Errorf("sending Hello: %w", err)
	}
	f, err := proto.NewReader(conn, proto.FromAgent).Next()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("waiting for the agent's Hello: %w", err)
	}
	switch f.Type {
	case proto.TypeHello:
		h, err := proto.ParseHello(f.Payload)
		if err != nil {
			return 0, fmt.Errorf("agent Hello: %w", err)
		}
		if h.Min != h.Max || h.Max < proto.MinVersion || h.Max > proto.Version {
			return 0, fmt.Errorf("agent chose protocol versions %d..%d, this side speaks %d..%d: %w", h.Min, h.Max, proto.MinVersion, proto.Version, client.ErrVersion)
		}
		return h.Max, nil
	case proto.TypeError:
		e, err := proto.ParseError(f.Payload)
		if err != nil {
			return 0, fmt.Errorf("agent Error: %w", err)
		}
		return 0, e
	}
	return 0, fmt.Errorf("agent sent %s, want Hello: %w", f.Type, proto.ErrProtocol)
}

// Command returns a Cmd that runs name with args in the guest. It dials
// its own connection to the agent when it starts; the first Cmd after a
// warm machine's Setup takes that Setup's connection instead, when the
// agent left it open (proto.ExecAfterSetupVersion).
func (vm *VM) Command(name string, args ...string) *client.Cmd {
	return vm.command(nil, name, args)
}

// CommandContext is Command with a context: when ctx ends before the
// command, the command and its process group are killed.
func (vm *VM) CommandContext(ctx context.Context, name string, args ...string) *client.Cmd {
	return vm.command(ctx, name, args)
}

// command is CommandContext; a nil ctx is Command's (no kill).
func (vm *VM) command(ctx context.Context, name string, args []string) *client.Cmd {
	var c *client.Cmd
	if conn, v := vm.takeSession(); conn != nil {
		c = client.CommandAfterHello(ctx, conn, v, name, args...)
	} else if ctx == nil {
		c = client.Command(vm.lazyConn(context.Background()), name, args...)
	} else {
		c = client.CommandContext(ctx, vm.lazyConn(ctx), name, args...)
	}
	c.HostRoot = vm.takeHostRoot()
	return c
}

// takeHostRoot returns hostRoot for the first command made and "" for
// the rest: the agent takes a resolved path for its first command only.
func (vm *VM) takeHostRoot() string {
	if vm.hostRoot == "" || vm.hostRootTaken.Swap(true) {
		return ""
	}
	return vm.hostRoot
}

// takeSession returns the Setup session kept for the first command and
// its protocol version, or nil; the caller owns it.
func (vm *VM) takeSession() (net.Conn, uint16) {
	vm.probeMu.Lock()
	defer vm.probeMu.Unlock()
	c, v := vm.session, vm.sessionVersion
	vm.session = nil
	return c, v
}

// Dial opens a connection to the agent, for a session the caller runs
// itself (client.PowerOff, say); a dial the guest refuses is tried again
// for a moment (refusedWindow).
func (vm *VM) Dial(ctx context.Context) (net.Conn, error) {
	return retryRefused(vm.dial, refusedWindow)(ctx)
}

// Machine returns the machine.
func (vm *VM) Machine() *corral.Machine { return vm.m }

// Done returns a channel closed when the machine has ended.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// ConsoleTail returns the last n lines of the guest's console (at most
// ConsoleLines), oldest first; an unfinished last line is included.
func (vm *VM) ConsoleTail(n int) []string { return vm.ring.tail(n) }

// Close asks the agent to power the machine off (which syncs the guest's
// file systems), waits a bounded time for that, then stops the machine if
// it still runs and releases it. A machine none of whose guest writes can
// reach the host (no writable share or disk) is stopped without asking:
// there is nothing to sync. An agent that acks only after its sync
// (proto.SyncedPowerOffVersion) is not waited for past the Ack unless the
// machine has a writable disk. It returns what releasing failed at; a
// refused or failed power-off is logged, as the machine is stopped anyway.
// Later calls return the first call's result.
func (vm *VM) Close() error {
	vm.closeOnce.Do(func() {
		if c, _ := vm.takeProbe(); c != nil {
			c.Close()
		}
		if c, _ := vm.takeSession(); c != nil {
			c.Close()
		}
		steps := NewSteps(vm.log, "agentvm: close")
		select {
		case <-vm.done:
		default:
			if vm.noHostWrites {
				steps.Step("nothing to sync (stopping the machine)")
				break
			}
			if err := vm.powerOff(steps); err != nil {
				vm.log.Warn("agentvm: power-off through the agent failed; stopping the machine", "err", err)
			}
		}
		vm.closeErr = vm.stop()
		steps.Step("released")
		logCounters(vm.log, vm.m)
	})
	return vm.closeErr
}

// Kill stops the machine at once, without asking the agent (nothing is
// synced in the guest), and releases it. Later calls, and Close after it,
// return the first result.
func (vm *VM) Kill() error {
	vm.closeOnce.Do(func() {
		if c, _ := vm.takeProbe(); c != nil {
			c.Close()
		}
		if c, _ := vm.takeSession(); c != nil {
			c.Close()
		}
		vm.closeErr = vm.stop()
	})
	return vm.closeErr
}

func (vm *VM) powerOff(steps *Steps) error {
	ctx, cancel := context.WithTimeout(context.Background(), powerOffTimeout)
	defer cancel()
	conn, err := vm.Dial(ctx)
	if err != nil {
		return fmt.Errorf("agentvm: dialing the agent: %w", err)
	}
	synced, err := client.PowerOffSynced(ctx, conn)
	if err != nil {
		return fmt.Errorf("agentvm: %w", err)
	}
	if synced && !vm.writableDisk {
		// Every write the guest finished is on the host (9p writes
		// through; tmpfs is thrown away): its power-off path adds nothing
		// but time, so the machine is stopped now.
		steps.Step("synced (stopping the machine)")
		return nil
	}
	steps.Step("power-off accepted")
	t := time.NewTimer(powerOffTimeout)
	defer t.Stop()
	select {
	case <-vm.done:
		steps.Step("machine ended")
		return nil
	case <-t.C:
		return fmt.Errorf("agentvm: the machine still ran %v after the agent accepted the power-off", powerOffTimeout)
	}
}
