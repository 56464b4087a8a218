package corraltest_test

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/corraltest"
)

// A test that runs a command in a throwaway VM. It skips where KVM or a
// kernel ($CORRAL_KERNEL) is missing; the VM is powered off, and checked
// for leaked descriptors, when the test ends.
func ExampleStartT() {
	var t *testing.T // the test's own: func TestGuest(t *testing.T) { ... }

	t.Parallel() // VMs may run side by side
	vm := corraltest.StartT(t, corraltest.Config{
		Machine: corral.Config{Cmdline: "console=ttyS0 panic=-1", Memory: 512 << 20},
		Root:    agentvm.RootHost(), // the guest sees the host's / read-only, with a tmpfs overlay
	})
	out, err := vm.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest kernel %s", out)

	err = vm.Command("sh", "-c", "exit 3").Run()
	var ee *corraltest.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit status: %v, want 3", err)
	}
}

// Waiting for the guest's console, here with a guest that has no agent.
func ExampleVM_Expect() {
	var t *testing.T // the test's own

	vm := corraltest.StartMachineT(t, corral.Config{Kernel: "guest.elf", Memory: 64 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := vm.Expect(ctx, regexp.MustCompile(`ready in (\d+) ms`))
	if err != nil {
		t.Fatal(err) // quotes the console's last lines
	}
	t.Logf("the guest took %s ms", m[1])
}
