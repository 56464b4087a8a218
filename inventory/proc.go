package inventory

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Clock gives the times the inventory uses. Every age and duration comes
// from Boottime (CLOCK_BOOTTIME: monotonic, shared by all processes of one
// boot, counting suspend); Now is the calendar, only shown, never compared,
// so no decision depends on the date. Tests inject their own.
type Clock interface {
	Now() time.Time
	Boottime() time.Duration
}

// SystemClock reads the host's clocks.
type SystemClock struct{}

// Now returns the wall-clock time.
func (SystemClock) Now() time.Time { return time.Now() }

// Boottime returns CLOCK_BOOTTIME, the time since boot.
func (SystemClock) Boottime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// CLOCK_BOOTTIME exists since Linux 2.6.39; Corral needs far newer.
		panic("inventory: clock_gettime(CLOCK_BOOTTIME): " + err.Error())
	}
	return time.Duration(ts.Nano())
}

// bootIDPath holds the random ID of the running boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID returns the kernel's ID of the current boot: a pid and its start
// time identify a process only within one boot.
func BootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("inventory: boot ID: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ProcStart returns when process pid started, in clock ticks after boot
// (field 22 of /proc/PID/stat): with the boot ID it tells the process from
// a later one that reused its pid.
func ProcStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("inventory: process %d: %w", pid, err)
	}
	return parseStatStart(b)
}

// parseStatStart takes field 22 (starttime) from a /proc/PID/stat line.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted after its last ')'.
func parseStatStart(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("inventory: /proc stat line has no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("inventory: /proc stat line has %d fields after the name, want at least 20", len(f))
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("inventory: /proc stat starttime: %w", err)
	}
	return v, nil
}

// Alive reports whether the process that registered r still runs: the
// boot is the same, and pid r.PID exists and started when r says, so a
// later process that reused the pid is not taken for it.
func Alive(r *Record) bool {
	boot, err := BootID()
	if err != nil {
		return false
	}
	return alive(r, boot, ProcStart)
}

func alive(r *Record, bootID string, procStart func(int) (uint64, error)) bool {
	if r.PID <= 0 || r.BootID == "" || r.BootID != bootID {
		return false
	}
	st, err := procStart(r.PID)
	return err == nil && st == r.PIDStart
}
