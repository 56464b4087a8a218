package proto

import (
	"encoding/binary"
	"testing"
)

// TestSetupFlagMatchesVersion: Append sets SetupSystem exactly when a
// Setup has a system part, and NeedsVersion asks for SetupSystemVersion
// then (and for a read-write root, which needs no flag): a Setup without
// either encodes as version 2 did, for a version 2 agent.
func TestSetupFlagMatchesVersion(t *testing.T) {
	for _, s := range []Setup{
		{},
		{Root: "9p:r", Shares: []string{"a:/a:ro"}},
		{Root: "9p:r:rw"},
		{Hostname: "h"},
		{Tmpfs: []string{"/t"}},
		{Root: "9p:r:rw", Hostname: "h", Tmpfs: []string{"/t", "/u"}},
	} {
		p, err := s.Append(nil)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		flag := binary.LittleEndian.Uint32(p[offSetupFlags:])&SetupSystem != 0
		hasSystem := s.Hostname != "" || len(s.Tmpfs) > 0
		if flag != hasSystem {
			t.Errorf("%+v: SetupSystem flag %v, want %v", s, flag, hasSystem)
		}
		if need := s.NeedsVersion(); flag && need < SetupSystemVersion || !flag && s.Root != "9p:r:rw" && need != SetupVersion {
			t.Errorf("%+v: flag %v, NeedsVersion %d", s, flag, need)
		}
	}
}
