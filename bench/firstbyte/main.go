// Command firstbyte runs a VMM command once and reports, as one line of
// key=value pairs on standard output:
//
//	first_byte_ms  time from just before fork/exec to the first byte on the
//	               command's standard output (the guest's first serial byte)
//	exit_ms        time from start until the command was reaped
//	status         its exit status (or "killed" when -hold stopped it)
//	maxrss_kib     peak resident set size (wait4 rusage ru_maxrss)
//
// With -line TEXT it also reports
//
//	line_ms        time from start to the first console line containing TEXT
//	               (e.g. the kernel's "Run /init"); "na" if none did
//
// With -hold LINE the command is expected to keep running (a halt guest):
// once a console line equals LINE, firstbyte waits -settle, samples
// /proc/PID (VmRSS, VmHWM, and the Rss of the anonymous mapping(s) exactly
// -ram bytes long, i.e. guest RAM), then kills the command and adds
//
//	hold_ms         time from start to LINE
//	vmrss_kib       VmRSS at the sample
//	vmhwm_kib       VmHWM at the sample
//	guest_ram_kib   Rss of the guest-RAM mapping(s) ("na" if none matched)
//	vmm_rss_kib     vmrss_kib - guest_ram_kib: memory the VMM itself holds
//
// Usage: firstbyte [-line TEXT] [-hold LINE] [-ram SIZE] [-settle D] [-timeout D] [-console FILE] -- cmd args...
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "firstbyte:", err)
		os.Exit(1)
	}
}

// run parses args (flags, then the command) and writes the report line to stdout.
func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("firstbyte", flag.ContinueOnError)
	hold := fs.String("hold", "", "console line after which to sample /proc and kill the command")
	lineText := fs.String("line", "", "report line_ms, the time to the first console line containing this text")
	ramFlag := fs.String("ram", "", "guest RAM size (e.g. 64M) whose mapping's Rss to report with -hold")
	settle := fs.Duration("settle", 200*time.Millisecond, "wait after the -hold line before sampling")
	timeout := fs.Duration("timeout", 60*time.Second, "kill the command after this long")
	consolePath := fs.String("console", "", "also write the command's standard output to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) == 0 {
		return errors.New("no command given (usage: firstbyte [flags] -- cmd args...)")
	}
	var ram uint64
	if *ramFlag != "" {
		v, err := parseSize(*ramFlag)
		if err != nil {
			return err
		}
		ram = v
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout = pw
	cmd.Stderr = os.Stderr
	var console io.Writer = io.Discard
	if *consolePath != "" {
		f, err := os.Create(*consolePath)
		if err != nil {
			return err
		}
		defer f.Close()
		console = f
	}

	type lineEvent struct{ at time.Duration }
	firstByte := make(chan time.Duration, 1)
	lineSeen := make(chan time.Duration, 1)
	held := make(chan lineEvent, 1)
	readDone := make(chan struct{})

	start := time.Now()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("starting %s: %w", args[0], err)
	}
	pw.Close()
	go func() {
		defer close(readDone)
		defer pr.Close()
		br := bufio.NewReaderSize(pr, 4096)
		// First byte: a 1-byte read returns as soon as anything arrives.
		b, err := br.ReadByte()
		if err != nil {
			return
		}
		firstByte <- time.Since(start)
		console.Write([]byte{b})
		line := []byte{b}
		for {
			c, err := br.ReadByte()
			if err != nil {
				return
			}
			console.Write([]byte{c})
			if c == '\n' {
				if *lineText != "" && strings.Contains(string(line), *lineText) {
					select {
					case lineSeen <- time.Since(start):
					default:
					}
				}
				if *hold != "" && strings.TrimRight(string(line), "\r") == *hold {
					select {
					case held <- lineEvent{time.Since(start)}:
					default:
					}
				}
				line = line[:0]
				continue
			}
			if len(line) < 4096 {
				line = append(line, c)
			}
		}
	}()

	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()

	fields := []string{}
	var waitErr error
	killed := false
	select {
	case waitErr = <-waitDone:
	case ev := <-held:
		time.Sleep(*settle)
		fields = append(fields, fmt.Sprintf("hold_ms=%.3f", ms(ev.at)))
		fields = append(fields, sampleProc(cmd.Process.Pid, ram)...)
		cmd.Process.Kill()
		killed = true
		waitErr = <-waitDone
	}
	exitAt := time.Since(start)
	<-readDone

	fb := "na"
	select {
	case d := <-firstByte:
		fb = fmt.Sprintf("%.3f", ms(d))
	default:
	}
	status := "na"
	var maxrss int64
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			maxrss = ru.Maxrss
		}
		switch {
		case killed:
			status = "killed"
		case ps.Exited():
			status = strconv.Itoa(ps.ExitCode())
		default:
			status = ps.String()
		}
	}
	if ctx.Err() != nil {
		status = "timeout"
	}
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		return fmt.Errorf("waiting for %s: %w", args[0], waitErr)
	}
	out := []string{
		"first_byte_ms=" + fb,
		fmt.Sprintf("exit_ms=%.3f", ms(exitAt)),
		"status=" + strings.ReplaceAll(status, " ", "_"),
		fmt.Sprintf("maxrss_kib=%d", maxrss),
	}
	if *lineText != "" {
		lm := "na"
		select {
		case d := <-lineSeen:
			lm = fmt.Sprintf("%.3f", ms(d))
		default:
		}
		out = append(out, "line_ms="+lm)
	}
	out = append(out, fields...)
	_, err = fmt.Fprintln(stdout, strings.Join(out, " "))
	return err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sampleProc reads VmRSS/VmHWM and the Rss of mappings exactly ram bytes long.
func sampleProc(pid int, ram uint64) []string {
	var out []string
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var rss int64 = -1
	if err == nil {
		for _, l := range strings.Split(string(status), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok || (k != "VmRSS" && k != "VmHWM") {
				continue
			}
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			out = append(out, fmt.Sprintf("%s_kib=%d", strings.ToLower(k), n))
			if k == "VmRSS" {
				rss = n
			}
		}
	}
	guest := int64(-1)
	if ram > 0 {
		guest = guestRAMRss(pid, ram)
	}
	if guest < 0 {
		out = append(out, "guest_ram_kib=na", "vmm_rss_kib=na")
	} else {
		out = append(out, fmt.Sprintf("guest_ram_kib=%d", guest))
		if rss >= 0 {
			out = append(out, fmt.Sprintf("vmm_rss_kib=%d", rss-guest))
		}
	}
	return out
}

// guestRAMRss sums the Rss (KiB) of private writable mappings exactly ram
// bytes long in /proc/PID/smaps; -1 if there is none.
func guestRAMRss(pid int, ram uint64) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	return smapsRss(f, ram)
}

// smapsRss is guestRAMRss over smaps text.
func smapsRss(r io.Reader, ram uint64) int64 {
	var total int64 = -1
	match := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := sc.Text()
		fs := strings.Fields(l)
		if len(fs) >= 5 && strings.Contains(fs[0], "-") && len(fs[1]) == 4 {
			lo, hi, _ := strings.Cut(fs[0], "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			match = err1 == nil && err2 == nil && b > a && b-a == ram && strings.HasPrefix(fs[1], "rw")
			continue
		}
		if match && len(fs) >= 2 && fs[0] == "Rss:" {
			n, err := strconv.ParseInt(fs[1], 10, 64)
			if err == nil {
				if total < 0 {
					total = 0
				}
				total += n
			}
			match = false
		}
	}
	return total
}

// parseSize parses a byte count with an optional binary K/M/G suffix.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	t := strings.TrimSpace(s)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult, t = 1<<10, t[:n-1]
		case 'm', 'M':
			mult, t = 1<<20, t[:n-1]
		case 'g', 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || v == 0 || v > (1<<50)/mult {
		return 0, fmt.Errorf("bad size %q (want e.g. 64M)", s)
	}
	return v * mult, nil
}
