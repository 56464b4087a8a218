package guests

import (
	"strings"
	"testing"
)

const countHeader = "corral-guest: ready\ncount: step 10 limit 35 buf 0x10c000 checksum 0xfeed\n"

func TestParseCountAndCheck(t *testing.T) {
	for _, tc := range []struct {
		name, console string
		parseErr      string
		checkErr      string
	}{
		{"done", countHeader + "count 10 mem ok\ncount 20 mem ok\ncount 30 mem ok\ncount 35 mem ok\ncount: done 35\n", "", ""},
		{"mid-way", countHeader + "noise\ncount 20 mem ok\r\ncount 30 mem ok\n", "", ""},
		{"gap", countHeader + "count 10 mem ok\ncount 30 mem ok\n", "", "30 follows 10, want 20"},
		{"backwards", countHeader + "count 20 mem ok\ncount 10 mem ok\n", "", "10 follows 20"},
		{"not-multiple", countHeader + "count 15 mem ok\ncount 25 mem ok\n", "", "not a multiple of step 10"},
		{"bad", countHeader + "count 10 mem ok\ncount 20 mem BAD 0x1\n", "", "memory check failed at [20]"},
		{"one", countHeader + "count 10 mem ok\n", "", "1 count lines"},
		{"done-short", countHeader + "count 10 mem ok\ncount 20 mem ok\ncount: done 35\n", "", "last count is 20"},
		{"limit-early", countHeader + "count 10 mem ok\ncount 20 mem ok\ncount 35 mem ok\n", "", "35 follows 20"},
		{"no-header", "count 10 mem ok\n", "no \"count: step\" line", ""},
		{"malformed", countHeader + "count 10 mem maybe\n", "malformed line", ""},
		{"bad-number", countHeader + "count x mem ok\n", "malformed line", ""},
		{"wrong-done", countHeader + "count: done 36\n", "does not match limit 35", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseCount(tc.console)
			if tc.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
					t.Fatalf("ParseCount error %v, want %q", err, tc.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Step != 10 || r.Limit != 35 || r.Buf != 0x10c000 || r.Checksum != 0xfeed {
				t.Errorf("header parsed as %+v", r)
			}
			err = r.Check()
			if tc.checkErr == "" && err != nil || tc.checkErr != "" && (err == nil || !strings.Contains(err.Error(), tc.checkErr)) {
				t.Errorf("Check() = %v, want %q", err, tc.checkErr)
			}
		})
	}
}

func TestCountScenarioVerify(t *testing.T) {
	sc := CountScenario{Name: "t", Bad: []uint64{30}}
	good := countHeader + "count 10 mem ok\ncount 20 mem ok\ncount 30 mem BAD 0x1\ncount 35 mem ok\ncount: done 35\n"
	if err := sc.Verify(good); err != nil {
		t.Errorf("Verify: %v", err)
	}
	for console, want := range map[string]string{
		strings.Replace(good, "30 mem BAD 0x1", "30 mem ok", 1): "failed at [], want [30]",
		strings.Replace(good, "count: done 35\n", "", 1):        "no \"count: done\"",
		strings.Replace(good, "count 10 mem ok\n", "", 1):       "do not start at step 10",
	} {
		if err := sc.Verify(console); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Verify error %v, want %q", err, want)
		}
	}
}

// FuzzParseCount: console output is the guest's; parsing it never panics,
// and Check never panics on what parses.
func FuzzParseCount(f *testing.F) {
	f.Add(countHeader + "count 10 mem ok\ncount 20 mem BAD 0x1\ncount 35 mem ok\ncount: done 35\n")
	f.Fuzz(func(t *testing.T, console string) {
		r, err := ParseCount(console)
		if err == nil {
			_ = r.Check()
		}
	})
}
