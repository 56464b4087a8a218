package task

import (
	"fmt"
	"os"
	"strings"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	toml "github.com/pelletier/go-toml"
	"google.golang.org/protobuf/types/known/anypb"
)

// Environment variables the shim reads (those of containerd, which starts
// it), after the runtime options.
const (
	EnvKernel  = "CORRAL_KERNEL"
	EnvCmdline = "CORRAL_CMDLINE"
	EnvAgent   = "CORRAL_AGENT"
)

// BaseCmdline starts every guest's kernel command line (the serial
// console, and a reboot on panic, which ends the machine).
const BaseCmdline = "console=ttyS0 panic=-1"

// Options are the shim's settings, from containerd's runtime options: the
// CRI plugin passes the runtime's options table as TOML (containerd 1.7
// and 2.x), or a file named by its ConfigPath key (1.6 and later):
//
//	[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.corral]
//	  runtime_type = "io.containerd.corral.v2"
//	  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.corral.options]
//	    ConfigPath = "/etc/corral/shim.toml"   # or the keys below inline
//
// with keys Kernel, Cmdline, Agent, StateDir, WarmDir, Cold. A key left
// out falls back to $CORRAL_KERNEL, $CORRAL_CMDLINE and $CORRAL_AGENT in
// the shim's environment (containerd's); StateDir to Corral's default
// inventory; WarmDir to agentvm.DefaultWarmDir.
type Options struct {
	// Kernel is the guest kernel.
	Kernel string `toml:"Kernel"`
	// Cmdline is appended to BaseCmdline.
	Cmdline string `toml:"Cmdline"`
	// Agent is a static corral-agent (or static corral binary).
	Agent string `toml:"Agent"`
	// StateDir is the inventory's state directory.
	StateDir string `toml:"StateDir"`
	// WarmDir is the warm-start snapshot cache (agentvm.StartWarm): the
	// first task for a kernel, agent, size and command line boots and is
	// snapshotted there, later ones restore it.
	WarmDir string `toml:"WarmDir"`
	// Cold boots every task's kernel (no snapshot cache).
	Cold bool `toml:"Cold"`
}

// ParseOptions decodes a TOML options document.
func ParseOptions(b []byte) (Options, error) {
	var o Options
	if err := toml.Unmarshal(b, &o); err != nil {
		return Options{}, fmt.Errorf("shim: runtime options: %w", err)
	}
	return o, nil
}

// optionsFrom reads the runtime options of a Create request (nil: none)
// and fills what they leave out from lookup.
func optionsFrom(a *anypb.Any, lookup func(string) string) (Options, error) {
	var o Options
	if a != nil && a.GetTypeUrl() != "" {
		v, err := typeurl.UnmarshalAny(a)
		if err != nil {
			return Options{}, fmt.Errorf("shim: runtime options of type %s: %w", a.GetTypeUrl(), err)
		}
		ro, ok := v.(*runtimeoptions.Options)
		if !ok {
			return Options{}, fmt.Errorf("shim: runtime options of type %s: want %s (ConfigPath or an options table)", a.GetTypeUrl(), "runtimeoptions.v1.Options")
		}
		body := ro.ConfigBody
		if ro.ConfigPath != "" {
			if body, err = os.ReadFile(ro.ConfigPath); err != nil {
				return Options{}, fmt.Errorf("shim: runtime options: %w", err)
			}
		}
		if o, err = ParseOptions(body); err != nil {
			return Options{}, err
		}
	}
	if o.Kernel == "" {
		o.Kernel = lookup(EnvKernel)
	}
	if o.Cmdline == "" {
		o.Cmdline = lookup(EnvCmdline)
	}
	if o.Agent == "" {
		o.Agent = lookup(EnvAgent)
	}
	if o.Kernel == "" {
		return Options{}, fmt.Errorf("shim: no guest kernel: set Kernel in the runtime options or $%s in containerd's environment", EnvKernel)
	}
	return o, nil
}

// cmdline is the guest's kernel command line.
func (o Options) cmdline() string {
	return strings.Join(strings.Fields(BaseCmdline+" "+o.Cmdline), " ")
}
