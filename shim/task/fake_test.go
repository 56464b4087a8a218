package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/events"
)

// fakeVM is a VM whose processes the test ends.
type fakeVM struct {
	t        *testing.T
	mu       sync.Mutex
	procs    []*fakeProc
	nextPid  int
	startErr error
	// gate, when set, holds Start until closed; entered is signalled as
	// Start waits.
	gate, entered chan struct{}
	closed        int
	killed        int
	paused        bool
	done          chan struct{}
	stats         VMStats
}

func newFakeVM(t *testing.T) *fakeVM { return &fakeVM{t: t, nextPid: 100, done: make(chan struct{})} }

// fakeProc runs until the test calls exit, or the VM is killed. run, if
// set, is its body: it gets the stdio and returns the exit status.
type fakeProc struct {
	vm   *fakeVM
	spec ProcSpec
	pid  int

	mu      sync.Mutex
	signals []sigRec
	resizes [][2]uint16
	exitCh  chan int
	// exitOn, if set, ends the process with 128+sig when sent sig.
	exitOn syscall.Signal
}

type sigRec struct {
	sig   syscall.Signal
	group bool
}

func (v *fakeVM) Start(p ProcSpec) (Proc, error) {
	if v.gate != nil {
		v.entered <- struct{}{}
		<-v.gate
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.startErr != nil {
		return nil, v.startErr
	}
	v.nextPid++
	fp := &fakeProc{vm: v, spec: p, pid: v.nextPid, exitCh: make(chan int, 1)}
	v.procs = append(v.procs, fp)
	return fp, nil
}

func (v *fakeVM) proc(i int) *fakeProc {
	v.t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if i >= len(v.procs) {
		v.t.Fatalf("process %d not started (%d are)", i, len(v.procs))
	}
	return v.procs[i]
}

func (v *fakeVM) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed++
	v.end()
	return nil
}

func (v *fakeVM) Kill() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.killed++
	v.end()
	return nil
}

// end ends the machine; v.mu held.
func (v *fakeVM) end() {
	select {
	case <-v.done:
	default:
		close(v.done)
	}
}

func (v *fakeVM) Pause(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused {
		v.t.Error("Pause of a paused VM")
	}
	v.paused = true
	return nil
}

func (v *fakeVM) Resume() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.paused {
		v.t.Error("Resume of a running VM")
	}
	v.paused = false
	return nil
}

func (v *fakeVM) Stats() VMStats { return v.stats }

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) Wait() (int, error) {
	select {
	case st := <-p.exitCh:
		return st, nil
	case <-p.vm.done:
		return 0, lostErr(errors.New("the machine ended"))
	}
}

func (p *fakeProc) exit(status int) { p.exitCh <- status }

func (p *fakeProc) Signal(sig syscall.Signal, group bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signals = append(p.signals, sigRec{sig, group})
	if p.exitOn != 0 && sig == p.exitOn {
		select {
		case p.exitCh <- 128 + int(sig):
		default:
		}
	}
	return nil
}

func (p *fakeProc) Resize(rows, cols uint16) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resizes = append(p.resizes, [2]uint16{rows, cols})
	return nil
}

func (p *fakeProc) gotSignals() []sigRec {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sigRec(nil), p.signals...)
}

// recorder is a Publisher that keeps the events.
type recorder struct {
	mu     sync.Mutex
	topics []string
	events []events.Event
	ch     chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 100)} }

func (r *recorder) Publish(ctx context.Context, topic string, ev events.Event) error {
	r.mu.Lock()
	r.topics = append(r.topics, topic)
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.ch <- struct{}{}
	return nil
}

func (r *recorder) snapshot() ([]string, []events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.topics...), append([]events.Event(nil), r.events...)
}

// waitTopic waits until topic has been published n times in all.
func (r *recorder) waitTopic(t *testing.T, topic string, n int) events.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		topics, evs := r.snapshot()
		seen := 0
		for i, tp := range topics {
			if tp == topic {
				seen++
				if seen == n {
					return evs[i]
				}
			}
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("no %d× %s event; got %v", n, topic, topics)
		}
	}
}

// readAll reads r until EOF, in the background.
func readAll(r io.Reader) <-chan string {
	ch := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(r)
		if err != nil {
			b = append(b, fmt.Sprintf("<%v>", err)...)
		}
		ch <- string(b)
	}()
	return ch
}
