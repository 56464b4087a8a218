package corraltest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// fakeTB records what a helper logs and reports. Methods it does not
// implement panic through the nil embedded TB.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	logs     []string
	errs     []string
	cleanups []func()
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Log(args ...any) { f.add(&f.logs, fmt.Sprint(args...)) }

func (f *fakeTB) Logf(format string, args ...any) { f.add(&f.logs, fmt.Sprintf(format, args...)) }

func (f *fakeTB) Errorf(format string, args ...any) { f.add(&f.errs, fmt.Sprintf(format, args...)) }

func (f *fakeTB) Cleanup(fn func()) { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }

func (f *fakeTB) add(to *[]string, s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*to = append(*to, s)
}

func (f *fakeTB) logged() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.logs...)
}

// fakeOS is an fdOS over a scripted descriptor table: open files are ids,
// each number maps to one; pins are numbers from 1000 up.
type fakeOS struct {
	table   map[int]int    // number -> open file id
	targets map[int]string // open file id -> target
	taps    map[int]string // open file id -> TAP name
	nextID  int
	nextPin int
	locked  int
	sameErr error
}

func newFakeOS() *fakeOS {
	return &fakeOS{table: map[int]int{}, targets: map[int]string{}, taps: map[int]string{}, nextID: 1, nextPin: 1000}
}

// open opens target at number fd (a new open file).
func (f *fakeOS) open(fd int, target string) {
	f.table[fd] = f.nextID
	f.targets[f.nextID] = target
	f.nextID++
}

func (f *fakeOS) list() (map[int]string, error) {
	m := map[int]string{}
	for fd, id := range f.table {
		if fd < 1000 {
			m[fd] = f.targets[id]
		}
	}
	return m, nil
}

func (f *fakeOS) pin(fd int) (int, error) {
	id, ok := f.table[fd]
	if !ok {
		return 0, fmt.Errorf("EBADF")
	}
	p := f.nextPin
	f.nextPin++
	f.table[p] = id
	return p, nil
}

func (f *fakeOS) same(fd, pin int) (bool, error) {
	if f.sameErr != nil {
		return false, f.sameErr
	}
	id, ok := f.table[fd]
	return ok && id == f.table[pin], nil
}

func (f *fakeOS) tap(fd int) string { return f.taps[f.table[fd]] }

func (f *fakeOS) close(fd int) error { delete(f.table, fd); return nil }

func (f *fakeOS) lock() (func(), error) {
	f.locked++
	return func() { f.locked-- }, nil
}

func (f *fakeOS) pins() int {
	n := 0
	for fd := range f.table {
		if fd >= 1000 {
			n++
		}
	}
	return n
}

func hasLine(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
