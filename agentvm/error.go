package agentvm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/virtio/vsock"
)

// Why the wait for the agent ended without an answer.
type Reason int

// The reasons of an AgentError.
const (
	// ReasonExited: the machine ended first; AgentError.Exit says how.
	ReasonExited Reason = iota + 1
	// ReasonTimeout: Config.AgentTimeout passed.
	ReasonTimeout
	// ReasonPanic: the guest kernel panicked (seen on its console).
	ReasonPanic
	// ReasonCanceled: Start's context ended.
	ReasonCanceled
)

func (r Reason) String() string {
	switch r {
	case ReasonExited:
		return "the machine ended"
	case ReasonTimeout:
		return "timeout"
	case ReasonPanic:
		return "kernel panic"
	case ReasonCanceled:
		return "canceled"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// AgentError reports an agent that never answered. Error gives one line;
// Console holds the end of the guest's console for the user to read.
type AgentError struct {
	Reason Reason
	// Exit is how the machine ended, for ReasonExited.
	Exit corral.Exit
	// Waited is how long Start waited for the agent.
	Waited string
	// LastErr is the last failure of dialing or greeting the agent.
	LastErr error
	// AgentErrors are the setup errors the agent printed on the console
	// ("corral-agent: error: ..." lines, without that prefix).
	AgentErrors []string
	// Console is the last lines of the guest's console.
	Console []string
}

func (e *AgentError) Error() string {
	var b strings.Builder
	b.WriteString("agentvm: the guest agent never answered: ")
	switch e.Reason {
	case ReasonExited:
		fmt.Fprintf(&b, "the machine ended first (%s)", e.Exit)
	case ReasonTimeout:
		fmt.Fprintf(&b, "no answer within %s", e.Waited)
	case ReasonPanic:
		b.WriteString("the guest kernel panicked")
	case ReasonCanceled:
		fmt.Fprintf(&b, "canceled after %s", e.Waited)
	default:
		b.WriteString(e.Reason.String())
	}
	if len(e.AgentErrors) > 0 {
		fmt.Fprintf(&b, "; the agent said: %s", strings.Join(e.AgentErrors, "; "))
	} else if h := e.hint(); h != "" {
		b.WriteString("; " + h)
	}
	if e.LastErr != nil && e.Reason != ReasonPanic {
		fmt.Fprintf(&b, " (last try: %v)", e.LastErr)
	}
	return b.String()
}

// hint guesses the cause from the last dial error and the console, when
// the agent said nothing itself.
func (e *AgentError) hint() string {
	console := strings.Join(e.Console, "\n")
	switch {
	case e.Reason == ReasonPanic:
		if strings.Contains(console, "No working init found") || strings.Contains(console, "Requested init") {
			return "the kernel could not run /init (is the agent a static x86-64 binary? does the kernel have CONFIG_BLK_DEV_INITRD?)"
		}
		if strings.Contains(console, "Unable to mount root fs") {
			// A kernel root: the kernel mounts the host's / over 9p itself.
			return "the kernel could not mount the host's root over 9p (it needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS built in, not as modules)"
		}
		return ""
	case errors.Is(e.LastErr, vsock.ErrNotRunning):
		// The device never saw DRIVER_OK: no driver bound it.
		return "the guest never started its virtio-vsock driver (the kernel needs CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS)"
	case errors.Is(e.LastErr, vsock.ErrRefused):
		return "the guest's vsock driver runs but nothing listens on the agent's port (is /init the agent?)"
	}
	return ""
}

// ConsoleText is the console tail as indented lines, for messages.
func (e *AgentError) ConsoleText() string {
	var b strings.Builder
	for _, l := range e.Console {
		b.WriteString("  | " + l + "\n")
	}
	return b.String()
}
