package main

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"64M": 64 << 20, "1G": 1 << 30, "512k": 512 << 10, "4096": 4096} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "0", "12X", "99999999999G"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

const smapsSample = `55656c960000-55656d27f000 rw-p 00000000 00:00 0                          [heap]
Size:               9340 kB
Rss:                4340 kB
7fcc8c021000-7fcc90000000 ---p 00000000 00:00 0
Size:              65404 kB
Rss:                   0 kB
7fcc93e00000-7fcc97e00000 rw-p 00000000 00:00 0
Size:              65536 kB
Rss:                2048 kB
7fcc97e00000-7fcc9be00000 r--p 00000000 00:00 0
Size:              65536 kB
Rss:                 999 kB
`

func TestSmapsRss(t *testing.T) {
	if got := smapsRss(strings.NewReader(smapsSample), 64<<20); got != 2048 {
		t.Errorf("64 MiB mapping Rss = %d, want 2048 (the rw mapping only)", got)
	}
	if got := smapsRss(strings.NewReader(smapsSample), 32<<20); got != -1 {
		t.Errorf("no 32 MiB mapping: got %d, want -1", got)
	}
}

// reportFields runs firstbyte on a shell command and parses its report.
func reportFields(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var out strings.Builder
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(out.String()) {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	return f
}

func TestLineTime(t *testing.T) {
	const script = "echo 'Linux version x'; sleep 0.2; echo '[ 1.5] Run /init as init process'; exit 3"
	f := reportFields(t, "-line", "Run /init", "--", "sh", "-c", script)
	if f["status"] != "3" {
		t.Errorf("status = %q, want 3", f["status"])
	}
	fb, err1 := strconv.ParseFloat(f["first_byte_ms"], 64)
	line, err2 := strconv.ParseFloat(f["line_ms"], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("report %v: first_byte_ms and line_ms must be numbers", f)
	}
	// The line comes after the shell's 200 ms sleep.
	if line < fb+150 {
		t.Errorf("line_ms %.1f is not ~200 ms after first_byte_ms %.1f", line, fb)
	}
	if f := reportFields(t, "-line", "never printed", "--", "sh", "-c", "echo hello"); f["line_ms"] != "na" {
		t.Errorf("line_ms = %q for a line that never came, want na", f["line_ms"])
	}
	if f := reportFields(t, "--", "sh", "-c", "echo hello"); f["line_ms"] != "" {
		t.Errorf("line_ms reported without -line: %q", f["line_ms"])
	}
}
