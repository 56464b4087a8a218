package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSignalWatch: the first stopping signal stops the machine, a second
// one restores the terminal and exits 128+n; the first is read without a
// data race (run with -race).
func TestSignalWatch(t *testing.T) {
	w := newSignalWatch()
	var stops, restores atomic.Int32
	exited := make(chan int, 2)
	go w.loop(signalActions{
		stop:    func(syscall.Signal) { stops.Add(1) },
		restore: func() { restores.Add(1) },
		exit:    func(code int) { exited <- code },
		raise:   func(syscall.Signal) { t.Error("raise") },
	})
	w.sigs <- syscall.SIGINT
	deadline := time.Now().Add(5 * time.Second)
	for w.signal() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if w.signal() != syscall.SIGINT || stops.Load() != 1 || restores.Load() != 0 {
		t.Fatalf("after one SIGINT: signal %v stops %d restores %d", w.signal(), stops.Load(), restores.Load())
	}
	w.sigs <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != 128+int(syscall.SIGTERM) || restores.Load() != 1 || stops.Load() != 1 {
			t.Errorf("second signal: exit %d restores %d stops %d", code, restores.Load(), stops.Load())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second signal did not exit")
	}
	w.stop()
}

// childEnv selects a child mode when the test binary runs itself.
const childEnv = "CORRAL_CLI_TEST_CHILD"

// startChild runs this test binary as a child in mode, with stdin, and
// waits for it to print "ready".
func startChild(t *testing.T, test, mode string, stdin *os.File) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stdin = stdin
	cmd.Stderr = io.Discard
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(out)
	ready := make(chan error, 1)
	go func() {
		line, err := r.ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child not ready")
	}
	return cmd, r
}

// waitChild waits for the child to end and returns its exit status.
func waitChild(t *testing.T, cmd *exec.Cmd, within time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err == nil {
			return 0
		}
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		t.Fatal(err)
	case <-time.After(within):
		t.Fatal("child still running")
	}
	return -1
}

// runChild is the child side: the CLI's console and signal handling with
// a stop that never finishes (a VMM stuck in a console write).
func runChild(mode string) {
	con, err := setupConsole(os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Println("setupConsole:", err)
		os.Exit(1)
	}
	defer con.restore()
	watchSignals(signalActions{
		stop:    func(syscall.Signal) {}, // the machine never ends
		restore: con.restore,
		exit:    os.Exit,
		raise:   raiseDefault,
	})
	fmt.Println("ready")
	if mode == "panic" {
		time.Sleep(100 * time.Millisecond)
		panic("test panic")
	}
	select {}
}

// TestSecondSignalExits (defect 2): with the machine stuck, the second
// SIGINT still ends corral, with status 130.
func TestSecondSignalExits(t *testing.T) {
	if mode := os.Getenv(childEnv); mode != "" {
		runChild(mode)
		return
	}
	cmd, _ := startChild(t, "TestSecondSignalExits", "stuck", nil)
	cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("child ended on the first SIGINT: %v", err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if code := waitChild(t, cmd, 10*time.Second); code != 130 {
		t.Errorf("exit status %d, want 130", code)
	}
}

// TestFatalRestoresTerminal (defect 5): SIGQUIT and a panic leave the
// terminal as it was: cooked and blocking.
func TestFatalRestoresTerminal(t *testing.T) {
	if mode := os.Getenv(childEnv); mode != "" {
		runChild(mode)
		return
	}
	for _, mode := range []string{"sigquit", "panic"} {
		t.Run(mode, func(t *testing.T) {
			_, slave := openPTY(t)
			cmd, _ := startChild(t, "TestFatalRestoresTerminal", mode, slave)
			if !isRaw(t, slave) {
				t.Fatal("child did not put the terminal in raw mode")
			}
			if mode == "sigquit" {
				cmd.Process.Signal(syscall.SIGQUIT)
			}
			if code := waitChild(t, cmd, 20*time.Second); code != 2 {
				t.Errorf("exit status %d, want 2 as Go gives", code)
			}
			if isRaw(t, slave) {
				t.Error("terminal left in raw mode")
			}
			if nonblocking(t, slave) {
				t.Error("terminal left non-blocking")
			}
		})
	}
}
