package corraltest

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The leak check (see the package documentation for the rule) follows the
// descriptors a machine opens while corral.New creates it. fdOS is what it
// needs from the process, so the logic runs on fake fd tables in tests.
type fdOS interface {
	// list returns the open descriptors: number -> readlink target.
	list() (map[int]string, error)
	// pin duplicates fd, keeping its open file alive.
	pin(fd int) (int, error)
	// same reports whether fd is still open on the open file pin refers to.
	same(fd, pin int) (bool, error)
	// tap returns the TAP device a /dev/net/tun descriptor is attached
	// to ("" if none).
	tap(fd int) string
	// close closes a pin.
	close(fd int) error
	// lock serializes the creation of machines in this process; the
	// returned function unlocks.
	lock() (func(), error)
}

// Descriptor targets that only a machine opens.
const (
	kvmDevice  = "/dev/kvm"
	kvmInode   = "anon_inode:kvm-" // kvm-vm, kvm-vcpu:N, kvm-vcpu-stats...
	kvmVMInode = "anon_inode:kvm-vm"
	tunDevice  = "/dev/net/tun"
)

// machineKind reports whether target is a descriptor a machine opens and
// nothing else in a test process does: KVM's, a TAP's, or one of paths (the
// machine's disk images and shared directories).
func machineKind(target string, paths map[string]bool) bool {
	return target == kvmDevice || strings.HasPrefix(target, kvmInode) || target == tunDevice || paths[target]
}

// pinned is a descriptor the machine opened, held by a duplicate.
type pinned struct {
	fd, dup int
	target  string
	tap     string // for /dev/net/tun: the TAP it is attached to
}

// leakCheck follows one machine's descriptors: begin when corral.New starts
// creating it, created when New has created it, finish after Close.
type leakCheck struct {
	os    fdOS
	paths map[string]bool

	mu      sync.Mutex
	unlock  func()         // releases the creation lock; nil when not held
	before  map[int]string // descriptors open when creation began
	pins    []pinned
	skipped string // why the check cannot attribute descriptors, if so
	done    bool   // created ran
}

func newLeakCheck(fos fdOS, paths []string) *leakCheck {
	c := &leakCheck{os: fos, paths: map[string]bool{}}
	for _, p := range paths {
		c.paths[p] = true
	}
	return c
}

// begin takes the creation lock and lists the descriptors open before the
// machine's first one. A second begin (New called again after a failure)
// starts over.
func (c *leakCheck) begin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	if c.unlock == nil {
		unlock, err := c.os.lock()
		if err != nil {
			c.skipped = fmt.Sprintf("cannot serialize machine creation: %v", err)
			return
		}
		c.unlock = unlock
	}
	before, err := c.os.list()
	if err != nil {
		c.skipped = err.Error()
		c.before = nil
		return
	}
	c.before, c.skipped = before, ""
}

// created lists the descriptors again once the machine exists, pins the
// machine's own (those of machine kinds that were not open before) and
// releases the creation lock.
func (c *leakCheck) created() {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.release()
	if c.done || c.before == nil {
		return
	}
	c.done = true
	now, err := c.os.list()
	if err != nil {
		c.skipped = err.Error()
		return
	}
	fresh := newDescriptors(c.before, now, c.paths)
	if n := countPrefix(fresh, kvmVMInode); n != 1 {
		// Only another machine created outside corraltest at the same
		// moment can do this: then nothing here is surely ours.
		c.skipped = fmt.Sprintf("%d KVM VM descriptors appeared while this machine was created, want 1 (a machine created at the same time outside corraltest?)", n)
		return
	}
	for _, fd := range slices.Sorted(maps.Keys(fresh)) {
		dup, err := c.os.pin(fd)
		if err != nil {
			c.skipped = fmt.Sprintf("duplicating descriptor %d (%s): %v", fd, fresh[fd], err)
			c.closePins()
			return
		}
		p := pinned{fd: fd, dup: dup, target: fresh[fd]}
		if p.target == tunDevice {
			p.tap = c.os.tap(dup)
		}
		c.pins = append(c.pins, p)
	}
}

// release drops the creation lock if held; callers hold c.mu.
func (c *leakCheck) release() {
	if c.unlock != nil {
		c.unlock()
		c.unlock = nil
	}
}

// abort releases the creation lock, for a New that failed or never
// reported the machine created. The check then has nothing to check.
func (c *leakCheck) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.release()
	if !c.done && c.skipped == "" {
		c.skipped = "the machine's creation was not observed"
	}
}

// finish reports the pinned descriptors that are still open on the same
// open file (the machine's leaks), and closes the pins. taps are the
// machine's TAP devices: another test may open /dev/net/tun at any time, so
// only a descriptor attached to one of these counts. note says why the
// check could not run, when it could not.
func (c *leakCheck) finish(taps []string) (leaks []string, note string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.release()
	defer c.closePins()
	if c.skipped != "" {
		return nil, c.skipped
	}
	if !c.done {
		return nil, "the machine's creation was not observed"
	}
	for _, p := range c.pins {
		if p.target == tunDevice && (p.tap == "" || !slices.Contains(taps, p.tap)) {
			continue
		}
		same, err := c.os.same(p.fd, p.dup)
		if err != nil {
			return nil, fmt.Sprintf("comparing descriptor %d with its duplicate: %v", p.fd, err)
		}
		if same {
			what := p.target
			if p.tap != "" {
				what += " attached to " + p.tap
			}
			leaks = append(leaks, fmt.Sprintf("descriptor %d (%s)", p.fd, what))
		}
	}
	return leaks, ""
}

func (c *leakCheck) closePins() {
	for _, p := range c.pins {
		c.os.close(p.dup)
	}
	c.pins = nil
}

// newDescriptors returns the descriptors in now of machine kinds that were
// not in before, by number and target (a number closed and reused for a
// different kind is new; one reused for the same kind cannot be told from
// the old one and is left out, which can only miss a leak).
func newDescriptors(before, now map[int]string, paths map[string]bool) map[int]string {
	fresh := map[int]string{}
	for fd, target := range now {
		if machineKind(target, paths) && before[fd] != target {
			fresh[fd] = target
		}
	}
	return fresh
}

func countPrefix(fds map[int]string, prefix string) int {
	n := 0
	for _, t := range fds {
		if t == prefix || strings.HasPrefix(t, prefix+":") {
			n++
		}
	}
	return n
}

// procOS is fdOS on this process.
type procOS struct{}

func (procOS) list() (map[int]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("corraltest: listing descriptors: %w", err)
	}
	fds := map[int]string{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A descriptor closed between ReadDir and Readlink is simply gone.
		if t, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			fds[n] = t
		}
	}
	return fds, nil
}

func (procOS) pin(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// kcmpFile is kcmp(2)'s KCMP_FILE: do two descriptors refer to one open file?
const kcmpFile = 0

func (procOS) same(fd, pin int) (bool, error) {
	pid := uintptr(os.Getpid())
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, uintptr(fd), uintptr(pin), 0)
	switch {
	case errno == unix.EBADF:
		return false, nil // fd is closed (pin is ours and open)
	case errno != 0:
		return false, fmt.Errorf("kcmp: %w", errno)
	}
	return r == 0, nil
}

// tap reads the "iff:" line the tun driver adds to the descriptor's fdinfo.
func (procOS) tap(fd int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "iff:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (procOS) close(fd int) error { return unix.Close(fd) }

// lock takes an exclusive flock on this test binary (/proc/self/exe): each
// open of it is its own open file, so machines created in this process
// wait for each other, and no lock file is left behind. Other processes
// running the same binary wait too, which costs little.
func (procOS) lock() (func(), error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("corraltest: creation lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("corraltest: creation lock: flock: %w", err)
	}
	return func() { f.Close() }, nil
}
