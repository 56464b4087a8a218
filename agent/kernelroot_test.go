package agent

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// kernelRootCmdline is a kernel root's command line as agentvm makes it.
func kernelRootCmdline(keys ...string) string {
	return "console=ttyS0 " + strings.Join(keys, " ") + " " + strings.Join(KernelRootParams("corral-root", "/usr/bin/corral"), " ")
}

func TestKernelRootPlan(t *testing.T) {
	s, r := newRecSetup(nil)
	s.staging = KernelRootStaging
	r.cmdline = kernelRootCmdline("corral.root=9p:corral-root", "corral.share=a:/mnt/a:ro", "corral.hostname=box")
	s.initKernelRoot(s.baseMounts(baseMounts()[:1]), baseMounts()[1:])
	if err := s.err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"mount proc proc /proc",
		"mount tmpfs tmpfs /tmp mode=0700",
		"bind / /tmp/lower",
		"mount tmpfs tmpfs /tmp/rw mode=0755",
		"mount overlay overlay /tmp/root lowerdir=/tmp/lower,upperdir=/tmp/rw/upper,workdir=/tmp/rw/work",
		"move /proc /tmp/root/proc",
		"chdir /tmp/root",
		"move . /",
		"chroot .",
		"chdir /",
		// The other base file systems, in the new root.
		"mount sysfs sysfs /sys",
		"mount devtmpfs devtmpfs /dev mode=0755",
		"mount devpts devpts /dev/pts mode=0620,ptmxmode=0666",
		"mount tmpfs tmpfs /dev/shm mode=1777",
		"mount tmpfs tmpfs /tmp mode=1777",
		"mount tmpfs tmpfs /run mode=0755",
		"sethostname box",
		"mount 9p a /mnt/a ro " + ninepOptions,
	}
	if got := r.mounts(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !s.overlay9p {
		t.Error("overlay9p not set: the first command would not use host-resolved paths")
	}
	// Every base mount point is an opaque directory of the upper layer
	// before the overlay is mounted, the ones mounted after the switch too.
	ov := slices.Index(r.calls, want[4])
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run"} {
		if op := slices.Index(r.calls, "opaque /tmp/rw/upper"+d); op < 0 || op > ov {
			t.Errorf("%s: opaque at %d, overlay at %d", d, op, ov)
		}
	}
}

func TestKernelRootRefusesOtherRoots(t *testing.T) {
	for _, keys := range [][]string{
		{"corral.root=9p:corral-root:rw"},
		{"corral.setup=deferred"},
		{"corral.root=blk:/dev/vda"},
		{},
	} {
		s, r := newRecSetup(nil)
		s.staging = KernelRootStaging
		r.cmdline = kernelRootCmdline(keys...)
		s.initKernelRoot(s.baseMounts(baseMounts()[:1]), baseMounts()[1:])
		err := s.err()
		if err == nil || !strings.Contains(err.Error(), "the kernel mounted a 9p root") {
			t.Errorf("%q: %v, want the kernel root refused", keys, err)
		}
		if got := r.mounts(); !reflect.DeepEqual(got, []string{"mount proc proc /proc"}) {
			t.Errorf("%q: calls %q, want only /proc", keys, got)
		}
	}
}

func TestKernelRootParamsParse(t *testing.T) {
	// Everything after "--" is init's: the corral.* keys before it count.
	cfg, err := ParseCmdline(kernelRootCmdline("corral.root=9p:corral-root"))
	if err != nil || cfg.Root != (Root{Kind: Root9P, Source: "corral-root"}) {
		t.Errorf("ParseCmdline: %+v, %v", cfg, err)
	}
	p := KernelRootParams("t", "/x")
	if p[len(p)-2] != "--" || p[len(p)-1] != InitArg {
		t.Errorf("KernelRootParams ends %q, want -- %s", p[len(p)-2:], InitArg)
	}
}

func TestRootFSType(t *testing.T) {
	const initramfs = `1 1 0:2 / / rw - rootfs none rw
22 1 0:20 / /proc rw,nosuid - proc proc rw
`
	const kernelRoot = `1 1 0:2 / / rw - rootfs none rw
23 1 0:21 / / ro,relatime - 9p corral-root ro,access=client,trans=virtio
24 23 0:5 / /dev rw,relatime shared:2 - devtmpfs devtmpfs rw
25 23 0:22 / /proc rw - proc proc rw
`
	const switched = kernelRoot + `40 23 0:30 / / rw,relatime - overlay overlay rw,lowerdir=/tmp/lower
`
	for _, tc := range []struct{ mountinfo, want string }{
		{initramfs, "rootfs"},
		{kernelRoot, "9p"},
		{switched, "overlay"},
		{"", ""},
		{"garbage\n1 2 3 4 / x - \n", ""},
	} {
		if got := rootFSType(tc.mountinfo); got != tc.want {
			t.Errorf("rootFSType(%q) = %q, want %q", tc.mountinfo, got, tc.want)
		}
	}
}
