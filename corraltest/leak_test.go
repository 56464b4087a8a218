package corraltest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// machineFDs opens what corral.New opens for a one-vCPU machine with a TAP
// and a disk, from number base on.
func machineFDs(f *fakeOS, base int, tap, disk string) {
	f.open(base, kvmDevice)
	f.open(base+1, "anon_inode:kvm-vm")
	f.open(base+2, "anon_inode:kvm-vcpu:0")
	f.open(base+3, tunDevice)
	f.taps[f.table[base+3]] = tap
	f.open(base+4, disk)
	f.open(base+5, "anon_inode:[eventfd]")
}

func closeFDs(f *fakeOS, fds ...int) {
	for _, fd := range fds {
		delete(f.table, fd)
	}
}

func TestLeakCheckClean(t *testing.T) {
	f := newFakeOS()
	f.open(0, "/dev/null")
	c := newLeakCheck(f, []string{"/img"})
	c.begin()
	if f.locked != 1 {
		t.Fatalf("begin: creation lock held %d times, want 1", f.locked)
	}
	machineFDs(f, 3, "tap0", "/img")
	c.created()
	if f.locked != 0 {
		t.Fatalf("created: creation lock still held")
	}
	if f.pins() != 5 {
		t.Fatalf("pinned %d descriptors, want 5 (all but the eventfd)", f.pins())
	}
	closeFDs(f, 3, 4, 5, 6, 7, 8)
	// Another machine reuses the numbers for the same kinds of file.
	machineFDs(f, 3, "tap1", "/img")
	leaks, note := c.finish([]string{"tap0"})
	if len(leaks) != 0 || note != "" {
		t.Errorf("finish = %q, %q; want no leaks: every number was closed (some reused by another open file)", leaks, note)
	}
	if f.pins() != 0 {
		t.Errorf("%d pins left open after finish", f.pins())
	}
}

func TestLeakCheckFindsLeaks(t *testing.T) {
	f := newFakeOS()
	c := newLeakCheck(f, []string{"/img"})
	c.begin()
	f.open(0, "/dev/null") // not a machine kind: never counted
	machineFDs(f, 3, "tap0", "/img")
	c.created()
	closeFDs(f, 3, 6, 8) // kvm-vm, vcpu and the disk stay open
	leaks, note := c.finish([]string{"tap0"})
	if note != "" {
		t.Fatalf("note %q", note)
	}
	want := []string{"descriptor 4 (anon_inode:kvm-vm)", "descriptor 5 (anon_inode:kvm-vcpu:0)", "descriptor 7 (/img)"}
	if !slices.Equal(leaks, want) {
		t.Errorf("leaks = %q, want %q", leaks, want)
	}
}

func TestLeakCheckTAPMustBeOurs(t *testing.T) {
	f := newFakeOS()
	c := newLeakCheck(f, nil)
	c.begin()
	machineFDs(f, 3, "tapX", "/img")
	f.open(20, tunDevice) // another test's TAP, opened at the same time
	f.taps[f.table[20]] = "other0"
	c.created()
	closeFDs(f, 3, 4, 5, 7, 8)
	// The machine's TAP descriptor (6) leaked; the other test's is open.
	leaks, _ := c.finish([]string{"tapX"})
	if want := []string{"descriptor 6 (/dev/net/tun attached to tapX)"}; !slices.Equal(leaks, want) {
		t.Errorf("leaks = %q, want %q", leaks, want)
	}
}

// TestLeakCheckAmbiguous: another machine created in the same window (not
// through corraltest) makes the check give up rather than blame.
func TestLeakCheckAmbiguous(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(f *fakeOS)
	}{
		{"two machines", func(f *fakeOS) { machineFDs(f, 10, "a", "/x"); machineFDs(f, 20, "b", "/y") }},
		{"number reused", func(f *fakeOS) {
			// A machine closed in the window and this one took its
			// numbers: its kvm-vm is not new by number and target.
			closeFDs(f, 3, 4, 5, 6, 7, 8)
			machineFDs(f, 3, "b", "/y")
		}},
	} {
		f := newFakeOS()
		machineFDs(f, 3, "a", "/x") // open before the window
		lc := newLeakCheck(f, nil)
		lc.begin()
		c.setup(f)
		lc.created()
		leaks, note := lc.finish(nil)
		if len(leaks) != 0 || !strings.Contains(note, "KVM VM descriptors") {
			t.Errorf("%s: finish = %q, %q; want no leaks and a note", c.name, leaks, note)
		}
		if f.pins() != 0 || f.locked != 0 {
			t.Errorf("%s: %d pins, lock held %d", c.name, f.pins(), f.locked)
		}
	}
}

func TestLeakCheckNotObserved(t *testing.T) {
	f := newFakeOS()
	c := newLeakCheck(f, nil)
	c.begin()
	c.abort() // New failed before vm.created
	if f.locked != 0 {
		t.Fatal("abort left the creation lock held")
	}
	if leaks, note := c.finish(nil); len(leaks) != 0 || note == "" {
		t.Errorf("finish = %q, %q; want a note", leaks, note)
	}
	f2 := newFakeOS()
	c2 := newLeakCheck(f2, nil)
	c2.begin()
	machineFDs(f2, 3, "t", "/i")
	c2.created()
	f2.sameErr = errors.New("kcmp: ENOSYS")
	if leaks, note := c2.finish(nil); len(leaks) != 0 || !strings.Contains(note, "ENOSYS") {
		t.Errorf("finish without kcmp = %q, %q; want the error as a note", leaks, note)
	}
	if f2.pins() != 0 {
		t.Errorf("%d pins left", f2.pins())
	}
}

// TestProcOS checks the real descriptor operations: pin and same follow the
// open file, not the number.
func TestProcOS(t *testing.T) {
	var p procOS
	dir := t.TempDir()
	a, err := os.Create(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	fd := int(a.Fd())
	fds, err := p.list()
	if err != nil || fds[fd] != a.Name() {
		t.Fatalf("list: fd %d -> %q, %v; want %s", fd, fds[fd], err, a.Name())
	}
	pin, err := p.pin(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close(pin)
	if same, err := p.same(fd, pin); err != nil || !same {
		t.Fatalf("same(fd, its pin) = %v, %v", same, err)
	}
	a.Close()
	if same, err := p.same(fd, pin); err != nil || same {
		t.Fatalf("same(closed fd, pin) = %v, %v; want false", same, err)
	}
	// The number reused for the same path: a different open file.
	b, err := os.Open(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if int(b.Fd()) == fd {
		if same, err := p.same(fd, pin); err != nil || same {
			t.Fatalf("same(reused fd, pin) = %v, %v; want false", same, err)
		}
	}
	if p.tap(pin) != "" {
		t.Errorf("tap of a plain file = %q", p.tap(pin))
	}
}

// TestProcOSLock checks that two creation locks in one process exclude
// each other.
func TestProcOSLock(t *testing.T) {
	var p procOS
	unlock, err := p.lock()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func())
	go func() {
		u, err := p.lock()
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("a second lock was granted while the first was held")
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	select {
	case u := <-got:
		if u != nil {
			u()
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second lock was not granted after the first was released")
	}
}
