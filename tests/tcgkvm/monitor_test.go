package main

import (
	"bufio"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// fakeMonitor answers like QEMU 7.2's human monitor on a unix socket: a
// banner, then each command echoed through its line editor's escapes.
func fakeMonitor(t *testing.T, answers map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("QEMU 7.2.19 monitor - type 'help' for more information\r\n(qemu) "))
		r := bufio.NewReader(c)
		for {
			cmd, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd = strings.TrimSpace(cmd)
			c.Write([]byte(echo(cmd) + "\r\n" + answers[cmd] + "(qemu) "))
		}
	}()
	return path
}

func TestStallState(t *testing.T) {
	mon := fakeMonitor(t, map[string]string{
		"info registers": "RAX=0000000000000000 RBX=0000000000000001\r\nRIP=ffffffff81c0f2ae RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\nES =0000\r\n",
		"info lapic":     "dumping local APIC state for CPU 0\r\n\r\nLVT0\t 0x00010700 active-hi edge  masked                      ExtINT (vec 0)\r\nLVTT\t 0x000400ec active-hi edge                 tsc-deadline Fixed  (vec 236)\r\nTimer\t DCR=0x0 (divide by 2) initial_count = 0 current_count = 0\r\nISR\t 236\r\nIRR\t 48\r\n\r\nAPR 0x00 TPR 0x00 DFR 0x0f LDR 0x01 PPR 0xe0\r\n",
	})
	got := stallState(mon)
	for _, want := range []string{"RIP=ffffffff81c0f2ae", "HLT=1", "LVTT", "tsc-deadline", "ISR\t 236", "IRR\t 48", "PPR 0xe0"} {
		if !strings.Contains(got, want) {
			t.Errorf("stallState = %q, want %q in it", got, want)
		}
	}
	for _, not := range []string{"RAX=", "ES =", "dumping", "\x1b", "info lapic"} {
		if strings.Contains(got, not) {
			t.Errorf("stallState = %q, has %q", got, not)
		}
	}
}

func TestStallStateNoMonitor(t *testing.T) {
	got := stallState(filepath.Join(t.TempDir(), "none.sock"))
	if !strings.Contains(got, "QEMU monitor") {
		t.Errorf("stallState without a monitor = %q, want the dial error", got)
	}
}

// echo is how the monitor's line editor echoes a command typed at once:
// the line redrawn after each character.
func echo(cmd string) string {
	var b strings.Builder
	for i := 1; i <= len(cmd); i++ {
		b.WriteString(cmd[:i] + "\x1b[K" + strings.Repeat("\x1b[D", i))
	}
	return b.String()
}
