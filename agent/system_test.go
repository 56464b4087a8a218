package agent

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
)

// systemCmdline asks for everything the containerd shim needs: the root
// share read-write, a host name, tmpfs mounts (one a share's parent).
const systemCmdline = "corral.root=9p:root:rw corral.hostname=t1 corral.share=a:/scratch/a corral.tmpfs=/scratch corral.tmpfs=/b/"

// systemCalls is what systemCmdline makes setup do.
var systemCalls = []string{
	"sethostname t1",
	// The share itself is the root: read-write, no lower layer, no
	// tmpfs upper, no overlay.
	"mount 9p root /st/root " + ninepOptions,
	"move /proc /st/root/proc",
	"move /sys /st/root/sys",
	"move /dev /st/root/dev",
	"move /tmp /st/root/tmp",
	"move /run /st/root/run",
	"chdir /st/root",
	"move . /",
	"chroot .",
	"chdir /",
	// In the new root, parents first: the tmpfs at /scratch does not
	// hide the share at /scratch/a.
	"mount tmpfs tmpfs /scratch " + tmpfsOptions,
	"mount tmpfs tmpfs /b " + tmpfsOptions,
	"mount 9p a /scratch/a " + ninepOptions,
}

func TestWritableRootPlan(t *testing.T) {
	s, r := newRecSetup(nil)
	cfg, err := ParseCmdline(systemCmdline)
	if err != nil {
		t.Fatal(err)
	}
	s.apply(cfg, apiMounts(t))
	if err := s.err(); err != nil {
		t.Fatal(err)
	}
	if got := r.mounts(); !reflect.DeepEqual(got, systemCalls) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(systemCalls, "\n"))
	}
	// Mount points are made first: in a writable root they land on the
	// host, like any other write.
	for _, dir := range []string{"/st/root", "/st/root/tmp", "/scratch", "/b", "/scratch/a"} {
		if !slicesContainsPrefix(r.calls, "mkdir "+dir+" ") {
			t.Errorf("no mkdir %s in %q", dir, r.calls)
		}
	}
	for _, c := range r.calls {
		if strings.Contains(c, "/st/lower") || strings.Contains(c, "/st/rw") || strings.HasPrefix(c, "xattr") {
			t.Errorf("writable root made %q", c)
		}
	}
}

// TestSystemErrors: a tmpfs or host name that fails is a SetupError
// naming it; the rest is still done.
func TestSystemErrors(t *testing.T) {
	for _, tc := range []struct {
		fail map[string]error
		want string
	}{
		{map[string]error{"tmpfs /scratch": unix.ENODEV}, "guest setup: mounting tmpfs on /scratch: no such device (kernel needs CONFIG_SHMEM and CONFIG_TMPFS)"},
		{map[string]error{"mkdir /b": unix.EROFS}, "guest setup: mounting tmpfs on /b: read-only file system"},
		{map[string]error{"sethostname t1": unix.EPERM}, `guest setup: setting the host name "t1": operation not permitted`},
		{map[string]error{"9p /st/root": unix.ENOENT}, `guest setup: mounting the root's 9p share "root" (read-write) on /st/root: no such file or directory (no virtio-9p device has mount tag "root"`},
	} {
		s, r := newRecSetup(tc.fail)
		cfg, err := ParseCmdline(systemCmdline)
		if err != nil {
			t.Fatal(err)
		}
		s.apply(cfg, apiMounts(t))
		var se *SetupError
		if err := s.err(); !errors.As(err, &se) || len(se.Problems) != 1 || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one problem: %s", tc.fail, err, tc.want)
			continue
		}
		for _, errno := range tc.fail {
			if !errors.Is(s.err(), errno) {
				t.Errorf("%v: errors.Is(%v) = false", tc.fail, errno)
			}
		}
		if n := len(r.mounts()); n < 4 {
			t.Errorf("%v: only %q", tc.fail, r.mounts())
		}
	}
}

func TestSystemCmdline(t *testing.T) {
	got, err := ParseCmdline("corral.hostname=old " + systemCmdline + " corral.hostname=Pod-1.example")
	want := BootConfig{
		Root:     Root{Kind: Root9P, Source: "root", Writable: true},
		Shares:   []Share{{Tag: "a", Path: "/scratch/a"}},
		Hostname: "Pod-1.example", // the last one wins
		Tmpfs:    []string{"/scratch", "/b"},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseCmdline: %+v, %v; want %+v", got, err, want)
	}
	if back, err := ParseCmdline(got.Cmdline()); err != nil || !reflect.DeepEqual(back, got) {
		t.Errorf("Cmdline %q parsed back as %+v, %v", got.Cmdline(), back, err)
	}
	if s := want.Root.String(); s != "9p:root:rw" {
		t.Errorf("Root.String() = %q", s)
	}
	for cmdline, want := range map[string]string{
		"corral.hostname=":     "is 0 bytes",
		"corral.hostname=a_b":  `has '_'`,
		"corral.hostname=-a":   `label "-a"`,
		"corral.hostname=a..b": `label ""`,
		"corral.hostname=a.":   `label ""`,
		"corral.hostname=" + strings.Repeat("a", 64) + ".b": "is 66 bytes",
		"corral.hostname=" + strings.Repeat("a", 64):        `label "aaaa`,
		`corral.hostname="a b"`:                             `has ' '`,
		"corral.tmpfs=rel":                                  "want an absolute path",
		"corral.tmpfs=/a:b":                                 "want an absolute path",
		"corral.tmpfs=/":                                    "a tmpfs cannot be the root",
		"corral.tmpfs=/x/..":                                "a tmpfs cannot be the root",
		"corral.tmpfs=/x corral.tmpfs=/x/":                  `"/x" already has a share or tmpfs`,
		"corral.share=a:/x corral.tmpfs=/x":                 `"/x" already has a share or tmpfs`,
		"corral.root=9p:r:ro":                               "has ':'",
		"corral.root=9p:r:rw:rw":                            "has ':'",
		"corral.root=blk:/dev/vda:rw":                       "want a clean path under /dev/",
	} {
		_, err := ParseCmdline(cmdline)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "agent: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseCmdline(%q) = %v, want one line starting \"agent: \" with %q", cmdline, err, want)
		}
	}
	// 63-byte labels and 64 bytes in all are the limits.
	for _, ok := range []string{strings.Repeat("a", 63), strings.Repeat("a", 63) + ".", "a-1", "1"} {
		ok = strings.TrimSuffix(ok, ".")
		if err := CheckHostname(ok); err != nil {
			t.Errorf("CheckHostname(%q): %v", ok, err)
		}
	}
	if err := CheckHostname(strings.Repeat("a", 32) + "." + strings.Repeat("b", 32)); err == nil {
		t.Error("a 65-byte host name passed")
	}
}

// TestDeferredSystemSetup: a Setup carrying the read-write root, host
// name and tmpfs makes the calls the command line makes at boot.
func TestDeferredSystemSetup(t *testing.T) {
	srv, r := deferredServer(t, nil)
	req := &proto.Setup{Root: "9p:root:rw", Shares: []string{"a:/scratch/a"}, Hostname: "t1", Tmpfs: []string{"/scratch", "/b/"}}
	if err := client.SetupRequest(context.Background(), pipeDial(t, srv), req); err != nil {
		t.Fatal(err)
	}
	if got := r.mounts(); !reflect.DeepEqual(got, systemCalls) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(systemCalls, "\n"))
	}
	// Bad values are refused with the command line's message, nothing
	// done.
	srv, r = deferredServer(t, nil)
	for _, req := range []*proto.Setup{{Hostname: "a b"}, {Tmpfs: []string{"rel"}}, {Shares: []string{"a:/x"}, Tmpfs: []string{"/x"}}} {
		err := client.SetupRequest(context.Background(), pipeDial(t, srv), req)
		if !errors.Is(err, &proto.Error{Code: proto.CodeStart}) || !strings.Contains(err.Error(), "agent: corral.") {
			t.Errorf("Setup %+v: %v, want the value refused", req, err)
		}
	}
	if len(r.calls) != 0 {
		t.Errorf("refused Setups made calls %q", r.calls)
	}
}

// TestSystemSetupVersion2: a version 2 session carries no host name,
// tmpfs or read-write root; the client says so before sending, and the
// agent refuses one sent anyway.
func TestSystemSetupVersion2(t *testing.T) {
	for _, req := range []*proto.Setup{{Hostname: "t1"}, {Tmpfs: []string{"/s"}}, {Root: "9p:root:rw"}} {
		srv, r := deferredServer(t, nil)
		_, w, fr, done := rawSession(t, srv)
		go w.Send(proto.TypeHello, 0, proto.Hello{Min: 2, Max: 2}.Append(nil))
		next(t, fr, proto.TypeHello)
		p, err := req.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		go w.Send(proto.TypeSetup, 0, p)
		wantError(t, fr, proto.CodeProtocol, "in a version 2 session")
		if err := result(t, done); !errors.Is(err, proto.ErrProtocol) {
			t.Errorf("%+v: ServeConn: %v, want a protocol error", req, err)
		}
		if len(r.calls) != 0 {
			t.Errorf("%+v: calls %q", req, r.calls)
		}
	}
}
