package corraltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConsoleLines(t *testing.T) {
	tb := &fakeTB{}
	var user bytes.Buffer
	c := newConsole(tb, &user)
	for _, w := range []string{"boot", "ing\r\nline 2\n", "\n", "a\nb\nunfinished"} {
		c.Write([]byte(w))
	}
	want := []string{"console: booting", "console: line 2", "console: ", "console: a", "console: b"}
	if got := tb.logged(); !slices.Equal(got, want) {
		t.Fatalf("logged %q, want %q", got, want)
	}
	c.close()
	want = append(want, "console: unfinished")
	if got := tb.logged(); !slices.Equal(got, want) {
		t.Fatalf("after close: logged %q, want %q", got, want)
	}
	// The test is over: t.Log would panic. Output is still kept.
	c.Write([]byte("late\n"))
	c.logf("late log")
	if got := tb.logged(); len(got) != len(want) {
		t.Errorf("logged after close: %q", got[len(want):])
	}
	if !strings.HasSuffix(user.String(), "unfinishedlate\n") {
		t.Errorf("the caller's Console got %q", user.String())
	}
	if got := c.lines(2); !slices.Equal(got, []string{"b", "unfinishedlate"}) {
		t.Errorf("lines(2) = %q", got)
	}
}

func TestConsoleLongLine(t *testing.T) {
	tb := &fakeTB{}
	c := newConsole(tb, nil)
	c.Write(bytes.Repeat([]byte("x"), 2*maxLine+10))
	if got := tb.logged(); len(got) != 2 || len(got[0]) != len("console: ")+maxLine {
		t.Fatalf("a line of 2*maxLine+10 bytes logged as %d entries", len(got))
	}
	c.Write([]byte("y\n"))
	if got := tb.logged(); len(got) != 3 || got[2] != "console: "+strings.Repeat("x", 10)+"y" {
		t.Errorf("rest of the long line: %q", got[len(got)-1])
	}
}

func TestExpect(t *testing.T) {
	c := newConsole(&fakeTB{}, nil)
	never := make(chan struct{})
	ctx := context.Background()
	go func() {
		for i := range 3 {
			time.Sleep(10 * time.Millisecond)
			fmt.Fprintf(c, "step %d done\n", i)
		}
	}()
	re := regexp.MustCompile(`step (\d) done`)
	for i := range 3 {
		m, err := c.expect(ctx, re, never)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{fmt.Sprintf("step %d done", i), fmt.Sprint(i)}; !slices.Equal(m, want) {
			t.Fatalf("match %d = %q, want %q", i, m, want)
		}
	}
	// Nothing more comes: the context ends it, quoting the last lines.
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := c.expect(ctx, re, never)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "\tstep 2 done") {
		t.Errorf("expect with no more output: %v; want a deadline error quoting the last line", err)
	}
}

func TestExpectMachineEnded(t *testing.T) {
	c := newConsole(&fakeTB{}, nil)
	ended := make(chan struct{})
	c.Write([]byte("kernel panic\n"))
	go func() {
		time.Sleep(10 * time.Millisecond)
		c.Write([]byte("last words\n"))
		close(ended)
	}()
	_, err := c.expect(context.Background(), regexp.MustCompile("login:"), ended)
	if err == nil || !strings.Contains(err.Error(), "machine ended") || !strings.Contains(err.Error(), "\tkernel panic\n\tlast words") {
		t.Errorf("expect on an ended machine: %v", err)
	}
	// Output that came before the end still matches.
	if m, err := c.expect(context.Background(), regexp.MustCompile("last (w)ords"), ended); err != nil || m[1] != "w" {
		t.Errorf("expect of output before the end: %q, %v", m, err)
	}
}

// TestExpectEmptyMatch: a pattern that matches the empty string moves on,
// so a loop of Expect calls does not spin on one place forever.
func TestExpectEmptyMatch(t *testing.T) {
	c := newConsole(&fakeTB{}, nil)
	c.Write([]byte("ab"))
	re := regexp.MustCompile(`x*`)
	for range 2 {
		if _, err := c.expect(context.Background(), re, nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	// At the end of the output the empty match still matches, but the
	// cursor cannot pass the end: the next real output is found.
	c.Write([]byte("c\n"))
	if m, err := c.expect(ctx, regexp.MustCompile(`c`), nil); err != nil || m[0] != "c" {
		t.Errorf("expect after empty matches: %q, %v", m, err)
	}
}

// TestExpectKeepsRecentOutput: old output beyond keepConsole is dropped,
// and the cursor never points before what is kept.
func TestExpectKeepsRecentOutput(t *testing.T) {
	c := newConsole(&fakeTB{}, nil)
	c.Write([]byte("marker\n"))
	c.Write(bytes.Repeat([]byte("."), keepConsole))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.expect(ctx, regexp.MustCompile("marker"), nil); err == nil {
		t.Errorf("matched output older than keepConsole")
	}
	c.Write([]byte("new\n"))
	if _, err := c.expect(context.Background(), regexp.MustCompile("new"), nil); err != nil {
		t.Error(err)
	}
}

// TestExpectWholeLines: a line is matched once complete, so "(.*)" takes
// all of it, however the guest's output was split.
func TestExpectWholeLines(t *testing.T) {
	c := newConsole(&fakeTB{}, nil)
	ended := make(chan struct{})
	go func() {
		for _, w := range []string{"ip: 10.", "0.2.15", "/24\nprompt> "} {
			time.Sleep(10 * time.Millisecond)
			c.Write([]byte(w))
		}
		time.Sleep(10 * time.Millisecond)
		close(ended)
	}()
	m, err := c.expect(context.Background(), regexp.MustCompile(`ip: (.*)`), ended)
	if err != nil || m[1] != "10.0.2.15/24" {
		t.Fatalf("expect = %q, %v; want the whole line", m, err)
	}
	// An unfinished last line is matched once the machine has ended.
	m, err = c.expect(context.Background(), regexp.MustCompile(`prompt> $`), ended)
	if err != nil || m[0] != "prompt> " {
		t.Errorf("expect of the unfinished last line = %q, %v", m, err)
	}
}
