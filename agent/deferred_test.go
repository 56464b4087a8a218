package agent

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
	"github.com/corral-vmm/corral/internal/sockpair"
)

func TestDeferredCmdline(t *testing.T) {
	c, err := ParseCmdline("console=ttyS0 corral.setup=deferred")
	if err != nil || !c.Deferred || c.Root.Kind != RootInitramfs || len(c.Shares) != 0 {
		t.Fatalf("ParseCmdline: %+v, %v", c, err)
	}
	if back, err := ParseCmdline(c.Cmdline()); err != nil || !reflect.DeepEqual(back, c) {
		t.Errorf("Cmdline %q parsed back as %+v, %v", c.Cmdline(), back, err)
	}
	if c, err := ParseCmdline("corral.setup=deferred corral.setup=boot corral.root=9p:r"); err != nil || c.Deferred {
		t.Errorf("the last corral.setup= wins: %+v, %v", c, err)
	}
	for cmdline, want := range map[string]string{
		"corral.setup=later":                        "agent: corral.setup=later: want boot or deferred",
		"corral.setup=deferred corral.root=9p:root": "a deferred setup takes them from the host's Setup request",
		"corral.share=a:/a corral.setup=deferred":   "a deferred setup takes them",
		"corral.hostname=h corral.setup=deferred":   "a deferred setup takes them",
		"corral.setup=deferred corral.tmpfs=/s":     "a deferred setup takes them",
	} {
		if _, err := ParseCmdline(cmdline); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", cmdline, err, want)
		}
	}
}

func TestSetupConfig(t *testing.T) {
	c, err := SetupConfig("9p:corral-root", []string{"corral-share0:/src", "corral-share1:/data/:ro"})
	want := BootConfig{Root: Root{Kind: Root9P, Source: "corral-root"}, Shares: []Share{{"corral-share0", "/src", false}, {"corral-share1", "/data", true}}}
	if err != nil || !reflect.DeepEqual(c, want) {
		t.Errorf("SetupConfig: %+v, %v; want %+v", c, err, want)
	}
	if c, err := SetupConfig("", nil); err != nil || c.Root.Kind != RootInitramfs {
		t.Errorf("empty Setup: %+v, %v", c, err)
	}
	// Errors are the command line's, naming the parameter.
	for _, tc := range []struct {
		root   string
		shares []string
		want   string
	}{
		{"nfs:x", nil, "agent: corral.root=nfs:x: want 9p:TAG"},
		{"", []string{"src"}, "agent: corral.share=src: want TAG:PATH[:ro]"},
		{"", []string{"a:relative"}, `path "relative", want an absolute path`},
		{"9p:a", []string{"a:/a"}, `mount tag "a" is already the root`},
		{"", []string{"a:/x", "b:/x"}, `two shares at "/x"`},
		{"", []string{"a\nb:/x"}, `agent: "corral.share=a\nb:/x"`},
	} {
		if _, err := SetupConfig(tc.root, tc.shares); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetupConfig(%q, %q): %v, want %q", tc.root, tc.shares, err, tc.want)
		}
	}
}

// deferredServer is a Server whose deferred setup records its system
// calls.
func deferredServer(t *testing.T, fail map[string]error) (*Server, *recOps) {
	s, r := newRecSetup(fail)
	api := s.baseMounts(baseMounts())
	if err := s.err(); err != nil {
		t.Fatal(err)
	}
	r.calls = nil
	return NewServer(Config{Deferred: &Deferred{s: s, api: api}}), r
}

// sendSetup runs a Setup session on srv with the raw protocol.
func sendSetup(t *testing.T, srv *Server, req *proto.Setup) (net.Conn, *proto.Reader, chan error) {
	t.Helper()
	host, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	p, err := req.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	go w.Send(proto.TypeSetup, 0, p)
	return host, r, done
}

// pipeDial hands srv one end of a socket pair per call, as a vsock dial
// would (buffered, unlike net.Pipe: the client pipelines credit).
func pipeDial(t *testing.T, srv *Server) net.Conn {
	host, guest, err := sockpair.New()
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeConn(context.Background(), guest)
	return host
}

// TestDeferredSetup: commands are refused until Setup, which makes the
// same root switch and mounts as the boot-time setup of the equivalent
// command line (TestSwitchRootPlan), once.
func TestDeferredSetup(t *testing.T) {
	srv, r := deferredServer(t, nil)
	err := client.Command(pipeDial(t, srv), "true").Run()
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "no command before Setup") {
		t.Fatalf("command before Setup: %v, want refused", err)
	}

	req := &proto.Setup{Root: "9p:root", Shares: []string{"b:/mnt/a/b", "a:/mnt/a:ro"}}
	host, fr, done := sendSetup(t, srv, req)
	next(t, fr, proto.TypeAck)
	host.Close() // no command on this session (ExecAfterSetupVersion)
	if err := result(t, done); err != nil {
		t.Fatalf("Setup session: %v", err)
	}
	boot, br := newRecSetup(nil)
	cfg, err := ParseCmdline("corral.root=9p:root corral.share=b:/mnt/a/b corral.share=a:/mnt/a:ro")
	if err != nil {
		t.Fatal(err)
	}
	api := boot.baseMounts(baseMounts())
	br.calls = nil
	boot.apply(cfg, api)
	if !reflect.DeepEqual(r.calls, br.calls) {
		t.Errorf("Setup's calls:\n%s\nboot's:\n%s", strings.Join(r.calls, "\n"), strings.Join(br.calls, "\n"))
	}
	if len(r.mounts()) != 14 {
		t.Errorf("mounts %q", r.mounts())
	}

	if err := client.Command(pipeDial(t, srv), "true").Run(); err != nil {
		t.Errorf("command after Setup: %v", err)
	}
	n := len(r.calls)
	err = client.Setup(context.Background(), pipeDial(t, srv), "9p:root", nil)
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "taken once") {
		t.Errorf("second Setup: %v, want refused", err)
	}
	if len(r.calls) != n {
		t.Errorf("the second Setup made calls %q", r.calls[n:])
	}
}

// TestDeferredSetupErrors: a failed Setup reports the problems as boot
// does, kernel options named, and then refuses every command with them;
// a Setup with bad values changes nothing and can be sent again.
func TestDeferredSetupErrors(t *testing.T) {
	srv, r := deferredServer(t, map[string]error{"9p /src": unix.ENODEV})
	err := client.Setup(context.Background(), pipeDial(t, srv), "", []string{"bad tag:/src"})
	if !errors.Is(err, &proto.Error{Code: proto.CodeStart}) || !strings.Contains(err.Error(), `agent: corral.share=bad tag:/src`) {
		t.Errorf("bad value: %v", err)
	}
	if len(r.calls) != 0 {
		t.Errorf("a refused Setup made calls %q", r.calls)
	}
	want := `guest setup: mounting 9p share "src" on /src: no such device (kernel needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS)`
	err = client.Setup(context.Background(), pipeDial(t, srv), "", []string{"src:/src"})
	if !errors.Is(err, &proto.Error{Code: proto.CodeStart}) || !strings.Contains(err.Error(), want) {
		t.Errorf("failed Setup: %v, want %q", err, want)
	}
	err = client.Command(pipeDial(t, srv), "true").Run()
	if !errors.Is(err, &proto.Error{Code: proto.CodeStart}) || !strings.Contains(err.Error(), want) {
		t.Errorf("command after a failed Setup: %v, want %q", err, want)
	}
}

func TestSetupRefused(t *testing.T) {
	// Set up at boot: nothing to do.
	err := client.Setup(context.Background(), pipeDial(t, NewServer(Config{})), "", nil)
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "set up at boot") {
		t.Errorf("Setup without deferral: %v", err)
	}
	// A version 1 session has no Setup.
	srv, r := deferredServer(t, nil)
	_, w, fr, done := rawSession(t, srv)
	go w.Send(proto.TypeHello, 0, proto.Hello{Min: 1, Max: 1}.Append(nil))
	next(t, fr, proto.TypeHello)
	p, _ := (&proto.Setup{}).Append(nil)
	go w.Send(proto.TypeSetup, 0, p)
	wantError(t, fr, proto.CodeProtocol, "Setup in a protocol version 1 session")
	if err := result(t, done); !errors.Is(err, proto.ErrProtocol) {
		t.Errorf("ServeConn: %v, want a protocol error", err)
	}
	if len(r.calls) != 0 {
		t.Errorf("calls %q", r.calls)
	}
}
