package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Orderly is how PID 1 ends the machine when asked from outside (corral
// stop, a TTL): the host presses Ctrl-Alt-Del on the guest's keyboard.
// Left to the kernel, Ctrl-Alt-Del restarts at once without syncing, so
// data a command wrote but the page cache still holds would never reach a
// disk. With CAD_OFF the kernel sends SIGINT to PID 1 instead, and Orderly
// ends the machine properly: SIGTERM to every process, Grace for them to
// exit, SIGKILL to what is left, then PowerOff (which syncs).
type Orderly struct {
	Log      *slog.Logger
	Grace    time.Duration // default 3 s
	PowerOff func() error

	// Tests replace these.
	cadOff func() error                   // reboot(LINUX_REBOOT_CMD_CAD_OFF)
	notify func(chan<- os.Signal)         // signal.Notify for SIGINT
	kill   func(sig syscall.Signal) error // kill(-1, sig): all but PID 1
}

// Watch turns Ctrl-Alt-Del into an orderly power-off until ctx ends. It
// fails only when the kernel refuses CAD_OFF (not PID 1, or no
// CAP_SYS_BOOT); the machine then still ends on Ctrl-Alt-Del, abruptly.
func (o *Orderly) Watch(ctx context.Context) error {
	cadOff, notify := o.cadOff, o.notify
	if cadOff == nil {
		cadOff = func() error { return unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF) }
	}
	if notify == nil {
		notify = func(c chan<- os.Signal) { signal.Notify(c, syscall.SIGINT) }
	}
	if err := cadOff(); err != nil {
		return fmt.Errorf("agent: reboot(CAD_OFF): %w", err)
	}
	ch := make(chan os.Signal, 1)
	notify(ch)
	go func() {
		select {
		case <-ch:
			o.shutdown()
		case <-ctx.Done():
			signal.Stop(ch)
		}
	}()
	return nil
}

func (o *Orderly) shutdown() {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kill := o.kill
	if kill == nil {
		kill = func(sig syscall.Signal) error { return unix.Kill(-1, sig) }
	}
	grace := o.Grace
	if grace <= 0 {
		grace = 3 * time.Second
	}
	log.Info("corral-agent: power-off requested (Ctrl-Alt-Del); stopping processes", "grace", grace)
	// ESRCH from kill(-1, sig) means no process is left but PID 1.
	if kill(syscall.SIGTERM) == nil {
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) && kill(0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		kill(syscall.SIGKILL)
	}
	if err := o.PowerOff(); err != nil {
		log.Error("corral-agent: power-off", "err", err)
	}
}
