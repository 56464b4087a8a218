package snapshot

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseState feeds arbitrary bytes to Open's parser of the state file
// (and its memory layout section). It must not panic or allocate past the
// bounds, and whatever it accepts must be exactly what the encoder writes
// for the decoded contents: no byte of an accepted file goes unchecked.
func FuzzParseState(f *testing.F) {
	f.Add(encodeState(&state{sections: []section{{"a", []byte("x")}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if enc := encodeState(st); !bytes.Equal(enc, b) {
			t.Fatalf("accepted state re-encodes differently:\n got %x\nwant %x", b, enc)
		}
		_, lay, err := parseAll(b)
		if err != nil {
			return
		}
		for _, s := range st.sections {
			if s.name == layoutSection && !bytes.Equal(encodeLayout(lay), s.data) {
				t.Fatalf("accepted layout re-encodes differently")
			}
		}
	})
}

// FuzzParseLayout feeds arbitrary bytes to the memory layout parser, with
// the same round-trip property.
func FuzzParseLayout(f *testing.F) {
	f.Add(encodeLayout(&layout{fileSize: 2<<20 + 4096, regions: []memRegion{{gpa: 0, size: 4096, offset: 2 << 20, chunks: []chunk{{zero: true}}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := parseLayout(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if enc := encodeLayout(l); !bytes.Equal(enc, b) {
			t.Fatalf("accepted layout re-encodes differently:\n got %x\nwant %x", b, enc)
		}
		if l.fileSize > 1<<62 || len(l.regions) == 0 {
			t.Fatalf("accepted file size %d with %d regions", l.fileSize, len(l.regions))
		}
	})
}

// TestSeeds checks the seed corpus still means what its names say: seeds
// named valid-* parse, all others are refused.
func TestSeeds(t *testing.T) {
	for target, parse := range map[string]func([]byte) error{
		"FuzzParseState":  func(b []byte) error { _, _, err := parseAll(b); return err },
		"FuzzParseLayout": func(b []byte) error { _, err := parseLayout(b); return err },
	} {
		files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if len(files) < 3 {
			t.Errorf("%s: %d seeds, want at least 3", target, len(files))
		}
		for _, p := range files {
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitN(string(raw), "\n", 3)
			if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
				t.Fatalf("%s: not a []byte fuzz seed", p)
			}
			s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			err = parse([]byte(s))
			if valid := strings.HasPrefix(filepath.Base(p), "valid-"); valid != (err == nil) {
				t.Errorf("%s: err = %v", p, err)
			}
		}
	}
}
