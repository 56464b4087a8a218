package agent

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestOrderlyCtrlAltDel: SIGINT (what the kernel sends PID 1 for
// Ctrl-Alt-Del once CAD_OFF is set) stops every process, SIGTERM first,
// SIGKILL only for what is left after the grace time, then powers off.
func TestOrderlyCtrlAltDel(t *testing.T) {
	for _, tc := range []struct {
		name      string
		lingering int // kill(0) probes that still find processes
		want      []syscall.Signal
	}{
		{"processes exit on SIGTERM", 2, []syscall.Signal{syscall.SIGTERM, 0, 0, 0, syscall.SIGKILL}},
		{"processes ignore SIGTERM", 1 << 30, nil}, // checked below: ends with SIGKILL
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sigs chan<- os.Signal
			var sent []syscall.Signal
			lingering := tc.lingering
			off := make(chan struct{})
			cadOff := false
			o := &Orderly{
				Grace:    300 * time.Millisecond,
				PowerOff: func() error { close(off); return nil },
				cadOff:   func() error { cadOff = true; return nil },
				notify:   func(c chan<- os.Signal) { sigs = c },
				kill: func(sig syscall.Signal) error {
					sent = append(sent, sig)
					if sig == 0 {
						if lingering == 0 {
							return syscall.ESRCH
						}
						lingering--
					}
					return nil
				},
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := o.Watch(ctx); err != nil {
				t.Fatal(err)
			}
			if !cadOff {
				t.Fatal("Watch did not set CAD_OFF: the kernel would restart at once on Ctrl-Alt-Del")
			}
			select {
			case <-off:
				t.Fatal("powered off before any request")
			case <-time.After(20 * time.Millisecond):
			}
			t0 := time.Now()
			sigs <- syscall.SIGINT
			select {
			case <-off:
			case <-time.After(5 * time.Second):
				t.Fatal("no power-off after Ctrl-Alt-Del")
			}
			if sent[0] != syscall.SIGTERM || sent[len(sent)-1] != syscall.SIGKILL {
				t.Errorf("signals %v: want SIGTERM first and SIGKILL last", sent)
			}
			if tc.want != nil && len(sent) != len(tc.want) {
				t.Errorf("signals %v, want %v", sent, tc.want)
			}
			if tc.want == nil && time.Since(t0) < o.Grace {
				t.Errorf("SIGKILL after %v, before the grace time %v", time.Since(t0), o.Grace)
			}
		})
	}
}

func TestOrderlyNoCADOff(t *testing.T) {
	o := &Orderly{PowerOff: func() error { return nil }, cadOff: func() error { return syscall.EPERM }}
	if err := o.Watch(context.Background()); !errors.Is(err, syscall.EPERM) {
		t.Errorf("Watch: %v, want EPERM", err)
	}
}
