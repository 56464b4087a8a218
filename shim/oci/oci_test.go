package oci

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agentvm"
)

func TestLoadBundle(t *testing.T) {
	spec, err := Load("testdata/bundle")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Translate(spec, "testdata/bundle")
	if err != nil {
		t.Fatal(err)
	}
	want := &Plan{
		RootDir:  filepath.Join("testdata/bundle", "rootfs"),
		Hostname: "t1",
		Tmpfs:    []string{"/run"},
		CPUs:     2,
		Memory:   512 << 20,
		NetNS:    "/var/run/netns/cni-1234",
		Process: Process{
			Args: []string{"sh", "-c", "echo out; echo err >&2; exit 7"},
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"},
			Cwd:  "/work", UID: 1000, GID: 100, Rows: 24, Cols: 80,
		},
		Skipped: []string{
			"/proc (proc): the agent mounts it",
			"/dev (tmpfs): the agent's",
			"/dev/pts (devpts): the agent mounts it",
			"/dev/shm (tmpfs): the agent's",
			"/dev/mqueue (mqueue): the agent mounts it",
			"/sys (sysfs): the agent mounts it",
			"/sys/fs/cgroup (cgroup): the agent mounts it",
		},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("plan:\n got %+v\nwant %+v", p, want)
	}
}

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func base() *specs.Spec {
	return &specs.Spec{Root: &specs.Root{Path: "/rootfs"}, Process: &specs.Process{Args: []string{"true"}}}
}

func TestTranslate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hosts")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		edit  func(s *specs.Spec)
		check func(t *testing.T, p *Plan)
	}{
		{"defaults", func(s *specs.Spec) {}, func(t *testing.T, p *Plan) {
			if p.CPUs != DefaultCPUs || p.Memory != DefaultMemory || p.Process.Cwd != "/" || p.RootDir != "/rootfs" || p.ReadOnlyRoot {
				t.Errorf("got %+v", p)
			}
		}},
		{"cpu quota rounds up", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(250000), Period: u64(100000)}}}
		}, func(t *testing.T, p *Plan) {
			if p.CPUs != 3 {
				t.Errorf("CPUs %d, want 3", p.CPUs)
			}
		}},
		{"cpu quota without period uses 100ms", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(50000)}}}
		}, func(t *testing.T, p *Plan) {
			if p.CPUs != 1 {
				t.Errorf("CPUs %d, want 1", p.CPUs)
			}
		}},
		{"quota and period near overflow", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(1<<63 - 1), Period: u64(1<<64 - 1)}}}
		}, func(t *testing.T, p *Plan) {
			if p.CPUs != 1 {
				t.Errorf("CPUs %d, want 1", p.CPUs)
			}
		}},
		{"unlimited cpu quota", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(-1), Period: u64(100000)}}}
		}, func(t *testing.T, p *Plan) {
			if p.CPUs != DefaultCPUs {
				t.Errorf("CPUs %d, want %d", p.CPUs, DefaultCPUs)
			}
		}},
		{"memory rounds up to a MiB", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(300<<20 + 1)}}}
		}, func(t *testing.T, p *Plan) {
			if p.Memory != 301<<20 {
				t.Errorf("Memory %d, want %d", p.Memory, 301<<20)
			}
		}},
		{"small memory gets MinMemory", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(32 << 20)}}}
		}, func(t *testing.T, p *Plan) {
			if p.Memory != MinMemory {
				t.Errorf("Memory %d, want %d", p.Memory, MinMemory)
			}
		}},
		{"unlimited memory", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-1)}}}
		}, func(t *testing.T, p *Plan) {
			if p.Memory != DefaultMemory {
				t.Errorf("Memory %d, want %d", p.Memory, DefaultMemory)
			}
		}},
		{"bind mounts", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{
				{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "ro"}},
				{Destination: "/rw/", Source: dir, Options: []string{"bind"}},
				{Destination: "/etc/hosts", Type: "bind", Source: file, Options: []string{"rbind"}},
				{Destination: "/mnt/nfs", Type: "nfs", Source: "srv:/x"},
			}
		}, func(t *testing.T, p *Plan) {
			want := []agentvm.Share{{Host: dir, Guest: "/data", ReadOnly: true}, {Host: dir, Guest: "/rw"}}
			if !reflect.DeepEqual(p.Shares, want) {
				t.Errorf("shares %+v, want %+v", p.Shares, want)
			}
			if len(p.Skipped) != 2 || !strings.Contains(p.Skipped[0], "/etc/hosts") || !strings.Contains(p.Skipped[1], "/mnt/nfs (nfs)") {
				t.Errorf("skipped %q", p.Skipped)
			}
		}},
		{"CRI sandbox: /dev/shm twice, a later mount hides an earlier one", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{
				{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"},
				{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs"},
				{Destination: "/dev/shm", Type: "bind", Source: dir, Options: []string{"rbind"}},
				{Destination: "/scratch/", Type: "bind", Source: dir, Options: []string{"rbind"}},
			}
		}, func(t *testing.T, p *Plan) {
			if want := []agentvm.Share{{Host: dir, Guest: "/scratch"}}; !reflect.DeepEqual(p.Shares, want) || len(p.Tmpfs) != 0 {
				t.Errorf("shares %+v tmpfs %q, want shares %+v and no tmpfs", p.Shares, p.Tmpfs, want)
			}
			want := []string{"/dev/shm (tmpfs): hidden by mounts[2]", "/scratch (tmpfs): hidden by mounts[3]", "/dev/shm (bind): the agent's"}
			if !reflect.DeepEqual(p.Skipped, want) {
				t.Errorf("skipped %q, want %q", p.Skipped, want)
			}
		}},
		{"read-only root, relative root path", func(s *specs.Spec) {
			s.Root = &specs.Root{Path: "rootfs", Readonly: true}
		}, func(t *testing.T, p *Plan) {
			if !p.ReadOnlyRoot || p.RootDir != "/bundle/rootfs" {
				t.Errorf("root %q ro %v", p.RootDir, p.ReadOnlyRoot)
			}
		}},
		{"terminal and user", func(s *specs.Spec) {
			s.Process.Terminal = true
			s.Process.User = specs.User{UID: 5, GID: 6}
		}, func(t *testing.T, p *Plan) {
			if !p.Process.Terminal || p.Process.UID != 5 || p.Process.GID != 6 {
				t.Errorf("process %+v", p.Process)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.edit(s)
			p, err := Translate(s, "/bundle")
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, p)
		})
	}
}

func TestTranslateBad(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		edit func(s *specs.Spec)
		want string
	}{
		{"no root", func(s *specs.Spec) { s.Root = nil }, "no root.path"},
		{"no process", func(s *specs.Spec) { s.Process = nil }, "no process"},
		{"empty args", func(s *specs.Spec) { s.Process.Args = nil }, "process.args is empty"},
		{"empty program", func(s *specs.Spec) { s.Process.Args = []string{""} }, "process.args is empty"},
		{"windows command line", func(s *specs.Spec) { s.Process.CommandLine = "cmd /c dir" }, "commandLine is for Windows"},
		{"relative cwd", func(s *specs.Spec) { s.Process.Cwd = "work" }, `process.cwd "work" is not absolute`},
		{"env without =", func(s *specs.Spec) { s.Process.Env = []string{"PATH"} }, `"PATH" is not KEY=VALUE`},
		{"bad hostname", func(s *specs.Spec) { s.Hostname = "a b" }, "hostname"},
		{"long hostname", func(s *specs.Spec) { s.Hostname = strings.Repeat("a", 65) }, "hostname"},
		{"relative destination", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "tmp", Type: "tmpfs"}}
		}, `mounts[0]: destination "tmp" is not absolute`},
		{"relative destination hidden by a later mount", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "data", Type: "bind", Source: dir}, {Destination: "/data", Type: "tmpfs"}, {Destination: "data/", Type: "tmpfs"}}
		}, `mounts[0]: destination "data" is not absolute`},
		{"relative destination of a mount the agent makes itself", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "proc", Type: "proc"}}
		}, `mounts[0]: destination "proc" is not absolute`},
		{"tmpfs destination with ':'", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/run", Type: "tmpfs"}, {Destination: "/a:b", Type: "tmpfs"}}
		}, `mounts[1]: destination: guest path "/a:b"`},
		{"bind destination with a space", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/my data", Type: "bind", Source: dir}}
		}, `mounts[0]: destination: guest path "/my data"`},
		{"bind destination with a quote", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: `/"x`, Source: dir, Options: []string{"rbind"}}}
		}, `mounts[0]: destination: guest path`},
		{"tmpfs at the root", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/", Type: "tmpfs"}}
		}, "mounts[0] (tmpfs): destination / is the container's root"},
		{"bind at the root", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/.", Type: "bind", Source: dir}}
		}, "mounts[0] (bind): destination / is the container's root"},
		{"hostname with an underscore", func(s *specs.Spec) { s.Hostname = "my_box" }, "hostname"},
		{"missing bind source", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/d", Type: "bind", Source: "/nonexistent/corral-shim-test"}}
		}, "mounts[0] (/d)"},
		{"relative bind source", func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/d", Type: "bind", Source: "data"}}
		}, `bind source "data" is not absolute`},
		{"too many vCPUs", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(1000 * 100000), Period: u64(100000)}}}
		}, "asks for 1000 vCPUs"},
		{"too much memory", func(s *specs.Spec) {
			s.Linux = &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(2 << 40)}}}
		}, "more than a VM's"},
		{"huge console", func(s *specs.Spec) { s.Process.ConsoleSize = &specs.Box{Height: 1 << 20, Width: 80} }, "consoleSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.edit(s)
			_, err := Translate(s, "/bundle")
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: want ErrSpec with %q", err, tt.want)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	if _, err := Parse([]byte(`{"process": `)); !errors.Is(err, ErrSpec) {
		t.Errorf("truncated JSON: %v", err)
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), ConfigFile) {
		t.Errorf("missing config.json: %v", err)
	}
}

func TestAgentConfig(t *testing.T) {
	p := &Plan{RootDir: "/b/rootfs", Hostname: "h", Tmpfs: []string{"/run"}, CPUs: 2, Memory: 300 << 20,
		Shares: []agentvm.Share{{Host: "/srv", Guest: "/data", ReadOnly: true}}}
	cfg := p.AgentConfig(corral.Config{Kernel: "/k", Memory: 1 << 30, Name: "n"}, "/agent")
	if cfg.Machine.CPUs != 2 || cfg.Machine.Memory != 300<<20 || cfg.Machine.Kernel != "/k" || cfg.Machine.Name != "n" {
		t.Errorf("machine %+v", cfg.Machine)
	}
	if cfg.Agent != "/agent" || cfg.Hostname != "h" || !reflect.DeepEqual(cfg.Tmpfs, []string{"/run"}) {
		t.Errorf("config %+v", cfg)
	}
	if got := cfg.Root.String(); got != "directory /b/rootfs (read-write)" {
		t.Errorf("root %s", got)
	}
	if len(cfg.Shares) != 1 || cfg.Shares[0].Host != "/srv" || cfg.Shares[0].Guest != "/data" || !cfg.Shares[0].ReadOnly {
		t.Errorf("shares %+v", cfg.Shares)
	}
	p.ReadOnlyRoot = true
	if got := p.AgentConfig(corral.Config{}, "").Root.String(); got != "directory /b/rootfs (read-only, tmpfs overlay)" {
		t.Errorf("read-only root %s", got)
	}
}

func FuzzTranslate(f *testing.F) {
	b, err := os.ReadFile("testdata/bundle/config.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"root":{"path":"r"},"process":{"args":["x"],"cwd":"/"},"linux":{"resources":{"cpu":{"quota":9223372036854775807,"period":1}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		p, err := Translate(s, "/bundle")
		if err != nil {
			if !errors.Is(err, ErrSpec) && !strings.HasPrefix(err.Error(), "oci:") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if p.CPUs < 1 || p.CPUs > MaxCPUs || p.Memory < MinMemory || len(p.Process.Args) == 0 || !filepath.IsAbs(p.Process.Cwd) {
			t.Fatalf("plan out of bounds: %+v", p)
		}
		// Whatever Translate accepts, the agent is told of without error.
		for _, d := range p.Tmpfs {
			if err := agentvm.CheckGuestPath(d); err != nil || d == "/" {
				t.Fatalf("tmpfs %q: %v", d, err)
			}
		}
		for _, sh := range p.Shares {
			if err := agentvm.CheckGuestPath(sh.Guest); err != nil || sh.Guest == "/" {
				t.Fatalf("share %+v: %v", sh, err)
			}
		}
		if p.Hostname != "" {
			if err := agent.CheckHostname(p.Hostname); err != nil {
				t.Fatalf("hostname: %v", err)
			}
		}
	})
}
