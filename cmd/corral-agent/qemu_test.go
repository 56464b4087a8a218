package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/internal/syncbuf"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// qemuBootTimeout bounds one boot of the test kernel under QEMU's TCG (a
// few seconds on an idle machine).
const qemuBootTimeout = 3 * time.Minute

// pid1Setup is what every boot of TestPID1UnderQEMU shares.
type pid1Setup struct {
	qemu, bzImage, initrd string
	rootDir, image        string
}

// TestPID1UnderQEMU boots the test kernel under QEMU (TCG, no KVM needed)
// with the agent as PID 1, serving on TCP through QEMU's user network in a
// network namespace of the test's own (QEMU has no user-space vsock). It
// checks the root switch over real 9p and ext4, shares, a setup problem
// reported per command and on the console, and a machine without vsock
// powering off with the reason. The kernel is $CORRAL_KERNEL (a bzImage)
// or the cached plain test kernel.
func TestPID1UnderQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under QEMU")
	}
	s := pid1Setup{qemu: testenv.MustHaveQEMU(t)}
	s.bzImage = os.Getenv("CORRAL_KERNEL")
	if s.bzImage == "" {
		var err error
		s.bzImage, _, err = kernel.Find(false)
		if errors.Is(err, kernel.ErrNotBuilt) {
			t.Skipf("no test kernel: set CORRAL_KERNEL to a bzImage or run tests/linux/build-kernel.sh --no-patches (%v)", err)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	testenv.MustHaveFile(t, rootfs.DefaultBusybox, "busybox-static")
	testenv.MustHaveCommand(t, "mkfs.ext4", "e2fsprogs")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := initrd.BuildAgent(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	agentBytes, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	s.initrd = filepath.Join(dir, "initrd.cpio")
	f, err := os.Create(s.initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := initrd.Write(f, nil, agentBytes); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A root of busybox and a marker, as a directory (9p) and an image.
	s.rootDir = filepath.Join(dir, "root")
	bb, err := os.ReadFile(rootfs.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "etc", "mnt"} {
		os.MkdirAll(filepath.Join(s.rootDir, d), 0o755)
	}
	if err := os.WriteFile(filepath.Join(s.rootDir, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "echo", "grep"} {
		os.Symlink("busybox", filepath.Join(s.rootDir, "bin", a))
	}
	os.WriteFile(filepath.Join(s.rootDir, "etc/marker"), []byte("image root\n"), 0o644)
	s.image = filepath.Join(dir, "root.ext4")
	if err := rootfs.BuildExt4FromDir(s.image, 32, s.rootDir); err != nil {
		t.Fatal(err)
	}
	rw, ro := filepath.Join(dir, "rw"), filepath.Join(dir, "ro")
	os.Mkdir(rw, 0o755)
	os.Mkdir(ro, 0o755)
	os.WriteFile(filepath.Join(ro, "r"), []byte("r\n"), 0o644)

	script := "cat /etc/marker; echo upper > /new && cat /new; echo g > /mnt/rw/g; echo x 2>/dev/null > /mnt/ro/x || echo ro-refused; cat /mnt/ro/r; grep -c '^overlay / overlay' /proc/mounts"
	want := "image root\nupper\nro-refused\nr\n1\n"
	// The ro share is writable on the QEMU side: the agent's read-only
	// mount must refuse the write.
	shares := []string{
		"-virtfs", "local,path=" + rw + ",mount_tag=rw,security_model=none",
		"-virtfs", "local,path=" + ro + ",mount_tag=ro,security_model=none",
	}
	shareParams := "corral.share=rw:/mnt/rw corral.share=ro:/mnt/ro:ro"

	t.Run("9p root", func(t *testing.T) {
		args := append([]string{"-virtfs", "local,path=" + s.rootDir + ",mount_tag=root,security_model=none,readonly=on"}, shares...)
		out, console, err := s.runTCP(t, "corral.root=9p:root "+shareParams, args, script)
		if err != nil || out != want {
			t.Errorf("stdout %q, %v; want %q\nconsole:\n%s", out, err, want, console)
		}
		if b, err := os.ReadFile(filepath.Join(rw, "g")); err != nil || string(b) != "g\n" {
			t.Errorf("host side of the rw share: %q, %v", b, err)
		}
		for _, p := range []string{filepath.Join(s.rootDir, "new"), filepath.Join(ro, "x")} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s exists on the host", p)
			}
		}
	})
	t.Run("ext4 root", func(t *testing.T) {
		args := append([]string{"-drive", "file=" + s.image + ",if=virtio,format=raw,readonly=on"}, shares...)
		out, console, err := s.runTCP(t, "corral.root=blk:/dev/vda "+shareParams, args, script)
		if err != nil || out != want {
			t.Errorf("stdout %q, %v; want %q\nconsole:\n%s", out, err, want, console)
		}
	})
	t.Run("missing share", func(t *testing.T) {
		args := []string{"-virtfs", "local,path=" + s.rootDir + ",mount_tag=root,security_model=none,readonly=on"}
		out, console, err := s.runTCP(t, "corral.root=9p:root corral.share=nosuch:/x", args, "echo ran")
		const msg = `guest setup: mounting 9p share "nosuch" on /x: no such file or directory (no virtio-9p device has mount tag "nosuch"`
		if err == nil || !strings.Contains(err.Error(), msg) || out != "" {
			t.Errorf("command: %q, %v; want no output and an error with %q", out, err, msg)
		}
		if !strings.Contains(console, "corral-agent: error: "+msg) {
			t.Errorf("console lacks the error line:\n%s", console)
		}
	})
	t.Run("no vsock", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), qemuBootTimeout)
		defer cancel()
		console := &syncbuf.Buffer{}
		cmd := exec.CommandContext(ctx, s.qemu, s.args("", nil)...)
		cmd.Stdout, cmd.Stderr = console, console
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("QEMU: %v after %v\nconsole:\n%s", err, time.Since(start), console)
		}
		const msg = "corral-agent: error: agent: vsock: no vsock transport to the host"
		if !strings.Contains(console.String(), msg) {
			t.Errorf("console lacks %q:\n%s", msg, console)
		}
		t.Logf("powered off %.1fs after start", time.Since(start).Seconds())
	})
}

// args returns QEMU's arguments for a boot with extra kernel parameters
// and devices; agentArgs, when set, go to the agent after "--".
func (s pid1Setup) args(params string, extra []string, agentArgs ...string) []string {
	cmdline := "console=ttyS0 panic=-1 " + params
	if len(agentArgs) > 0 {
		cmdline += " -- " + strings.Join(agentArgs, " ")
	}
	a := []string{"-accel", "tcg", "-M", "pc", "-m", "256", "-smp", "1", "-nodefaults", "-nographic", "-no-reboot",
		"-serial", "stdio", "-kernel", s.bzImage, "-initrd", s.initrd, "-append", cmdline}
	if len(agentArgs) == 0 {
		a = append(a, "-nic", "none")
	}
	return append(a, extra...)
}

// runTCP boots with the agent on TCP port 1024, forwarded from
// 127.0.0.1:10240 in a fresh network namespace, runs script with sh, and
// returns its stdout, the console and Run's error.
func (s pid1Setup) runTCP(t *testing.T, params string, extra []string, script string) (stdout, console string, err error) {
	t.Helper()
	netnstest.Run(t, func() {
		ctx, cancel := context.WithTimeout(context.Background(), qemuBootTimeout)
		defer cancel()
		extra = append(extra, "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:10240-:1024", "-device", "virtio-net-pci,netdev=n0")
		con := &syncbuf.Buffer{}
		cmd := exec.CommandContext(ctx, s.qemu, s.args("ip=dhcp "+params, extra, "-listen", "tcp:0.0.0.0:1024")...)
		cmd.Stdout, cmd.Stderr = con, con
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait(); console = con.String() }()
		// QEMU accepts forwarded connections before the guest listens and
		// then drops them; retry until the agent answers.
		for ctx.Err() == nil {
			var d netDialer
			conn, derr := d.dial(ctx)
			if derr != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			var out bytes.Buffer
			c := client.CommandContext(ctx, conn, "sh", "-c", script)
			c.Stdout = &out
			err = c.Run()
			if err != nil && isNotUp(err) {
				time.Sleep(500 * time.Millisecond)
				continue
			}
			stdout = out.String()
			return
		}
		err = ctx.Err()
	})
	return stdout, console, err
}

// isNotUp reports whether err means the agent was not listening yet.
func isNotUp(err error) bool {
	var ee *client.ExitError
	if errors.As(err, &ee) {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "EOF") || strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}

type netDialer struct{}

func (netDialer) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", "127.0.0.1:10240")
}
