package oci

import (
	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agentvm"
)

// AgentConfig returns the agentvm configuration that boots the plan on
// machine mc (kernel, command line, console, inventory fields set by the
// caller): the plan's vCPUs, memory, root, shares, hostname and tmpfs
// mounts. The agent path is agent ("" means $CORRAL_AGENT).
func (p *Plan) AgentConfig(mc corral.Config, agent string) agentvm.Config {
	mc.CPUs, mc.Memory = p.CPUs, p.Memory
	root := agentvm.RootDirRW(p.RootDir)
	if p.ReadOnlyRoot {
		root = agentvm.RootDir(p.RootDir)
	}
	cfg := agentvm.Config{Machine: mc, Agent: agent, Root: root, Hostname: p.Hostname,
		Tmpfs: append([]string(nil), p.Tmpfs...), Shares: append([]agentvm.Share(nil), p.Shares...)}
	return cfg
}
