package control

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// pauseTarget is a fakeTarget that can pause and snapshot.
type pauseTarget struct {
	fakeTarget
	mu    sync.Mutex
	calls []string
	err   error
}

func (p *pauseTarget) record(s string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, s)
	return p.err
}

func (p *pauseTarget) Pause(ctx context.Context, by Peer) error { return p.record("pause") }
func (p *pauseTarget) Resume(by Peer) error                     { return p.record("resume") }
func (p *pauseTarget) Snapshot(ctx context.Context, dir string, resume bool, by Peer) error {
	s := "snapshot " + dir
	if resume {
		s += " resume"
	}
	return p.record(s)
}

func TestPauseResumeSnapshot(t *testing.T) {
	pt := &pauseTarget{}
	_, c := listen(t, Config{Target: pt})
	ctx := context.Background()
	if st, err := c.Pause(ctx); err != nil || st.State != "paused" {
		t.Fatalf("Pause: %+v, %v", st, err)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if st, err := c.Snapshot(ctx, dir, true); err != nil || st.State != "running" || st.Dir != dir {
		t.Fatalf("Snapshot: %+v, %v", st, err)
	}
	if st, err := c.Resume(ctx); err != nil || st.State != "running" {
		t.Fatalf("Resume: %+v, %v", st, err)
	}
	want := []string{"pause", "snapshot " + dir + " resume", "resume"}
	if strings.Join(pt.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q, want %q", pt.calls, want)
	}
	// A relative directory is refused before the target sees it.
	if _, err := c.Snapshot(ctx, "snap", false); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative dir: %v", err)
	}
	// The target's error reaches the client.
	pt.err = errors.New("corral: machine has ended")
	if _, err := c.Pause(ctx); err == nil || !strings.Contains(err.Error(), "machine has ended") {
		t.Fatalf("failed pause: %v", err)
	}
}

func TestPauseUnsupported(t *testing.T) {
	_, c := listen(t, Config{Target: &fakeTarget{}})
	if _, err := c.Pause(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot be paused") {
		t.Fatalf("Pause on a target without Pauser: %v", err)
	}
}

// FuzzDecodeSnapshot: any body gives a clean absolute directory or an
// error, never a panic.
func FuzzDecodeSnapshot(f *testing.F) {
	for _, s := range []string{"", "{}", `{"dir":"/tmp/s"}`, `{"dir":"/tmp/s","resume":true}`, `{"dir":"s"}`,
		`{"dir":"/a/../b"}`, `{"dir":1}`, `{"dir":"/x"} {}`, `{"x":1}`, "null", "\xff", strings.Repeat(" ", 5000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeSnapshot(bytes.NewReader(b))
		if err != nil {
			return
		}
		if !filepath.IsAbs(req.Dir) || filepath.Clean(req.Dir) != req.Dir {
			t.Fatalf("accepted dir %q", req.Dir)
		}
		if len(b) > maxBody {
			t.Fatalf("accepted a %d-byte body", len(b))
		}
	})
}
