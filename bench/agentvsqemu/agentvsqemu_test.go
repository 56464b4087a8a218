package agentvsqemu

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

func TestWriteInitramfs(t *testing.T) {
	var buf bytes.Buffer
	init := InitScript("echo hi", true)
	if err := WriteInitramfs(&buf, []byte("bb"), init); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	var dirs, devs []string
	r := cpio.Newc.Reader(bytes.NewReader(buf.Bytes()))
	for {
		rec, err := r.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch rec.Mode & cpio.S_IFMT {
		case cpio.S_IFREG:
			b, _ := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
			files[rec.Name] = string(b)
			if rec.Mode&0o111 == 0 {
				t.Errorf("%s is not executable", rec.Name)
			}
		case cpio.S_IFDIR:
			dirs = append(dirs, rec.Name)
		case cpio.S_IFCHR:
			devs = append(devs, rec.Name)
			if rec.Rmajor != 5 || rec.Rminor != 1 {
				t.Errorf("%s is %d:%d, want 5:1", rec.Name, rec.Rmajor, rec.Rminor)
			}
		}
	}
	if files["bin/busybox"] != "bb" || files["init"] != init {
		t.Errorf("files = %q", files)
	}
	slices.Sort(dirs)
	if want := []string{"bin", "dev", "proc", "share"}; !slices.Equal(dirs, want) {
		t.Errorf("dirs = %q, want %q", dirs, want)
	}
	if !slices.Equal(devs, []string{"dev/console"}) {
		t.Errorf("devices = %q", devs)
	}
}

func TestInitScript(t *testing.T) {
	init := InitScript(`echo "it's"`, true)
	for _, want := range []string{"mount -t proc proc /proc\nmount -t devtmpfs dev /dev\n",
		"mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,ro bench /share ",
		`sh -c 'echo "it'\''s"'` + "\npoweroff -f\n"} {
		if !strings.Contains(init, want) {
			t.Errorf("init lacks %q:\n%s", want, init)
		}
	}
	if strings.Contains(InitScript("true", false), "9p") {
		t.Error("init mounts 9p without a share")
	}
	out, err := exec.Command("sh", "-n", "-c", init).CombinedOutput()
	if err != nil {
		t.Errorf("sh -n: %v: %s", err, out)
	}
}

func TestQEMUArgs(t *testing.T) {
	q := QEMU{Machine: "pc", Kernel: "K", Initrd: "I", Cmdline: "console=ttyS0", MemoryMB: 256, Share: "/d"}
	got := strings.Join(q.Args(), " ")
	for _, want := range []string{"-M pc -accel kvm -cpu host -smp 1 -m 256M ", "-kernel K -initrd I -append console=ttyS0",
		"-bios qboot.rom", "-fsdev local,id=fs0,path=/d,security_model=none,readonly=on -device virtio-9p-pci,fsdev=fs0,mount_tag=bench,disable-legacy=on"} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q: %s", want, got)
		}
	}
	got = strings.Join(QEMU{Machine: "microvm", Accel: "tcg"}.Args(), " ")
	if strings.Contains(got, "-bios") || strings.Contains(got, "9p") || !strings.Contains(got, "-accel tcg -cpu max") {
		t.Errorf("microvm args: %s", got)
	}
}

func TestInitToCommand(t *testing.T) {
	con := "[    0.000000] Linux version 6.1\r\n[    1.018994] Run /init as init process\r\n" +
		"time=x level=INFO msg=agent\n[    1.500000] agentvsqemu: command start\r\n"
	if v, ok := InitToCommand([]byte(con)); !ok || math.Abs(v-481.006) > 1e-6 {
		t.Errorf("InitToCommand = %v, %v; want 481.006", v, ok)
	}
	// A kernel root runs the agent by its host path.
	kr := "[    2.000000] Run /usr/local/bin/corral as init process\n[    2.250000] agentvsqemu: command start\n"
	if v, ok := InitToCommand([]byte(kr)); !ok || math.Abs(v-250) > 1e-6 {
		t.Errorf("InitToCommand(kernel root) = %v, %v; want 250", v, ok)
	}
	for _, con := range []string{"[ 1.0] Run /init as init process\n", "Run /init as init process\n[ 1.5] agentvsqemu: command start\n",
		"[ 1.5] agentvsqemu: command start\n"} {
		if v, ok := InitToCommand([]byte(con)); ok {
			t.Errorf("InitToCommand(%q) = %v, want none", con, v)
		}
	}
	if !strings.HasPrefix(KmsgCmd, "echo '"+StartMsg+"' >/dev/kmsg") {
		t.Errorf("KmsgCmd = %q", KmsgCmd)
	}
}

// TestReadCmd runs ReadCmd in the host's sh on a real file and parses it.
func TestReadCmd(t *testing.T) {
	if _, err := os.Stat("/proc/uptime"); err != nil {
		t.Skip("no /proc/uptime")
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, bytes.Repeat([]byte{1}, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// A short read can take under the 10 ms uptime step: put the clock
	// forward with a sleep inside dd's slot, keeping the command's shape.
	cmd := strings.Replace(ReadCmd(p), "2>/dev/null;", "2>/dev/null; st=$?; sleep 0.05; (exit $st);", 1)
	out, err := exec.Command("sh", "-c", cmd).Output()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRead(out)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Bytes != 3<<20 || r.Seconds() <= 0 || r.MiBps() <= 0 {
		t.Errorf("ParseRead = %+v", r)
	}
	if _, err := exec.Command("sh", "-c", ReadCmd(filepath.Join(t.TempDir(), "none"))).Output(); err != nil {
		t.Fatal(err)
	}
}

func TestLineTimer(t *testing.T) {
	clock := time.Unix(100, 0)
	w := NewLineTimer(ReadStartMsg, Marker+" read status")
	w.now = func() time.Time { return clock }
	// The first mark split across writes; the second in one, later.
	for _, p := range []string{"boot\r\nagentvsq", "emu: dd st", "art\r\n", "x\n", "x\nagentvsqemu: read status=0 start=1 end=2 bytes=3\n"} {
		clock = clock.Add(time.Second)
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if d, ok := w.Between(0, 1); !ok || d != 2*time.Second {
		t.Errorf("Between = %v, %v; want 2s (marks at the 3rd and 5th writes)", d, ok)
	}
	if !strings.HasPrefix(w.String(), "boot\r\nagentvsqemu: dd start\r\n") {
		t.Errorf("kept %q", w.String())
	}
	if _, ok := NewLineTimer("x", "y").Between(0, 1); ok {
		t.Error("Between without marks")
	}
	// As exec.Cmd's Stdout: io.Copy must go through Write.
	w = NewLineTimer(ReadStartMsg)
	if _, err := io.Copy(w, strings.NewReader("a\n"+ReadStartMsg+"\n")); err != nil || w.At[0].IsZero() {
		t.Errorf("io.Copy: %v, mark at %v", err, w.At[0])
	}
}

func TestParseReadErrors(t *testing.T) {
	for in, want := range map[string]string{
		"nothing\n": "no \"agentvsqemu: read\" line",
		"agentvsqemu: read status=1 start=1.00 end=2.00 bytes=5\n": "dd exited 1",
		"agentvsqemu: read status=0 start=1.00 end=1.00 bytes=5\n": "no time passed",
		"agentvsqemu: read status=0 start=x end=1.00 bytes=5\n":    "read line",
	} {
		if _, err := ParseRead([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRead(%q) = %v, want %q", in, err, want)
		}
	}
	r, err := ParseRead([]byte("[ 1.0] x\r\nagentvsqemu: read status=0 start=1.50 end=3.50 bytes=268435456\r\n"))
	if err != nil || r.Seconds() != 2 || r.MiBps() != 128 {
		t.Errorf("ParseRead = %+v, %v", r, err)
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{3, 1, 2})
	if s != (Stats{N: 3, Median: 2, Min: 1, Max: 3}) {
		t.Errorf("odd: %+v", s)
	}
	if s := Summarize([]float64{4, 1, 2, 3}); s.Median != 2.5 {
		t.Errorf("even: %+v", s)
	}
	e := Summarize(nil)
	if e.N != 0 || !math.IsNaN(e.Median) || e.Format(1) != "n/a" {
		t.Errorf("empty: %+v %q", e, e.Format(1))
	}
	if got := s.Format(1); got != "2.0 (1.0–3.0, n=3)" {
		t.Errorf("Format = %q", got)
	}
	if got := Ratio(Stats{N: 1, Median: 3}, Stats{N: 2, Median: 2}); got != "1.50×" {
		t.Errorf("Ratio = %q", got)
	}
	if got := Ratio(Stats{N: 1, Median: 3}, e); got != "n/a" {
		t.Errorf("Ratio with nothing = %q", got)
	}
}

// TestQEMUGuestTCG boots the test kernel under QEMU TCG (no KVM needed)
// with the 9p read's initramfs and share: the init script, the mount
// options and the parser work together before a tcgkvm run relies on them.
func TestQEMUGuestTCG(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under TCG")
	}
	qemu := testenv.MustHaveQEMU(t)
	_, vmlinux, err := kernel.Find(false)
	if err != nil {
		t.Skipf("skipping: needs the plain test kernel (tests/linux/build-kernel.sh --no-patches; tests/tcgkvm's runs build it): %v", err)
	}
	testenv.MustHaveFile(t, rootfs.DefaultBusybox, "busybox-static")
	bb, err := os.ReadFile(rootfs.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	share := t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "file"), bytes.Repeat([]byte{7}, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rd := filepath.Join(t.TempDir(), "rd")
	f, err := os.Create(rd)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteInitramfs(f, bb, InitScript(ReadCmd(ShareGuest+"/file")+"; "+KmsgCmd, true)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// pc, not microvm: under TCG microvm has no clock the kernel can
	// calibrate the TSC against (KVM gives it kvmclock).
	q := QEMU{Machine: "pc", Kernel: vmlinux, Initrd: rd, Cmdline: kernel.CmdlinePlain, MemoryMB: 256, Share: share, Accel: "tcg"}
	out, err := exec.Command(qemu, q.Args()...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r, err := ParseRead(out)
	if err != nil || r.Bytes != 8<<20 {
		t.Errorf("ParseRead = %+v, %v\n%s", r, err, out)
	}
	if d, ok := InitToCommand(out); !ok || d <= 0 {
		t.Errorf("Run /init to the command: %v ms (found %v)\n%s", d, ok, out)
	}
	if !bytes.Contains(out, []byte("reboot: Power down")) {
		t.Errorf("no power-off:\n%s", out)
	}
}
