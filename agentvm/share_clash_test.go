package agentvm

import (
	"errors"
	"strings"
	"testing"
)

// TestShareGuestPathClash: what the agent would refuse after the boot,
// two shares at one guest path or a share at /, is ErrConfig before it,
// on the cold and the warm path alike.
func TestShareGuestPathClash(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Shares: []Share{{Host: "/a", Guest: "/data"}, {Host: "/b", Guest: "/data/"}}}, `two shares at "/data"`},
		{Config{Shares: []Share{{Host: "/data"}, {Host: "/b", Guest: "/x/../data"}}}, `two shares at "/data"`},
		{Config{Shares: []Share{{Host: "/a", Guest: "/"}}}, "share 0 (/a): a share cannot be the root"},
		{Config{Shares: []Share{{Host: "/a", Guest: "/x/.."}}}, "share 0 (/a): a share cannot be the root"},
	} {
		if _, err := tc.cfg.machineConfig(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: machineConfig: %v, want ErrConfig with %q", tc.cfg.Shares, err, tc.want)
		}
		if _, err := tc.cfg.warmPlan(t.TempDir()); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: warmPlan: %v, want ErrConfig with %q", tc.cfg.Shares, err, tc.want)
		}
	}
}
