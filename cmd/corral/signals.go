package main

import (
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// signalWatch handles corral run's signals: the first SIGINT, SIGTERM or
// SIGHUP stops the machine; a second one restores the terminal and exits
// with 128+n at once, whatever is stuck; SIGQUIT restores the terminal and
// then dies by SIGQUIT's default action, as Go would have.
type signalWatch struct {
	sigs  chan os.Signal
	first atomic.Int32 // the first stopping signal; 0 before
	done  chan struct{}
	ended chan struct{}
}

// signalActions is what the watcher does; tests replace exit and raise.
type signalActions struct {
	stop    func(syscall.Signal) // first signal: end the machine
	restore func()               // put the terminal back
	exit    func(code int)       // second signal
	raise   func(syscall.Signal) // SIGQUIT, after restore and signal.Reset
}

// watchSignals starts watching the process's signals.
func watchSignals(a signalActions) *signalWatch {
	w := newSignalWatch()
	signal.Notify(w.sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	go w.loop(a)
	return w
}

func newSignalWatch() *signalWatch {
	// Room for a burst: a second Ctrl-C must not be lost while the first
	// is being handled.
	return &signalWatch{sigs: make(chan os.Signal, 8), done: make(chan struct{}), ended: make(chan struct{})}
}

func (w *signalWatch) loop(a signalActions) {
	defer close(w.ended)
	for {
		select {
		case <-w.done:
			return
		case s := <-w.sigs:
			sig, _ := s.(syscall.Signal)
			switch {
			case sig == syscall.SIGQUIT:
				a.restore()
				signal.Reset(syscall.SIGQUIT)
				a.raise(sig)
			case w.first.CompareAndSwap(0, int32(sig)):
				a.stop(sig)
			default:
				a.restore()
				a.exit(128 + int(sig))
			}
		}
	}
}

// signal returns the first stopping signal received, or 0.
func (w *signalWatch) signal() syscall.Signal { return syscall.Signal(w.first.Load()) }

// stop stops watching and waits for the watcher to end.
func (w *signalWatch) stop() {
	signal.Stop(w.sigs)
	close(w.done)
	<-w.ended
}

// raiseDefault sends sig to this process; with its handler reset, the
// runtime applies the default action (SIGQUIT: goroutine dump, exit 2).
func raiseDefault(sig syscall.Signal) { _ = unix.Kill(os.Getpid(), sig) }
