package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// moduleOf finds the Go module a package pattern belongs to, so that a
// pattern inside a nested module (./shim/e2e: its own go.mod) is listed and
// built from that module's directory, where the go command resolves it;
// from the outer module it is "outside the main module". Only path
// patterns (./x, ../x, /x, with an optional /... suffix) can name a nested
// module: dir is "" (build from cwd) and pattern unchanged otherwise, and
// for a path in cwd's own module.
func moduleOf(cwd, target string) (dir, pattern string, err error) {
	if !strings.HasPrefix(target, "./") && !strings.HasPrefix(target, "../") &&
		!strings.HasPrefix(target, "/") && target != "." && target != ".." {
		return "", target, nil
	}
	base, suffix := target, ""
	if strings.HasSuffix(base, "/...") {
		base, suffix = strings.TrimSuffix(base, "/..."), "/..."
	}
	abs := base
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(cwd, base)
	}
	own, err := findModuleRoot(cwd)
	if err != nil {
		return "", "", err
	}
	mod, err := findModuleRoot(abs)
	if err != nil {
		return "", "", err
	}
	if mod == "" || mod == own {
		return "", target, nil
	}
	rel, err := filepath.Rel(mod, abs)
	if err != nil {
		return "", "", fmt.Errorf("tcgkvm: %s: %w", target, err)
	}
	return mod, "./" + filepath.ToSlash(rel) + suffix, nil
}

// findModuleRoot returns the nearest directory at or above dir holding a
// go.mod, or "" if there is none.
func findModuleRoot(dir string) (string, error) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		_, err := os.Stat(filepath.Join(d, "go.mod"))
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("tcgkvm: looking for go.mod: %w", err)
		}
		if d == filepath.Dir(d) {
			return "", nil
		}
	}
}

// parseEnv parses -env: comma-separated NAME=VALUE pairs exported in the
// VM's /init before the tests run (a value cannot hold a comma).
func parseEnv(list string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(list, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !validEnvName(k) {
			return nil, fmt.Errorf("tcgkvm: -env %q: want NAME=VALUE with NAME of letters, digits and _", kv)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

func validEnvName(k string) bool {
	if k == "" || (k[0] >= '0' && k[0] <= '9') {
		return false
	}
	for _, c := range k {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
