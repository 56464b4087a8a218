package main

import (
	"context"
	"fmt"
	"io"

	"github.com/corral-vmm/corral/dhcp/replay"
)

const dhcpUsage = `Usage:
  corral dhcp replay [flags] FILE...   feed frames from pcap captures or raw
                                       Ethernet frames to one DHCP server and
                                       print one JSON line per frame
Run "corral dhcp replay --help" for the server flags.
`

// dhcpCommand implements `corral dhcp ...`.
func dhcpCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "replay" {
		if len(args) > 0 && (args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
			fmt.Fprint(stdout, dhcpUsage)
			return exitOK
		}
		fmt.Fprint(stderr, dhcpUsage)
		return exitUsage
	}
	return replay.Main(ctx, args[1:], stdout, stderr)
}
