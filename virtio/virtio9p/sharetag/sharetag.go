// Package sharetag holds the one rule for virtio-9p mount tags that the
// host (Config.Shares, the virtio-9p device) and the guest agent
// (corral.share=TAG:PATH) both apply, so a share the host accepts is one
// the guest can name on its kernel command line and mount. It has no
// dependencies: the guest agent links it.
package sharetag

import "fmt"

// MaxLen is the longest tag, in bytes. 31 is what older QEMU allowed and
// what the agent has always accepted; Linux itself sets no bound.
const MaxLen = 31

// Chars are the bytes a tag may hold: nothing a kernel command line, a
// mount table or a shell would split or quote.
const Chars = "A-Za-z0-9._-"

// Check reports a tag that is empty, longer than MaxLen or holds a byte
// outside Chars.
func Check(tag string) error {
	if tag == "" || len(tag) > MaxLen {
		return fmt.Errorf("mount tag %q is %d bytes: want 1..%d of [%s]", tag, len(tag), MaxLen, Chars)
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; !ok(c) {
			return fmt.Errorf("mount tag %q has %q at offset %d: want 1..%d of [%s]", tag, c, i, MaxLen, Chars)
		}
	}
	return nil
}

func ok(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}
