package sharetag

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tag := range []string{"a", "home", "src_1", "A.b-C", strings.Repeat("t", MaxLen)} {
		if err := Check(tag); err != nil {
			t.Errorf("Check(%q) = %v", tag, err)
		}
	}
	for tag, want := range map[string]string{
		"":                            "is 0 bytes",
		strings.Repeat("t", MaxLen+1): "is 32 bytes",
		"a b":                         `has ' ' at offset 1`,
		"a:b":                         `has ':' at offset 1`,
		"a/b":                         `has '/' at offset 1`,
		"a,ro":                        `has ',' at offset 1`,
		"tag\x00":                     `has '\x00' at offset 3`,
		"é":                           `has 'Ã' at offset 0`,
	} {
		err := Check(tag)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want an error with %q", tag, err, want)
		}
	}
}
