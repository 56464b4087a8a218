package client

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// tree makes files (mode 0755 unless the name ends in "!", then 0644),
// directories (a trailing "/") and symbolic links ("name -> target")
// under a new directory.
func tree(t *testing.T, entries ...[2]string) string {
	t.Helper()
	root := t.TempDir()
	for _, e := range entries {
		p := filepath.Join(root, e[0])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case e[1] == "dir":
			err = os.Mkdir(p, 0o755)
		case e[1] == "file":
			err = os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
		case e[1] == "plain":
			err = os.WriteFile(p, []byte("data\n"), 0o644)
		default:
			err = os.Symlink(e[1], p)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLookPathIn(t *testing.T) {
	root := tree(t,
		[2]string{"usr/sbin/true", "plain"},           // no execute bit: skipped
		[2]string{"usr/bin/busybox", "file"},          // what true is
		[2]string{"usr/bin/true", "/usr/bin/busybox"}, // absolute: inside root
		[2]string{"bin", "usr/bin"},                   // relative link to a directory
		[2]string{"opt/dir/true", "dir"},              // a directory: skipped
		[2]string{"loop/true", "true"},                // a loop: ELOOP, skipped
		[2]string{"etc", "dir"},
		[2]string{"esc/true", "../../../../usr/bin/busybox"}, // .. stops at root
	)
	path, visited, ok := LookPathIn(root, "true", []string{"HOME=/", "PATH=/usr/local/bin:/usr/sbin:/opt/dir:/loop:/bin"})
	if !ok || path != "/bin/true" {
		t.Fatalf("LookPathIn = %q, %v; want /bin/true", path, ok)
	}
	want := []string{
		"/usr", "/usr/local", // not there
		"/usr", "/usr/sbin", "/usr/sbin/true", // not executable
		"/opt", "/opt/dir", "/opt/dir/true", // a directory
		"/loop", // then /loop/true until ELOOP
	}
	for range maxLinks + 1 {
		want = append(want, "/loop/true")
	}
	want = append(want, "/bin", "/usr", "/usr/bin", "/usr/bin/true", "/usr", "/usr/bin", "/usr/bin/busybox")
	if !reflect.DeepEqual(visited, want) {
		t.Errorf("visited\n%q\nwant\n%q", visited, want)
	}
	if p, _, ok := LookPathIn(root, "true", []string{"PATH=/esc"}); !ok || p != "/esc/true" {
		t.Errorf("a link climbing above the root: %q, %v; want /esc/true (.. stops at the root)", p, ok)
	}

	for name, env := range map[string][]string{
		"no PATH":              {"HOME=/"},
		"relative entry first": {"PATH=bin:/bin"},
		"empty entry first":    {"PATH=:/bin"},
		"nothing matches":      {"PATH=/usr/sbin:/etc"},
		"last PATH= wins":      {"PATH=/bin", "PATH=/usr/sbin"},
		"only a directory":     {"PATH=/opt/dir"},
		"only a loop":          {"PATH=/loop"},
	} {
		if p, v, ok := LookPathIn(root, "true", env); ok {
			t.Errorf("%s: LookPathIn = %q (visited %q), want no answer", name, p, v)
		}
	}
	// After the match, a relative entry does not matter.
	if p, _, ok := LookPathIn(root, "true", []string{"PATH=/bin:relative"}); !ok || p != "/bin/true" {
		t.Errorf("relative entry after the match: %q, %v", p, ok)
	}
	for _, file := range []string{"", "bin/true", "/bin/true"} {
		if _, _, ok := LookPathIn(root, file, []string{"PATH=/bin"}); ok {
			t.Errorf("file %q: an answer, want none (the agent uses a path with a slash as it is)", file)
		}
	}
}
