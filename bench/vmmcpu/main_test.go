package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mk(at int, frames uint64, threads map[int]uint64) sample {
	return sample{at: time.Unix(0, 0).Add(time.Duration(at) * time.Millisecond), frames: frames, threads: threads,
		comm: map[int]string{1: "main", 2: "CPU 0/KVM", 3: "io"}}
}

func TestWindow(t *testing.T) {
	f := func(frames ...uint64) []sample {
		var ss []sample
		for i, n := range frames {
			ss = append(ss, mk(i*50, n, nil))
		}
		return ss
	}
	for _, c := range []struct {
		frames []uint64
		a, b   int
		ok     bool
	}{
		{[]uint64{0, 0, 10, 20, 30, 40, 40}, 2, 4, true}, // moving from 1→2 to 4→5
		{[]uint64{0, 5, 10, 15}, 1, 2, true},
		{[]uint64{0, 0, 0}, -1, 0, false},
		{[]uint64{0, 10, 10}, 1, 0, false}, // one move: no two samples inside
		{[]uint64{0, 10, 20}, 1, 1, false},
		{nil, -1, 0, false},
	} {
		a, b, ok := window(f(c.frames...))
		if a != c.a || b != c.b || ok != c.ok {
			t.Errorf("window(%v) = %d, %d, %v; want %d, %d, %v", c.frames, a, b, ok, c.a, c.b, c.ok)
		}
	}
}

func TestMeasure(t *testing.T) {
	from := mk(0, 1000, map[int]uint64{1: 5e6, 2: 100e6, 3: 0})
	// Over 1 s: thread 2 ran 0.9 s (the vCPU), 1 ran 30 ms, 3 ran 20 ms and
	// thread 4 appeared and ran 50 ms; 51000 frames.
	to := mk(1000, 52000, map[int]uint64{1: 35e6, 2: 1000e6, 3: 20e6, 4: 50e6})
	r := measure(from, to)
	if r.frames != 51000 || r.vcpuNS != 900e6 || r.vcpuComm != "CPU 0/KVM" || r.restNS != 100e6 || r.nthreads != 4 {
		t.Fatalf("measure = %+v", r)
	}
	want := "vmmcpu: 51000 frames in 1.000 s: vcpu 90% (CPU 0/KVM), rest 10.0% = 1.96 us/frame over 4 threads"
	if got := r.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	// Busiest first; the vCPU is not listed.
	want = "vmmcpu:   thread 4 (): 0.98 us/frame\n" +
		"vmmcpu:   thread 1 (main): 0.59 us/frame\n" +
		"vmmcpu:   thread 3 (io): 0.39 us/frame\n"
	if got := r.Threads(); got != want {
		t.Errorf("Threads() = %q, want %q", got, want)
	}
}

// TestRunFakeProc runs against a fake procfs and sysfs whose counter never
// moves: no steady window. Then the TAP is missing: sampling ends at once.
func TestRunFakeProc(t *testing.T) {
	dir := t.TempDir()
	proc, sys := filepath.Join(dir, "proc"), filepath.Join(dir, "sys")
	for tid, st := range map[string]string{"42": "1000 0 1\n", "43": "500 0 1\n"} {
		d := filepath.Join(proc, "42", "task", tid)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "schedstat"), []byte(st), 0o644)
		os.WriteFile(filepath.Join(d, "comm"), []byte("vmm\n"), 0o644)
	}
	stats := filepath.Join(sys, "tap0", "statistics")
	if err := os.MkdirAll(stats, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stats, "rx_packets"), []byte("7\n"), 0o644)
	s, err := take(proc, 42, fileCounter(filepath.Join(stats, "rx_packets")))
	if err != nil || s.frames != 7 || s.threads[42] != 1000 || s.threads[43] != 500 || s.comm[43] != "vmm" {
		t.Fatalf("take = %+v, %v", s, err)
	}
	var out bytes.Buffer
	args := []string{"-pid", "42", "-tap", "tap0", "-counter", "rx_packets", "-interval", "5ms", "-timeout", "60ms",
		"-proc", proc, "-sys", sys}
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "vmmcpu: no steady window") {
		t.Errorf("still counter: %q", out.String())
	}
	out.Reset()
	args[3] = "tap1" // never appears: sampling waits for it until -timeout
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "vmmcpu: no steady window (0 samples, first moving -1, last moving 0)\n" {
		t.Errorf("missing TAP: %q", out.String())
	}
	out.Reset()
	args[1], args[3] = "41", "tap0" // no such process: ends at once
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "vmmcpu: no steady window (0 samples, first moving -1, last moving 0)\n" {
		t.Errorf("missing process: %q", out.String())
	}
	if err := run([]string{"-pid", "42", "-tap", "tap0", "-counter", "bytes"}, &out); err == nil {
		t.Error("accepted -counter bytes")
	}
	if err := run([]string{"-pid", "42", "-tap", "tap0", "-counter", "rx_packets", "-io-unit", "4096"}, &out); err == nil {
		t.Error("accepted a TAP counter and -io-unit together")
	}
}

// TestIOCounter: -io-unit counts the bytes the process read, in requests.
func TestIOCounter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "io")
	os.WriteFile(path, []byte("rchar: 1310720\nwchar: 12\nsyscr: 50\n"), 0o644)
	if n, err := ioCounter(path, 131072)(); err != nil || n != 10 {
		t.Errorf("ioCounter = %d, %v; want 10 requests of 128 KiB", n, err)
	}
	os.WriteFile(path, []byte("wchar: 12\n"), 0o644)
	if _, err := ioCounter(path, 4096)(); err == nil {
		t.Error("no rchar line: no error")
	}
	if _, err := ioCounter(path+".gone", 4096)(); err != errGone {
		t.Errorf("missing file: %v, want errGone", err)
	}
}
