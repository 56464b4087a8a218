package agentvm

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

// Confine runs after the machine is created, with its final configuration
// (agentvm's share and vsock device added, no initrd path left to open),
// and its error stops the machine without a descriptor left open. The
// freestanding hello guest serves as kernel and as "agent" (any static
// x86-64 ELF passes the agent check): the vCPUs never run.
func TestStartConfine(t *testing.T) {
	testenv.MustHaveKVM(t)
	hello := guests.BuildT(t, "hello")
	share := t.TempDir()
	before := countFDs(t)
	errNo := errors.New("no confinement today")
	var got *corral.Config
	_, err := Start(context.Background(), Config{
		Machine: corral.Config{Kernel: hello, Memory: 64 << 20, NoInventory: true},
		Agent:   hello,
		Root:    RootDir(share),
		Confine: func(mc *corral.Config) error { got = mc; return errNo },
	})
	if !errors.Is(err, errNo) {
		t.Fatalf("Start = %v, want the Confine error", err)
	}
	if got == nil {
		t.Fatal("Confine not called")
	}
	if got.Initrd != "" || got.Vsock == nil || len(got.Shares) != 1 || got.Shares[0].Path != share || !got.Shares[0].ReadOnly {
		t.Errorf("Confine saw initrd %q, vsock %v, shares %+v; want no initrd, a vsock device and %s read-only", got.Initrd, got.Vsock, got.Shares, share)
	}
	if n := countFDs(t); n != before {
		t.Errorf("%d descriptors open after, %d before", n, before)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
