package corral

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

// The count guest (tests/guests/src/count.c) counts in RAM and checks a
// 1 MiB buffer: the guest of the snapshot tests. These tests prove it (and
// its checks) under Corral; TestQEMUCount runs the same scenarios in QEMU.

func TestCountGuest(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "count")
	for _, sc := range guests.CountScenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			m, out := bootGuest(t, Config{Kernel: k, Cmdline: sc.Cmdline})
			e := waitExit(t, m, out)
			wantGuestExit(t, e, sc.Exit)
			if err := sc.Verify(out.String()); err != nil {
				t.Errorf("%v; console:\n%s", err, out)
			}
		})
	}
}

// TestCountGuestRunsOn runs count with no limit, as a snapshot test would:
// the counts go on with memory intact, and a change the host makes to the
// buffer in guest RAM (what a restore mapping the wrong memory would do)
// shows as "mem BAD" from the next check on, while the count goes on.
func TestCountGuestRunsOn(t *testing.T) {
	testenv.MustHaveKVM(t)
	m, out := bootGuest(t, Config{Kernel: guests.BuildT(t, "count"), Cmdline: "step=1000000"})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := out.WaitFor(ctx, "count 3000000 mem ok\n"); err != nil {
		t.Fatal(err)
	}
	r, err := guests.ParseCount(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(); err != nil || r.Done || r.Limit != 0 {
		t.Fatalf("counting: %v (report %+v); console:\n%s", err, r, out)
	}
	// Flip one byte in the middle of the buffer.
	b := []byte{0}
	gpa := r.Buf + 512<<10
	if err := m.mem.ReadAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if err := m.mem.WriteAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	// A whole BAD line, checksum and newline included.
	badLine := regexp.MustCompile(`mem BAD 0x[0-9a-f]+\n`)
	for !badLine.MatchString(out.String()) {
		if ctx.Err() != nil {
			t.Fatalf("no whole 'mem BAD' line; console:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	last := r.Counts[len(r.Counts)-1]
	m.Stop()
	waitExit(t, m, out)
	// Stop can cut the guest's last line short ("count N mem BAD " without
	// its checksum): only whole lines count.
	text := out.String()
	text = text[:strings.LastIndex(text, "\n")+1]
	r, err = guests.ParseCount(text)
	if err != nil {
		t.Fatal(err)
	}
	// The byte stays flipped: every check from the first failure on fails.
	if n := len(r.Bad); n == 0 || r.Bad[0] <= last || !slices.Equal(r.Bad, r.Counts[len(r.Counts)-n:]) {
		t.Errorf("memory check failed at %v of %v, want every count after %d from the first failure on", r.Bad, r.Counts, last)
	}
	r.Bad = nil
	if err := r.Check(); err != nil {
		t.Errorf("count did not go on: %v; console:\n%s", err, out)
	}
}
