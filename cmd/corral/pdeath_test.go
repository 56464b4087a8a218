package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary plays both processes of TestParentDeathEndsCorral. It
// does so in init, as corral's own init arms the signal: package init runs
// on the main thread.
func init() {
	switch os.Getenv("CORRAL_PDEATH_TEST") {
	case "parent":
		// A CI runner: starts "corral" and hangs until killed.
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), "CORRAL_PDEATH_TEST=child")
		c.Stdout = os.Stdout
		if err := c.Start(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		sleepForever()
	case "child":
		if os.Getenv("CORRAL_PDEATH_OFF") == "" {
			if err := setParentDeathSignal(parentDeathSignal); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
		}
		fmt.Println("child", os.Getpid())
		sleepForever()
	}
}

// TestParentDeathEndsCorral: a parent that starts a corral-like child and
// is SIGKILLed leaves no child behind.
func TestParentDeathEndsCorral(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), "CORRAL_PDEATH_TEST=parent")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		parent.Process.Kill()
		t.Fatalf("reading the child's pid: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "child" {
		parent.Process.Kill()
		t.Fatalf("parent said %q", line)
	}
	child, _ := strconv.Atoi(f[1])
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	// A child that died by itself would pass what follows for nothing.
	time.Sleep(100 * time.Millisecond)
	if !alive(child) {
		parent.Process.Kill()
		t.Fatalf("child %d ended before its parent was killed", child)
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still runs 5 s after its parent was killed", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie waiting for init to reap it
// counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// sleepForever blocks for good. A bare select {} would not: in a binary
// built with CGO_ENABLED=0 (as tests/tcgkvm builds them) the runtime sees
// no goroutine that can run and ends the process with a deadlock error.
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}
