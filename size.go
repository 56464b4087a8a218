package corral

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// ParseSize parses a memory size such as "512M", "1G", "1536K" or a plain
// byte count. Suffixes K, M, G and T (optionally followed by "iB" or "B")
// are binary units, as in QEMU: 1G is 2^30 bytes.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(u, "IB")
	u = strings.TrimSuffix(u, "B")
	shift := uint(0)
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift != 0 {
			u = u[:n-1]
		}
	}
	if u == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	v, err := strconv.ParseUint(u, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: not a whole number with an optional K, M, G or T suffix", s)
	}
	if hi, lo := bits.Mul64(v, 1<<shift); hi != 0 || lo>>shift != v {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return v << shift, nil
}

// FormatSize renders a byte count in the largest binary unit that divides
// it exactly ("512M", "1G", "1536K", "100").
func FormatSize(n uint64) string {
	for _, u := range []struct {
		shift uint
		s     string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.s
		}
	}
	return strconv.FormatUint(n, 10)
}
