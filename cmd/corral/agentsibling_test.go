package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

func buildInfo(path, version string, settings ...string) *debug.BuildInfo {
	bi := &debug.BuildInfo{Main: debug.Module{Path: path, Version: version}}
	for i := 0; i+1 < len(settings); i += 2 {
		bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
	}
	return bi
}

func TestSameSource(t *testing.T) {
	const mod = "github.com/corral-vmm/corral"
	clean := func(rev string) *debug.BuildInfo {
		return buildInfo(mod, "(devel)", "vcs", "git", "vcs.revision", rev, "vcs.modified", "false")
	}
	for _, c := range []struct {
		name string
		a, b *debug.BuildInfo
		want bool
	}{
		{"one clean revision", clean("abc"), clean("abc"), true},
		{"two revisions", clean("abc"), clean("def"), false},
		{"modified tree", buildInfo(mod, "(devel)", "vcs.revision", "abc", "vcs.modified", "true"),
			buildInfo(mod, "(devel)", "vcs.revision", "abc", "vcs.modified", "true"), false},
		{"one modified", clean("abc"), buildInfo(mod, "(devel)", "vcs.revision", "abc", "vcs.modified", "true"), false},
		{"no VCS information", buildInfo(mod, "(devel)"), buildInfo(mod, "(devel)"), false},
		{"one released version", buildInfo(mod, "v1.2.3"), buildInfo(mod, "v1.2.3"), true},
		{"two released versions", buildInfo(mod, "v1.2.3"), buildInfo(mod, "v1.2.4"), false},
		{"released and devel", buildInfo(mod, "v1.2.3"), clean("abc"), false},
		{"another module", clean("abc"), buildInfo("example.com/other", "(devel)", "vcs.revision", "abc", "vcs.modified", "false"), false},
		{"no module", buildInfo("", "v1.0.0"), buildInfo("", "v1.0.0"), false},
	} {
		if got := sameSource(c.a, c.b); got != c.want {
			t.Errorf("%s: sameSource = %v, want %v", c.name, got, c.want)
		}
	}
}

// A corral-agent beside corral that is not a Go program, or none at all,
// leaves corral its own agent.
func TestSiblingAgentNotUsable(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "corral")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(self, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := siblingAgent(self); got != "" {
		t.Errorf("no corral-agent: siblingAgent = %q", got)
	}
	if err := os.WriteFile(filepath.Join(dir, siblingAgentName), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := siblingAgent(self); got != "" {
		t.Errorf("a script as corral-agent: siblingAgent = %q", got)
	}
}

// Two static programs built from one commit of a clean checkout are the
// same source; once the checkout changes, an agent built from it is not.
func TestSiblingAgentSameCommit(t *testing.T) {
	// Not in tests/tcgkvm's VM, which has neither.
	tools := map[string]string{"git": testenv.MustHaveCommand(t, "git", "git"), "go": testenv.MustHaveCommand(t, "go", "golang-go")}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(tools[name], args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/vmm\n\ngo 1.21\n")
	write("cmd/corral/main.go", "package main\n\nfunc main() {}\n")
	write("cmd/corral-agent/main.go", "package main\n\nfunc main() { println() }\n")
	write(".gitignore", "/bin/\n")
	run("git", "init", "-q")
	run("git", "add", ".")
	run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
	run("go", "build", "-buildvcs=true", "-o", "bin/corral", "./cmd/corral")
	run("go", "build", "-buildvcs=true", "-o", "bin/corral-agent", "./cmd/corral-agent")
	self, agent := filepath.Join(dir, "bin", "corral"), filepath.Join(dir, "bin", siblingAgentName)
	if got := siblingAgent(self); got != agent {
		t.Errorf("one clean commit: siblingAgent = %q, want %q", got, agent)
	}
	write("cmd/corral-agent/main.go", "package main\n\nfunc main() { println(1) }\n")
	run("go", "build", "-buildvcs=true", "-o", "bin/corral-agent", "./cmd/corral-agent")
	if got := siblingAgent(self); got != "" {
		t.Errorf("agent from a modified checkout: siblingAgent = %q, want none", got)
	}
}
