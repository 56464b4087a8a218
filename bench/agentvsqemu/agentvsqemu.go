// Package agentvsqemu measures issue 11's Linux-guest figures beside QEMU,
// in the same run, with the same kernel and the same guest command:
//
//   - exec: `corral exec -- true` from process start to exit, against QEMU
//     -M microvm booting the kernel with an initramfs whose /init runs
//     `true` and powers off; and, with KmsgCmd as the command, the
//     guest's time from the kernel's "Run /init" to the command.
//   - 9p: `dd` of a 256 MiB file from a read-only 9p share, timed in the
//     guest, `corral exec --share` against QEMU's virtio-9p-pci (local
//     backend, security_model=none).
//
// The measurements are tests in vsqemu_test.go: they need KVM, the kernel
// ($CORRAL_KERNEL), a static agent ($CORRAL_AGENT), a corral binary and
// QEMU, which tests/tcgkvm provides with -l2-qemu (bench/agent-vs-qemu.sh
// runs them there). This file holds the parts tested without KVM: the QEMU
// guest's initramfs, QEMU's command line, the console parsers and the
// statistics.
package agentvsqemu

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// NinepOptions are the 9p mount options of the QEMU guest: those the agent
// uses for corral exec's shares (agent/init.go), plus ro.
const NinepOptions = "trans=virtio,version=9p2000.L,msize=524288,ro"

// ShareTag and ShareGuest are the QEMU share's mount tag and where both
// guests see the shared directory.
const (
	ShareTag   = "bench"
	ShareGuest = "/share"
)

// Marker starts the lines guest commands print for the harness.
const Marker = "agentvsqemu:"

// InitTrue is the QEMU guest's /init for `true`: run it, power off.
const InitTrue = "#!/bin/busybox sh\n/bin/busybox true\n/bin/busybox poweroff -f\n"

// InitScript returns a QEMU guest's /init that mounts /proc, /dev (and the share
// when share is set, with NinepOptions), runs cmd with sh -c, and powers
// off at once.
func InitScript(cmd string, share bool) string {
	var b strings.Builder
	b.WriteString("#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\nmount -t proc proc /proc\nmount -t devtmpfs dev /dev\n")
	if share {
		fmt.Fprintf(&b, "mount -t 9p -o %s %s %s || echo '%s mount failed'\n", NinepOptions, ShareTag, ShareGuest, Marker)
	}
	fmt.Fprintf(&b, "sh -c %s\npoweroff -f\n", shellQuote(cmd))
	return b.String()
}

// shellQuote quotes s for sh as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// WriteInitramfs writes the QEMU guest's initramfs (newc, uncompressed):
// busybox at /bin/busybox, /init, /dev/console (the kernel opens it for
// init's output before any devtmpfs) and the mount points.
func WriteInitramfs(w io.Writer, busybox []byte, init string) error {
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.StaticRecord(busybox, cpio.Info{Name: "bin/busybox", Mode: cpio.S_IFREG | 0o755}),
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticRecord([]byte(init), cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}),
		cpio.Directory("proc", 0o755),
		cpio.Directory(strings.TrimPrefix(ShareGuest, "/"), 0o755),
	}
	return writeCPIO(w, recs)
}

// QEMU describes one QEMU guest.
type QEMU struct {
	Machine  string // -M value: "microvm", "microvm,pcie=on", "pc"
	Kernel   string
	Initrd   string
	Cmdline  string
	MemoryMB int
	Share    string // host directory for virtio-9p-pci, or ""
	Accel    string // -accel; "" is kvm (tests on hosts without KVM use tcg)
	CPU      string // -cpu under KVM; "" is host (a nested KVM needs kernel.QEMUCPUNested)
}

// Args returns QEMU's arguments: KVM with the host's CPU model, one vCPU,
// no default devices, the console on stdout, exit on power-off. -M pc
// gets qboot (SeaBIOS takes seconds); the share is a virtio 1.x PCI
// device (the kernel has no virtio-mmio and no legacy virtio-pci), the
// same device `-virtfs local,...,security_model=none,readonly=on` adds
// but with disable-legacy=on, which -virtfs cannot set.
func (q QEMU) Args() []string {
	accel, cpu := "kvm", "host"
	if q.CPU != "" {
		cpu = q.CPU
	}
	if q.Accel != "" {
		accel, cpu = q.Accel, "max"
	}
	args := []string{"-M", q.Machine, "-accel", accel, "-cpu", cpu, "-smp", "1",
		"-m", strconv.Itoa(q.MemoryMB) + "M", "-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio", "-no-reboot", "-kernel", q.Kernel, "-initrd", q.Initrd, "-append", q.Cmdline}
	if strings.HasPrefix(q.Machine, "pc") {
		args = append(args, "-bios", "qboot.rom")
	}
	if q.Share != "" {
		args = append(args,
			"-fsdev", "local,id=fs0,path="+q.Share+",security_model=none,readonly=on",
			"-device", "virtio-9p-pci,fsdev=fs0,mount_tag="+ShareTag+",disable-legacy=on")
	}
	return args
}

// printkLine matches a console line with a printk timestamp.
var printkLine = regexp.MustCompile(`^\[\s*(\d+\.\d+)\] (.*)$`)

// PrintkAt returns the printk time, in seconds since boot, of the first
// console line whose message starts with msg.
func PrintkAt(console []byte, msg string) (float64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(console))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := printkLine.FindStringSubmatch(strings.TrimRight(sc.Text(), "\r"))
		if m != nil && strings.HasPrefix(m[2], msg) {
			v, err := strconv.ParseFloat(m[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// RunInitMsg starts the kernel's message as it starts init: "Run /init
// as init process" from an initramfs, "Run /path/of/the/agent as init
// process" on a kernel root (corral exec's cold boot, agent.KernelRootParams).
const RunInitMsg = "Run /"

// StartMsg is what KmsgCmd logs.
const StartMsg = Marker + " command start"

// KmsgCmd is the command of the "Run /init to the command" measurement:
// its first work is a line in the kernel log, so both ends carry printk
// time (under nested KVM the printk clock and /proc/uptime drift apart
// by seconds: "sched_clock: Marking stable (...)").
const KmsgCmd = "echo '" + StartMsg + "' >/dev/kmsg"

// InitToCommand is the guest's milliseconds from the kernel's "Run /init"
// to KmsgCmd's line, both on the console.
func InitToCommand(console []byte) (float64, bool) {
	at, ok1 := PrintkAt(console, RunInitMsg)
	up, ok2 := PrintkAt(console, StartMsg)
	if !ok1 || !ok2 {
		return 0, false
	}
	return (up - at) * 1000, true
}

// ReadStartMsg is the line ReadCmd prints before the read, so the host
// can time it on its own clock too (LineTimer).
const ReadStartMsg = Marker + " dd start"

// ReadCmd reads path with dd in 1 MiB blocks, timed with the guest's
// /proc/uptime (10 ms steps) around it, and prints one ReadResult line
// (after ReadStartMsg).
func ReadCmd(path string) string {
	return `echo "` + ReadStartMsg + `"; read a x </proc/uptime; dd if=` + path + ` of=/dev/null bs=1M 2>/dev/null; st=$?; read b x </proc/uptime; ` +
		`echo "` + Marker + ` read status=$st start=$a end=$b bytes=$(stat -c %s ` + path + `)"`
}

// ReadResult is what ReadCmd printed.
type ReadResult struct {
	Status     int
	Start, End float64 // guest uptime, seconds
	Bytes      int64
}

// Seconds is the guest's time for the read.
func (r ReadResult) Seconds() float64 { return r.End - r.Start }

// MiBps is the read's rate in MiB/s.
func (r ReadResult) MiBps() float64 { return float64(r.Bytes) / (1 << 20) / r.Seconds() }

// ParseRead finds ReadCmd's line in out.
func ParseRead(out []byte) (ReadResult, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		i := strings.Index(line, Marker+" read ")
		if i < 0 {
			continue
		}
		var r ReadResult
		if _, err := fmt.Sscanf(line[i+len(Marker):], " read status=%d start=%g end=%g bytes=%d", &r.Status, &r.Start, &r.End, &r.Bytes); err != nil {
			return ReadResult{}, fmt.Errorf("agentvsqemu: read line %q: %w", line, err)
		}
		if r.Status != 0 {
			return r, fmt.Errorf("agentvsqemu: dd exited %d in the guest", r.Status)
		}
		if r.End <= r.Start {
			return r, fmt.Errorf("agentvsqemu: read line %q: no time passed (uptime steps are 10 ms)", line)
		}
		return r, nil
	}
	return ReadResult{}, fmt.Errorf("agentvsqemu: no %q line in the output", Marker+" read")
}

// LineTimer is an io.Writer that keeps what is written and notes when
// each of its marks first appears in the stream: the host's clock on a
// guest's output (a guest's own clock may not keep real time under
// nested virtualisation). Not safe for concurrent writes. It has no
// ReadFrom (an embedded bytes.Buffer's would bypass Write in io.Copy).
type LineTimer struct {
	buf   bytes.Buffer
	Marks []string
	At    []time.Time // At[i]: when Marks[i] appeared; zero until then
	now   func() time.Time
}

// NewLineTimer returns a LineTimer for marks.
func NewLineTimer(marks ...string) *LineTimer {
	return &LineTimer{Marks: marks, At: make([]time.Time, len(marks)), now: time.Now}
}

// Write appends p and looks for the marks not seen yet in the bytes p
// may complete.
func (w *LineTimer) Write(p []byte) (int, error) {
	from := w.buf.Len()
	n, _ := w.buf.Write(p)
	b := w.buf.Bytes()
	var t time.Time
	for i, m := range w.Marks {
		if !w.At[i].IsZero() {
			continue
		}
		if bytes.Contains(b[max(0, from-len(m)+1):], []byte(m)) {
			if t.IsZero() {
				t = w.now()
			}
			w.At[i] = t
		}
	}
	return n, nil
}

// Bytes returns what was written.
func (w *LineTimer) Bytes() []byte { return w.buf.Bytes() }

// String returns what was written.
func (w *LineTimer) String() string { return w.buf.String() }

// Between is the host's time from mark a's appearance to mark b's, and
// whether both appeared.
func (w *LineTimer) Between(a, b int) (time.Duration, bool) {
	if w.At[a].IsZero() || w.At[b].IsZero() {
		return 0, false
	}
	return w.At[b].Sub(w.At[a]), true
}

// Stats are a sample's median and range.
type Stats struct {
	N                int
	Median, Min, Max float64
}

// Summarize returns the median, minimum and maximum of xs.
func Summarize(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{N: len(s), Median: med, Min: s[0], Max: s[len(s)-1]}
}

// Format returns "median (min–max, n=N)" with digits decimals.
func (s Stats) Format(digits int) string {
	if s.N == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f, n=%d)", digits, s.Median, digits, s.Min, digits, s.Max, s.N)
}

// Ratio is a/b of two medians, "n/a" when either is missing.
func Ratio(a, b Stats) string {
	if a.N == 0 || b.N == 0 || b.Median == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a.Median/b.Median)
}

// writeCPIO writes recs as a newc archive with its trailer, numbering
// their inodes.
func writeCPIO(w io.Writer, recs []cpio.Record) error {
	bw := bufio.NewWriter(w)
	cw := cpio.Newc.Writer(bw)
	for i, r := range recs {
		r.Ino, r.NLink = uint64(i+1), 1
		if err := cw.WriteRecord(r); err != nil {
			return fmt.Errorf("agentvsqemu: initramfs %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("agentvsqemu: initramfs trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("agentvsqemu: writing initramfs: %w", err)
	}
	return nil
}
