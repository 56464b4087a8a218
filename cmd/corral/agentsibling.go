package main

import (
	"debug/buildinfo"
	"path/filepath"
	"runtime/debug"
)

// siblingAgentName is the dedicated guest agent corral exec looks for in
// the directory of the corral executable (scripts/run.sh builds both into
// bin/, `go install ./cmd/...` into $GOBIN).
const siblingAgentName = "corral-agent"

// siblingAgent returns the corral-agent beside the corral executable self
// when both were built from the same source (sameSource), else "". The
// dedicated agent is a third of corral's size and starts without the
// VMM's packages: a cold exec on the nested KVM took 45.0–51.9 s with it
// against 51.1–59.2 s with corral itself as the agent (three alternating
// pairs, bench/results/2026-12-07-warm-exec-guest-profile-kvm-pvm.md).
func siblingAgent(self string) string {
	p := filepath.Join(filepath.Dir(self), siblingAgentName)
	a, err := buildinfo.ReadFile(p)
	if err != nil {
		return ""
	}
	c, err := buildinfo.ReadFile(self)
	if err != nil || !sameSource(c, a) {
		return ""
	}
	return p
}

// sameSource reports whether two binaries' build information shows them
// built from one source: the same main module at the same released
// version, or at the same VCS revision of an unmodified tree. A modified
// tree, or a build without VCS information (-buildvcs=false, an exported
// archive), cannot tell, so it is not the same: corral then is its own
// agent, which is always the matching one.
func sameSource(a, b *debug.BuildInfo) bool {
	if a.Main.Path == "" || a.Main.Path != b.Main.Path || a.Main.Version != b.Main.Version {
		return false
	}
	if v := a.Main.Version; v != "" && v != "(devel)" {
		return true // a released version, as go install module@version builds
	}
	rev := buildSetting(a, "vcs.revision")
	return rev != "" && rev == buildSetting(b, "vcs.revision") &&
		buildSetting(a, "vcs.modified") == "false" && buildSetting(b, "vcs.modified") == "false"
}

// buildSetting returns the value of build setting key, or "".
func buildSetting(bi *debug.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
