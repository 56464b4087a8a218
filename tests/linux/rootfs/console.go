package rootfs

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
)

// ConsolePrefix starts every line that /init prints on the console.
const ConsolePrefix = "corral-init: "

// Console lines that tests wait for (each follows ConsolePrefix).
const (
	// LineStart is the first line /init prints.
	LineStart = "start"
	// LineScriptExit is followed by " <status> uptime <seconds>" when the script has run.
	LineScriptExit = "script exit status"
	// LineExit is followed by " <status> via <method>" just before /init ends the VM.
	LineExit = "exit status"
)

// ScriptParam returns the kernel command-line parameter that makes /init run
// script instead of the baked-in one. The x86 command line holds at most 2048
// bytes, so keep such scripts short (base64 adds a third).
func ScriptParam(script string) string {
	return "corral.script_b64=" + base64.StdEncoding.EncodeToString([]byte(script))
}

// ExitParam returns the kernel command-line parameter that overrides how /init ends the VM.
func ExitParam(m ExitMethod) string {
	return "corral.exit=" + string(m)
}

// ExitStatus finds the status /init reported on the console (the
// "corral-init: exit status N via M" line). ok is false if there is none.
func ExitStatus(console []byte) (status int, ok bool) {
	for _, raw := range bytes.Split(console, []byte("\n")) {
		line := strings.TrimRight(string(raw), "\r")
		i := strings.Index(line, ConsolePrefix+LineExit+" ")
		if i < 0 {
			continue
		}
		fields := strings.Fields(line[i+len(ConsolePrefix+LineExit):])
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.Atoi(fields[0])
		if err != nil {
			continue
		}
		status, ok = n, true
	}
	return status, ok
}
