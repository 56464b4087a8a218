//go:build linux && amd64

package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary a child that applies a policy and then
// does what the variable says (see TestMain).
const childEnv = "CORRAL_SANDBOX_TEST_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what == "steps" {
		os.Exit(stepsChild())
	} else if what != "" {
		os.Exit(child(what))
	}
	os.Exit(m.Run())
}

// child runs in the re-executed test binary. Its policy allows reading
// $DIR/allowed and nothing else of the file system.
func child(what string) int {
	dir := os.Getenv("DIR")
	// A cgo binary (go test -race) cannot drop capabilities on every thread.
	p := Policy{ReadPaths: []string{filepath.Join(dir, "allowed"), "/proc/self", "/proc/sys/kernel/random/boot_id"},
		KeepCaps: !AllThreadsSupported()}
	if os.Getenv("NO_SYS_ADMIN") != "" {
		// As a process without CAP_SYS_ADMIN: Landlock then needs
		// no_new_privs on every thread before it.
		if err := dropSysAdmin(); err != nil {
			fmt.Fprintln(os.Stderr, "drop CAP_SYS_ADMIN:", err)
			return 2
		}
	}
	rep, err := Apply(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apply:", err)
		return 2
	}
	switch what {
	case "execve":
		err := syscall.Exec("/bin/true", []string{"true"}, nil)
		fmt.Fprintln(os.Stderr, "execve returned:", err)
		return 3
	case "tcp":
		_, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		fmt.Fprintln(os.Stderr, "socket returned:", err)
		return 3
	case "hold":
		// Put the runtime to work (threads, GC, timers), then let the
		// parent look at every thread, then try the file system.
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // a thread of its own, kept: new clone() calls
				time.Sleep(10 * time.Millisecond)
			}()
		}
		wg.Wait()
		runtime.GC()
		fmt.Printf("ready landlock=%d skip=%q\n", rep.Landlock, rep.LandlockSkip)
		bufio.NewReader(os.Stdin).ReadString('\n')
		if _, err := os.ReadFile(filepath.Join(dir, "allowed", "f")); err != nil {
			fmt.Println("allowed:", err)
		} else {
			fmt.Println("allowed: ok")
		}
		_, err := os.ReadFile(filepath.Join(dir, "denied"))
		fmt.Println("denied:", errors.Is(err, os.ErrPermission))
		// What corral's inventory and 9p need: /proc/self/stat, the boot
		// ID, and reopening an allowed file through /proc/self/fd.
		_, errStat := os.ReadFile("/proc/self/stat")
		_, errBoot := os.ReadFile("/proc/sys/kernel/random/boot_id")
		f, errOpen := os.Open(filepath.Join(dir, "allowed", "f"))
		errReopen := errOpen
		if errOpen == nil {
			_, errReopen = os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		}
		fmt.Printf("proc: %v %v %v\n", errStat, errBoot, errReopen)
		return 0
	}
	return 4
}

func childCmd(t testing.TB, what string, env ...string) *exec.Cmd {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "allowed"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "allowed", "f"), filepath.Join(dir, "denied")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+what, "DIR="+dir)
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// A forbidden call ends the process with SIGSYS, named on stderr.
func TestForbiddenCallIsNamed(t *testing.T) {
	for _, c := range []struct{ what, want string }{
		{"execve", "corral: seccomp: forbidden system call execve (59), args 0x"},
		{"tcp", "corral: seccomp: forbidden system call socket (41), args 0x2 0x"},
	} {
		t.Run(c.what, func(t *testing.T) {
			cmd := childCmd(t, c.what)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("child: %v; stderr:\n%s", err, stderr.String())
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Errorf("child ended with %v, want killed by SIGSYS; stderr:\n%s", ws, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Errorf("stderr lacks %q:\n%s", c.want, stderr.String())
			}
		})
	}
}

// After Apply every thread shows Seccomp 2, NoNewPrivs 1 and no
// capabilities, the runtime keeps working, and Landlock confines opens.
func TestEveryThreadConfined(t *testing.T) {
	t.Run("default", func(t *testing.T) { testEveryThreadConfined(t) })
	// Without CAP_SYS_ADMIN, Landlock needs no_new_privs on every thread
	// first, though seccomp's TSYNC would set it later.
	t.Run("no-CAP_SYS_ADMIN", func(t *testing.T) {
		if !AllThreadsSupported() || !hasCap(unix.CAP_SYS_ADMIN) {
			t.Skip("needs CAP_SYS_ADMIN to drop and a binary without cgo")
		}
		testEveryThreadConfined(t, "NO_SYS_ADMIN=1")
	})
}

func testEveryThreadConfined(t *testing.T, env ...string) {
	cmd := childCmd(t, "hold", env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		cmd.Wait()
		t.Fatalf("child: %q %v; stderr:\n%s", line, err, stderr.String())
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", cmd.Process.Pid))
	if err != nil || len(tasks) < 5 {
		t.Fatalf("%d threads (%v), want at least 5", len(tasks), err)
	}
	for _, task := range tasks {
		st, err := os.ReadFile(task)
		if err != nil {
			t.Fatal(err)
		}
		wants := []string{"Seccomp:\t2\n", "NoNewPrivs:\t1\n"}
		if AllThreadsSupported() {
			wants = append(wants, "CapEff:\t0000000000000000\n", "CapPrm:\t0000000000000000\n", "CapInh:\t0000000000000000\n", "CapAmb:\t0000000000000000\n")
		}
		for _, want := range wants {
			if !bytes.Contains(st, []byte(want)) {
				t.Errorf("%s lacks %q", task, strings.TrimSpace(want))
			}
		}
	}
	stdin.Write([]byte("go\n"))
	rest, _ := bufio.NewReader(out).ReadString(0)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(rest, "proc: <nil> <nil> <nil>") {
		t.Errorf("reading /proc/self/stat, the boot ID or an allowed file through /proc/self/fd failed: %q", rest)
	}
	if !strings.Contains(rest, "allowed: ok") {
		t.Errorf("reading an allowed file failed: %q", rest)
	}
	if strings.Contains(line, "landlock=0") {
		t.Logf("Landlock not applied here (%s); file confinement untested", strings.TrimSpace(line))
	} else if !strings.Contains(rest, "denied: true") {
		t.Errorf("reading a file outside the policy was not refused: %q", rest)
	}
}
