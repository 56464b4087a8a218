package netnstest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Together starts n copies of the test binary, each running only the test
// named test with env added, in the network namespace of the calling
// thread (call it inside Run). Each copy is to wait for a line on stdin
// (AwaitGo), do its work, print one line, and hold what it made until
// stdin closes (Hold), so all n act at once and their results coexist.
// Together returns the n lines and a release function that closes their
// stdin and fails t if a copy did not exit 0.
func Together(t testing.TB, n int, test string, env ...string) (lines []string, release func()) {
	t.Helper()
	type child struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Reader
	}
	var cs []child
	release = func() {
		for _, c := range cs {
			c.in.Close()
		}
		for i, c := range cs {
			if err := c.cmd.Wait(); err != nil {
				t.Errorf("child %d of %d (%s): %v", i, n, test, err)
			}
		}
		cs = nil
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, child{cmd, in, bufio.NewReader(out)})
	}
	time.Sleep(200 * time.Millisecond) // let them all reach AwaitGo
	for _, c := range cs {
		io.WriteString(c.in, "go\n")
	}
	for i, c := range cs {
		line, err := c.out.ReadString('\n')
		if err != nil {
			t.Fatalf("child %d of %d (%s): %q, %v", i, n, test, line, err)
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	ok = true
	return lines, release
}

// AwaitGo is a Together child's start line: it blocks until the parent
// says go.
func AwaitGo() { bufio.NewReader(os.Stdin).ReadString('\n') }

// Hold is a Together child's end: it blocks until the parent releases it.
func Hold() { io.Copy(io.Discard, os.Stdin) }
