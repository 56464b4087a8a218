package corral

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]uint64{
		"512M": 512 << 20, "1G": 1 << 30, "1g": 1 << 30, "64MiB": 64 << 20, "2048K": 2 << 20,
		"4096": 4096, "1T": 1 << 40, " 256M ": 256 << 20, "16MB": 16 << 20,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1G", "1.5G", "1X", "99999999999999999999", "17179869184G"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	for _, n := range []uint64{512 << 20, 1 << 30, 1536 << 10, 100} {
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Errorf("round trip of %d via %q gave %d, %v", n, FormatSize(n), back, err)
		}
	}
}
