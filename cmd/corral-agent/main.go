// Command corral-agent is Corral's guest agent: it runs commands for the
// host over the protocol of agent/proto. As the guest's PID 1 (the /init
// of the initrd Corral builds, see agent/initrd) it also sets the system up
// (the root of corral.root= and the 9p shares of corral.share= on the
// kernel command line), reaps orphans, and powers the machine off on
// request. Under another init it is an ordinary service:
//
//	corral-agent [-listen vsock:1024|unix:PATH|tcp:ADDR]
//
// The program is package agent/agentcmd, which the corral binary runs too
// when started as corral-agent or as PID 1. Build it static:
// CGO_ENABLED=0 go build ./cmd/corral-agent.
package main

import (
	"os"

	"github.com/corral-vmm/corral/agent/agentcmd"
)

func main() {
	os.Exit(agentcmd.Main(os.Args[1:]))
}
