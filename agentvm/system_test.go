package agentvm

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/proto"
)

// TestMachineConfigSystem: RootDirRW shares the directory read-write as
// the root itself, and Hostname and Tmpfs become the agent's keys; the
// agent reads back what was meant.
func TestMachineConfigSystem(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Machine:  corral.Config{Kernel: "k", Cmdline: "console=ttyS0"},
		Root:     RootDirRW(dir),
		Shares:   []Share{{Host: "/srv", Guest: "/scratch/srv"}},
		Hostname: "t1",
		Tmpfs:    []string{"/scratch/", "/run/x"},
	}
	mc, err := cfg.machineConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := "console=ttyS0 corral.root=9p:corral-root:rw corral.share=corral-share0:/scratch/srv corral.hostname=t1 corral.tmpfs=/scratch corral.tmpfs=/run/x"
	if mc.Cmdline != want {
		t.Errorf("cmdline %q\nwant %q", mc.Cmdline, want)
	}
	wantShares := []corral.Share{{Path: dir, Tag: "corral-root", Empty: emptyDirs}, {Path: "/srv", Tag: "corral-share0"}}
	if !reflect.DeepEqual(mc.Shares, wantShares) {
		t.Errorf("shares %+v, want %+v (the root read-write)", mc.Shares, wantShares)
	}
	bc, err := agent.ParseCmdline(mc.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	if !bc.Root.Writable || bc.Root.Source != rootTag || bc.Hostname != "t1" || !reflect.DeepEqual(bc.Tmpfs, []string{"/scratch", "/run/x"}) {
		t.Errorf("the agent reads %+v", bc)
	}
	if s := RootDirRW(dir).String(); !strings.Contains(s, "read-write") {
		t.Errorf("String() = %q", s)
	}
}

// TestSystemConfigErrors: a bad host name or tmpfs path is ErrConfig
// before anything is created, on the cold and the warm path alike.
func TestSystemConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Hostname: "bad_name"}, `host name "bad_name" has '_'`},
		{Config{Hostname: strings.Repeat("a", 65)}, "want 1..64"},
		{Config{Tmpfs: []string{"rel"}}, `tmpfs 0: guest path "rel" is not absolute`},
		{Config{Tmpfs: []string{"/a b"}}, "tmpfs 0: guest path \"/a b\" has a space"},
		{Config{Tmpfs: []string{"/x/.."}}, "tmpfs 0: a tmpfs cannot be the root"},
		{Config{Tmpfs: []string{"/x", "/x/"}}, `corral.tmpfs=/x: "/x" already has a share or tmpfs`},
		{Config{Shares: []Share{{Host: "/srv"}}, Tmpfs: []string{"/srv"}}, `corral.tmpfs=/srv: "/srv" already has a share or tmpfs`},
		{Config{Root: RootDirRW("")}, "root directory: no path"},
	} {
		if _, err := tc.cfg.machineConfig(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: machineConfig: %v, want ErrConfig with %q", tc.cfg, err, tc.want)
		}
		if _, err := tc.cfg.warmPlan(t.TempDir()); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: warmPlan: %v, want ErrConfig with %q", tc.cfg, err, tc.want)
		}
	}
}

// TestWarmPlanSystem: a warm machine gets the read-write root share in
// its device set (so its mode is in the cache key) and the rest in Setup.
func TestWarmPlanSystem(t *testing.T) {
	dir, empty := t.TempDir(), t.TempDir()
	cfg := Config{Machine: corral.Config{Cmdline: "console=ttyS0"}, Root: RootDirRW(dir), Hostname: "t1", Tmpfs: []string{"/scratch"}}
	p, err := cfg.warmPlan(empty)
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Setup{Root: "9p:corral-root:rw", Hostname: "t1", Tmpfs: []string{"/scratch"}}
	if !reflect.DeepEqual(p.setup, want) {
		t.Errorf("setup %+v, want %+v", p.setup, want)
	}
	if sh := p.mc.Shares[0]; sh.Path != dir || sh.Tag != rootTag || sh.ReadOnly || !reflect.DeepEqual(sh.Empty, emptyDirs) {
		t.Errorf("root share %+v, want read-write", p.mc.Shares[0])
	}
	if p.mc.Cmdline != "tsc=nowatchdog console=ttyS0 corral.setup=deferred" {
		t.Errorf("cmdline %q: the host name and tmpfs belong in Setup, after the snapshot", p.mc.Cmdline)
	}
	// Only the root's mode changes the key; host name and tmpfs do not.
	ro := cfg
	ro.Root = RootDir(dir)
	pro, err := ro.warmPlan(empty)
	if err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.Hostname, other.Tmpfs = "t2", nil
	pother, err := other.warmPlan(empty)
	if err != nil {
		t.Fatal(err)
	}
	kernel := t.TempDir() + "/k"
	writeFile(t, kernel, "kernel")
	key := func(p *warmPlan) string {
		p.mc.Kernel = kernel
		k, err := warmKey(t.TempDir(), "v", "", kernel, &p.mc)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	if kp, kro, kother := key(p), key(pro), key(pother); kp == kro || kp != kother {
		t.Errorf("keys: rw %s, ro %s, other host name %s; want rw != ro, rw == other", kp, kro, kother)
	}
}

// TestWarmPlanShares: shares fill the first warm slots, their guest paths
// cleaned and tagged as the agent reads them in Setup; the other slots
// serve the empty directory read-only.
func TestWarmPlanShares(t *testing.T) {
	src, data, empty := t.TempDir(), t.TempDir(), t.TempDir()
	cfg := Config{Root: RootHost(), Shares: []Share{{Host: src, Guest: "/src/"}, {Host: data, Guest: "/data", ReadOnly: true}}}
	p, err := cfg.warmPlan(empty)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"corral-share0:/src", "corral-share1:/data:ro"}; !reflect.DeepEqual(p.setup.Shares, want) {
		t.Errorf("setup shares %q, want %q", p.setup.Shares, want)
	}
	want := []corral.Share{
		{Path: src, Tag: "corral-share0"}, {Path: data, Tag: "corral-share1", ReadOnly: true},
		{Path: empty, Tag: "corral-share2", ReadOnly: true}, {Path: empty, Tag: "corral-share3", ReadOnly: true},
	}
	if got := p.mc.Shares[1:]; !reflect.DeepEqual(got, want) {
		t.Errorf("share slots %+v, want %+v", got, want)
	}
}
