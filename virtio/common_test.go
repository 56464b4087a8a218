package virtio

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio/queue"
)

type nopInterrupt struct{}

func (nopInterrupt) Signal(int) error { return nil }

func testQueue(t *testing.T, mem *guestmem.Memory, size uint16) *queue.Queue {
	t.Helper()
	q, err := queue.New(mem, queue.Layout{Size: size, Desc: 0x1000, Avail: 0x8000, Used: 0x9000}, queue.Options{MaxSize: size})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func testMem(t *testing.T) *guestmem.Memory {
	t.Helper()
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

const testFeatures = FVersion1 | FEventIdx | 1<<5

func TestCommonChecks(t *testing.T) {
	mem := testMem(t)
	q64, q128 := testQueue(t, mem, 64), testQueue(t, mem, 128)
	good := Activation{Mem: mem, Interrupt: nopInterrupt{}, Features: FVersion1 | 1<<5, Queues: []*queue.Queue{q64, nil}}
	for name, edit := range map[string]func(a *Activation){
		"no memory":           func(a *Activation) { a.Mem = nil },
		"no interrupt":        func(a *Activation) { a.Interrupt = nil },
		"too few queues":      func(a *Activation) { a.Queues = a.Queues[:1] },
		"too many queues":     func(a *Activation) { a.Queues = append(a.Queues, nil) },
		"queue too large":     func(a *Activation) { a.Queues = []*queue.Queue{nil, q128} },
		"feature not offered": func(a *Activation) { a.Features |= 1 << 6 },
		"no VERSION_1":        func(a *Activation) { a.Features &^= FVersion1 },
	} {
		c := NewCommon("virtio-test", testFeatures, 2, 64)
		a := good
		a.Queues = append([]*queue.Queue(nil), good.Queues...)
		edit(&a)
		started := false
		err := c.Activate(a, func(Activation) error { started = true; return nil })
		if !errors.Is(err, ErrBadActivation) || started || c.Active() {
			t.Errorf("%s: Activate = %v, started %v, active %v; want ErrBadActivation and not started", name, err, started, c.Active())
		}
	}
	c := NewCommon("virtio-test", testFeatures, 2, 64)
	var got Activation
	if err := c.Activate(good, func(a Activation) error { got = a; return nil }); err != nil {
		t.Fatalf("good activation refused: %v", err)
	}
	if got.Queues[0] != q64 || got.Features != good.Features {
		t.Fatal("start did not get the activation")
	}
	if a, ok := c.Activation(); !ok || a.Queues[0] != q64 || a.Interrupt == nil {
		t.Fatal("Activation() does not return the stored activation")
	}
}

func TestCommonLifecycle(t *testing.T) {
	mem := testMem(t)
	a := Activation{Mem: mem, Interrupt: nopInterrupt{}, Features: FVersion1, Queues: []*queue.Queue{testQueue(t, mem, 16)}}
	c := NewCommon("virtio-test", testFeatures, 1, 64)
	starts, stops, releases := 0, 0, 0
	start := func(Activation) error { starts++; return nil }
	stop := func() error { stops++; return nil }
	release := func() error { releases++; return nil }

	// A start that fails leaves the device inactive; Reset then stops nothing.
	boom := errors.New("boom")
	if err := c.Activate(a, func(Activation) error { return boom }); !errors.Is(err, boom) || c.Active() {
		t.Fatalf("failed start: %v, active %v", err, c.Active())
	}
	if err := c.Reset(stop); err != nil || stops != 0 {
		t.Fatalf("Reset of an inactive device: %v, %d stops", err, stops)
	}
	if err := c.Activate(a, start); err != nil || !c.Active() {
		t.Fatalf("Activate: %v", err)
	}
	if err := c.Activate(a, start); !errors.Is(err, ErrActive) || starts != 1 {
		t.Fatalf("second Activate: %v, %d starts", err, starts)
	}
	// stop's error is returned, and the device is inactive anyway.
	if err := c.Reset(func() error { stops++; return boom }); !errors.Is(err, boom) || c.Active() || stops != 1 {
		t.Fatalf("Reset: %v, active %v, %d stops", err, c.Active(), stops)
	}
	if _, ok := c.Activation(); ok {
		t.Fatal("activation kept after Reset")
	}
	if err := c.Activate(a, start); err != nil || starts != 2 {
		t.Fatalf("Activate after Reset: %v", err)
	}
	if err := c.Close(stop, release); err != nil || stops != 2 || releases != 1 {
		t.Fatalf("Close: %v, %d stops, %d releases", err, stops, releases)
	}
	if err := c.Close(stop, release); err != nil || stops != 2 || releases != 1 {
		t.Fatalf("second Close: %v, %d stops, %d releases", err, stops, releases)
	}
	if err := c.Activate(a, start); !errors.Is(err, ErrClosed) || starts != 2 {
		t.Fatalf("Activate after Close: %v", err)
	}
}

// Activate and Reset from many goroutines: every start is matched by at
// most one stop, never two starts in a row (run with -race).
func TestCommonConcurrent(t *testing.T) {
	mem := testMem(t)
	a := Activation{Mem: mem, Interrupt: nopInterrupt{}, Features: FVersion1, Queues: []*queue.Queue{testQueue(t, mem, 16)}}
	c := NewCommon("virtio-test", testFeatures, 1, 64)
	running := false
	var bad sync.Once
	fail := func() { bad.Do(func() { t.Error("start while running or stop while stopped") }) }
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				c.Activate(a, func(Activation) error {
					if running {
						fail()
					}
					running = true
					return nil
				})
				c.Reset(func() error {
					if !running {
						fail()
					}
					running = false
					return nil
				})
			}
		})
	}
	wg.Wait()
}

func TestCommonPauseResume(t *testing.T) {
	mem := testMem(t)
	a := Activation{Mem: mem, Interrupt: nopInterrupt{}, Features: FVersion1, Queues: []*queue.Queue{testQueue(t, mem, 64), nil}}
	c := NewCommon("virtio-test", testFeatures, 2, 64)
	var log []string
	step := func(name string) func() error { return func() error { log = append(log, name); return nil } }
	// Inactive: both are no-ops.
	if err := c.Pause(step("pause")); err != nil || c.Paused() {
		t.Fatalf("Pause inactive = %v, paused %v", err, c.Paused())
	}
	if err := c.Resume(step("resume")); err != nil {
		t.Fatal(err)
	}
	if err := c.Activate(a, func(Activation) error { log = append(log, "start"); return nil }); err != nil {
		t.Fatal(err)
	}
	c.Pause(step("pause"))
	c.Pause(step("pause")) // idempotent
	if !c.Paused() {
		t.Fatal("not paused after Pause")
	}
	c.Resume(step("resume"))
	c.Resume(step("resume"))
	c.Pause(step("pause"))
	c.Reset(step("stop")) // stop runs for a paused device
	c.Resume(step("resume"))
	want := "start pause resume pause stop"
	if got := fmt.Sprint(log); got != "["+want+"]" {
		t.Fatalf("steps %v; want [%s]", got, want)
	}
}

func TestCommonActivatePaused(t *testing.T) {
	mem := testMem(t)
	a := Activation{Mem: mem, Interrupt: nopInterrupt{}, Features: FVersion1, Queues: []*queue.Queue{testQueue(t, mem, 64), nil}, Paused: true}
	c := NewCommon("virtio-test", testFeatures, 2, 64)
	var started []Activation
	start := func(a Activation) error { started = append(started, a); return nil }
	if err := c.Activate(a, start); err != nil {
		t.Fatal(err)
	}
	if len(started) != 0 || !c.Paused() || !c.Active() {
		t.Fatalf("activated paused: started %d times, paused %v, active %v", len(started), c.Paused(), c.Active())
	}
	if err := c.Resume(func() error { t.Fatal("resume step for a device never started"); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(started) != 1 || started[0].Paused || c.Paused() {
		t.Fatalf("after Resume: started %d, Paused flag %v, paused %v", len(started), started[0].Paused, c.Paused())
	}
	// A failing deferred start leaves it paused, and Resume tries again.
	c.Reset(func() error { return nil })
	c.Activate(a, func(Activation) error { return errors.New("boom") })
	if err := c.Resume(nil); err == nil || !c.Paused() {
		t.Fatalf("Resume with a failing start = %v, paused %v", err, c.Paused())
	}
}
