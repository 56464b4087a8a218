package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/proto"
)

// recOps records setup's system calls; fail maps "fstype target" (mounts),
// "mkdir DIR", "chdir DIR" or "chroot DIR" to the errno it returns.
type recOps struct {
	calls   []string
	fail    map[string]error
	cmdline string // /proc/cmdline
}

func (r *recOps) Mount(source, target, fstype string, flags uintptr, data string) error {
	var c string
	if flags&unix.MS_MOVE != 0 {
		c = "move " + source + " " + target
	} else if flags&unix.MS_BIND != 0 {
		c = "bind " + source + " " + target
	} else {
		c = fmt.Sprintf("mount %s %s %s", fstype, source, target)
		if flags&unix.MS_RDONLY != 0 {
			c += " ro"
		}
		if data != "" {
			c += " " + data
		}
	}
	r.calls = append(r.calls, c)
	if err := r.fail[fstype+" "+target]; err != nil {
		return err
	}
	return r.fail[strings.Fields(c)[0]+" "+target]
}

func (r *recOps) Mkdir(dir string, mode os.FileMode, noLink bool) error {
	r.calls = append(r.calls, fmt.Sprintf("mkdir %s %v", dir, mode))
	return r.fail["mkdir "+dir]
}

func (r *recOps) Chdir(dir string) error {
	r.calls = append(r.calls, "chdir "+dir)
	return r.fail["chdir "+dir]
}

func (r *recOps) XattrProbe(dir string) error {
	r.calls = append(r.calls, "xattr "+dir)
	return r.fail["xattr "+dir]
}

func (r *recOps) Opaque(dir string) error {
	r.calls = append(r.calls, "opaque "+dir)
	return r.fail["opaque "+dir]
}

func (r *recOps) Chroot(dir string) error {
	r.calls = append(r.calls, "chroot "+dir)
	return r.fail["chroot "+dir]
}

func (r *recOps) Sethostname(name string) error {
	r.calls = append(r.calls, "sethostname "+name)
	return r.fail["sethostname "+name]
}

func (r *recOps) ReadFile(name string) ([]byte, error) {
	if name != "/proc/cmdline" {
		return nil, fmt.Errorf("recOps: no file %s", name)
	}
	r.calls = append(r.calls, "read "+name)
	if err := r.fail["read "+name]; err != nil {
		return nil, err
	}
	return []byte(r.cmdline), nil
}

// mounts returns the mount and move calls only.
func (r *recOps) mounts() []string {
	var out []string
	for _, c := range r.calls {
		if !strings.HasPrefix(c, "mkdir ") && !strings.HasPrefix(c, "xattr ") && !strings.HasPrefix(c, "opaque ") && !strings.HasPrefix(c, "read ") {
			out = append(out, c)
		}
	}
	return out
}

func newRecSetup(fail map[string]error) (*setup, *recOps) {
	r := &recOps{fail: fail}
	return &setup{sys: r, log: slog.New(slog.DiscardHandler), staging: "/st"}, r
}

// apiMounts is what a successful baseMounts returns.
func apiMounts(t *testing.T) []mount {
	s, r := newRecSetup(nil)
	api := s.baseMounts(baseMounts())
	if err := s.err(); err != nil || len(r.mounts()) != 7 {
		t.Fatalf("baseMounts: %v, %q", err, r.mounts())
	}
	return api
}

func TestSwitchRootPlan(t *testing.T) {
	s, r := newRecSetup(nil)
	cfg, err := ParseCmdline("corral.root=9p:root corral.share=b:/mnt/a/b corral.share=a:/mnt/a:ro")
	if err != nil {
		t.Fatal(err)
	}
	s.apply(cfg, apiMounts(t))
	if err := s.err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"mount 9p root /st/lower ro " + ninepOptions,
		"mount tmpfs tmpfs /st/rw mode=0755",
		"mount overlay overlay /st/root lowerdir=/st/lower,upperdir=/st/rw/upper,workdir=/st/rw/work",
		"move /proc /st/root/proc",
		"move /sys /st/root/sys",
		"move /dev /st/root/dev", // with /dev/pts and /dev/shm on it
		"move /tmp /st/root/tmp",
		"move /run /st/root/run",
		"chdir /st/root",
		"move . /",
		"chroot .",
		"chdir /",
		// After the switch, so in the new root; parents first.
		"mount 9p a /mnt/a ro " + ninepOptions,
		"mount 9p b /mnt/a/b " + ninepOptions,
	}
	if got := r.mounts(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, dir := range []string{"/st/rw/upper", "/st/rw/work", "/st/root/tmp", "/mnt/a/b"} {
		if !slicesContainsPrefix(r.calls, "mkdir "+dir+" ") {
			t.Errorf("no mkdir %s in %q", dir, r.calls)
		}
	}
	// The api mounts' mount points are opaque in the upper layer, made
	// before the overlay is mounted: no lookups of them in the lower one.
	ov := slices.Index(r.calls, want[2])
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run"} {
		mk := slices.IndexFunc(r.calls, func(c string) bool { return strings.HasPrefix(c, "mkdir /st/rw/upper"+d+" ") })
		op := slices.Index(r.calls, "opaque /st/rw/upper"+d)
		if mk < 0 || op < mk || op > ov {
			t.Errorf("%s: mkdir at %d, opaque at %d, overlay mounted at %d; want both before the mount:\n%s", d, mk, op, ov, strings.Join(r.calls, "\n"))
		}
	}
}

func slicesContainsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestBlockRootPlan(t *testing.T) {
	s, r := newRecSetup(nil)
	s.apply(BootConfig{Root: Root{Kind: RootBlock, Source: "/dev/vda"}}, nil)
	if err := s.err(); err != nil {
		t.Fatal(err)
	}
	got := r.mounts()
	if len(got) == 0 || got[0] != "mount ext4 /dev/vda /st/lower ro" || got[len(got)-2] != "chroot ." {
		t.Errorf("calls %q", got)
	}
}

func TestInitramfsPlan(t *testing.T) {
	s, r := newRecSetup(nil)
	s.apply(BootConfig{Shares: []Share{{Tag: "a", Path: "/a"}}}, apiMounts(t))
	if got := r.mounts(); !reflect.DeepEqual(got, []string{"mount 9p a /a " + ninepOptions}) {
		t.Errorf("calls %q, want only the share", got)
	}
}

func TestBaseMountsTolerateMounted(t *testing.T) {
	s, _ := newRecSetup(map[string]error{"devtmpfs /dev": unix.EBUSY, "devpts /dev/pts": unix.ENODEV})
	api := s.baseMounts(baseMounts())
	var targets []string
	for _, m := range api {
		targets = append(targets, m.target)
	}
	if !reflect.DeepEqual(targets, []string{"/proc", "/sys", "/dev", "/tmp", "/run"}) {
		t.Errorf("api mounts %q", targets)
	}
	err := s.err()
	want := "guest setup: mounting devpts on /dev/pts: no such device (kernel needs CONFIG_UNIX98_PTYS)"
	if err == nil || err.Error() != want {
		t.Errorf("err %v, want %s", err, want)
	}
}

// TestSetupErrors checks the message for each way a mount fails: what,
// where, the errno, and the kernel option or host setting that helps.
func TestSetupErrors(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		fail    map[string]error
		want    string
	}{
		{"corral.root=9p:root", map[string]error{"9p /st/lower": unix.ENODEV},
			`mounting the root's 9p share "root" on /st/lower: no such device (kernel needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS)`},
		{"corral.root=9p:root", map[string]error{"9p /st/lower": unix.EPROTONOSUPPORT},
			`protocol not supported (kernel needs CONFIG_NET_9P_VIRTIO)`},
		{"corral.share=src:/src", map[string]error{"9p /src": unix.ENOENT},
			`mounting 9p share "src" on /src: no such file or directory (no virtio-9p device has mount tag "src": the host must share a directory with that tag`},
		{"corral.share=src:/src", map[string]error{"9p /src": unix.EBUSY},
			`mount tag "src" is mounted already`},
		{"corral.root=9p:root", map[string]error{"overlay /st/root": unix.ENODEV},
			`mounting the root's overlay on /st/root: no such device (kernel needs CONFIG_OVERLAY_FS)`},
		{"corral.root=9p:root", map[string]error{"overlay /st/root": unix.EINVAL},
			`overlayfs refused its layers`},
		{"corral.root=9p:root", map[string]error{"tmpfs /st/rw": unix.ENODEV},
			`(kernel needs CONFIG_SHMEM and CONFIG_TMPFS)`},
		{"corral.root=blk:/dev/vda", map[string]error{"ext4 /st/lower": unix.ENODEV},
			`mounting the root's ext4 /dev/vda on /st/lower: no such device (kernel needs CONFIG_EXT4_FS)`},
		{"corral.root=blk:/dev/vda", map[string]error{"ext4 /st/lower": unix.ENOENT},
			`no block device /dev/vda: the host must attach the disk, and the kernel needs CONFIG_VIRTIO_BLK`},
		{"corral.root=blk:/dev/vda", map[string]error{"ext4 /st/lower": unix.EINVAL},
			`/dev/vda holds no ext4 file system`},
		{"corral.root=9p:root", map[string]error{"mkdir /st/root/tmp": errors.New("/st/root/tmp is a symlink, want a directory")},
			`switching root: moving /tmp: /st/root/tmp is a symlink`},
		{"corral.root=9p:root", map[string]error{"move /": unix.EINVAL},
			`switching root: moving /st/root onto /: invalid argument`},
		{"corral.root=9p:root", map[string]error{"chroot .": unix.EPERM},
			`switching root: chroot: operation not permitted`},
	} {
		s, r := newRecSetup(tc.fail)
		cfg, err := ParseCmdline(tc.cmdline)
		if err != nil {
			t.Fatal(err)
		}
		s.apply(cfg, apiMounts(t))
		err = s.err()
		var se *SetupError
		if !errors.As(err, &se) || len(se.Problems) != 1 {
			t.Errorf("%s with %v: error %v, want one problem", tc.cmdline, tc.fail, err)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "guest setup: ") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s with %v:\n got %s\nwant %s", tc.cmdline, tc.fail, msg, tc.want)
		}
		for _, errno := range tc.fail {
			if _, ok := errno.(unix.Errno); ok && !errors.Is(err, errno) {
				t.Errorf("%s: errors.Is(%v, %v) = false", tc.cmdline, err, errno)
			}
		}
		// A root that could not be built is never switched into.
		if cfg.Root.Kind != RootInitramfs && !strings.Contains(tc.want, "chroot") && !strings.Contains(tc.want, "onto /") {
			for _, c := range r.calls {
				if strings.HasPrefix(c, "chroot") || c == "move . /" {
					t.Errorf("%s with %v: %q after a failure", tc.cmdline, tc.fail, c)
				}
			}
		}
	}
}

// TestSharesAfterFailedRoot: the shares are still tried (into the
// initramfs), so one boot reports every problem.
func TestSharesAfterFailedRoot(t *testing.T) {
	s, r := newRecSetup(map[string]error{"9p /st/lower": unix.ENODEV, "9p /src": unix.ENODEV})
	cfg, _ := ParseCmdline("corral.root=9p:root corral.share=src:/src")
	s.apply(cfg, nil)
	var se *SetupError
	if !errors.As(s.err(), &se) || len(se.Problems) != 2 {
		t.Fatalf("err %v, want 2 problems", s.err())
	}
	if got := r.mounts(); len(got) != 2 || !strings.HasPrefix(got[1], "mount 9p src /src") {
		t.Errorf("calls %q", got)
	}
}

func TestSetupErrorRefusesCommands(t *testing.T) {
	setupErr := &SetupError{Problems: []error{&MountError{What: `9p share "src"`, Target: "/src", Err: unix.ENODEV, Hint: "kernel needs CONFIG_9P_FS"}}}
	off := make(chan struct{}, 1)
	srv := NewServer(Config{SetupError: setupErr, PowerOff: func() error { off <- struct{}{}; return nil }})
	_, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	p, err := (&proto.Exec{Path: "true"}).Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	go w.Send(proto.TypeExec, 0, p)
	wantError(t, r, proto.CodeStart, `guest setup: mounting 9p share "src" on /src: no such device (kernel needs CONFIG_9P_FS)`)
	if err := result(t, done); err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	if st := srv.Stats(); st.Started != 0 || st.StartErrors != 1 {
		t.Errorf("stats %+v, want 0 started, 1 start error", st)
	}
	// Power-off still works: the host must be able to end the machine.
	host, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	go w.Send(proto.TypePowerOff, 0, nil)
	next(t, r, proto.TypeAck)
	host.Close()
	if err := result(t, done); err != nil {
		t.Errorf("power-off session: %v", err)
	}
	select {
	case <-off:
	default:
		t.Error("PowerOff not called")
	}
}

func TestLocalCID(t *testing.T) {
	if err := localCIDErr(unix.VMADDR_CID_ANY); !errors.Is(err, ErrNoVsockTransport) || !strings.Contains(err.Error(), "CONFIG_VIRTIO_VSOCKETS") {
		t.Errorf("CID_ANY: %v", err)
	}
	// Linux 6.1 without a virtio-vsock device (seen under QEMU).
	if err := localCIDErr(unix.VMADDR_CID_LOCAL); !errors.Is(err, ErrNoVsockTransport) {
		t.Errorf("CID_LOCAL: %v", err)
	}
	if err := localCIDErr(3); err != nil {
		t.Errorf("CID 3: %v", err)
	}
	if err := checkVsockTransport("/nonexistent/vsock"); !errors.Is(err, ErrNoVsockTransport) || !strings.Contains(err.Error(), "CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS") {
		t.Errorf("no device: %v", err)
	}
}

// TestNoTmpfsXattr: an upper layer without xattrs is a warning, not a
// setup problem (the overlay works, short of opaque directories).
func TestNoTmpfsXattr(t *testing.T) {
	s, _ := newRecSetup(map[string]error{"xattr /st/rw/upper": unix.EOPNOTSUPP})
	var log strings.Builder
	s.log = slog.New(slog.NewTextHandler(&log, nil))
	s.apply(BootConfig{Root: Root{Kind: Root9P, Source: "root"}}, nil)
	if err := s.err(); err != nil {
		t.Errorf("err %v", err)
	}
	if !strings.Contains(log.String(), "kernel needs CONFIG_TMPFS_XATTR") {
		t.Errorf("log %q lacks the warning", log.String())
	}
}
