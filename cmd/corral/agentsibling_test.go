package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
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
