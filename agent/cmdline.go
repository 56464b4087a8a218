package agent

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

// Kernel command-line keys the agent reads as PID 1.
const (
	// RootPrefix names the guest's root: corral.root=9p:TAG (a virtio-9p
	// share, read-only, under a tmpfs overlay), corral.root=blk:DEV (an ext4
	// block device, likewise) or corral.root=initramfs (stay in the
	// initramfs, as with no key). The last one on the line wins.
	RootPrefix = "corral.root="
	// SharePrefix opens a kernel command-line parameter naming a 9p share:
	// corral.share=TAG:PATH[:ro] mounts the virtio-9p device with mount tag
	// TAG at PATH in the final root, read-only with ":ro".
	SharePrefix = "corral.share="
	// SetupPrefix says when PID 1 makes the root switch and share mounts:
	// corral.setup=boot (the default) at boot, from corral.root= and
	// corral.share=; corral.setup=deferred when the host asks, in a Setup
	// request (agent/proto), so that a snapshot can be taken of the booted
	// agent before any 9p share is mounted (warm corral exec).
	SetupPrefix = "corral.setup="
	// SetupDeferred is the value of SetupPrefix that defers setup.
	SetupDeferred = "deferred"
)

// RootKind is where the guest's root file system comes from.
type RootKind int

// Root kinds.
const (
	RootInitramfs RootKind = iota // stay in the initramfs
	Root9P                        // a virtio-9p share, by mount tag
	RootBlock                     // an ext4 block device, by path
)

// Root is the guest's root file system: Source is the 9p mount tag or the
// block device's path, empty for RootInitramfs.
type Root struct {
	Kind   RootKind
	Source string
}

// String returns the value of corral.root= that means r.
func (r Root) String() string {
	switch r.Kind {
	case Root9P:
		return "9p:" + r.Source
	case RootBlock:
		return "blk:" + r.Source
	}
	return "initramfs"
}

// Share is a 9p share to mount.
type Share struct {
	Tag      string
	Path     string
	ReadOnly bool
}

// BootConfig is what the kernel command line asks of the agent.
type BootConfig struct {
	Root   Root
	Shares []Share
	// Deferred: corral.setup=deferred; Root and Shares come later, in a
	// Setup request.
	Deferred bool
}

// Cmdline returns the kernel command-line parameters that mean c, quoted
// as the kernel unquotes them; ParseCmdline reads them back.
func (c BootConfig) Cmdline() string {
	var fields []string
	if c.Deferred {
		fields = append(fields, SetupPrefix+SetupDeferred)
	}
	if c.Root.Kind != RootInitramfs {
		fields = append(fields, quoteParam(RootPrefix+c.Root.String()))
	}
	for _, s := range c.Shares {
		v := SharePrefix + s.Tag + ":" + s.Path
		if s.ReadOnly {
			v += ":ro"
		}
		fields = append(fields, quoteParam(v))
	}
	return strings.Join(fields, " ")
}

// quoteParam quotes p when it holds a byte the kernel splits on.
func quoteParam(p string) string {
	for i := 0; i < len(p); i++ {
		if isKernelSpace(p[i]) {
			return `"` + p + `"`
		}
	}
	return p
}

// isKernelSpace is the kernel's isspace() (lib/ctype.c: Latin-1, so 0xa0
// too), which ends a parameter outside double quotes.
func isKernelSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0xa0:
		return true
	}
	return false
}

// splitCmdline splits a kernel command line into parameters as the kernel's
// next_arg does: at white space outside double quotes, which it drops. It
// stops at a bare "--": what follows is init's, not the kernel's.
func splitCmdline(cmdline string) []string {
	var params []string
	var cur strings.Builder
	inQuote, started := false, false
	flush := func() bool {
		if !started {
			return true
		}
		p := cur.String()
		cur.Reset()
		started = false
		if p == "--" {
			return false
		}
		params = append(params, p)
		return true
	}
	for i := 0; i < len(cmdline); i++ {
		switch c := cmdline[i]; {
		case c == '"':
			inQuote, started = !inQuote, true
		case !inQuote && isKernelSpace(c):
			if !flush() {
				return params
			}
		default:
			cur.WriteByte(c)
			started = true
		}
	}
	flush()
	return params
}

// ParseCmdline returns what the corral.* parameters of a kernel command line
// ask for; other parameters are ignored. Tags follow sharetag.Check (the
// host's rule too), and no tag is used twice: a virtio-9p device serves one
// mount at a time. Share paths are absolute, without ':' or '"', not "/".
func ParseCmdline(cmdline string) (BootConfig, error) {
	var c BootConfig
	var rootOrShares bool
	for _, p := range splitCmdline(cmdline) {
		if v, ok := strings.CutPrefix(p, SetupPrefix); ok {
			switch v {
			case "boot":
				c.Deferred = false
			case SetupDeferred:
				c.Deferred = true
			default:
				return BootConfig{}, fmt.Errorf("agent: %s: want boot or %s", param(SetupPrefix, v), SetupDeferred)
			}
			continue
		}
		if strings.HasPrefix(p, RootPrefix) || strings.HasPrefix(p, SharePrefix) {
			rootOrShares = true
		}
		if v, ok := strings.CutPrefix(p, RootPrefix); ok {
			r, err := parseRoot(v)
			if err != nil {
				return BootConfig{}, err
			}
			c.Root = r
		} else if v, ok := strings.CutPrefix(p, SharePrefix); ok {
			s, err := parseShare(v)
			if err != nil {
				return BootConfig{}, err
			}
			c.Shares = append(c.Shares, s)
		}
	}
	if c.Deferred && rootOrShares {
		return BootConfig{}, fmt.Errorf("agent: %s%s with %s or %s on the command line: a deferred setup takes the root and shares from the host's Setup request", SetupPrefix, SetupDeferred, RootPrefix, SharePrefix)
	}
	if err := c.checkTags(); err != nil {
		return BootConfig{}, err
	}
	return c, nil
}

// SetupConfig returns what a Setup request asks for: root is the value of
// corral.root= ("" keeps the initramfs), each share one of corral.share=,
// checked as ParseCmdline checks them; errors name the parameters.
func SetupConfig(root string, shares []string) (BootConfig, error) {
	var c BootConfig
	if root != "" {
		r, err := parseRoot(root)
		if err != nil {
			return BootConfig{}, err
		}
		c.Root = r
	}
	for _, v := range shares {
		s, err := parseShare(v)
		if err != nil {
			return BootConfig{}, err
		}
		c.Shares = append(c.Shares, s)
	}
	if err := c.checkTags(); err != nil {
		return BootConfig{}, err
	}
	return c, nil
}

// checkTags refuses a mount tag used twice and two shares at one path.
func (c BootConfig) checkTags() error {
	tags := map[string]string{}
	if c.Root.Kind == Root9P {
		tags[c.Root.Source] = "the root"
	}
	paths := map[string]bool{}
	for _, s := range c.Shares {
		if other, ok := tags[s.Tag]; ok {
			return fmt.Errorf("agent: %s: mount tag %q is already %s: a virtio-9p device serves one mount", param(SharePrefix, s.Tag+":"+s.Path), s.Tag, other)
		}
		tags[s.Tag] = "shared at " + s.Path
		if paths[s.Path] {
			return fmt.Errorf("agent: %s: two shares at %q", param(SharePrefix, s.Tag+":"+s.Path), s.Path)
		}
		paths[s.Path] = true
	}
	return nil
}

func parseRoot(v string) (Root, error) {
	if v == "initramfs" {
		return Root{}, nil
	}
	kind, src, _ := strings.Cut(v, ":")
	switch kind {
	case "9p":
		if err := sharetag.Check(src); err != nil {
			return Root{}, fmt.Errorf("agent: %s: %w", param(RootPrefix, v), err)
		}
		return Root{Root9P, src}, nil
	case "blk":
		if !strings.HasPrefix(src, "/dev/") || filepath.Clean(src) != src || !deviceName(src[len("/dev/"):]) {
			return Root{}, fmt.Errorf("agent: %s: device %q, want a clean path under /dev/ of [A-Za-z0-9._-/]", param(RootPrefix, v), src)
		}
		return Root{RootBlock, src}, nil
	}
	return Root{}, fmt.Errorf("agent: %s: want 9p:TAG, blk:/dev/DEVICE or initramfs", param(RootPrefix, v))
}

func parseShare(v string) (Share, error) {
	tag, rest, ok := strings.Cut(v, ":")
	if !ok {
		return Share{}, fmt.Errorf("agent: %s: want TAG:PATH[:ro]", param(SharePrefix, v))
	}
	s := Share{Tag: tag, Path: rest}
	if p, ok := strings.CutSuffix(rest, ":ro"); ok {
		s.Path, s.ReadOnly = p, true
	}
	if err := sharetag.Check(tag); err != nil {
		return Share{}, fmt.Errorf("agent: %s: %w", param(SharePrefix, v), err)
	}
	if !filepath.IsAbs(s.Path) || strings.ContainsAny(s.Path, `:"`) || strings.ContainsRune(s.Path, 0) {
		return Share{}, fmt.Errorf("agent: %s: path %q, want an absolute path without ':' or '\"'", param(SharePrefix, v), s.Path)
	}
	s.Path = filepath.Clean(s.Path)
	if s.Path == "/" {
		return Share{}, fmt.Errorf("agent: %s: a share cannot be the root (use %s9p:%s)", param(SharePrefix, v), RootPrefix, tag)
	}
	return s, nil
}

// ParseShares returns the shares named on a kernel command line (see
// ParseCmdline).
func ParseShares(cmdline string) ([]Share, error) {
	c, err := ParseCmdline(cmdline)
	return c.Shares, err
}

// deviceName reports whether name, a path under /dev/, has only the
// characters device names use and no ".." element (Clean keeps a leading
// one only for relative paths, and "..x" is a name, not a way up).
func deviceName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-/", c)) {
			return false
		}
	}
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return false
		}
	}
	return true
}

// param is a command-line parameter for an error message: as written, or
// quoted when it holds characters that would break the one-line message
// (the kernel's quoting lets a value carry newlines).
func param(prefix, v string) string {
	p := prefix + v
	if strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r > '~' }) {
		return strconv.Quote(p)
	}
	return p
}
