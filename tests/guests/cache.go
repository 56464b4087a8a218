package guests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// Cache builds guests into content-addressed subdirectories of Dir:
// Dir/<key>/<name>.elf, where key hashes the embedded sources, the compiler
// flags, the guest name and gcc's path and version. A guest already built
// with the same key is returned without running the compiler. A Cache holds
// no state beyond Dir, so copies and concurrent use are fine.
type Cache struct {
	// Dir is the cache root; it is created if missing.
	Dir string
}

// Build returns the path of guest name, compiling it only if this exact
// build (same key) is not already in the cache.
func (c Cache) Build(ctx context.Context, name string) (string, error) {
	if _, ok := guestSources(name); !ok {
		return "", fmt.Errorf("%w %q (known: %s)", ErrUnknownGuest, name, strings.Join(Names(), ", "))
	}
	key, err := cacheKey(ctx, name)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(c.Dir, key)
	path := filepath.Join(dir, name+".elf")
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
		return path, nil
	}
	return BuildContext(ctx, name, dir)
}

// cacheKey hashes everything that decides a guest's bytes.
func cacheKey(ctx context.Context, name string) (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCompiler, err)
	}
	version, err := exec.CommandContext(ctx, gcc, "-dumpfullversion", "-dumpmachine").Output()
	if err != nil {
		return "", fmt.Errorf("guests: asking %s for its version: %w", gcc, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "corral test guest v1\x00%s\x00%s\x00%s\x00", name, gcc, version)
	fmt.Fprintf(h, "%q\x00", compilerFlags())
	err = fs.WalkDir(sourceFS, "src", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := sourceFS.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("guests: hashing sources: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:24], nil
}

// DefaultCacheDir is where BuildT caches guests: $CORRAL_GUEST_CACHE if set,
// else <os.UserCacheDir()>/corral/test-guests; "" if neither is available.
func DefaultCacheDir() string {
	if d := os.Getenv("CORRAL_GUEST_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "corral", "test-guests")
	}
	return ""
}

// BuildT builds guest name for a test and returns its path. It uses a Cache
// rooted at DefaultCacheDir() (falling back to t.TempDir() if that cannot be
// created), skips the test if gcc is missing, and fails it on other errors.
func BuildT(t testing.TB, name string) string {
	t.Helper()
	root := DefaultCacheDir()
	if root == "" || os.MkdirAll(root, 0o755) != nil {
		root = t.TempDir()
	}
	path, err := Cache{Dir: root}.Build(t.Context(), name)
	if errors.Is(err, ErrNoCompiler) {
		testenv.Missing(t, testenv.Tools, "cannot build test guest %q (apt-get install -y gcc): %v", name, err)
	}
	if err != nil {
		t.Fatalf("building test guest %q: %v", name, err)
	}
	return path
}
