package testdriver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// SeedCorpus keeps testdata/fuzz/<name> in step with seeds: with
// CORRAL_WRITE_SEEDS=1 it (re)writes the files in Go's corpus format,
// otherwise it fails the test when the directory is missing or empty.
func SeedCorpus(t testing.TB, name string, seeds [][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", name)
	if os.Getenv("CORRAL_WRITE_SEEDS") != "1" {
		if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
			t.Fatalf("no seed corpus in %s (run with CORRAL_WRITE_SEEDS=1): %v", dir, err)
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
