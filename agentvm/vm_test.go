package agentvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
	"github.com/corral-vmm/corral/internal/sockpair"
	"github.com/corral-vmm/corral/virtio/vsock"
)

// fakeMachine stands in for a machine: a real agent.Server answers dials
// over net.Pipe once up is set; a power-off ends the "machine".
type fakeMachine struct {
	srv      *agent.Server
	up       atomic.Bool
	dialErr  error // returned while !up
	dials    atomic.Int32
	done     chan struct{}
	doneOnce sync.Once
	stopped  atomic.Bool
	wg       sync.WaitGroup
}

func newFakeMachine(t *testing.T) *fakeMachine {
	f := &fakeMachine{done: make(chan struct{}), dialErr: fmt.Errorf("vsock: dial guest port 1024: %w", vsock.ErrNotRunning)}
	f.srv = agent.NewServer(agent.Config{PowerOff: func() error { f.end(); return nil }})
	t.Cleanup(f.wg.Wait)
	return f
}

func (f *fakeMachine) end() { f.doneOnce.Do(func() { close(f.done) }) }

func (f *fakeMachine) dial(ctx context.Context) (net.Conn, error) {
	f.dials.Add(1)
	select {
	case <-f.done:
		return nil, errors.New("fake: the machine ended")
	default:
	}
	if !f.up.Load() {
		return nil, f.dialErr
	}
	host, guest, err := socketPair()
	if err != nil {
		return nil, err
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.srv.ServeConn(context.Background(), guest)
	}()
	return host, nil
}

// socketPair returns two connected stream sockets: unlike net.Pipe they
// buffer, as a vsock connection does.
func socketPair() (net.Conn, net.Conn, error) { return sockpair.New() }

func (f *fakeMachine) vm(ring *consoleRing) *VM {
	if ring == nil {
		ring = newConsoleRing(nil, ConsoleLines)
	}
	return &VM{ring: ring, log: slog.New(slog.DiscardHandler), dial: f.dial, done: f.done,
		stop: func() error { f.stopped.Store(true); f.end(); return nil }}
}

func exitPowerOff() corral.Exit { return corral.Exit{Reason: corral.ExitPowerOff} }

func TestWaitAgentComesUp(t *testing.T) {
	f := newFakeMachine(t)
	vm := f.vm(nil)
	time.AfterFunc(100*time.Millisecond, func() { f.up.Store(true) })
	t0 := time.Now()
	if err := vm.waitAgent(context.Background(), 10*time.Second, exitPowerOff); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("took %v for an agent up after 100ms", d)
	}
	if n := f.dials.Load(); n < 2 || n > 40 {
		t.Errorf("%d dials in ~100ms, want a few (a backoff, not a busy loop)", n)
	}
	if s := f.srv.Stats().Sessions; s != 1 {
		t.Errorf("agent served %d sessions, want the one greeting", s)
	}
}

func TestWaitAgentMachineEnds(t *testing.T) {
	f := newFakeMachine(t)
	ring := newConsoleRing(nil, ConsoleLines)
	for i := range 30 {
		fmt.Fprintf(ring, "boot line %d\n", i)
	}
	ring.Write([]byte("corral-agent: error: vsock: socket: address family not supported by protocol (kernel needs CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS)\n"))
	vm := f.vm(ring)
	time.AfterFunc(50*time.Millisecond, f.end)
	t0 := time.Now()
	err := vm.waitAgent(context.Background(), time.Minute, exitPowerOff)
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("waited %v after the machine ended", d)
	}
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Reason != ReasonExited || ae.Exit.Reason != corral.ExitPowerOff {
		t.Fatalf("err = %#v, want an AgentError with ReasonExited and the exit", err)
	}
	for _, want := range []string{"the machine ended first (power-off)", "the agent said: vsock: socket: address family not supported", "CONFIG_VIRTIO_VSOCKETS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	if len(ae.Console) != 20 || !strings.HasPrefix(ae.Console[19], "corral-agent: error:") || ae.Console[0] != "boot line 11" {
		t.Errorf("console tail = %q, want the last 20 lines", ae.Console)
	}
	if !strings.Contains(ae.ConsoleText(), "  | boot line 29\n") {
		t.Errorf("ConsoleText = %q", ae.ConsoleText())
	}
}

func TestWaitAgentTimeoutNoVsockDriver(t *testing.T) {
	f := newFakeMachine(t)
	vm := f.vm(nil)
	err := vm.waitAgent(context.Background(), 300*time.Millisecond, exitPowerOff)
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Reason != ReasonTimeout || !errors.Is(ae.LastErr, vsock.ErrNotRunning) {
		t.Fatalf("err = %v, want a timeout whose last try was ErrNotRunning", err)
	}
	for _, want := range []string{"no answer within", "never started its virtio-vsock driver", "CONFIG_VIRTIO_VSOCKETS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestWaitAgentRefused(t *testing.T) {
	f := newFakeMachine(t)
	f.dialErr = fmt.Errorf("vsock: dial guest port 1024: %w", vsock.ErrRefused)
	err := f.vm(nil).waitAgent(context.Background(), 200*time.Millisecond, exitPowerOff)
	if err == nil || !strings.Contains(err.Error(), "nothing listens on the agent's port") {
		t.Fatalf("err = %v, want the refused hint", err)
	}
}

func TestWaitAgentPanic(t *testing.T) {
	for _, tc := range []struct{ console, hint string }{
		{"Kernel panic - not syncing: No working init found.\n", "could not run /init"},
		// A kernel root whose kernel has 9p as modules.
		{"VFS: Cannot open root device \"corral-root\" or unknown-block(0,0): error -19\n" +
			"Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n", "CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS built in"},
	} {
		f := newFakeMachine(t)
		ring := newConsoleRing(nil, ConsoleLines)
		vm := f.vm(ring)
		time.AfterFunc(50*time.Millisecond, func() { ring.Write([]byte(tc.console)) })
		err := vm.waitAgent(context.Background(), time.Minute, exitPowerOff)
		var ae *AgentError
		if !errors.As(err, &ae) || ae.Reason != ReasonPanic {
			t.Fatalf("err = %v, want ReasonPanic", err)
		}
		if !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("error %q lacks the hint %q", err, tc.hint)
		}
	}
}

func TestWaitAgentCanceled(t *testing.T) {
	f := newFakeMachine(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err := f.vm(nil).waitAgent(ctx, time.Minute, exitPowerOff)
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Reason != ReasonCanceled {
		t.Fatalf("err = %v, want ReasonCanceled", err)
	}
}

func TestWaitAgentWrongVersion(t *testing.T) {
	f := newFakeMachine(t)
	vm := f.vm(nil)
	vm.dial = func(ctx context.Context) (net.Conn, error) {
		host, guest := net.Pipe()
		go func() {
			defer guest.Close()
			proto.NewReader(guest, proto.FromHost).Next()
			proto.NewWriter(guest).Send(proto.TypeHello, 0, proto.Hello{Min: proto.Version + 1, Max: proto.Version + 1}.Append(nil))
		}()
		return host, nil
	}
	t0 := time.Now()
	err := vm.waitAgent(context.Background(), time.Minute, exitPowerOff)
	if !errors.Is(err, client.ErrVersion) || time.Since(t0) > 5*time.Second {
		t.Fatalf("err = %v after %v, want ErrVersion at once", err, time.Since(t0))
	}
}

// TestCommandAgainstAgent runs commands through the real agent server
// (as an ordinary service, on this host) over pipes.
func TestCommandAgainstAgent(t *testing.T) {
	f := newFakeMachine(t)
	f.up.Store(true)
	vm := f.vm(nil)
	var stdout, stderr bytes.Buffer
	cmd := vm.Command("sh", "-c", "echo out; echo err >&2; exit 3")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Run = %v, want exit status 3", err)
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	// Concurrent commands, each on its own connection.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := vm.CommandContext(context.Background(), "echo", fmt.Sprint(i)).Output()
			if err != nil || string(out) != fmt.Sprintln(i) {
				t.Errorf("command %d: %q, %v", i, out, err)
			}
		}()
	}
	wg.Wait()
	if s := f.srv.Stats().Sessions; s != 5 {
		t.Errorf("%d sessions, want 5", s)
	}
}

func TestCommandNotStartedDialsNothing(t *testing.T) {
	f := newFakeMachine(t)
	f.up.Store(true)
	vm := f.vm(nil)
	_ = vm.Command("true")
	if n := f.dials.Load(); n != 0 {
		t.Errorf("Command dialed %d times before Start", n)
	}
}

func TestCommandContextCancelsDial(t *testing.T) {
	f := newFakeMachine(t)
	vm := f.vm(nil)
	release := make(chan struct{})
	vm.dial = func(ctx context.Context) (net.Conn, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			return nil, errors.New("released")
		}
	}
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err := vm.CommandContext(ctx, "true").Run()
	if err == nil || time.Since(t0) > 5*time.Second {
		t.Fatalf("Run = %v after %v, want a prompt failure when ctx ends during the dial", err, time.Since(t0))
	}
}

func TestCommandDialFailure(t *testing.T) {
	f := newFakeMachine(t)
	f.end()
	err := f.vm(nil).Command("true").Run()
	if err == nil || !strings.Contains(err.Error(), "agentvm: dialing the agent: fake: the machine ended") {
		t.Fatalf("Run = %v, want the dial error", err)
	}
}

func TestClosePowersOff(t *testing.T) {
	f := newFakeMachine(t)
	f.up.Store(true)
	vm := f.vm(nil)
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.done:
	default:
		t.Fatal("Close did not power the machine off")
	}
	if !f.stopped.Load() {
		t.Error("Close did not release the machine")
	}
	if err := vm.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestCloseRefusedPowerOffStillStops(t *testing.T) {
	f := newFakeMachine(t)
	f.up.Store(true)
	f.srv = agent.NewServer(agent.Config{}) // not PID 1: refuses power-off
	vm := f.vm(nil)
	t0 := time.Now()
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if !f.stopped.Load() || time.Since(t0) > 3*time.Second {
		t.Errorf("stopped=%v after %v, want the machine stopped at once after the refusal", f.stopped.Load(), time.Since(t0))
	}
}

func TestStartConfigErrors(t *testing.T) {
	dir := t.TempDir()
	script := dir + "/agent.sh"
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	for _, tc := range []struct {
		name  string
		agent string
		want  string
	}{
		{"missing", dir + "/none", "no such file"},
		{"not ELF", script, "not an ELF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(context.Background(), Config{Agent: tc.agent, Machine: corral.Config{Kernel: "k"}})
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestKillDoesNotAskTheAgent(t *testing.T) {
	f := newFakeMachine(t)
	f.up.Store(true)
	vm := f.vm(nil)
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	if n := f.dials.Load(); n != 0 || !f.stopped.Load() {
		t.Errorf("Kill: %d dials, stopped=%v; want no dial and the machine stopped", n, f.stopped.Load())
	}
	if err := vm.Close(); err != nil || f.dials.Load() != 0 {
		t.Errorf("Close after Kill = %v with %d dials", err, f.dials.Load())
	}
}

// TestWaitAgentAnnounced: while the guest refuses (its vsock driver runs,
// the agent does not listen yet) the tries back off to refusedBackoff, and
// the agent's announcement ends the wait at once.
func TestWaitAgentAnnounced(t *testing.T) {
	f := newFakeMachine(t)
	f.dialErr = fmt.Errorf("vsock: dial guest port 1024: %w", vsock.ErrRefused)
	vm := f.vm(nil)
	ready := make(chan struct{})
	vm.ready = ready
	// The tries sleep 10, 20, ... 1280 ms, then 2 s from 2.55 s to 4.55 s.
	const announceAt = 3500 * time.Millisecond
	var refused atomic.Int32
	time.AfterFunc(announceAt, func() {
		refused.Store(f.dials.Load())
		f.up.Store(true)
		close(ready)
	})
	t0 := time.Now()
	if err := vm.waitAgent(context.Background(), time.Minute, exitPowerOff); err != nil {
		t.Fatal(err)
	}
	if late := time.Since(t0) - announceAt; late > 700*time.Millisecond {
		t.Errorf("the agent answered %v after its announcement, want at once", late)
	}
	// 250 ms apart, as before the driver runs, would be 16 tries.
	if n := refused.Load(); n > 10 {
		t.Errorf("%d tries while the guest refused, want at most 10", n)
	}
	vm.Close()
}
