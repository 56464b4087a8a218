package corral

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestCachedSHA256: the digest is kept and found by the file's identity;
// a changed file (same size) is hashed again; a file changed too recently
// to be sure of is not kept; a broken or unwritable cache costs only the
// hashing.
func TestCachedSHA256(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	cache := filepath.Join(dir, "state", digestCacheName)
	a, b := bytes.Repeat([]byte("a"), 100000), bytes.Repeat([]byte("b"), 100000)
	if err := os.WriteFile(kernel, a, 0o644); err != nil {
		t.Fatal(err)
	}

	// Changed just now: hashed, not kept.
	if got, err := cachedSHA256(kernel, cache, time.Now, time.Hour); err != nil || got != sha(a) {
		t.Fatalf("digest %s, %v; want %s", got, err, sha(a))
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("a digest of a file changed just now was kept (%v)", err)
	}

	// Kept, and then read from the cache, not the file: plant another
	// digest under the file's key.
	if got, err := cachedSHA256(kernel, cache, time.Now, 0); err != nil || got != sha(a) {
		t.Fatalf("digest %s, %v; want %s", got, err, sha(a))
	}
	raw, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	planted := strings.Repeat("f", 64)
	if err := os.WriteFile(cache, bytes.ReplaceAll(raw, []byte(sha(a)), []byte(planted)), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := cachedSHA256(kernel, cache, time.Now, 0); got != planted {
		t.Fatalf("digest %s: the cache was not used", got)
	}

	// Rewritten with the same size and an mtime set back: a new ctime, a
	// new hash.
	st, _ := os.Stat(kernel)
	if err := os.WriteFile(kernel, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(kernel, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got, err := cachedSHA256(kernel, cache, time.Now, 0); err != nil || got != sha(b) {
		t.Fatalf("changed file: digest %s, %v; want %s", got, err, sha(b))
	}
	if got, _ := cachedSHA256(kernel, cache, time.Now, 0); got != sha(b) {
		t.Fatalf("changed file, cached: digest %s; want %s", got, sha(b))
	}

	// A broken cache file is ignored and replaced.
	if err := os.WriteFile(cache, []byte("garbage\n1 2 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := cachedSHA256(kernel, cache, time.Now, 0); err != nil || got != sha(b) {
		t.Fatalf("broken cache: digest %s, %v", got, err)
	}
	if raw, _ := os.ReadFile(cache); len(parseDigestCache(raw)) != 1 {
		t.Errorf("cache after a broken one: %q", raw)
	}

	// A cache that cannot be written (its directory is a file).
	if got, err := cachedSHA256(kernel, filepath.Join(kernel, "x"), time.Now, 0); err != nil || got != sha(b) {
		t.Fatalf("unwritable cache: digest %s, %v", got, err)
	}
	// A missing kernel is an error naming the digest.
	if _, err := cachedSHA256(filepath.Join(dir, "none"), cache, time.Now, 0); err == nil || !strings.Contains(err.Error(), "kernel digest") {
		t.Errorf("missing kernel: %v", err)
	}
}

// TestDigestCacheBounded: the cache keeps the newest digestCacheMax
// entries.
func TestDigestCacheBounded(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, digestCacheName)
	var last string
	for i := range digestCacheMax + 8 {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := cachedSHA256(p, cache, time.Now, 0); err != nil {
			t.Fatal(err)
		}
		last = sha([]byte(p))
	}
	raw, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	e := parseDigestCache(raw)
	if len(e) != digestCacheMax || e[0].digest != last {
		t.Fatalf("%d entries, first %s; want %d, first %s", len(e), e[0].digest, digestCacheMax, last)
	}
}

// FuzzDigestCache: any cache file parses to at most digestCacheMax
// well-formed entries, which format and parse back the same.
func FuzzDigestCache(f *testing.F) {
	f.Add([]byte("1 2 3 4 5 " + strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("1 2 3 -4 5 " + strings.Repeat("AB", 32) + "\n\n18446744073709551615 0 0 0 0 " + strings.Repeat("0", 64)))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := parseDigestCache(b)
		if len(e) > digestCacheMax {
			t.Fatalf("%d entries", len(e))
		}
		for _, x := range e {
			if d, err := hex.DecodeString(x.digest); err != nil || len(d) != sha256.Size || strings.ToLower(x.digest) != x.digest {
				t.Fatalf("digest %q", x.digest)
			}
		}
		again := parseDigestCache(formatDigestCache(e))
		if fmt.Sprint(again) != fmt.Sprint(e) {
			t.Fatalf("round trip: %v, then %v", e, again)
		}
	})
}
