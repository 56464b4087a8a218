package main

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// testBinary is one test binary to run inside the VM.
type testBinary struct {
	Name     string   // label in the console markers, e.g. github.com/corral-vmm/corral/kvm
	Path     string   // on the host
	Testdata string   // host testdata directory to ship beside it, or ""
	Args     []string // after the common test flags (a later -test.run wins)
}

// guestELF is a prebuilt test guest at its content-addressed cache path
// relative to the guest cache root, <key>/<name>.elf.
type guestELF struct {
	Rel  string
	Host string
}

// initramfsSpec is everything the VM's root file system holds.
type initramfsSpec struct {
	Busybox   string
	Kernel    l1Kernel
	Tests     []testBinary
	TestArgs  []string // passed to every test binary after -test.v
	Guests    []guestELF
	GCCPath   string // where the host found gcc; the shim goes at the same path
	GCCAnswer string // the host gcc's -dumpfullversion -dumpmachine output
	Heartbeat int    // seconds between "alive" lines; 0: none
	Require   string // CORRAL_REQUIRE in the VM: these needs fail rather than skip

	LinuxKernel string // host path of a Linux kernel for L2 guests, shipped as /linux/<base name>; "" for none
	Agent       string // host path of a static guest agent, shipped as /linux/corral-agent; "" for none
	L2Cmdline   string // CORRAL_TCGKVM_CMDLINE in the VM: workarounds Linux L2 guests add to their command line

	LinuxBzImage string      // host path of the same kernel's bzImage, shipped as /linux/bzImage ($CORRAL_BZIMAGE); "" for none
	HostFiles    []vmFile    // -host-files: host tools (and their libraries) at their host paths
	QEMU         string      // -l2-qemu: QEMU's path in the VM (among HostFiles), exported as $QEMU; "" for none
	Env          [][2]string // -env: NAME, VALUE pairs exported before the tests run
}

// VM-side paths.
const (
	vmGuestCache = "/guests"
	vmModules    = "/modules"
	vmGCCAnswer  = "/etc/tcgkvm/gcc-version"
)

// initScript is the VM's /init: mount, load KVM, refuse to run the tests
// without /dev/kvm (they would all skip and "pass"), run each binary in a
// directory holding its testdata, print one marker line per binary and a
// final one, and power off.
func initScript(s initramfsSpec) string {
	var b strings.Builder
	b.WriteString(`#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/local/bin HOME=/root TMPDIR=/tmp
export CORRAL_GUEST_CACHE=` + vmGuestCache + ` CORRAL_REQUIRE=` + shellQuote(s.Require) + `
export ` + envTCGKVM + `=1 ` + envTCGKVMCmdline + `=` + shellQuote(s.L2Cmdline) + `
`)
	if s.LinuxKernel != "" {
		b.WriteString("export " + envKernel + "=" + shellQuote(vmLinuxDir+"/"+filepath.Base(s.LinuxKernel)) + "\n")
	}
	if s.Agent != "" {
		b.WriteString("export " + envAgent + "=" + vmAgent + "\n")
	}
	if s.QEMU != "" {
		b.WriteString("export " + envQEMU + "=" + shellQuote(s.QEMU) + "\n")
	}
	if s.LinuxBzImage != "" {
		b.WriteString("export " + envBzImage + "=" + vmBzImage + "\n")
	}
	for _, kv := range s.Env {
		b.WriteString("export " + kv[0] + "=" + shellQuote(kv[1]) + "\n")
	}
	b.WriteString(`mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts -o ptmxmode=0666 devpts /dev/pts
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
mount -t tmpfs tmp /tmp
ip link set lo up 2>/dev/null
# tcgkvm nudges the L1 kernel with a newline on the serial port every
# second (-nudge): not echoed, read away, and not the tests' stdin.
stty -echo </dev/console 2>/dev/null
cat </dev/console >/dev/null &
exec </dev/null
up() { cut -d' ' -f1 /proc/uptime; }
echo "tcgkvm: init at $(up)s, $(nproc) cpus, svm=$(grep -c -w svm /proc/cpuinfo) npt=$(grep -c -w npt /proc/cpuinfo)"
`)
	for _, m := range modules {
		fmt.Fprintf(&b, "insmod %s/%s.ko || echo \"tcgkvm: insmod %s failed\"\n", vmModules, m, m)
	}
	b.WriteString(`dmesg | grep -i -E 'kvm|svm' | sed 's/^/tcgkvm: dmesg: /'
if ! [ -c /dev/kvm ]; then
	echo "tcgkvm: no /dev/kvm after loading kvm-amd"
	echo "tcgkvm: done status=` + fmt.Sprint(statusNoKVM) + `"
	poweroff -f
fi
echo "tcgkvm: /dev/kvm ready at $(up)s"
status=0
`)
	if s.Heartbeat > 0 {
		// Shows the L1 kernel is alive and what it is doing during long tests.
		fmt.Fprintf(&b, "(while sleep %d; do echo \"tcgkvm: alive at $(up)s, load $(cut -d' ' -f1-4 /proc/loadavg)\"; done) &\n", s.Heartbeat)
	}
	args := append([]string{"-test.v"}, s.TestArgs...)
	for i, t := range s.Tests {
		dir := fmt.Sprintf("/pkg/%d", i)
		fmt.Fprintf(&b, "cd %s\necho \"tcgkvm: run %s at $(up)s\"\nt0=$(up)\n", dir, t.Name)
		fmt.Fprintf(&b, "./%s", path.Base(t.Path))
		for _, a := range append(slices.Clip(args), t.Args...) {
			b.WriteString(" " + shellQuote(a))
		}
		fmt.Fprintf(&b, "\nrc=$?\n[ $rc -ne 0 ] && status=1\n")
		fmt.Fprintf(&b, "echo \"tcgkvm: result %s exit=$rc start=${t0}s end=$(up)s\"\n", t.Name)
	}
	b.WriteString("echo \"tcgkvm: done status=$status\"\npoweroff -f\n")
	return b.String()
}

// shellQuote quotes s for sh as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// gccShim stands in for gcc inside the VM. tests/guests keys its cache on
// gcc's path and version, so answering the version query as the host's gcc
// did makes the prebuilt guests cache hits; anything else (a real compile,
// i.e. a cache miss) fails loudly instead of silently skipping tests.
const gccShim = `#!/bin/sh
if [ "$*" = "-dumpfullversion -dumpmachine" ]; then exec cat ` + vmGCCAnswer + `; fi
echo "tcgkvm: no compiler in this VM (test guests must come prebuilt from the host): gcc $*" >&2
exit 127
`

type entry struct {
	name string // no leading slash
	rec  cpio.Record
}

// writeInitramfs writes spec as an uncompressed newc cpio archive.
func writeInitramfs(w io.Writer, s initramfsSpec) error {
	var es []entry
	dirs := map[string]bool{}
	var mkdir func(d string)
	mkdir = func(d string) {
		if d == "." || d == "" || dirs[d] {
			return
		}
		mkdir(path.Dir(d))
		dirs[d] = true
		es = append(es, entry{d, cpio.Directory(d, 0o755)})
	}
	file := func(name string, perm uint64, data []byte) {
		name = strings.TrimPrefix(name, "/")
		mkdir(path.Dir(name))
		es = append(es, entry{name, cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | perm})})
	}
	hostFile := func(name string, perm uint64, src string) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("tcgkvm: initramfs: %w", err)
		}
		file(name, perm, data)
		return nil
	}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "root", "etc", "usr/bin"} {
		mkdir(d)
	}
	es = append(es, entry{"dev/console", cpio.CharDev("dev/console", 0o600, 5, 1)})
	if err := hostFile("bin/busybox", 0o755, s.Busybox); err != nil {
		return err
	}
	file("init", 0o755, []byte(initScript(s)))
	for _, m := range modules {
		if err := hostFile(path.Join(vmModules, m+".ko"), 0o644, filepath.Join(s.Kernel.ModDir, m+".ko")); err != nil {
			return err
		}
	}
	if s.GCCPath != "" {
		file(s.GCCPath, 0o755, []byte(gccShim))
		file(vmGCCAnswer, 0o644, []byte(s.GCCAnswer))
	}
	if s.LinuxKernel != "" {
		if err := hostFile(path.Join(vmLinuxDir, filepath.Base(s.LinuxKernel)), 0o644, s.LinuxKernel); err != nil {
			return err
		}
	}
	if s.Agent != "" {
		if err := hostFile(vmAgent, 0o755, s.Agent); err != nil {
			return err
		}
	}
	if s.LinuxBzImage != "" {
		if err := hostFile(vmBzImage, 0o644, s.LinuxBzImage); err != nil {
			return err
		}
	}
	for _, f := range s.HostFiles {
		if err := hostFile(f.VM, f.Perm, f.Host); err != nil {
			return err
		}
	}
	for _, g := range s.Guests {
		if err := hostFile(path.Join(vmGuestCache, g.Rel), 0o755, g.Host); err != nil {
			return err
		}
	}
	for i, t := range s.Tests {
		dir := fmt.Sprintf("pkg/%d", i)
		mkdir(dir)
		if err := hostFile(path.Join(dir, path.Base(t.Path)), 0o755, t.Path); err != nil {
			return err
		}
		if t.Testdata == "" {
			continue
		}
		err := filepath.WalkDir(t.Testdata, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, err := filepath.Rel(t.Testdata, p)
			if err != nil {
				return err
			}
			return hostFile(path.Join(dir, "testdata", filepath.ToSlash(rel)), 0o644, p)
		})
		if err != nil {
			return fmt.Errorf("tcgkvm: initramfs testdata of %s: %w", t.Name, err)
		}
	}
	// Parents before children is all the kernel needs; sorting keeps the
	// archive reproducible.
	sort.SliceStable(es, func(i, j int) bool { return es[i].name < es[j].name })
	bw := bufio.NewWriter(w)
	rw := cpio.Newc.Writer(bw)
	for i, e := range es {
		e.rec.Ino = uint64(i + 1) // distinct inodes: no accidental hard links
		e.rec.NLink = 1
		if err := rw.WriteRecord(e.rec); err != nil {
			return fmt.Errorf("tcgkvm: initramfs record %s: %w", e.name, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("tcgkvm: initramfs trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("tcgkvm: writing initramfs: %w", err)
	}
	return nil
}
