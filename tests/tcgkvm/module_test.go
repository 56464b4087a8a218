package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModuleOf(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"pkg", "nested/e2e/sub"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"go.mod", "nested/go.mod"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("module x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ target, dir, pattern string }{
		{"./pkg", "", "./pkg"},
		{".", "", "."},
		{"github.com/x/y", "", "github.com/x/y"},
		{"./nested/e2e", filepath.Join(root, "nested"), "./e2e"},
		{"./nested/e2e/...", filepath.Join(root, "nested"), "./e2e/..."},
		{"./nested", filepath.Join(root, "nested"), "./."},
		{filepath.Join(root, "nested/e2e/sub"), filepath.Join(root, "nested"), "./e2e/sub"},
	} {
		dir, pattern, err := moduleOf(root, c.target)
		if err != nil || dir != c.dir || pattern != c.pattern {
			t.Errorf("moduleOf(%q) = %q, %q, %v; want %q, %q", c.target, dir, pattern, err, c.dir, c.pattern)
		}
	}
}

func TestParseEnv(t *testing.T) {
	got, err := parseEnv("A=1, B_2=/x/y ,C=")
	if err != nil || len(got) != 3 || got[0] != [2]string{"A", "1"} || got[1] != [2]string{"B_2", "/x/y"} || got[2] != [2]string{"C", ""} {
		t.Fatalf("parseEnv = %v, %v", got, err)
	}
	for _, bad := range []string{"A", "=1", "1A=x", "A-B=x", "A B=x"} {
		if _, err := parseEnv(bad); err == nil {
			t.Errorf("parseEnv(%q) took it", bad)
		}
	}
}

func TestInitramfsExportsEnv(t *testing.T) {
	s := initScript(initramfsSpec{Env: [][2]string{{"CORRAL_SHIM", "/r/it's"}}})
	want := `export CORRAL_SHIM='/r/it'\''s'`
	if !strings.Contains(s, want+"\n") {
		t.Fatalf("/init lacks %q:\n%s", want, s)
	}
	if strings.Index(s, want) > strings.Index(s, "status=0") {
		t.Fatalf("/init exports it after the tests start")
	}
}
