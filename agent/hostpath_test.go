package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
)

func TestHostResolved(t *testing.T) {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	ok := proto.Exec{Path: "true", Env: env, Resolved: "/bin/true",
		Visited: []string{"/usr", "/usr/local", "/usr", "/usr/bin", "/usr/bin/true", "/bin", "/usr", "/usr/bin", "/usr/bin/busybox"}}
	mounts := []string{"/", "/proc", "/dev", "/dev/pts", "/tmp", "/run", "/home/u/src"}
	if p, used := hostResolved(&ok, mounts); !used || p != "/bin/true" {
		t.Fatalf("hostResolved = %q, %v; want /bin/true", p, used)
	}
	change := func(f func(e *proto.Exec)) *proto.Exec {
		e := ok
		e.Visited = append([]string(nil), ok.Visited...)
		f(&e)
		return &e
	}
	for name, e := range map[string]*proto.Exec{
		"visited under a mount":        change(func(e *proto.Exec) { e.Visited = append(e.Visited, "/tmp/x") }),
		"visited is a mount point":     change(func(e *proto.Exec) { e.Visited = append(e.Visited, "/run") }),
		"resolved under a mount":       change(func(e *proto.Exec) { e.Env = []string{"PATH=/home/u/src/bin"}; e.Resolved = "/home/u/src/bin/true" }),
		"not a PATH candidate":         change(func(e *proto.Exec) { e.Resolved = "/sbin/true" }),
		"relative entry before":        change(func(e *proto.Exec) { e.Env = []string{"PATH=bin:/bin"} }),
		"empty entry before":           change(func(e *proto.Exec) { e.Env = []string{"PATH=:/bin"} }),
		"a name with a slash":          change(func(e *proto.Exec) { e.Path = "x/true" }),
		"a relative visited path":      change(func(e *proto.Exec) { e.Visited = append(e.Visited, "usr") }),
		"an unclean visited path":      change(func(e *proto.Exec) { e.Visited = append(e.Visited, "/usr/../tmp/x") }),
		"no environment":               change(func(e *proto.Exec) { e.Env = nil }),
		"the last PATH= is the search": change(func(e *proto.Exec) { e.Env = append(e.Env, "PATH=/usr/sbin") }),
	} {
		if p, used := hostResolved(e, mounts); used {
			t.Errorf("%s: hostResolved used %q", name, p)
		}
	}
	// Without PATH the agent searches its default one.
	if p, used := hostResolved(change(func(e *proto.Exec) { e.Env = []string{"HOME=/"} }), mounts); !used || p != "/bin/true" {
		t.Errorf("default PATH: %q, %v", p, used)
	}
	// A mount at a prefix that is not a path component covers nothing.
	if _, used := hostResolved(&ok, []string{"/", "/bi", "/us"}); !used {
		t.Error("mounts /bi and /us refused /bin and /usr")
	}
}

func TestMountPoints(t *testing.T) {
	f := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(f, []byte(`22 1 0:20 / / rw,relatime - overlay overlay rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:22 / /a\040b\134c rw - tmpfs tmpfs rw
25 22 0:23 / /odd\04 rw - tmpfs tmpfs rw
`), 0o644)
	got, err := mountPoints(f)
	if want := []string{"/", "/proc", `/a b\c`, `/odd\04`}; err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("mountPoints = %q, %v; want %q", got, err, want)
	}
	os.WriteFile(f, []byte("22 1 0:20\n"), 0o644)
	if _, err := mountPoints(f); err == nil {
		t.Error("a short mountinfo line parsed")
	}
}

// TestFirstCommandHostResolved: after a deferred Setup into a 9p overlay,
// the first command runs at the path the host resolved, without the
// agent's search; later commands, and a path a guest mount covers, get
// the agent's own search. The host's tree (hostRoot) has prog only in B,
// the agent's view has it in A too, so the output says who looked it up.
func TestFirstCommandHostResolved(t *testing.T) {
	view := t.TempDir()
	a, b := filepath.Join(view, "a"), filepath.Join(view, "b")
	hostRoot := t.TempDir()
	for dir, out := range map[string]string{a: "A", b: "B", filepath.Join(hostRoot, b): "host"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "prog"), []byte("#!/bin/sh\necho "+out+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mountinfo := func(extra string) string {
		f := filepath.Join(t.TempDir(), "mountinfo")
		os.WriteFile(f, []byte("22 1 0:20 / / rw - overlay overlay rw\n23 22 0:21 / /proc rw - proc proc rw\n"+extra), 0o644)
		return f
	}
	run := func(srv *Server) string {
		t.Helper()
		cmd := client.Command(pipeDial(t, srv), "prog")
		cmd.Env = []string{"PATH=" + a + ":" + b}
		cmd.HostRoot = hostRoot
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	setUp := func(root string, mounts string) *Server {
		srv, _ := deferredServer(t, nil)
		srv.mountinfo = mounts
		host, fr, done := sendSetup(t, srv, &proto.Setup{Root: root})
		next(t, fr, proto.TypeAck)
		host.Close()
		if err := result(t, done); err != nil {
			t.Fatal(err)
		}
		return srv
	}

	srv := setUp("9p:root", mountinfo(""))
	if got := run(srv); got != "B" {
		t.Errorf("first command ran %s's prog, want B's (the host's answer)", got)
	}
	if got := run(srv); got != "A" {
		t.Errorf("second command ran %s's prog, want A's (the agent's search)", got)
	}
	if st := srv.Stats(); st.HostResolved != 1 || st.Started != 2 {
		t.Errorf("Stats: HostResolved %d, Started %d; want 1, 2", st.HostResolved, st.Started)
	}
	srv = setUp("9p:root", mountinfo("24 22 0:22 / "+view+" rw - tmpfs tmpfs rw\n"))
	if got := run(srv); got != "A" {
		t.Errorf("first command with its PATH under a guest mount ran %s's prog, want A's", got)
	}
	srv = setUp("", mountinfo(""))
	if got := run(srv); got != "A" {
		t.Errorf("first command on the initramfs root ran %s's prog, want A's", got)
	}

	// Set up at boot (a cold machine, Init's Deferred): the same rule.
	atBoot := func(root string) *Server {
		s, _ := newRecSetup(nil)
		api := s.baseMounts(baseMounts())
		cfg, err := ParseCmdline(RootPrefix + root)
		if root == "" {
			cfg, err = BootConfig{}, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		s.apply(cfg, api)
		if err := s.err(); err != nil {
			t.Fatal(err)
		}
		srv := NewServer(Config{Deferred: s.atBoot()})
		srv.mountinfo = mountinfo("")
		return srv
	}
	srv = atBoot("9p:root")
	if got := run(srv); got != "B" {
		t.Errorf("first command after a boot onto a 9p overlay ran %s's prog, want B's (the host's answer)", got)
	}
	if got := run(srv); got != "A" {
		t.Errorf("second command after boot ran %s's prog, want A's", got)
	}
	err := client.Setup(context.Background(), pipeDial(t, srv), "", nil)
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "set up at boot") {
		t.Errorf("Setup after a boot-time setup: %v", err)
	}
	if got := run(atBoot("")); got != "A" {
		t.Errorf("first command after a boot on the initramfs root ran %s's prog, want A's", got)
	}
}
