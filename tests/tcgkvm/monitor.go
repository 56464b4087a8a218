package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// hmpPrompt ends each answer of QEMU's human monitor.
const hmpPrompt = "(qemu) "

// escapes are the terminal control sequences the monitor's line editor
// mixes into its answers.
var escapes = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]|\r`)

// monitorQuery sends cmds to the QEMU human monitor listening on the unix
// socket path and returns each answer's lines.
func monitorQuery(path string, cmds ...string) ([][]string, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("tcgkvm: QEMU monitor: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, fmt.Errorf("tcgkvm: QEMU monitor: %w", err)
	}
	r := bufio.NewReader(conn)
	if _, err := readToPrompt(r); err != nil { // the banner
		return nil, err
	}
	var answers [][]string
	for _, c := range cmds {
		if _, err := fmt.Fprintf(conn, "%s\n", c); err != nil {
			return nil, fmt.Errorf("tcgkvm: QEMU monitor: %s: %w", c, err)
		}
		out, err := readToPrompt(r)
		if err != nil {
			return nil, fmt.Errorf("tcgkvm: QEMU monitor: %s: %w", c, err)
		}
		var lines []string
		for _, l := range strings.Split(escapes.ReplaceAllString(out, ""), "\n") {
			if l = strings.TrimSpace(l); l != "" && l != c {
				lines = append(lines, l)
			}
		}
		answers = append(answers, lines)
	}
	return answers, nil
}

// readToPrompt reads up to and including the next prompt.
func readToPrompt(r *bufio.Reader) (string, error) {
	var b bytes.Buffer
	for !bytes.HasSuffix(b.Bytes(), []byte(hmpPrompt)) {
		c, err := r.ReadByte()
		if err != nil {
			return b.String(), fmt.Errorf("tcgkvm: QEMU monitor: %w", err)
		}
		b.WriteByte(c)
	}
	return strings.TrimSuffix(b.String(), hmpPrompt), nil
}

// stallState is what the L1 CPU was doing when its console went silent:
// the register line with RIP, CPL and HLT, and the local APIC's timer and
// in-service/pending vectors.
func stallState(monitor string) string {
	a, err := monitorQuery(monitor, "info registers", "info lapic")
	if err != nil {
		return err.Error()
	}
	var keep []string
	for _, l := range a[0] {
		if strings.HasPrefix(l, "RIP=") || strings.HasPrefix(l, "EIP=") {
			keep = append(keep, l)
		}
	}
	for _, l := range a[1] {
		for _, p := range []string{"LVTT", "Timer", "ISR", "IRR", "APR"} {
			if strings.HasPrefix(l, p) {
				keep = append(keep, l)
				break
			}
		}
	}
	return strings.Join(keep, "; ")
}
