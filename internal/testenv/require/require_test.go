package require

import (
	"maps"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"kvm", []string{KVM}},
		{"kvm,root,qemu", []string{KVM, Root, QEMU}},
		{" root , qemu,,tools, ", []string{Root, QEMU, Tools}},
		{"kvm,root,kernel", []string{KVM, Root, Kernel}},
	} {
		got, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		want := map[string]bool{}
		for _, w := range c.want {
			want[w] = true
		}
		if !maps.Equal(got, want) {
			t.Errorf("Parse(%q) = %v, want %v", c.in, got, want)
		}
	}
	for _, bad := range []string{"kmv", "KVM", "kvm,rot", "all", "kvm;root", "kernels"} {
		if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), Env) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", bad, err, Env)
		}
	}
}

// TestMissing checks the skip-or-fail decision for each need against
// several CORRAL_REQUIRE values.
func TestMissing(t *testing.T) {
	for _, c := range []struct {
		env, need string
		fail      bool
	}{
		{"", KVM, false},
		{"", Root, false},
		{"root,qemu", KVM, false},
		{"root,qemu", Root, true},
		{"root,qemu", QEMU, true},
		{"root,qemu", Tools, false},
		{"kvm", KVM, true},
		{"kvm,root,qemu,tools", Tools, true},
		{"kvm,root,qemu,tools", Kernel, false},
		{"kvm,kernel", Kernel, true},
		{"kvm,bogus", Root, true}, // an unreadable requirement fails every missing need
	} {
		var r Recorder
		after := false
		r.Run(func(t testing.TB) {
			missing(t, c.env, c.need, "the reason")
			after = true
		})
		if after {
			t.Errorf("env %q need %s: the test went on after missing", c.env, c.need)
		}
		if c.fail {
			if r.FailMsg == "" || r.SkipMsg != "" {
				t.Errorf("env %q need %s: skipped %q, failed %q; want a failure", c.env, c.need, r.SkipMsg, r.FailMsg)
			}
			continue
		}
		if r.SkipMsg == "" || r.FailMsg != "" {
			t.Errorf("env %q need %s: skipped %q, failed %q; want a skip", c.env, c.need, r.SkipMsg, r.FailMsg)
		}
		if !strings.Contains(r.SkipMsg, "the reason") || !strings.Contains(r.SkipMsg, Env+"="+c.need) {
			t.Errorf("skip message %q lacks the reason or the hint %s=%s", r.SkipMsg, Env, c.need)
		}
	}
	var r Recorder
	r.Run(func(t testing.TB) { missing(t, "qemu,kvm", KVM, "no /dev/kvm") })
	if want := Env + "=qemu,kvm requires kvm: no /dev/kvm"; r.FailMsg != want {
		t.Errorf("failure message %q, want %q", r.FailMsg, want)
	}
}

// TestMissingReadsEnv checks that Missing takes CORRAL_REQUIRE from the
// environment.
func TestMissingReadsEnv(t *testing.T) {
	t.Setenv(Env, "qemu")
	var r Recorder
	r.Run(func(t testing.TB) { Missing(t, QEMU, "no %s", "qemu") })
	if r.FailMsg == "" {
		t.Errorf("%s=qemu: a missing qemu skipped (%q)", Env, r.SkipMsg)
	}
	t.Setenv(Env, "")
	r = Recorder{}
	r.Run(func(t testing.TB) { Missing(t, QEMU, "no %s", "qemu") })
	if r.SkipMsg == "" || !strings.Contains(r.SkipMsg, "no qemu") {
		t.Errorf("unset %s: %+v, want a skip saying no qemu", Env, r)
	}
}

func TestRecorderPassesOtherPanics(t *testing.T) {
	defer func() {
		if v := recover(); v != "boom" {
			t.Errorf("recovered %v, want the function's own panic", v)
		}
	}()
	var r Recorder
	r.Run(func(testing.TB) { panic("boom") })
}
