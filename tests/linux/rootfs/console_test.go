package rootfs

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		console string
		status  int
		ok      bool
	}{
		{"none", "[    1.0] Run /init as init process\ncorral-init: start uptime 1.00\n", 0, false},
		{"zero", "corral-init: script exit status 0 uptime 3.1\ncorral-init: exit status 0 via poweroff\n", 0, true},
		{"crlf and kernel noise", "x\r\ncorral-init: exit status 7 via port\r\n[ 9.9] reboot: Power down\r\n", 7, true},
		{"mid-line", "garbage corral-init: exit status 42 via reboot\n", 42, true},
		{"last wins", "corral-init: exit status 1 via halt\ncorral-init: exit status 2 via halt\n", 2, true},
		{"not a number", "corral-init: exit status x via poweroff\n", 0, false},
		{"script line only", "corral-init: script exit status 5 uptime 1\n", 0, false},
		{"no trailing newline", "corral-init: exit status 3 via poweroff", 3, true},
	} {
		status, ok := ExitStatus([]byte(tc.console))
		if status != tc.status || ok != tc.ok {
			t.Errorf("%s: ExitStatus = %d, %v; want %d, %v", tc.name, status, ok, tc.status, tc.ok)
		}
	}
}

func TestScriptParam(t *testing.T) {
	script := "echo 'a b'\nexit 3\n"
	p := ScriptParam(script)
	v, ok := strings.CutPrefix(p, "corral.script_b64=")
	if !ok {
		t.Fatalf("ScriptParam = %q", p)
	}
	if strings.ContainsAny(v, " \t\n\"") {
		t.Errorf("parameter value %q would be split by the kernel", v)
	}
	dec, err := base64.StdEncoding.DecodeString(v)
	if err != nil || string(dec) != script {
		t.Errorf("decoded %q, %v; want %q", dec, err, script)
	}
	if got := ExitParam(ExitPort); got != "corral.exit=port" {
		t.Errorf("ExitParam = %q", got)
	}
	// /init must understand the parameters these helpers make.
	for _, want := range []string{"corral.script_b64=*)", "corral.exit=*)"} {
		if !strings.Contains(initScript, want) {
			t.Errorf("init.sh does not handle %s", want)
		}
	}
	for _, m := range []ExitMethod{ExitPoweroff, ExitReboot, ExitHalt, ExitPort} {
		if m != ExitPoweroff && !strings.Contains(initScript, "\t"+string(m)+")") {
			t.Errorf("init.sh has no case for exit method %s", m)
		}
	}
}

// FuzzExitStatus feeds arbitrary console output (written by the guest) to ExitStatus.
func FuzzExitStatus(f *testing.F) {
	f.Add([]byte("corral-init: exit status 0 via poweroff\n"))
	f.Add([]byte("corral-init: exit status 99999999999999999999 via port\n"))
	f.Add([]byte("corral-init: exit status\n"))
	f.Add([]byte("\x00\xffcorral-init: exit status -1 via x\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		status, ok := ExitStatus(data)
		if !ok && status != 0 {
			t.Errorf("not ok but status %d", status)
		}
	})
}
