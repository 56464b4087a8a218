package agent

import (
	"errors"
	"reflect"
	"testing"

	"github.com/corral-vmm/corral/agent/proto"
)

// TestSetupReadsAsCmdline: a Setup request's strings are read by the
// command line's own parser, so each value gives the same configuration,
// or the same error, whichever way it comes.
func TestSetupReadsAsCmdline(t *testing.T) {
	for _, req := range []proto.Setup{
		{Root: "9p:r:rw", Shares: []string{"a:/x", "b:/y/:ro"}, Hostname: "h.example", Tmpfs: []string{"/t/", "/u"}},
		{Root: "blk:/dev/vda", Tmpfs: []string{"/my dir"}},
		{Hostname: "bad_name"},
		{Hostname: "-x"},
		{Tmpfs: []string{"rel"}},
		{Tmpfs: []string{"/"}},
		{Tmpfs: []string{"/x/.."}},
		{Tmpfs: []string{"/a:b"}},
		{Tmpfs: []string{"/x", "/x/"}},
		{Shares: []string{"a:/x"}, Tmpfs: []string{"/x"}},
		{Shares: []string{"a:/"}},
		{Shares: []string{"a:/x", "b:/x"}},
		{Root: "9p:a", Shares: []string{"a:/x"}},
		{Root: "nfs:x"},
	} {
		fromSetup, serr := SetupRequestConfig(&req)
		bc := BootConfig{Hostname: req.Hostname}
		var cmdline string
		if req.Root != "" {
			cmdline = quoteParam(RootPrefix + req.Root)
		}
		for _, v := range req.Shares {
			cmdline += " " + quoteParam(SharePrefix+v)
		}
		cmdline += " " + bc.Cmdline()
		for _, v := range req.Tmpfs {
			cmdline += " " + quoteParam(TmpfsPrefix+v)
		}
		fromCmdline, cerr := ParseCmdline(cmdline)
		if (serr == nil) != (cerr == nil) || serr != nil && serr.Error() != cerr.Error() {
			t.Errorf("%+v: Setup error %v, command line %q error %v", req, serr, cmdline, cerr)
			continue
		}
		if !reflect.DeepEqual(fromSetup, fromCmdline) {
			t.Errorf("%+v: Setup reads %+v, command line %q %+v", req, fromSetup, cmdline, fromCmdline)
		}
	}
}

func TestCheckMountPath(t *testing.T) {
	for in, want := range map[string]string{"/x/": "/x", "/a/../b": "/b", "/a b": "/a b", "//x": "/x"} {
		if got, err := CheckMountPath(in); got != want || err != nil {
			t.Errorf("CheckMountPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "rel", "/a:b", `/a"b`, "/a\x00b"} {
		if got, err := CheckMountPath(in); err == nil || errors.Is(err, ErrRootMount) {
			t.Errorf("CheckMountPath(%q) = %q, %v; want a path error", in, got, err)
		}
	}
	for _, in := range []string{"/", "/x/..", "/.."} {
		if _, err := CheckMountPath(in); !errors.Is(err, ErrRootMount) {
			t.Errorf("CheckMountPath(%q): %v, want ErrRootMount", in, err)
		}
	}
}
