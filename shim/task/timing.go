package task

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/inventory"
)

// EnvStartTimes carries the `start` process's begin and the serving
// shim's spawn (Unix nanoseconds, "BEGIN,SPAWN") to the serving shim,
// which logs them at debug level beside its own steps: the start
// process cannot log (containerd reads only its stdout).
const EnvStartTimes = "CORRAL_SHIM_START_TIMES"

// clockTicks is USER_HZ, the unit of /proc's starttime: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// ProcessBegun returns when this process began (exec, before the Go
// runtime's and packages' init), to 10 ms, from /proc/self/stat's
// starttime (inventory.ProcStart); time.Now() when that cannot be read.
func ProcessBegun() time.Time {
	ticks, err := inventory.ProcStart(os.Getpid())
	if err != nil {
		return time.Now()
	}
	// The two clocks are read together: the read above takes tens of
	// milliseconds under TCG.
	var ts unix.Timespec
	now := time.Now()
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return now
	}
	age := time.Duration(ts.Nano()) - time.Duration(ticks)*time.Second/clockTicks
	if age < 0 {
		return now
	}
	return now.Add(-age)
}

// startTimes formats EnvStartTimes's value.
func startTimes(begun, spawned time.Time) string {
	return strconv.FormatInt(begun.UnixNano(), 10) + "," + strconv.FormatInt(spawned.UnixNano(), 10)
}

// parseStartTimes reads EnvStartTimes's value; ok is false when v is not
// two Unix nanosecond times.
func parseStartTimes(v string) (begun, spawned time.Time, ok bool) {
	a, b, found := bytes.Cut([]byte(v), []byte(","))
	if !found {
		return time.Time{}, time.Time{}, false
	}
	x, err1 := strconv.ParseInt(string(a), 10, 64)
	y, err2 := strconv.ParseInt(string(b), 10, 64)
	if err1 != nil || err2 != nil || x <= 0 || y < x {
		return time.Time{}, time.Time{}, false
	}
	return time.Unix(0, x), time.Unix(0, y), true
}
