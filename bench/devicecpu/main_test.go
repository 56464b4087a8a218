package main

import (
	"runtime"
	"strconv"
	"testing"
)

func TestSelector(t *testing.T) {
	for name, want := range map[string]string{
		"GuestToHost":                            "^BenchmarkGuestToHost$",
		"DataPath/read-4KiB":                     "^BenchmarkDataPath$/^read-4KiB$",
		"SequentialRead/zero-copy-500KB-pages.x": `^BenchmarkSequentialRead$/^zero-copy-500KB-pages\.x$`,
	} {
		if got := selector(name); got != want {
			t.Errorf("selector(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestResultLine(t *testing.T) {
	p := "-" + strconv.Itoa(runtime.GOMAXPROCS(0))
	if p == "-1" {
		p = ""
	}
	for line, want := range map[string][]string{
		"BenchmarkDataPath/read-4KiB" + p + "         \t     200\t      2473 ns/op\t1656.27 MB/s\t 0 B/op": {"DataPath/read-4KiB", "200", "2473"},
		"BenchmarkDataPath/tx-vnet-64" + p + "\t     200\t      7574 ns/op":                                {"DataPath/tx-vnet-64", "200", "7574"},
		"BenchmarkGuestToHost" + p + "   \t     200\t     15804 ns/op\t4146.81 MB/s":                       {"GuestToHost", "200", "15804"},
		"BenchmarkSequentialRead/1MiB-64KiB-segments" + p + " \t 3 \t 1592917.5 ns/op":                     {"SequentialRead/1MiB-64KiB-segments", "3", "1592917.5"},
	} {
		m := resultLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("%q: no match", line)
			continue
		}
		if got := benchName(m[1]); got != want[0] {
			t.Errorf("%q: name %q, want %q", line, got, want[0])
		}
		for i, w := range want[1:] {
			if m[i+2] != w {
				t.Errorf("%q: group %d = %q, want %q", line, i+2, m[i+2], w)
			}
		}
	}
	for _, line := range []string{"goos: linux", "PASS", "BenchmarkX-2 --- FAIL", "ok  \tpkg\t1.2s"} {
		if resultLine.MatchString(line) {
			t.Errorf("%q matched", line)
		}
	}
}
