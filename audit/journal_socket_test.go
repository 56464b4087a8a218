package audit

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// journalChildEnv makes a test child play journald: in its own mount
// namespace it mounts a tmpfs on /run, listens where journald does, opens
// a trail (in the directory the variable names) with the journal mirror
// on, appends one record, and prints the datagram the mirror sent.
const journalChildEnv = "AUDIT_TEST_JOURNAL"

func init() {
	if d := os.Getenv(journalChildEnv); d != "" {
		os.Exit(journalChild(d))
	}
}

func journalChild(dir string) int {
	fail := func(err error) int { fmt.Println("error:", err); return 1 }
	if err := unix.Mount("audit-test-run", "/run", "tmpfs", 0, ""); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(filepath.Dir(journalSocket), 0o755); err != nil {
		return fail(err)
	}
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: journalSocket, Net: "unixgram"})
	if err != nil {
		return fail(err)
	}
	l, err := Open(filepath.Join(dir, "audit.jsonl"), Options{})
	if err != nil {
		return fail(err)
	}
	e := Event{Event: "vm.started", VMID: "0123456789abcdef", Name: "web", Labels: map[string]string{"team": "infra"}}
	if err := l.Append(e, slog.String("tap", "corral0")); err != nil {
		return fail(err)
	}
	sock.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 64<<10)
	n, err := sock.Read(b)
	if err != nil {
		return fail(fmt.Errorf("nothing reached the journal socket: %w", err))
	}
	os.Stdout.Write(b[:n])
	return 0
}

// TestJournalMirror: where journald runs, each audit record also reaches
// the journal as structured fields (journalctl CORRAL_VM_ID=...). The
// child stands in for journald at its fixed address.
func TestJournalMirror(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a tmpfs on /run in a mount namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), journalChildEnv+"="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"CORRAL_EVENT=vm.started\n",
		"CORRAL_VM_ID=0123456789abcdef\n",
		"CORRAL_NAME=web\n",
		"CORRAL_LABEL_TEAM=infra\n",
		"CORRAL_TAP=corral0\n",
		"MESSAGE_ID=" + messageID("vm.started") + "\n",
		"MESSAGE=corral vm.started 0123456789abcdef\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("journal datagram lacks %q:\n%s", want, got)
		}
	}
}
