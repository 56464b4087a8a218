package console

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestInputStop: Stop unblocks a Read on a reader that never gets data,
// for each kind NewInput accepts, and leaves the caller's reader usable.
func TestInputStop(t *testing.T) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	br, bw := os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	defer br.Close()
	defer bw.Close()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	for name, r := range map[string]io.Reader{"blocking pipe": br, "net.Pipe": c1} {
		in, err := NewInput(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		done := make(chan error, 1)
		go func() { _, err := in.Read(make([]byte, 1)); done <- err }()
		time.Sleep(10 * time.Millisecond)
		in.Stop()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: Read after Stop gave no error", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Stop did not unblock Read", name)
		}
		in.Release()
	}
	if fl, _ := unix.FcntlInt(br.Fd(), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Error("caller's pipe made non-blocking")
	}
	bw.Write([]byte("k"))
	if n, err := br.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Errorf("caller's pipe after Stop: %d %v", n, err)
	}
}

func TestInputKinds(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	if _, err := NewInput(pr); !errors.Is(err, ErrNotStoppable) {
		t.Errorf("io.Pipe: %v, want ErrNotStoppable", err)
	}
	if err := CheckInput(pr); !errors.Is(err, ErrNotStoppable) {
		t.Errorf("CheckInput(io.Pipe): %v", err)
	}
	for _, r := range []io.Reader{strings.NewReader("x"), bytes.NewReader(nil), new(bytes.Buffer), os.Stdin} {
		if err := CheckInput(r); err != nil {
			t.Errorf("CheckInput(%T): %v", r, err)
		}
	}
	// A regular file is read as is, from the caller's offset.
	path := filepath.Join(t.TempDir(), "in")
	os.WriteFile(path, []byte("skipme"), 0o644)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Read(make([]byte, 4))
	in, err := NewInput(f)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(in); string(b) != "me" {
		t.Errorf("regular file read %q", b)
	}
}
