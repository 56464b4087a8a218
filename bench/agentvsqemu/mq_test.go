package agentvsqemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

var testGuest = MQGuest{IP: "10.202.0.2/24", Sink: "10.202.0.1:5201", Bytes: 128 << 20, Conns: 2, DiskMiB: 256}

// TestMQInitSyntax: busybox sh parses the /init script (sh -n), with and
// without the stream.
func TestMQInitSyntax(t *testing.T) {
	if _, err := os.Stat(rootfs.DefaultBusybox); err != nil {
		t.Skipf("needs %s (busybox-static): %v", rootfs.DefaultBusybox, err)
	}
	for _, g := range []MQGuest{testGuest, {IP: "10.0.0.2/24", DiskMiB: 64, NoStream: true}} {
		init := MQInit(g)
		p := filepath.Join(t.TempDir(), "init")
		if err := os.WriteFile(p, []byte(init), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(rootfs.DefaultBusybox, "sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n: %v: %s\n%s", err, out, init)
		}
		h := g.DiskMiB / 2
		for _, want := range []string{fmt.Sprintf("count=%d iflag=direct", h), fmt.Sprintf("skip=%d count=%d", h, h), "ip addr add " + g.IP + " dev eth0", "poweroff -f"} {
			if !strings.Contains(init, want) {
				t.Errorf("init lacks %q:\n%s", want, init)
			}
		}
		if hasTCP := strings.Contains(init, "phase tcp "); hasTCP == g.NoStream {
			t.Errorf("NoStream %v but the tcp phase is there: %v", g.NoStream, hasTCP)
		}
	}
	if init := MQInit(testGuest); !strings.Contains(init, "phase tcp 134217728 /bin/tcpsend -to 10.202.0.1:5201 -bytes 134217728 -conns 2") ||
		!strings.Contains(init, "ping -c 1 -W 5 10.202.0.1 ") {
		t.Errorf("tcp phase or ping wrong:\n%s", init)
	}
}

// TestMQInitPhases runs the script's phase helper under busybox sh on the
// host: its result line must be what ParseMQ reads.
func TestMQInitPhases(t *testing.T) {
	if _, err := os.Stat(rootfs.DefaultBusybox); err != nil {
		t.Skipf("needs %s (busybox-static): %v", rootfs.DefaultBusybox, err)
	}
	init := MQInit(testGuest)
	// The helpers only: from m() to two()'s end.
	start, end := strings.Index(init, "m() {"), strings.Index(init, "phase "+PhaseDirect+" ")
	script := init[start:end] + "phase " + PhaseDirect + " 4096 sleep 0.05\nphase " + PhaseBuffered + " 4096 false\n"
	out, err := exec.Command(rootfs.DefaultBusybox, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	phases, _, err := ParseMQ(out)
	if err == nil || !strings.Contains(err.Error(), "phase dd-buffered exited 1") {
		t.Errorf("ParseMQ error %v; want dd-buffered's status 1\n%s", err, out)
	}
	p, ok := phases[PhaseDirect]
	if !ok || p.Bytes != 4096 || p.Seconds() < 0.04 || p.Seconds() > 5 {
		t.Errorf("phases %+v from\n%s", phases, out)
	}
}

func TestParseMQ(t *testing.T) {
	console := "[    1.0] Run /init as init process\r\n" +
		"agentvsqemu: mq info nproc=2 vda_queues=2 eth0_rx=1 eth0_tx=1\r\n" +
		"agentvsqemu: mq virtio virtio0 device=0x0002 features=0110\r\n" +
		"agentvsqemu: mq dd-direct start\r\n" +
		"garbage agentvsqemu: mq dd-direct status=0 start=10.50 end=12.50 bytes=268435456\r\n" +
		"agentvsqemu: mq tcp status=0 start=20.00 end=21.00 bytes=134217728\n" +
		"agentvsqemu: mq snmp Tcp: RtoAlgorithm RetransSegs Tcp: 1 7 \n" +
		"agentvsqemu: mq blk max_sectors_kb=1280 max_segments=126\n" +
		"agentvsqemu: mq vdastat dd-direct 512 0 524288 10 0 0 0 0 0 5 10\n" +
		"agentvsqemu: mq vdastat dd-direct-x2 768 0 1048576 10 0 0 0 0 0 5 10\n" +
		"agentvsqemu: mq irq 24:   100   200   PCI-MSIX-0000:00:02.0   1-edge      virtio0-req.0\n"
	phases, info, err := ParseMQ([]byte(console))
	if err != nil {
		t.Fatal(err)
	}
	if want := (MQInfo{NProc: 2, VdaQueues: 2, RxQueues: 1, TxQueues: 1,
		Virtio: []string{"virtio virtio0 device=0x0002 features=0110"},
		IRQs:   []string{"24: 100 200 PCI-MSIX-0000:00:02.0 1-edge virtio0-req.0"}}); !slices.Equal(info.Virtio, want.Virtio) ||
		!slices.Equal(info.IRQs, want.IRQs) || info.SNMP != "Tcp: RtoAlgorithm RetransSegs Tcp: 1 7 " || info.NProc != 2 || info.VdaQueues != 2 || info.RxQueues != 1 || info.TxQueues != 1 {
		t.Errorf("info %+v, want %+v", info, want)
	}
	if info.Blk != "max_sectors_kb=1280 max_segments=126" {
		t.Errorf("blk %q", info.Blk)
	}
	// 512 reads of 256 MiB since boot, then 256 more of 256 MiB.
	if kib, n := info.AvgReadKiB(PhaseDirect); kib != 512 || n != 512 {
		t.Errorf("dd-direct: %v KiB × %d", kib, n)
	}
	if kib, n := info.AvgReadKiB(PhaseDirect2); kib != 1024 || n != 256 {
		t.Errorf("dd-direct-x2: %v KiB × %d", kib, n)
	}
	if kib, n := info.AvgReadKiB(PhaseTCP); kib != 0 || n != 0 {
		t.Errorf("tcp: %v KiB × %d", kib, n)
	}
	if d := phases[PhaseDirect]; d.MiBps() != 128 || d.Seconds() != 2 {
		t.Errorf("dd-direct %+v: %v MiB/s", d, d.MiBps())
	}
	if d := phases[PhaseTCP]; d.MiBps() != 128 {
		t.Errorf("tcp %+v", d)
	}
	if len(phases) != 2 {
		t.Errorf("phases %v", phases)
	}
	for _, bad := range []string{
		"agentvsqemu: mq dd-direct status=1 start=1 end=2 bytes=5\n",
		"agentvsqemu: mq dd-direct status=0 start=2 end=2 bytes=5\n",
		"agentvsqemu: mq dd-direct status=0 start=1 end=2 bytes=0\n",
		"agentvsqemu: mq dd-direct status=x\n",
		"agentvsqemu: mq info nproc=two\n",
		"agentvsqemu: mq eth0 setup failed\n",
		"agentvsqemu: mq vdastat dd-direct 1 x\n",
	} {
		if phases, _, err := ParseMQ([]byte(bad)); err == nil || len(phases) != 0 {
			t.Errorf("ParseMQ(%q) = %v, %v; want an error and no phase", bad, phases, err)
		}
	}
}

func TestMQMarksTimed(t *testing.T) {
	lt := NewLineTimer(MQMarks()...)
	io.WriteString(lt, "agentvsqemu: mq dd-direct start\nagentvsqemu: mq dd-direct-x2 start\n")
	io.WriteString(lt, "agentvsqemu: mq dd-direct-x2 status=0 ...\n")
	if lt.At[0].IsZero() || !lt.At[1].IsZero() || lt.At[2].IsZero() || lt.At[3].IsZero() || !lt.At[4].IsZero() {
		t.Errorf("marks seen: %v", lt.At)
	}
}

func TestMQQEMUArgs(t *testing.T) {
	q := MQQEMU{Machine: "pc", Kernel: "vmlinux", Initrd: "rd", Cmdline: "console=ttyS0", MemoryMB: 512, CPUs: 2,
		Disk: "/d.img", BlkQueues: 2, Tap: "qtap0", NetQueues: 1, MAC: "52:54:00:12:34:56"}
	args := strings.Join(q.Args(), " ")
	for _, want := range []string{"-accel kvm -cpu host -smp 2 ", "-m 512M ", "-bios qboot.rom",
		"-drive if=none,id=d0,file=/d.img,format=raw,readonly=on -device virtio-blk-pci,drive=d0,disable-legacy=on,num-queues=2",
		"-netdev tap,id=n0,ifname=qtap0,script=no,downscript=no,vhost=off -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile=,mac=52:54:00:12:34:56"} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "mq=on") || strings.Contains(args, "queues=1") {
		t.Errorf("one queue pair with mq: %s", args)
	}
	q.NetQueues, q.Machine = 2, "microvm,pcie=on"
	args = strings.Join(q.Args(), " ")
	if !strings.Contains(args, "vhost=off,queues=2 ") || !strings.Contains(args, ",mq=on,vectors=6") || strings.Contains(args, "qboot") {
		t.Errorf("two pairs: %s", args)
	}
	q.Tap, q.Disk = "", ""
	if args = strings.Join(q.Args(), " "); strings.Contains(args, "-netdev") || strings.Contains(args, "-drive") {
		t.Errorf("no devices: %s", args)
	}
	q.CPU = "qemu64,vendor=GenuineIntel"
	if args = strings.Join(q.Args(), " "); !strings.Contains(args, "-cpu qemu64,vendor=GenuineIntel -smp 2 ") {
		t.Errorf("nested CPU model: %s", args)
	}
}

func TestWriteMQInitramfs(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteMQInitramfs(&buf, []byte("bb"), []byte("ts"), "#!init"); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	r := cpio.Newc.Reader(bytes.NewReader(buf.Bytes()))
	for {
		rec, err := r.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Mode&cpio.S_IFMT == cpio.S_IFREG {
			b, _ := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
			files[rec.Name] = string(b)
			if rec.Mode&0o111 == 0 {
				t.Errorf("%s is not executable", rec.Name)
			}
		}
	}
	if want := map[string]string{"bin/busybox": "bb", "bin/tcpsend": "ts", "init": "#!init"}; len(files) != 3 ||
		files["bin/busybox"] != want["bin/busybox"] || files["bin/tcpsend"] != want["bin/tcpsend"] || files["init"] != want["init"] {
		t.Errorf("files %q, want %q", files, want)
	}
}

// TestSink: two connections' bytes are counted together and the span
// runs from the first byte to the last; a connection still open at
// Close is an error, and Close does not wait for it.
func TestSink(t *testing.T) {
	s, err := NewSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	send := func(n int, pause time.Duration) {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(make([]byte, n/2))
		time.Sleep(pause)
		c.Write(make([]byte, n-n/2))
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil { // the sink's close
			t.Error(err)
		}
		c.Close()
	}
	send(300000, 50*time.Millisecond)
	send(1001, 0)
	r := s.Close()
	if r.Bytes != 301001 || r.Conns != 2 || r.Err != nil || r.Span < 50*time.Millisecond || r.MiBps() <= 0 {
		t.Errorf("result %+v", r)
	}

	s, err = NewSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		n := s.bytes
		s.mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
	}
	t0 := time.Now()
	r = s.Close()
	if r.Err == nil || !strings.Contains(r.Err.Error(), "1 connections still open") || r.Bytes != 1 || time.Since(t0) > 2*time.Second {
		t.Errorf("open connection: %+v after %v", r, time.Since(t0))
	}
}

func TestSNMPFields(t *testing.T) {
	for in, want := range map[string]string{
		"Tcp: RtoAlgorithm InSegs OutSegs RetransSegs Tcp: 1 10 20 3": "InSegs=10 OutSegs=20 RetransSegs=3",
		"": "", "Tcp:": "Tcp:", "Tcp: A B Tcp: 1": "Tcp: A B Tcp: 1",
	} {
		if got := snmpFields(in); got != want {
			t.Errorf("snmpFields(%q) = %q, want %q", in, got, want)
		}
	}
}
