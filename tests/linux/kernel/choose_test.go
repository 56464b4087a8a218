package kernel

import (
	"os"
	"path/filepath"
	"testing"
)

// fakeRoot makes a root with the given /sys/module entries and cpuinfo
// flags ("" writes no cpuinfo).
func fakeRoot(t *testing.T, modules []string, flags string) string {
	t.Helper()
	root := t.TempDir()
	for _, m := range modules {
		if err := os.MkdirAll(filepath.Join(root, "sys/module", m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if flags != "" {
		if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
			t.Fatal(err)
		}
		info := "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: " + flags + "\nbugs\t\t: spectre_v1\n"
		if err := os.WriteFile(filepath.Join(root, "proc/cpuinfo"), []byte(info), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name     string
		override string
		modules  []string
		flags    string
		patched  bool
		wantErr  bool
	}{
		{"kvm_pvm loaded", "", []string{"kvm", "kvm_pvm"}, "fpu hypervisor", true, false},
		{"kvm_pvm wins over vmx", "", []string{"kvm", "kvm_pvm"}, "fpu vmx hypervisor", true, false},
		{"kvm_intel", "", []string{"kvm", "kvm_intel"}, "fpu vmx", false, false},
		{"kvm_amd", "", []string{"kvm", "kvm_amd"}, "fpu svm", false, false},
		{"built-in KVM, vmx", "", nil, "fpu vmx", false, false},
		{"built-in KVM, svm", "", nil, "fpu svm", false, false},
		{"no vmx/svm", "", nil, "fpu hypervisor vmxx", true, false},
		{"override plain", "plain", []string{"kvm_pvm"}, "", false, false},
		{"override patched", "patched", []string{"kvm_intel"}, "", true, false},
		{"bad override", "stock", nil, "", false, true},
		{"nothing readable", "", nil, "", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Choose(tc.override, fakeRoot(t, tc.modules, tc.flags))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Choose = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Patched != tc.patched || got.Reason == "" {
				t.Errorf("Choose = %+v, want patched=%v with a reason", got, tc.patched)
			}
			wantKind, wantCPU := KindPlain, QEMUCPUHost
			if tc.patched {
				wantKind, wantCPU = KindPatched, QEMUCPUNested
			}
			if got.Kind() != wantKind || got.Cmdline() != Cmdline(tc.patched) || got.QEMUCPU() != wantCPU {
				t.Errorf("Choose = %+v: kind %q, cmdline %q, qemu cpu %q", got, got.Kind(), got.Cmdline(), got.QEMUCPU())
			}
		})
	}
}
