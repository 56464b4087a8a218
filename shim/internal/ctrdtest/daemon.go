package ctrdtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RuntimeType is the containerd runtime type of the Corral shim.
const RuntimeType = "io.containerd.corral.v2"

// CRIHandler is the CRI runtime handler (Kubernetes RuntimeClass handler)
// the daemon's config maps to RuntimeType.
const CRIHandler = "corral"

// Options configure a private containerd.
type Options struct {
	Tools Tools
	// ShimDir is put first on containerd's PATH: containerd runs the shim
	// binary it finds there by name.
	ShimDir string
	// SandboxImage is the CRI plugin's sandbox (pause) image; ImageRef if
	// empty.
	SandboxImage string
	// Env is added to containerd's environment, which the shims inherit.
	Env []string
	// StartTimeout bounds the wait for containerd to answer; 60 s if zero
	// (TCG is slow).
	StartTimeout time.Duration
}

// Daemon is a running private containerd.
type Daemon struct {
	Dir        string // everything below is under it
	Root       string // containerd's root (content, snapshots, metadata)
	State      string // containerd's state (runtime v2 bundles, sockets)
	Address    string // gRPC socket
	ConfigPath string
	LogPath    string
	// StateDir is Corral's inventory directory for this daemon's shims
	// (CORRAL_STATE_DIR in their environment).
	StateDir string
	ctr      string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// configHead is the part of a containerd config that is the same in
// versions 2 and 3: the daemon's directories and sockets under dir, debug
// logging, and the snapshotters (by short name) that cannot work here (or
// in tests/tcgkvm's VM): the tests use native, which needs no kernel
// support.
func configHead(dir string, version int, disabled ...string) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "version = %d\nroot = %s\nstate = %s\ndisabled_plugins = [\n", version, q(filepath.Join(dir, "root")), q(filepath.Join(dir, "state")))
	for _, d := range disabled {
		fmt.Fprintf(&b, "  %s,\n", q("io.containerd.snapshotter.v1."+d))
	}
	fmt.Fprintf(&b, `]

[grpc]
  address = %s

[ttrpc]
  address = %s

[debug]
  address = %s
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = %s
`, q(filepath.Join(dir, "containerd.sock")), q(filepath.Join(dir, "containerd.sock.ttrpc")), q(filepath.Join(dir, "debug.sock")), q(filepath.Join(dir, "opt")))
	return b.String()
}

// Config returns the containerd config (version 2, containerd 1.6 and
// 1.7) for a daemon under dir.
func Config(dir, sandboxImage string) string {
	q := strconv.Quote
	return configHead(dir, 2, "aufs", "btrfs", "devmapper", "overlayfs", "zfs") + `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ` + q(sandboxImage) + `
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    # Naming any runtime replaces the built-in table, and the default
    # runtime must be in it.
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.` + CRIHandler + `]
      runtime_type = ` + q(RuntimeType) + `
  # No CNI: the tests' pods use the host's network namespace.
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ` + q(filepath.Join(dir, "cni", "bin")) + `
    conf_dir = ` + q(filepath.Join(dir, "cni", "conf")) + `
`
}

// ConfigV3 returns the containerd 2.x config (version 3) of what Config
// sets for 1.x: 2.x split the CRI plugin into io.containerd.cri.v1.images
// (snapshotter, the sandbox image as pinned_images.sandbox) and
// io.containerd.cri.v1.runtime (runtimes, CNI); io.containerd.grpc.v1.cri
// keeps only the streaming server. The transfer service (ctr images
// import goes through it in 2.x) unpacks into overlayfs unless told
// otherwise, and fails to load when that snapshotter is disabled.
func ConfigV3(dir, sandboxImage string) string {
	q := strconv.Quote
	return configHead(dir, 3, "blockfile", "btrfs", "devmapper", "erofs", "overlayfs", "zfs") + `
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = ` + q(sandboxImage) + `

[plugins."io.containerd.cri.v1.runtime"]
  [plugins."io.containerd.cri.v1.runtime".containerd]
    # Naming any runtime replaces the built-in table, and the default
    # runtime must be in it.
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.` + CRIHandler + `]
      runtime_type = ` + q(RuntimeType) + `
  # No CNI: the tests' pods use the host's network namespace.
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [` + q(filepath.Join(dir, "cni", "bin")) + `]
    conf_dir = ` + q(filepath.Join(dir, "cni", "conf")) + `

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`
}

// ConfigFor returns the config for containerd major version major:
// ConfigV3 for 2.x and later, Config for 1.x.
func ConfigFor(major int, dir, sandboxImage string) string {
	if major >= 2 {
		return ConfigV3(dir, sandboxImage)
	}
	return Config(dir, sandboxImage)
}

// Start starts a private containerd under a new temporary directory and
// stops it, and removes the directory, when the test ends; its log is
// shown if the test failed.
func Start(t testing.TB, o Options) *Daemon {
	t.Helper()
	if o.SandboxImage == "" {
		o.SandboxImage = ImageRef
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	// Short: the socket paths must fit in sun_path's 108 bytes.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatalf("ctrdtest: %v", err)
	}
	d := &Daemon{
		Dir: dir, Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"),
		Address: filepath.Join(dir, "containerd.sock"), ConfigPath: filepath.Join(dir, "config.toml"),
		LogPath: filepath.Join(dir, "containerd.log"), StateDir: filepath.Join(dir, "corral"),
		ctr: o.Tools.Ctr, exited: make(chan struct{}),
	}
	for _, sub := range []string{"cni/bin", "cni/conf", "corral"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatalf("ctrdtest: %v", err)
		}
	}
	if err := os.WriteFile(d.ConfigPath, []byte(ConfigFor(o.Tools.Major, dir, o.SandboxImage)), 0o644); err != nil {
		t.Fatalf("ctrdtest: %v", err)
	}
	logf, err := os.Create(d.LogPath)
	if err != nil {
		t.Fatalf("ctrdtest: %v", err)
	}
	d.cmd = exec.Command(o.Tools.Containerd, "--config", d.ConfigPath)
	d.cmd.Env = append(DaemonEnv(os.Environ(), o.ShimDir, d.StateDir), o.Env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group, so a ^C of the test does not reach it first.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("ctrdtest: starting containerd: %v", err)
	}
	logf.Close()
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() { d.stop(t) })

	deadline := time.Now().Add(o.StartTimeout)
	for {
		out, err := d.Ctr(context.Background(), "default", "version").CombinedOutput()
		if err == nil {
			break
		}
		select {
		case <-d.exited:
			t.Fatalf("ctrdtest: containerd exited at start: %v\n%s", d.cmd.ProcessState, d.tail(60))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ctrdtest: containerd did not answer within %v: ctr version: %v: %s\n%s", o.StartTimeout, err, bytes.TrimSpace(out), d.tail(60))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return d
}

// DaemonEnv returns containerd's environment: env with shimDir first on
// PATH and CORRAL_STATE_DIR set to stateDir.
func DaemonEnv(env []string, shimDir, stateDir string) []string {
	out := make([]string, 0, len(env)+2)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "PATH="):
			path = strings.TrimPrefix(kv, "PATH=")
		case strings.HasPrefix(kv, "CORRAL_STATE_DIR="):
		default:
			out = append(out, kv)
		}
	}
	if shimDir != "" {
		path = shimDir + string(os.PathListSeparator) + path
	}
	return append(out, "PATH="+path, "CORRAL_STATE_DIR="+stateDir)
}

// Ctr returns a ctr command against this daemon in namespace ns, with the
// native snapshotter.
func (d *Daemon) Ctr(ctx context.Context, ns string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.ctr, append([]string{"--address", d.Address, "--namespace", ns}, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERD_SNAPSHOTTER=native")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// MustCtr runs ctr and returns its stdout, failing the test on an error.
func (d *Daemon) MustCtr(t testing.TB, ns string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := d.Ctr(ctx, ns, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out)
}

// ImportImage writes the busybox test image as ref and imports it into
// namespace ns (linux/amd64, unpacked into the native snapshotter).
func (d *Daemon) ImportImage(t testing.TB, ns, ref string) {
	t.Helper()
	tarball := filepath.Join(d.Dir, "image.tar")
	if _, err := os.Stat(tarball); err != nil {
		// Callers checked BusyboxPath is there: a failure is a failure.
		if err := WriteImageFile(tarball, ref, BusyboxPath); err != nil {
			t.Fatalf("ctrdtest: writing the test image: %v", err)
		}
	}
	d.MustCtr(t, ns, "images", "import", "--platform", "linux/amd64", "--snapshotter", "native", tarball)
}

// ShimPIDs returns the process IDs of the Corral shims serving this daemon
// (their command line names its socket).
func (d *Daemon) ShimPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("ctrdtest: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // gone meanwhile
		}
		args := strings.Split(string(b), "\x00")
		if filepath.Base(args[0]) != ShimBinary {
			continue
		}
		if slices.Contains(args, d.Address) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Mounts returns the mount points under the daemon's directory.
func (d *Daemon) Mounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("ctrdtest: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && (fs[4] == d.Dir || strings.HasPrefix(fs[4], d.Dir+"/")) {
			out = append(out, fs[4])
		}
	}
	return out, sc.Err()
}

// tail returns the last n lines of containerd's log.
func (d *Daemon) tail(n int) string {
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		return fmt.Sprintf("(containerd log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "containerd log " + d.LogPath + " (last lines):\n" + strings.Join(lines, "\n")
}

// stop ends containerd (SIGTERM, then SIGKILL after 10 s), kills shims it
// left, detaches mounts left under its directory and removes it.
func (d *Daemon) stop(t testing.TB) {
	if t.Failed() {
		t.Log(d.tail(200))
	}
	d.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	if pids, _ := d.ShimPIDs(); len(pids) > 0 {
		t.Logf("ctrdtest: killing shims left running: %v", pids)
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if ms, _ := d.Mounts(); len(ms) > 0 {
		t.Logf("ctrdtest: detaching mounts left under %s: %v", d.Dir, ms)
		for i := len(ms) - 1; i >= 0; i-- {
			unix.Unmount(ms[i], unix.MNT_DETACH)
		}
	}
	if os.Getenv("CTRDTEST_KEEP") != "" {
		t.Logf("ctrdtest: kept %s (CTRDTEST_KEEP)", d.Dir)
		return
	}
	if err := os.RemoveAll(d.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Logf("ctrdtest: removing %s: %v", d.Dir, err)
	}
}
