package agent

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/proto"
)

// finish grants output credit and reads to the Exit frame.
func finish(t *testing.T, w *proto.Writer, r *proto.Reader) (out string, x proto.Exit) {
	t.Helper()
	go func() {
		w.Send(proto.TypeCredit, proto.StreamStdout, proto.AppendU32(nil, 1<<20))
		w.Send(proto.TypeCredit, proto.StreamStderr, proto.AppendU32(nil, 1<<20))
		w.Send(proto.TypeClose, proto.StreamStdin, nil)
	}()
	for {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("reading to Exit: %v", err)
		}
		switch f.Type {
		case proto.TypeData:
			out += string(f.Payload)
		case proto.TypeExit:
			x, err := proto.ParseExit(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return out, x
		case proto.TypeError:
			e, _ := proto.ParseError(f.Payload)
			t.Fatal(e)
		}
	}
}

// TestReaper runs commands with a Reaper that reaps every child of the
// test process, as PID 1 does: each command still gets its own status, and
// an orphan left behind is reaped.
func TestReaper(t *testing.T) {
	// As a child subreaper the test process inherits orphans as PID 1 would.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	rp := NewReaper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { rp.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	srv := NewServer(Config{Reaper: rp})

	_, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	startExec(t, w, r, &proto.Exec{Path: "sh", Args: []string{"sh", "-c", "sleep 0.2 </dev/null >/dev/null 2>&1 & echo bye; exit 5"}})
	out, x := finish(t, w, r)
	if out != "bye\n" || x.Signaled || x.Value != 5 {
		t.Errorf("got %q, %+v; want bye, exit 5", out, x)
	}
	if err := result(t, done); err != nil {
		t.Error(err)
	}
	for start := time.Now(); rp.Orphans() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the orphaned sleep was not reaped")
		}
	}

	// Commands ending at once, together: none loses its status to the
	// reaper.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, w, r, done := rawSession(t, srv)
			hello(t, w, r)
			startExec(t, w, r, &proto.Exec{Path: "sh", Args: []string{"sh", "-c", fmt.Sprintf("exit %d", 10+i)}})
			if _, x := finish(t, w, r); x.Value != int32(10+i) {
				t.Errorf("command %d: %+v", i, x)
			}
			result(t, done)
		})
	}
	wg.Wait()
}
