package agentvm

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestSteps(t *testing.T) {
	var buf bytes.Buffer
	s := NewSteps(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "warm")
	s.Step("restored")
	s.Step("Setup done")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `msg="warm: restored"`) || !strings.Contains(lines[1], `msg="warm: Setup done"`) {
		t.Fatalf("debug log:\n%s", buf.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, " step=") || !strings.Contains(l, " total=") {
			t.Errorf("line without step= and total=: %s", l)
		}
	}

	buf.Reset()
	s = NewSteps(slog.New(slog.NewTextHandler(&buf, nil)), "warm") // info
	s.Step("restored")
	if buf.Len() != 0 {
		t.Errorf("logged above debug level: %s", buf.String())
	}
	var nilSteps *Steps
	nilSteps.Step("nothing") // a nil Steps is a no-op
	NewSteps(nil, "x").Step("discarded")
}
