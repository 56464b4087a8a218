package agentvm

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-vmm/corral"
)

func TestMachineConfigRoots(t *testing.T) {
	dir := t.TempDir()
	base := corral.Config{Kernel: "k", Cmdline: " console=ttyS0 panic=-1 ", Disks: []corral.Disk{{Path: "data.img"}}}
	for _, tc := range []struct {
		name    string
		root    Root
		cmdline string
		shares  []corral.Share
		disks   []corral.Disk
	}{
		{"initrd", RootInitrd(), "console=ttyS0 panic=-1", nil, []corral.Disk{{Path: "data.img"}}},
		{"host", RootHost(), "console=ttyS0 panic=-1 corral.root=9p:corral-root",
			[]corral.Share{{Path: "/", Tag: "corral-root", ReadOnly: true, Empty: emptyDirs}}, []corral.Disk{{Path: "data.img"}}},
		{"dir", RootDir(dir), "console=ttyS0 panic=-1 corral.root=9p:corral-root",
			[]corral.Share{{Path: dir, Tag: "corral-root", ReadOnly: true, Empty: emptyDirs}}, []corral.Disk{{Path: "data.img"}}},
		{"image", RootImage("root.img"), "console=ttyS0 panic=-1 corral.root=blk:/dev/vda", nil,
			[]corral.Disk{{Path: "root.img", ReadOnly: true, Serial: "corral-root"}, {Path: "data.img"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Machine: base, Root: tc.root}
			mc, err := cfg.machineConfig()
			if err != nil {
				t.Fatal(err)
			}
			if mc.Cmdline != tc.cmdline {
				t.Errorf("cmdline %q, want %q", mc.Cmdline, tc.cmdline)
			}
			if len(mc.Shares) != 0 || len(tc.shares) != 0 {
				if !reflect.DeepEqual(mc.Shares, tc.shares) {
					t.Errorf("shares %+v, want %+v", mc.Shares, tc.shares)
				}
			}
			if !reflect.DeepEqual(mc.Disks, tc.disks) {
				t.Errorf("disks %+v, want %+v", mc.Disks, tc.disks)
			}
			if mc.Vsock == nil || *mc.Vsock != (corral.Vsock{}) {
				t.Errorf("vsock %+v, want a default device", mc.Vsock)
			}
		})
	}
	if len(base.Disks) != 1 || base.Shares != nil {
		t.Errorf("machineConfig changed the caller's Config: %+v", base)
	}
}

func TestMachineConfigShares(t *testing.T) {
	user := corral.Share{Path: "/srv", Tag: "mine"}
	cfg := Config{
		Machine: corral.Config{Kernel: "k", Shares: []corral.Share{user}, Vsock: &corral.Vsock{CID: 7}},
		Root:    RootHost(),
		Shares: []Share{
			{Host: "/home/u/src", Guest: "/src/"},
			{Host: "/home/u/out", ReadOnly: true},
		},
	}
	mc, err := cfg.machineConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := "corral.root=9p:corral-root corral.share=corral-share0:/src corral.share=corral-share1:/home/u/out:ro"
	if mc.Cmdline != want {
		t.Errorf("cmdline %q, want %q", mc.Cmdline, want)
	}
	wantShares := []corral.Share{user,
		{Path: "/", Tag: "corral-root", ReadOnly: true, Empty: emptyDirs},
		{Path: "/home/u/src", Tag: "corral-share0"},
		{Path: "/home/u/out", Tag: "corral-share1", ReadOnly: true},
	}
	if !reflect.DeepEqual(mc.Shares, wantShares) {
		t.Errorf("shares %+v, want %+v", mc.Shares, wantShares)
	}
	if mc.Vsock.CID != 7 {
		t.Errorf("the caller's vsock device was replaced: %+v", mc.Vsock)
	}
	if len(cfg.Machine.Shares) != 1 {
		t.Errorf("the caller's Shares grew: %+v", cfg.Machine.Shares)
	}
}

func TestMachineConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"relative guest path", Config{Shares: []Share{{Host: "/a", Guest: "b"}}}, "not absolute"},
		{"relative host path as guest", Config{Shares: []Share{{Host: "a"}}}, "not absolute"},
		{"space", Config{Shares: []Share{{Host: "/a", Guest: "/my dir"}}}, "space"},
		{"colon", Config{Shares: []Share{{Host: "/a", Guest: "/a:ro"}}}, "':'"},
		{"quote", Config{Shares: []Share{{Host: "/a", Guest: `/a"b`}}}, "quote"},
		{"newline", Config{Shares: []Share{{Host: "/a", Guest: "/a\nb"}}}, "control"},
		{"reserved tag", Config{Machine: corral.Config{Shares: []corral.Share{{Path: "/", Tag: "corral-root"}}}}, "agentvm's"},
		{"empty dir", Config{Root: RootDir("")}, "no path"},
		{"empty image", Config{Root: RootImage("")}, "no path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.machineConfig()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestFindAgent(t *testing.T) {
	t.Setenv(AgentEnv, "")
	if _, err := (&Config{}).FindAgent(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("no agent: %v, want ErrConfig saying how to build one", err)
	}
	t.Setenv(AgentEnv, "/env/agent")
	if p, err := (&Config{}).FindAgent(); p != "/env/agent" || err != nil {
		t.Errorf("from the environment: %q, %v", p, err)
	}
	if p, err := (&Config{Agent: "/cfg/agent"}).FindAgent(); p != "/cfg/agent" || err != nil {
		t.Errorf("from Config: %q, %v", p, err)
	}
}

func TestRootString(t *testing.T) {
	for r, want := range map[Root]string{
		RootInitrd():        "the initramfs",
		RootHost():          "the host's /",
		RootDir("/x"):       "directory /x",
		RootImage("/r.img"): "image /r.img",
	} {
		if !strings.Contains(r.String(), want) {
			t.Errorf("%#v: %q, want %q", r, r.String(), want)
		}
	}
}

func TestKernelRootInit(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "corral")
	if err := os.WriteFile(exe, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "noexec"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a b"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		agent string
		want  string // "" for the initramfs
	}{
		{"host", Config{Root: RootHost()}, exe, real},
		{"symlink resolved", Config{Root: RootHost()}, filepath.Join(dir, "link"), real},
		{"initramfs root", Config{Root: RootInitrd()}, exe, ""},
		{"directory root", Config{Root: RootDir(dir)}, exe, ""},
		{"image root", Config{Root: RootImage("x.img")}, exe, ""},
		{"user initrd", Config{Root: RootHost(), Machine: corral.Config{Initrd: "u.cpio"}}, exe, ""},
		{"user's --", Config{Root: RootHost(), Machine: corral.Config{Cmdline: "console=ttyS0 -- x"}}, exe, ""},
		{"not executable", Config{Root: RootHost()}, filepath.Join(dir, "noexec"), ""},
		{"space in path", Config{Root: RootHost()}, filepath.Join(dir, "a b"), ""},
		{"missing", Config{Root: RootHost()}, filepath.Join(dir, "none"), ""},
		{"/proc/self/exe resolved", Config{Root: RootHost()}, "/proc/self/exe", self},
	} {
		got, ok := tc.cfg.kernelRootInit(tc.agent)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: kernelRootInit(%q) = %q, %v; want %q", tc.name, tc.agent, got, ok, tc.want)
		}
	}
}

// emptyDirs are the root share's Empty directories: where the agent
// mounts the guest's own /proc, /sys and /dev.
var emptyDirs = []string{"/proc", "/sys", "/dev"}
