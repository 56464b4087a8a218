package corral

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

func TestParseShare(t *testing.T) {
	for s, want := range map[string]Share{
		"/srv/src:src":         {Path: "/srv/src", Tag: "src"},
		"/srv/src:src,ro":      {Path: "/srv/src", Tag: "src", ReadOnly: true},
		"/srv/src:src,rw":      {Path: "/srv/src", Tag: "src"},
		"rel/dir:a.b-c_1":      {Path: "rel/dir", Tag: "a.b-c_1"},
		"/a:b/c,d:tag,ro":      {Path: "/a:b/c,d", Tag: "tag", ReadOnly: true},
		"/x:" + longTag(31):    {Path: "/x", Tag: longTag(31)},
		"C:\\odd:t":            {Path: "C:\\odd", Tag: "t"},
		"/data,ro:data,ro":     {Path: "/data,ro", Tag: "data", ReadOnly: true},
		"/trailing/:home,rw":   {Path: "/trailing/", Tag: "home"},
		"/only/one,ro:t,ro,rw": {},
	} {
		got, err := ParseShare(s)
		if want.Path == "" {
			if err == nil {
				t.Errorf("ParseShare(%q) = %+v, want an error", s, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseShare(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for s, msg := range map[string]string{
		"":                  "want PATH:TAG[,ro]",
		"/srv/src":          "want PATH:TAG[,ro]",
		":src":              "want PATH:TAG[,ro]",
		"/srv/src:":         "is 0 bytes",
		"/srv:a b":          "has ' ' at offset 1",
		"/srv:t,bogus":      "has ',' at offset 1",
		"/x:" + longTag(32): "is 32 bytes",
	} {
		if _, err := ParseShare(s); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseShare(%q) = %v, want an error with %q", s, err, msg)
		}
	}
}

func longTag(n int) string { return strings.Repeat("t", n) }

func TestShareValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	ok := []Share{{Path: dir, Tag: "a"}, {Path: link, Tag: "b", ReadOnly: true}, {Path: dir, Tag: "c"}}
	if err := checkShares(ok); err != nil {
		t.Errorf("checkShares(%+v) = %v", ok, err)
	}
	for _, tc := range []struct {
		shares []Share
		msg    string
	}{
		{[]Share{{Path: dir, Tag: ""}}, `share 0: mount tag "" is 0 bytes: want 1..31 of [A-Za-z0-9._-]`},
		{[]Share{{Path: dir, Tag: "ok"}, {Path: dir, Tag: "bad/tag"}}, `share 1: mount tag "bad/tag" has '/' at offset 3`},
		{[]Share{{Path: dir, Tag: longTag(32)}}, "share 0: mount tag \"" + longTag(32) + "\" is 32 bytes"},
		{[]Share{{Path: dir, Tag: "t"}, {Path: link, Tag: "u"}, {Path: dir, Tag: "t"}}, `share 2: tag "t" is share 0's too`},
		{[]Share{{Tag: "t"}}, `share 0 (t): no path`},
		{[]Share{{Path: filepath.Join(dir, "absent"), Tag: "t"}}, `share 0 (t): stat ` + filepath.Join(dir, "absent") + `: no such file or directory`},
		{[]Share{{Path: file, Tag: "t"}}, `share 0 (t): "` + file + `" is not a directory`},
	} {
		err := checkShares(tc.shares)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("checkShares(%+v) = %v, want %q", tc.shares, err, tc.msg)
		}
	}
	// Through Validate: the kernel must be real for the shares to be reached.
	k := guests.BuildT(t, "hello")
	err := (&Config{Kernel: k, Shares: []Share{{Path: dir, Tag: "a"}, {Path: file, Tag: "b"}}}).Validate()
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "share 1 (b)") {
		t.Errorf("Validate = %v, want ErrConfig naming share 1", err)
	}
	if err := (&Config{Kernel: k, Shares: ok}).Validate(); err != nil {
		t.Errorf("Validate with good shares: %v", err)
	}
}

// descriptorsOn counts this process's descriptors open on path.
func descriptorsOn(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// A machine with two shares (one read-only) has a virtio-9p function
// (1af4:1049) for each on the PCI bus, holds one descriptor on each shared
// directory while it exists, runs a guest to its end, and leaves no
// descriptor or goroutine behind.
func TestSharesStartAndStop(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "hello")
	rw, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ro, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Kernel: k, Cmdline: "exit=5", Memory: 64 << 20,
		Shares: []Share{{Path: rw, Tag: "rw"}, {Path: ro, Tag: "ro", ReadOnly: true}}}
	run := func(check bool) {
		t.Helper()
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if check {
			for slot := 1; slot <= 2; slot++ {
				if id := readPCIConfig(m, slot, 0); id != 0x1049_1af4 {
					t.Errorf("slot %d vendor/device %#x, want 0x10491af4 (virtio-9p)", slot, id)
				}
			}
			if a, b := descriptorsOn(t, rw), descriptorsOn(t, ro); a != 1 || b != 1 {
				t.Errorf("descriptors on the shares while the machine exists: %d and %d, want 1 each", a, b)
			}
		}
		if err := m.Start(context.Background()); err != nil {
			m.Close()
			t.Fatal(err)
		}
		select {
		case <-m.Done():
		case <-time.After(60 * time.Second):
			m.Stop()
			t.Fatal("machine did not end within 60s")
		}
		if e, err := m.Wait(); err != nil || e.Reason != ExitDebug || e.Code != 5 {
			t.Fatalf("machine ended with %v, %v", e, err)
		}
	}
	// One machine first, so lazily created runtime state is in the baseline.
	run(false)
	base := settle(t, countResources(t))
	run(true)
	if r := settle(t, base); r.fds > base.fds || r.goroutines > base.goroutines || r.kvmMaps > base.kvmMaps {
		t.Errorf("after the machine: %+v, baseline %+v", r, base)
	}
	if a, b := descriptorsOn(t, rw), descriptorsOn(t, ro); a != 0 || b != 0 {
		t.Errorf("descriptors on the shares after the machine: %d and %d", a, b)
	}
}

// A snapshot keeps each share's Empty directories; a restore that gives a
// share's new path keeps them, unless it gives Empty too.
func TestSnapshotShareEmpty(t *testing.T) {
	m := &Machine{cfg: Config{Kernel: "/k", Shares: []Share{
		{Path: "/", Tag: "root", ReadOnly: true, Empty: []string{"/proc", "/sys"}}, {Path: "/srv", Tag: "data"},
	}}, plat: &platform{}}
	_, back, _ := saveAndDecode(t, m)
	for _, tc := range []struct {
		name      string
		overrides []Share
		want      [][]string
	}{
		{"as saved", nil, [][]string{{"/proc", "/sys"}, nil}},
		{"new path", []Share{{Tag: "root", Path: "/other"}}, [][]string{{"/proc", "/sys"}, nil}},
		{"new Empty", []Share{{Tag: "root", Path: "/other", Empty: []string{"/tmp"}}, {Tag: "data", Path: "/d", Empty: []string{"x"}}},
			[][]string{{"/tmp"}, {"x"}}},
	} {
		c, err := back.config(RestoreConfig{Shares: tc.overrides})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for i, want := range tc.want {
			if !slices.Equal(c.Shares[i].Empty, want) {
				t.Errorf("%s: share %s restores with Empty %q, want %q", tc.name, c.Shares[i].Tag, c.Shares[i].Empty, want)
			}
		}
	}
}
