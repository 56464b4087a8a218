package agent

import (
	"strconv"
	"strings"
	"testing"
)

// TestNinepOptions: every 9p mount reads ahead (cache=mmap: with
// cache=none, the default, Linux reads an mmap'd file one 4 KiB Tread per
// page) and caches nothing keyed by QID (no loose or fscache: see
// ninepOptions), with an msize virtio's transport takes as it is (Linux
// 6.1 caps it at 512000 and says so on the console, every mount).
func TestNinepOptions(t *testing.T) {
	opts := map[string]string{}
	for _, o := range strings.Split(ninepOptions, ",") {
		k, v, _ := strings.Cut(o, "=")
		opts[k] = v
	}
	if opts["cache"] != "mmap" {
		t.Errorf("9p options %q: cache=%q, want mmap", ninepOptions, opts["cache"])
	}
	if opts["trans"] != "virtio" || opts["version"] != "9p2000.L" || opts["msize"] == "" {
		t.Errorf("9p options %q: want trans=virtio, version=9p2000.L and an msize", ninepOptions)
	}
	if n, err := strconv.Atoi(opts["msize"]); err != nil || n > 512000 {
		t.Errorf("9p options %q: msize %q, want at most 512000 (more is capped, with a console line)", ninepOptions, opts["msize"])
	}
}
