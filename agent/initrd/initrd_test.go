package initrd

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

func buildAgent(t *testing.T) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	path, err := BuildAgent(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func records(t *testing.T, b []byte) map[string]cpio.Record {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]cpio.Record{}
	for _, r := range recs {
		m[r.Name] = r
	}
	return m
}

func TestWrite(t *testing.T) {
	agent := buildAgent(t)
	if err := CheckAgent(agent); err != nil {
		t.Fatalf("BuildAgent made an agent CheckAgent refuses: %v", err)
	}
	// A user initrd of a length that needs padding.
	var user bytes.Buffer
	uw := cpio.Newc.Writer(&user)
	uw.WriteRecord(cpio.StaticFile("etc/motd", "hi", 0o644))
	cpio.WriteTrailer(uw)
	user.WriteString("x") // e.g. a compressor's odd length
	var out bytes.Buffer
	if err := Write(&out, bytes.NewReader(user.Bytes()), agent); err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	if !bytes.HasPrefix(b, user.Bytes()) {
		t.Fatal("the user's initrd does not come first, unchanged")
	}
	off := (user.Len() + 3) &^ 3
	if !bytes.Equal(b[user.Len():off], make([]byte, off-user.Len())) {
		t.Fatalf("padding %x", b[user.Len():off])
	}
	m := records(t, b[off:])
	a, ok := m["corral/agent"]
	if !ok || a.Mode != cpio.S_IFREG|0o755 || a.FileSize != uint64(len(agent)) {
		t.Fatalf("corral/agent record %v", a)
	}
	if got := m["init"]; got.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Errorf("init record %v, want a symlink", got)
	}
	if c := m["dev/console"]; c.Mode&cpio.S_IFMT != cpio.S_IFCHR || c.Rmajor != 5 || c.Rminor != 1 {
		t.Errorf("dev/console record %v", c)
	}
	// Alone, the archive starts at once.
	out.Reset()
	if err := Write(&out, nil, agent); err != nil {
		t.Fatal(err)
	}
	if _, ok := records(t, out.Bytes())["corral/agent"]; !ok {
		t.Error("agent-only initrd lacks corral/agent")
	}
}

func TestCheckAgentRefuses(t *testing.T) {
	if err := CheckAgent([]byte("#!/bin/sh\n")); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("script: %v", err)
	}
	// The test binary itself may be dynamic (race) or static; /bin/sh is
	// dynamic on Debian.
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Skip(err)
	}
	if err := CheckAgent(sh); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh: %v", err)
	}
}
