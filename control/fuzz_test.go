package control

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeStop: any body decodes to a timeout in [0, MaxStopTimeout] or
// to an error, never a panic or an out-of-range value.
func FuzzDecodeStop(f *testing.F) {
	for _, s := range []string{"", "{}", `{"timeout":"10s"}`, `{"timeout":"-1s"}`, `{"timeout":"1h0m1s"}`,
		`{"timeout":10}`, `{"timeout":"1s"} {}`, `{"x":1}`, "null", `{"timeout":null}`, "\xff", strings.Repeat(" ", 5000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeStop(bytes.NewReader(b))
		if err != nil {
			if d != 0 || err.Error() == "" {
				t.Fatalf("error %v with timeout %v", err, d)
			}
			return
		}
		if d < 0 || d > MaxStopTimeout {
			t.Fatalf("timeout %v out of range", d)
		}
		if len(b) > maxBody {
			t.Fatalf("accepted a %d-byte body", len(b))
		}
		_ = time.Duration(d)
		_ = DecodeEmpty(bytes.NewReader(b))
	})
}
