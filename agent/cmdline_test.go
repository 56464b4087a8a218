package agent

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    BootConfig
	}{
		{"", BootConfig{}},
		{"console=ttyS0 quiet\n", BootConfig{}},
		{"console=ttyS0 corral.root=9p:root corral.share=src:/src", BootConfig{Root: Root{Kind: Root9P, Source: "root"}, Shares: []Share{{Tag: "src", Path: "/src"}}}},
		{"corral.root=blk:/dev/vda", BootConfig{Root: Root{Kind: RootBlock, Source: "/dev/vda"}}},
		{"corral.root=blk:/dev/disk/by-id/virtio-x1", BootConfig{Root: Root{Kind: RootBlock, Source: "/dev/disk/by-id/virtio-x1"}}},
		// The last corral.root= wins, so $CORRAL_CMDLINE can override.
		{"corral.root=9p:root corral.root=initramfs", BootConfig{}},
		{"corral.root=initramfs corral.root=blk:/dev/vdb", BootConfig{Root: Root{Kind: RootBlock, Source: "/dev/vdb"}}},
		{"corral.share=a:/mnt/a/:ro corral.share=b:/mnt/a/b", BootConfig{Shares: []Share{{"a", "/mnt/a", true}, {"b", "/mnt/a/b", false}}}},
		// Quoted as the kernel unquotes: white space inside, quotes dropped.
		{`corral.share="home:/home/my user" x`, BootConfig{Shares: []Share{{Tag: "home", Path: "/home/my user"}}}},
		{`"corral.share=home:/a	b:ro"`, BootConfig{Shares: []Share{{Tag: "home", Path: "/a\tb", ReadOnly: true}}}},
		// After "--" the parameters are init's.
		{"corral.share=a:/a -- corral.root=9p:x", BootConfig{Shares: []Share{{Tag: "a", Path: "/a"}}}},
		// Keys must match whole: "xcorral.root=" is some other parameter.
		{"xcorral.root=bad corral.rootfs=bad corral.share", BootConfig{}},
	} {
		got, err := ParseCmdline(tc.cmdline)
		if err != nil {
			t.Errorf("ParseCmdline(%q): %v", tc.cmdline, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCmdline(%q) = %+v, want %+v", tc.cmdline, got, tc.want)
		}
	}
}

func TestParseCmdlineErrors(t *testing.T) {
	for cmdline, want := range map[string]string{
		"corral.root=":                                    "want 9p:TAG[:rw], blk:/dev/DEVICE or initramfs",
		"corral.root=ext4:/dev/vda":                       "want 9p:TAG",
		"corral.root=9p:":                                 "is 0 bytes",
		"corral.root=9p:a/b":                              `has '/'`,
		"corral.root=blk:vda":                             "want a clean path under /dev/",
		"corral.root=blk:/dev/../etc/passwd":              "want a clean path under /dev/",
		"corral.root=blk:/tmp/img":                        "want a clean path under /dev/",
		"corral.share=home":                               "want TAG:PATH[:ro]",
		"corral.share=:/x":                                "is 0 bytes",
		"corral.share=t:rel":                              "want an absolute path",
		"corral.share=t:/x:rw":                            "want an absolute path",
		"corral.share=t:/":                                "cannot be the root",
		"corral.share=t:/a/..":                            "cannot be the root",
		"corral.share=a:/x corral.share=a:/y":             `mount tag "a" is already shared at /x`,
		"corral.root=9p:r corral.share=r:/y":              `mount tag "r" is already the root`,
		"corral.share=a:/x corral.share=b:/x/":            "two shares at \"/x\"",
		"corral.share=" + strings.Repeat("t", 32) + ":/x": "is 32 bytes",
	} {
		_, err := ParseCmdline(cmdline)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCmdline(%q) = %v, want an error with %q", cmdline, err, want)
		}
		if err != nil && (!strings.HasPrefix(err.Error(), "agent: ") || strings.Contains(err.Error(), "\n")) {
			t.Errorf("ParseCmdline(%q) error %q: want one line starting \"agent: \"", cmdline, err)
		}
	}
}

func TestCmdlineRoundTrip(t *testing.T) {
	c := BootConfig{Root: Root{Kind: Root9P, Source: "root"}, Shares: []Share{{"a", "/with space", true}, {"b", "/nb\xa0sp/x", false}, {"c", "/plain", false}}}
	line := "console=ttyS0 " + c.Cmdline() + " quiet"
	got, err := ParseCmdline(line)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("ParseCmdline(%q) = %+v, %v; want %+v", line, got, err, c)
	}
	if s := (BootConfig{}).Cmdline(); s != "" {
		t.Errorf("empty BootConfig.Cmdline() = %q", s)
	}
}

// FuzzParseCmdline checks that whatever ParseCmdline accepts is valid by
// the rules the mount code relies on, and survives Cmdline and a reparse.
func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 corral.root=9p:root corral.share=src:/src:ro")
	f.Add(`corral.share="t:/a b" corral.root=blk:/dev/vda -- corral.share=x:/y`)
	f.Add(`corral.root=9p:r:rw corral.hostname=h-1.x corral.tmpfs="/a b" corral.tmpfs=/c/ corral.share=s:/c/d`)
	f.Fuzz(func(t *testing.T, cmdline string) {
		c, err := ParseCmdline(cmdline)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		tags := map[string]bool{}
		switch c.Root.Kind {
		case Root9P:
			if sharetag.Check(c.Root.Source) != nil {
				t.Fatalf("bad root tag %q", c.Root.Source)
			}
			tags[c.Root.Source] = true
		case RootBlock:
			if c.Root.Writable {
				t.Fatalf("writable block root %q", c.Root.Source)
			}
			if !strings.HasPrefix(c.Root.Source, "/dev/") || slices.Contains(strings.Split(c.Root.Source, "/"), "..") || strings.ContainsFunc(c.Root.Source, func(r rune) bool { return r <= ' ' || r > '~' }) {
				t.Fatalf("bad root device %q", c.Root.Source)
			}
		case RootInitramfs:
			if c.Root.Source != "" || c.Root.Writable {
				t.Fatalf("initramfs root with source %q", c.Root.Source)
			}
		default:
			t.Fatalf("root kind %d", c.Root.Kind)
		}
		for _, s := range c.Shares {
			if sharetag.Check(s.Tag) != nil || tags[s.Tag] {
				t.Fatalf("bad or repeated share tag %q", s.Tag)
			}
			tags[s.Tag] = true
			if !strings.HasPrefix(s.Path, "/") || s.Path == "/" || strings.ContainsAny(s.Path, ":\"\x00") || strings.Contains(s.Path+"/", "/../") {
				t.Fatalf("bad share path %q", s.Path)
			}
		}
		paths := map[string]bool{}
		for _, s := range c.Shares {
			paths[s.Path] = true
		}
		for _, p := range c.Tmpfs {
			if !strings.HasPrefix(p, "/") || p == "/" || strings.ContainsAny(p, ":\"\x00") || strings.Contains(p+"/", "/../") || strings.Contains(p+"/", "/./") || strings.Contains(p, "//") || paths[p] {
				t.Fatalf("bad or repeated tmpfs path %q", p)
			}
			paths[p] = true
		}
		if c.Hostname != "" && CheckHostname(c.Hostname) != nil {
			t.Fatalf("bad host name %q", c.Hostname)
		}
		again, err := ParseCmdline(c.Cmdline())
		if err != nil {
			t.Fatalf("reparsing %q: %v", c.Cmdline(), err)
		}
		if !reflect.DeepEqual(again, c) && !(len(c.Shares) == 0 && len(again.Shares) == 0 && again.Root == c.Root &&
			again.Hostname == c.Hostname && reflect.DeepEqual(again.Tmpfs, c.Tmpfs)) {
			t.Fatalf("reparse of %q = %+v, want %+v", c.Cmdline(), again, c)
		}
	})
}

func TestShareString(t *testing.T) {
	for _, s := range []Share{{Tag: "a", Path: "/x"}, {Tag: "corral-share1", Path: "/data/b", ReadOnly: true}} {
		got, err := parseShare(s.String())
		if err != nil || got != s {
			t.Errorf("parseShare(%q) = %+v, %v; want %+v", s.String(), got, err, s)
		}
	}
	if got := (Share{Tag: "t", Path: "/p", ReadOnly: true}).String(); got != "t:/p:ro" {
		t.Errorf("String() = %q, want t:/p:ro", got)
	}
}
