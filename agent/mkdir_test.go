package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRealOpsMkdir: the O_PATH shortcut for a directory that is there
// keeps Mkdir's answers: a directory (new or present) is fine, a symbolic
// link to one only without noLink, a file never.
func TestRealOpsMkdir(t *testing.T) {
	d := t.TempDir()
	if err := os.Mkdir(filepath.Join(d, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("dir", filepath.Join(d, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(d, "dangling")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		noLink bool
		ok     bool
	}{
		{"dir", true, true},
		{"dir", false, true},
		{"new/a/b", true, true},
		{"link", false, true},
		{"link", true, false},
		{"file", false, false},
		{"file", true, false},
		{"dangling", true, false},
	} {
		p := filepath.Join(d, tc.path)
		err := realOps{}.Mkdir(p, 0o755, tc.noLink)
		if (err == nil) != tc.ok {
			t.Errorf("Mkdir(%s, noLink %v) = %v, want ok %v", tc.path, tc.noLink, err, tc.ok)
		}
		if tc.ok {
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
				t.Errorf("%s after Mkdir: %v, %v", tc.path, fi, err)
			}
		}
	}
}
