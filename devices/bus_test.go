package devices

import (
	"errors"
	"sync"
	"testing"
)

// recorder is a Device that remembers its last access and reads as id.
type recorder struct {
	mu      sync.Mutex
	id      byte
	lastOff uint64
	lastLen int
	writes  int
}

func (r *recorder) Read(off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOff, r.lastLen = off, len(data)
	fill(data, r.id)
}

func (r *recorder) Write(off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOff, r.lastLen = off, len(data)
	r.writes++
}

func TestBusInsertRefuses(t *testing.T) {
	var b Bus
	if err := b.Insert(0x100, 0x10, "a", &recorder{}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		base, size uint64
		want       error
	}{
		{0x100, 0x10, ErrOverlap},
		{0xf8, 0x9, ErrOverlap},
		{0x10f, 1, ErrOverlap},
		{0x0, 0x1000, ErrOverlap},
		{0x200, 0, ErrBadRange},
		{^uint64(0), 2, ErrBadRange},
		{1 << 63, 1 << 63, nil},     // ends exactly at the top: fine
		{0xf0, 0x10, nil},           // adjacent below
		{0x110, 0x10, nil},          // adjacent above
		{^uint64(0), 1, ErrOverlap}, // inside the top range
	} {
		err := b.Insert(x.base, x.size, "b", &recorder{})
		if !errors.Is(err, x.want) || (x.want == nil) != (err == nil) {
			t.Errorf("Insert(%#x, %#x) = %v, want %v", x.base, x.size, err, x.want)
		}
	}
	if err := b.Insert(0x300, 1, "nil", nil); err == nil {
		t.Error("nil device accepted")
	}
	if n := len(b.Ranges()); n != 4 {
		t.Errorf("%d ranges, want 4: %v", n, b.Ranges())
	}
}

func TestBusDispatch(t *testing.T) {
	var b Bus
	com1, rtc := &recorder{id: 1}, &recorder{id: 2}
	b.Insert(0x3f8, 8, "com1", com1)
	b.Insert(0x70, 2, "rtc", rtc)
	data := []byte{0}
	if !b.Read(0x3fd, data) || data[0] != 1 || com1.lastOff != 5 {
		t.Errorf("read 0x3fd: %v off %d", data, com1.lastOff)
	}
	if !b.Write(0x71, []byte{9}) || rtc.writes != 1 || rtc.lastOff != 1 {
		t.Errorf("write 0x71: writes %d off %d", rtc.writes, rtc.lastOff)
	}
	data[0] = 0x55
	if b.Read(0x3f7, data) || b.Read(0x400, data) || b.Read(0, data) || data[0] != 0x55 {
		t.Error("read of nothing dispatched or touched data")
	}
	// Straddling the end, or odd lengths: refused.
	if b.Read(0x3fe, make([]byte, 4)) || b.Write(0x71, make([]byte, 2)) {
		t.Error("straddling access dispatched")
	}
	if b.Read(0x3f8, make([]byte, 3)) || b.Read(0x3f8, nil) || b.Read(0x3f8, make([]byte, 16)) {
		t.Error("odd-length access dispatched")
	}
	// Exactly the last bytes: fine.
	if !b.Read(0x3fc, make([]byte, 4)) || com1.lastOff != 4 || com1.lastLen != 4 {
		t.Error("access ending at the device's end refused")
	}
	// A device at the very top of the address space.
	top := &recorder{id: 3}
	b.Insert(^uint64(0)-7, 8, "top", top)
	if !b.Read(^uint64(0)-7, make([]byte, 8)) || b.Read(^uint64(0), make([]byte, 2)) {
		t.Error("top-of-space access wrong")
	}
}

func TestBusRemoveMove(t *testing.T) {
	var b Bus
	d, e := &recorder{id: 1}, &recorder{id: 2}
	b.Insert(0x1000, 0x1000, "d", d)
	b.Insert(0x3000, 0x1000, "e", e)
	if err := b.Move(0x1000, 0x2800); !errors.Is(err, ErrOverlap) {
		t.Errorf("move onto e: %v", err)
	}
	if err := b.Move(0x1000, ^uint64(0)-0xff); !errors.Is(err, ErrBadRange) {
		t.Errorf("move wrapping: %v", err)
	}
	if err := b.Move(0x1800, 0x5000); !errors.Is(err, ErrNotFound) {
		t.Errorf("move of a non-base: %v", err)
	}
	// Moving over part of its own old range is fine.
	if err := b.Move(0x1000, 0x1800); err != nil {
		t.Fatal(err)
	}
	data := []byte{0}
	if b.Read(0x1000, data) || !b.Read(0x2000, data) || data[0] != 1 || d.lastOff != 0x800 {
		t.Errorf("after move: off %#x", d.lastOff)
	}
	if err := b.Move(0x3000, 0x0); err != nil {
		t.Fatal(err)
	}
	if !b.Read(0x10, data) || data[0] != 2 {
		t.Error("e not found at 0 after move (order not kept?)")
	}
	if err := b.Remove(0x1800); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(0x1800); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	if b.Read(0x2000, data) {
		t.Error("removed device still answers")
	}
	if err := b.Insert(0x1000, 0x1000, "again", d); err != nil {
		t.Errorf("insert into freed range: %v", err)
	}
}

// TestBusConcurrent runs lookups on several goroutines while another moves
// a device back and forth; run with -race.
func TestBusConcurrent(t *testing.T) {
	var b Bus
	fixed, moving := &recorder{id: 1}, &recorder{id: 2}
	b.Insert(0x0, 0x100, "fixed", fixed)
	b.Insert(0x1000, 0x100, "moving", moving)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, 4)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if !b.Read(0x10, data) || data[0] != 1 {
					errs <- "fixed device lost during moves"
					return
				}
				// The moving device answers at one place or the other.
				a, c := b.Read(0x1010, data), b.Read(0x2010, data)
				_ = a || c
				b.Write(0x2000, data)
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		from, to := uint64(0x1000), uint64(0x2000)
		if i%2 == 1 {
			from, to = to, from
		}
		if err := b.Move(from, to); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
}

func BenchmarkBusRead(b *testing.B) {
	var bus Bus
	for i := uint64(0); i < 16; i++ {
		bus.Insert(i*0x100, 8, "d", &recorder{})
	}
	data := make([]byte, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bus.Read(0x805, data)
	}
}
