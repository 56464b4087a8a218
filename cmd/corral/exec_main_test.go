package main

import (
	"os"
	"testing"

	"github.com/corral-vmm/corral/agent/agentcmd"
)

// TestMain lets this test binary be the guest agent too, as the corral
// binary is: the end-to-end tests of corral exec put it into the guest as
// /init when it is static (CGO_ENABLED=0, as tests/tcgkvm builds it).
func TestMain(m *testing.M) {
	if agentcmd.Invoked(os.Args, os.Getpid()) {
		os.Exit(agentcmd.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}
