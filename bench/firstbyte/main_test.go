package main

import (
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
