package agentvsqemu

// Issue 15's Linux multiqueue benchmark (TestLinuxMQ in mq_kvm_test.go):
// one initramfs, booted by `corral run` and by QEMU with the same kernel,
// vCPUs, memory and queue counts, whose /init reads a raw disk with dd
// (direct, direct from two CPUs at once, through the page cache) and
// streams TCP to the host with tcpsend, timing each phase. This file holds
// what is tested without KVM: the /init script, the initramfs, QEMU's
// arguments, the phase parser and the host's TCP sink.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// MQ phases, in the order /init runs them.
const (
	PhaseDirect   = "dd-direct"    // dd if=/dev/vda bs=1M iflag=direct
	PhaseDirect2  = "dd-direct-x2" // two such dd, one half each, pinned to CPUs 0 and 1
	PhaseBuffered = "dd-buffered"  // dd if=/dev/vda bs=1M through a dropped page cache
	PhaseTCP      = "tcp"          // tcpsend to the host
)

// MQPhases lists the phases in /init's order.
var MQPhases = []string{PhaseDirect, PhaseDirect2, PhaseBuffered, PhaseTCP}

// MQMarker starts every line MQInit prints.
const MQMarker = Marker + " mq "

// TCPSendPath is where the initramfs holds the tcpsend binary.
const TCPSendPath = "/bin/tcpsend"

// MQGuest is what the guest's /init is told: its address, the host's
// listener and the stream's size.
type MQGuest struct {
	IP       string // guest address with prefix, e.g. 10.202.0.2/24
	Sink     string // host listener, IP:PORT
	Bytes    int64  // bytes tcpsend sends in all
	Conns    int    // tcpsend's connections
	DiskMiB  int    // the disk's size, for the halves of PhaseDirect2
	NoStream bool   // skip PhaseTCP (no NIC)
}

// MQInit returns the /init script: it mounts proc, sys and dev, reports
// the guest's CPUs, queue counts and virtio features, brings eth0 up,
// runs the phases (each between two reads of /proc/uptime, with a start
// line and a result line), reports the virtio interrupts per CPU, and
// powers off.
func MQInit(g MQGuest) string {
	half := g.DiskMiB / 2
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
m() { echo "%[1]s$*"; }
cnt() { ls -d $1 2>/dev/null | wc -l; }
m "info nproc=$(nproc) vda_queues=$(cnt '/sys/block/vda/mq/*') eth0_rx=$(cnt '/sys/class/net/eth0/queues/rx-*') eth0_tx=$(cnt '/sys/class/net/eth0/queues/tx-*')"
for d in /sys/bus/virtio/devices/*; do m "virtio $(basename $d) device=$(cat $d/device) features=$(cat $d/features)"; done
q=/sys/block/vda/queue
m "blk max_sectors_kb=$(cat $q/max_sectors_kb) max_segments=$(cat $q/max_segments) max_segment_size=$(cat $q/max_segment_size) read_ahead_kb=$(cat $q/read_ahead_kb) nr_requests=$(cat $q/nr_requests)"
ip addr add %[2]s dev eth0 && ip link set eth0 up || m "eth0 setup failed"
# Kernel messages (drop_caches: 3) would land inside the result lines.
echo 1 >/proc/sys/kernel/printk
bytes=$(blockdev --getsize64 /dev/vda)
phase() {
	name=$1 n=$2; shift 2
	m "$name start"
	read a x </proc/uptime
	"$@"
	st=$?
	read b x </proc/uptime
	m "$name status=$st start=$a end=$b bytes=$n"
	m "vdastat $name $(cat /sys/block/vda/stat)"
}
two() {
	taskset -c 0 dd if=/dev/vda of=/dev/null bs=1M count=%[3]d iflag=direct 2>/dev/null & p0=$!
	taskset -c 1 dd if=/dev/vda of=/dev/null bs=1M skip=%[3]d count=%[3]d iflag=direct 2>/dev/null & p1=$!
	wait $p0; s0=$?; wait $p1; s1=$?
	return $((s0 | s1))
}
phase %[4]s $bytes dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>/dev/null
phase %[5]s $((%[3]d * 2 * 1048576)) two
echo 3 >/proc/sys/vm/drop_caches
phase %[6]s $bytes dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null
`, MQMarker, g.IP, half, PhaseDirect, PhaseDirect2, PhaseBuffered)
	if !g.NoStream {
		// Let the link settle (the first ARP) outside the timed phase.
		fmt.Fprintf(&b, "ping -c 1 -W 5 %[1]s >/dev/null 2>&1 || m \"ping %[1]s failed\"\n", strings.Split(g.Sink, ":")[0])
		fmt.Fprintf(&b, "phase %s %d %s -to %s -bytes %d -conns %d\n", PhaseTCP, g.Bytes, TCPSendPath, g.Sink, g.Bytes, g.Conns)
		// The guest's TCP counters (RetransSegs...), for a slow stream.
		b.WriteString("m \"snmp $(grep Tcp: /proc/net/snmp | tr '\\n' ' ')\"\n")
	}
	fmt.Fprintf(&b, "grep virtio /proc/interrupts | while read l; do m \"irq $l\"; done\npoweroff -f\n")
	return b.String()
}

// WriteMQInitramfs writes the initramfs of TestLinuxMQ (newc,
// uncompressed): busybox, tcpsend at TCPSendPath, /init and /dev/console.
func WriteMQInitramfs(w io.Writer, busybox, tcpsend []byte, init string) error {
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.StaticRecord(busybox, cpio.Info{Name: "bin/busybox", Mode: cpio.S_IFREG | 0o755}),
		cpio.StaticRecord(tcpsend, cpio.Info{Name: strings.TrimPrefix(TCPSendPath, "/"), Mode: cpio.S_IFREG | 0o755}),
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticRecord([]byte(init), cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}),
	}
	return writeCPIO(w, recs)
}

// MQQEMU is QEMU's side of TestLinuxMQ.
type MQQEMU struct {
	Machine   string // -M: pc (with qboot) or microvm,pcie=on
	Kernel    string
	Initrd    string
	Cmdline   string
	MemoryMB  int
	CPUs      int
	Disk      string // raw image, read-only
	BlkQueues int    // virtio-blk-pci num-queues
	Tap       string // existing TAP (IFF_MULTI_QUEUE when NetQueues > 1); "" for no NIC
	NetQueues int    // queue pairs
	MAC       string
	CPU       string // -cpu; "" is host (a nested KVM needs kernel.QEMUCPUNested)
}

// Args returns QEMU's arguments: KVM with the host's CPU model (or CPU), the
// console on stdout, exit on power-off; virtio 1.x PCI devices only (the
// test kernel has no legacy virtio-pci), vhost off (Corral has no vhost
// either, and L1 has no /dev/vhost-net). A multiqueue NIC needs mq=on and
// a vector per queue plus config and control.
func (q MQQEMU) Args() []string {
	cpu := "host"
	if q.CPU != "" {
		cpu = q.CPU
	}
	args := []string{"-M", q.Machine, "-accel", "kvm", "-cpu", cpu, "-smp", strconv.Itoa(q.CPUs),
		"-m", strconv.Itoa(q.MemoryMB) + "M", "-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio", "-no-reboot", "-kernel", q.Kernel, "-initrd", q.Initrd, "-append", q.Cmdline}
	if strings.HasPrefix(q.Machine, "pc") {
		args = append(args, "-bios", "qboot.rom")
	}
	if q.Disk != "" {
		args = append(args,
			"-drive", "if=none,id=d0,file="+q.Disk+",format=raw,readonly=on",
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d0,disable-legacy=on,num-queues=%d", q.BlkQueues))
	}
	if q.Tap != "" {
		nd := "tap,id=n0,ifname=" + q.Tap + ",script=no,downscript=no,vhost=off"
		// romfile=: no PXE option ROM (efi-virtio.rom), which Corral
		// does not have either and which tests/tcgkvm does not ship.
		dev := "virtio-net-pci,netdev=n0,disable-legacy=on,romfile=,mac=" + q.MAC
		if q.NetQueues > 1 {
			nd += fmt.Sprintf(",queues=%d", q.NetQueues)
			dev += fmt.Sprintf(",mq=on,vectors=%d", 2*q.NetQueues+2)
		}
		args = append(args, "-netdev", nd, "-device", dev)
	}
	return args
}

// Phase is one phase's result line: status, guest uptimes and bytes, as
// ReadCmd's.
type Phase = ReadResult

// MQInfo is the guest's report of itself.
type MQInfo struct {
	NProc, VdaQueues, RxQueues, TxQueues int
	Virtio                               []string // "virtioN device=0x0002 features=..."
	IRQs                                 []string // /proc/interrupts lines of virtio queues
	SNMP                                 string   // the Tcp lines of /proc/net/snmp after the stream
	Blk                                  string   // vda's request limits (/sys/block/vda/queue)
	// VdaStat is /sys/block/vda/stat after each phase, by phase.
	VdaStat map[string][]int64
}

// AvgReadKiB is the mean size of vda's reads during phase (from the
// stat before it, or boot), and their count; 0 when unknown.
func (i MQInfo) AvgReadKiB(phase string) (kib float64, reads int64) {
	cur := i.VdaStat[phase]
	if len(cur) < 3 {
		return 0, 0
	}
	prev := make([]int64, len(cur))
	if k := slices.Index(MQPhases, phase); k > 0 {
		if p := i.VdaStat[MQPhases[k-1]]; len(p) == len(cur) {
			prev = p
		}
	}
	// Fields 0 and 2: reads completed, sectors read.
	reads = cur[0] - prev[0]
	if reads <= 0 {
		return 0, 0
	}
	return float64(cur[2]-prev[2]) * 512 / 1024 / float64(reads), reads
}

// ParseMQ returns the phases the console reports, by name, and the
// guest's info line. A phase with a non-zero status or no time is an
// error; a phase that never reported is just absent.
func ParseMQ(console []byte) (map[string]Phase, MQInfo, error) {
	phases := map[string]Phase{}
	var info MQInfo
	sc := bufio.NewScanner(bytes.NewReader(console))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var errs []error
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		i := strings.Index(line, MQMarker)
		if i < 0 {
			continue
		}
		rest := line[i+len(MQMarker):]
		switch {
		case strings.HasPrefix(rest, "info "):
			if _, err := fmt.Sscanf(rest, "info nproc=%d vda_queues=%d eth0_rx=%d eth0_tx=%d",
				&info.NProc, &info.VdaQueues, &info.RxQueues, &info.TxQueues); err != nil {
				errs = append(errs, fmt.Errorf("info line %q: %w", rest, err))
			}
		case strings.HasPrefix(rest, "virtio"):
			info.Virtio = append(info.Virtio, rest)
		case strings.HasPrefix(rest, "blk "):
			info.Blk = strings.TrimPrefix(rest, "blk ")
		case strings.HasPrefix(rest, "vdastat "):
			f := strings.Fields(rest)
			if len(f) < 3 {
				errs = append(errs, fmt.Errorf("vdastat line %q", rest))
				continue
			}
			var v []int64
			for _, x := range f[2:] {
				n, err := strconv.ParseInt(x, 10, 64)
				if err != nil {
					errs = append(errs, fmt.Errorf("vdastat line %q: %w", rest, err))
					break
				}
				v = append(v, n)
			}
			if info.VdaStat == nil {
				info.VdaStat = map[string][]int64{}
			}
			info.VdaStat[f[1]] = v
		case strings.HasPrefix(rest, "snmp "):
			info.SNMP = strings.TrimPrefix(rest, "snmp ")
		case strings.HasPrefix(rest, "irq "):
			info.IRQs = append(info.IRQs, strings.Join(strings.Fields(strings.TrimPrefix(rest, "irq ")), " "))
		case strings.Contains(rest, " status="):
			name, vals, _ := strings.Cut(rest, " ")
			var p Phase
			if _, err := fmt.Sscanf(vals, "status=%d start=%g end=%g bytes=%d", &p.Status, &p.Start, &p.End, &p.Bytes); err != nil {
				errs = append(errs, fmt.Errorf("phase line %q: %w", rest, err))
				continue
			}
			switch {
			case p.Status != 0:
				errs = append(errs, fmt.Errorf("phase %s exited %d in the guest", name, p.Status))
			case p.End <= p.Start:
				errs = append(errs, fmt.Errorf("phase %s: no time passed (uptime steps are 10 ms)", name))
			case p.Bytes <= 0:
				errs = append(errs, fmt.Errorf("phase %s: %d bytes", name, p.Bytes))
			default:
				phases[name] = p
			}
		case strings.HasSuffix(rest, " failed"):
			errs = append(errs, errors.New("guest: "+rest))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return phases, info, fmt.Errorf("agentvsqemu: %w", err)
	}
	return phases, info, nil
}

// MQMarks are the console marks whose arrival a LineTimer notes: each
// phase's start and result line, in MQPhases order (mark 2i is phase i's
// start, 2i+1 its result).
func MQMarks() []string {
	var ms []string
	for _, p := range MQPhases {
		ms = append(ms, MQMarker+p+" start", MQMarker+p+" status=")
	}
	return ms
}

// Sink is the host's end of the TCP stream: it accepts connections and
// counts what they carry, from the first byte to the last connection's
// end of stream, closing each connection at its end of stream (tcpsend
// waits for that).
type Sink struct {
	l  net.Listener
	wg sync.WaitGroup

	mu          sync.Mutex
	bytes       int64
	conns       int
	open        map[net.Conn]bool
	first, last time.Time
	err         error
}

// NewSink listens on addr (IP:PORT).
func NewSink(addr string) (*Sink, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agentvsqemu: sink: %w", err)
	}
	s := &Sink{l: l, open: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the address the sink listens on.
func (s *Sink) Addr() net.Addr { return s.l.Addr() }

func (s *Sink) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.open[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *Sink) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	b := make([]byte, 256<<10)
	for {
		n, err := c.Read(b)
		now := time.Now()
		s.mu.Lock()
		if n > 0 {
			if s.first.IsZero() {
				s.first = now
			}
			s.bytes += int64(n)
			s.last = now
		}
		if err != nil {
			delete(s.open, c)
			if err != io.EOF && s.err == nil {
				s.err = err
			}
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// SinkResult is what a sink counted.
type SinkResult struct {
	Bytes int64
	Conns int
	// Span is from the first byte to the last, on the host's clock.
	Span time.Duration
	Err  error // a connection's error other than end of stream
}

// MiBps is the rate on the host's clock.
func (r SinkResult) MiBps() float64 {
	if r.Span <= 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / r.Span.Seconds()
}

// Close stops the sink, closes the connections still open (a guest that
// powered off mid-stream leaves them so: nothing more will come) and
// returns what it counted.
func (s *Sink) Close() SinkResult {
	s.l.Close()
	s.mu.Lock()
	if n := len(s.open); n > 0 && s.err == nil {
		s.err = fmt.Errorf("%d connections still open", n)
	}
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return SinkResult{Bytes: s.bytes, Conns: s.conns, Span: s.last.Sub(s.first), Err: s.err}
}
