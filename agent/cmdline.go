package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/corral-vmm/corral/agent/proto"
	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

// Kernel command-line keys the agent reads as PID 1.
const (
	// RootPrefix names the guest's root: corral.root=9p:TAG (a virtio-9p
	// share, read-only, under a tmpfs overlay), corral.root=9p:TAG:rw (the
	// share itself, read-write, no overlay: writes reach the host),
	// corral.root=blk:DEV (an ext4 block device, read-only under a tmpfs
	// overlay) or corral.root=initramfs (stay in the initramfs, as with no
	// key). The last one on the line wins.
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
	// HostnamePrefix sets the guest's host name: corral.hostname=NAME
	// (see CheckHostname). The last one on the line wins.
	HostnamePrefix = "corral.hostname="
	// TmpfsPrefix mounts a fresh tmpfs at PATH in the final root, after
	// the root switch: corral.tmpfs=PATH, repeatable; paths follow the
	// rules of share paths.
	TmpfsPrefix = "corral.tmpfs="
	// MaxHostname is the longest host name (the kernel's HOST_NAME_MAX).
	MaxHostname = 64
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
// block device's path, empty for RootInitramfs. Writable (Root9P only)
// mounts the share read-write as the root itself, without an overlay.
type Root struct {
	Kind     RootKind
	Source   string
	Writable bool
}

// String returns the value of corral.root= that means r.
func (r Root) String() string {
	switch r.Kind {
	case Root9P:
		if r.Writable {
			return "9p:" + r.Source + ":rw"
		}
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

// String is s as corral.share= and a Setup's Shares carry it,
// TAG:PATH[:ro], which parseShare reads back.
func (s Share) String() string {
	if s.ReadOnly {
		return s.Tag + ":" + s.Path + ":ro"
	}
	return s.Tag + ":" + s.Path
}

// BootConfig is what the kernel command line asks of the agent.
type BootConfig struct {
	Root   Root
	Shares []Share
	// Hostname, if set, is the guest's host name (corral.hostname=).
	Hostname string
	// Tmpfs are the clean absolute paths where a fresh tmpfs is mounted
	// in the final root (corral.tmpfs=).
	Tmpfs []string
	// Deferred: corral.setup=deferred; Root, Shares, Hostname and Tmpfs
	// come later, in a Setup request.
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
		fields = append(fields, quoteParam(SharePrefix+s.String()))
	}
	if c.Hostname != "" {
		fields = append(fields, quoteParam(HostnamePrefix+c.Hostname))
	}
	for _, p := range c.Tmpfs {
		fields = append(fields, quoteParam(TmpfsPrefix+p))
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
// mount at a time. Share and tmpfs paths follow CheckMountPath, and no two
// mounts share one (Check). Host names follow CheckHostname.
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
		ok, err := c.set(p)
		if err != nil {
			return BootConfig{}, err
		}
		rootOrShares = rootOrShares || ok
	}
	if c.Deferred && rootOrShares {
		return BootConfig{}, fmt.Errorf("agent: %s%s with %s, %s, %s or %s on the command line: a deferred setup takes them from the host's Setup request", SetupPrefix, SetupDeferred, RootPrefix, SharePrefix, HostnamePrefix, TmpfsPrefix)
	}
	if err := c.Check(); err != nil {
		return BootConfig{}, err
	}
	return c, nil
}

// set reads parameter p into c when it is corral.root=, corral.share=,
// corral.hostname= or corral.tmpfs= (ok), the one reading of them for the
// command line and Setup requests alike; errors name the parameter.
func (c *BootConfig) set(p string) (ok bool, err error) {
	if v, ok := strings.CutPrefix(p, RootPrefix); ok {
		r, err := parseRoot(v)
		if err != nil {
			return true, err
		}
		c.Root = r
	} else if v, ok := strings.CutPrefix(p, SharePrefix); ok {
		s, err := parseShare(v)
		if err != nil {
			return true, err
		}
		c.Shares = append(c.Shares, s)
	} else if v, ok := strings.CutPrefix(p, HostnamePrefix); ok {
		if err := CheckHostname(v); err != nil {
			return true, fmt.Errorf("agent: %s: %w", param(HostnamePrefix, v), err)
		}
		c.Hostname = v
	} else if v, ok := strings.CutPrefix(p, TmpfsPrefix); ok {
		t, err := CheckMountPath(v)
		if errors.Is(err, ErrRootMount) {
			return true, fmt.Errorf("agent: %s: a tmpfs cannot be the root", param(TmpfsPrefix, v))
		}
		if err != nil {
			return true, fmt.Errorf("agent: %s: %w", param(TmpfsPrefix, v), err)
		}
		c.Tmpfs = append(c.Tmpfs, t)
	} else {
		return false, nil
	}
	return true, nil
}

// SetupConfig returns what a Setup request asks for: root is the value of
// corral.root= ("" keeps the initramfs), each share one of corral.share=,
// checked as ParseCmdline checks them; errors name the parameters.
func SetupConfig(root string, shares []string) (BootConfig, error) {
	return SetupRequestConfig(&proto.Setup{Root: root, Shares: shares})
}

// SetupRequestConfig returns what Setup request req asks for: its strings
// are values of corral.root= ("" keeps the initramfs), corral.share=,
// corral.hostname= ("" sets none) and corral.tmpfs=, read and checked as
// ParseCmdline reads and checks them.
func SetupRequestConfig(req *proto.Setup) (BootConfig, error) {
	params := make([]string, 0, 2+len(req.Shares)+len(req.Tmpfs))
	if req.Root != "" {
		params = append(params, RootPrefix+req.Root)
	}
	for _, v := range req.Shares {
		params = append(params, SharePrefix+v)
	}
	if req.Hostname != "" {
		params = append(params, HostnamePrefix+req.Hostname)
	}
	for _, v := range req.Tmpfs {
		params = append(params, TmpfsPrefix+v)
	}
	var c BootConfig
	for _, p := range params {
		if _, err := c.set(p); err != nil {
			return BootConfig{}, err
		}
	}
	if err := c.Check(); err != nil {
		return BootConfig{}, err
	}
	return c, nil
}

// Check refuses a mount tag used twice and two mounts (shares or tmpfs)
// at one path, as the agent does before it mounts anything; the host
// checks its configuration with it before the boot.
func (c BootConfig) Check() error {
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
	for _, p := range c.Tmpfs {
		if paths[p] {
			return fmt.Errorf("agent: %s: %q already has a share or tmpfs", param(TmpfsPrefix, p), p)
		}
		paths[p] = true
	}
	return nil
}

// CheckHostname accepts a host name of at most MaxHostname bytes made of
// dot-separated RFC 1123 labels: 1..63 of [A-Za-z0-9-], not starting or
// ending with '-'.
func CheckHostname(name string) error {
	if name == "" || len(name) > MaxHostname {
		return fmt.Errorf("host name %q is %d bytes, want 1..%d", name, len(name), MaxHostname)
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("host name %q has label %q: want dot-separated labels of 1..63 of [A-Za-z0-9-], not starting or ending with '-'", name, l)
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("host name %q has %q: want dot-separated labels of [A-Za-z0-9-]", name, c)
			}
		}
	}
	return nil
}

// ErrRootMount is CheckMountPath's error for a path that is the root
// itself, which a share or tmpfs cannot be.
var ErrRootMount = errors.New("a mount cannot be the root")

// CheckMountPath checks the guest path of a share or tmpfs as the agent
// does, and returns it cleaned: absolute, without ':', '"' or NUL (the
// parameters' syntax), and not "/" (ErrRootMount).
func CheckMountPath(p string) (string, error) {
	if !filepath.IsAbs(p) || strings.ContainsAny(p, `:"`) || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("path %q, want an absolute path without ':' or '\"'", p)
	}
	p = filepath.Clean(p)
	if p == "/" {
		return "", ErrRootMount
	}
	return p, nil
}

func parseRoot(v string) (Root, error) {
	if v == "initramfs" {
		return Root{}, nil
	}
	kind, src, _ := strings.Cut(v, ":")
	switch kind {
	case "9p":
		tag, rw := strings.CutSuffix(src, ":rw")
		if err := sharetag.Check(tag); err != nil {
			return Root{}, fmt.Errorf("agent: %s: %w", param(RootPrefix, v), err)
		}
		return Root{Kind: Root9P, Source: tag, Writable: rw}, nil
	case "blk":
		if !strings.HasPrefix(src, "/dev/") || filepath.Clean(src) != src || !deviceName(src[len("/dev/"):]) {
			return Root{}, fmt.Errorf("agent: %s: device %q, want a clean path under /dev/ of [A-Za-z0-9._-/]", param(RootPrefix, v), src)
		}
		return Root{Kind: RootBlock, Source: src}, nil
	}
	return Root{}, fmt.Errorf("agent: %s: want 9p:TAG[:rw], blk:/dev/DEVICE or initramfs", param(RootPrefix, v))
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
	p, err := CheckMountPath(s.Path)
	if errors.Is(err, ErrRootMount) {
		return Share{}, fmt.Errorf("agent: %s: a share cannot be the root (use %s9p:%s)", param(SharePrefix, v), RootPrefix, tag)
	}
	if err != nil {
		return Share{}, fmt.Errorf("agent: %s: %w", param(SharePrefix, v), err)
	}
	s.Path = p
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
