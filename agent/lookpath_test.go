package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLookPath: execvp's rules: PATH order, only regular files with an
// execute bit, empty and relative entries against the directory.
func TestLookPath(t *testing.T) {
	d := t.TempDir()
	for _, sub := range []string{"a", "b", "c", "e", "w/rel"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(d, p), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("a/x", 0o644) // not executable
	if err := os.Mkdir(filepath.Join(d, "b/x"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("c/x", 0o755)
	write("e/x", 0o755)
	write("w/rel/x", 0o700)
	write("w/x", 0o755)
	path := func(dirs ...string) []string { return []string{"A=1", "PATH=" + strings.Join(dirs, ":")} }
	for _, tc := range []struct {
		env  []string
		dir  string
		want string
	}{
		{path(d+"/a", d+"/b", d+"/c", d+"/e"), "", d + "/c/x"},
		{path(d+"/e", d+"/c"), "", d + "/e/x"},
		{path(d+"/a", "rel", d+"/c"), d + "/w", d + "/w/rel/x"},
		{path(d+"/a", "", d+"/c"), d + "/w", d + "/w/x"},
		{path(d+"/a", d+"/b", d+"/nowhere"), "", ""},
	} {
		got, err := lookPath("x", tc.env, tc.dir)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("lookPath(x, %q, %q) = %q, %v; want %q", tc.env, tc.dir, got, err, tc.want)
		}
	}
	if got, err := lookPath("./y/x", nil, ""); got != "./y/x" || err != nil {
		t.Errorf("a name with a slash: %q, %v", got, err)
	}
}
