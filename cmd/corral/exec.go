package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/agent/proto"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/gomaxprocs"
	"github.com/corral-vmm/corral/inventory"
	"github.com/corral-vmm/corral/tests/linux/kernel"
)

// Exit statuses of corral exec besides the command's own and those of
// corral run (125 usage, 126 cannot run).
const (
	exitTimeout  = 124 // --timeout passed, as timeout(1)
	exitNotFound = 127 // the command was not found in the guest, as a shell
)

// Environment variables corral exec reads.
const (
	envKernel  = "CORRAL_KERNEL"
	envCmdline = "CORRAL_CMDLINE"
)

// execKernelParams come after the kernel's own parameters and before
// $CORRAL_CMDLINE and --cmdline: a quiet boot. Each console character
// costs the guest an exit or two: ~160 lines of boot messages took a few
// seconds under nested KVM, and take tens of ms on hardware. Errors and
// the agent's own lines still reach the console; loglevel=7 later on the
// line brings the rest back.
const execKernelParams = "quiet"

// execDefaultPath is the command's PATH unless -e sets one.
const execDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execSignalGrace is how long a command may take to end after corral exec
// passed it SIGINT, SIGTERM or SIGHUP, before the VM is stopped.
const execSignalGrace = 5 * time.Second

const execUsageText = `Usage: corral exec [flags] [--] CMD [ARGS...]

Boots a throwaway VM whose init is Corral's guest agent (this corral binary),
runs CMD in it and exits with CMD's status. CMD's stdout and stderr are
corral's, byte for byte; the guest console goes to a log file.

Warm by default: the first corral exec for a kernel, initrd, --cpus, --memory,
command line, agent (corral binary) and share layout boots the VM, snapshots it
once the agent is up, keeps the snapshot in $XDG_CACHE_HOME/corral/warm (else
~/.cache/corral/warm) and runs CMD on that VM; later ones restore the snapshot
instead of booting, in a fraction of the time. The root and --share directories
are mounted after the restore, so CMD sees the host as it is now. A VM with
--disk, --net, an image --root or more than 4 shares boots cold.

By default the guest sees the host's / read-only over virtio-9p, with a
tmpfs overlay for writes (they never reach the host): CMD can be any host
program, and reads only what the user running corral exec may read.

Flags:
  --root DIR|IMAGE  the guest's / instead of the host's: a directory (served
                    read-only over 9p) or an ext4 image (read-only virtio-blk),
                    under a tmpfs overlay
  --share HOST:GUEST[,ro]
                    mount host directory HOST at GUEST in the guest, read-write
                    unless ro; repeatable
  --workdir DIR     CMD's working directory (default: the current directory
                    with the host's root, else /; refused when under /tmp,
                    /run, /dev, /proc or /sys, the guest's own, unless shared)
  -e K=V, -e K      set K in CMD's environment (K alone: the host's value);
                    repeatable. CMD starts with PATH, HOME=/root and, with -t,
                    TERM
  -i                keep stdin open for CMD (without -i its stdin is empty)
  -t                run CMD on a pseudo-terminal (the host terminal goes raw;
                    its size follows). -it is -i -t
  --timeout D       stop the VM after D (such as 30s, 5m) and exit 124
  --cold            boot the VM, neither restoring a cached snapshot nor
                    making one (--log info says which way each exec went:
                    "warm: built DIR", "warm: restored DIR in D")
  --console FILE    write the guest console to FILE (default: a temporary log,
                    removed unless corral exec fails, when its path is printed)
  --kernel PATH     guest kernel (default $CORRAL_KERNEL, else the test kernel
                    tests/linux/build-kernel.sh cached, in a Corral checkout)
  --cmdline STR     appended to the kernel command line, after $CORRAL_CMDLINE
                    (the kernel boots with quiet: loglevel=7 shows its messages)
  --cpus N, --memory SIZE, --disk PATH[,ro][,serial=ID], --net ...
                    as for corral run
  --name NAME, --label K=V
                    as for corral run
  --ttl D           as for corral run: after D the guest is asked to power
                    off (the inventory and audit trail say it expired);
                    CMD then ends with the VM (126). --timeout is the limit
                    for CMD itself
  --agent-timeout D how long to wait for the agent to come up (default 3m)
  --log LEVEL       VMM log level on stderr (default warn)
  --seccomp on|log|off, --landlock on|off, --caps drop|keep, --user UID[:GID]
                    confinement once the VM is set up, as for corral run (on
                    by default; the default console log is then kept in the
                    state directory, which corral may still write)

The guest kernel needs CONFIG_VSOCKETS, CONFIG_VIRTIO_VSOCKETS,
CONFIG_NET_9P_VIRTIO, CONFIG_9P_FS, CONFIG_OVERLAY_FS, CONFIG_TMPFS and
CONFIG_DEVTMPFS (tests/linux/kernel.config has them), 9p built in: a cold
boot on the host's root has the kernel mount it over 9p and run the agent
from it, with no initramfs.

Signals: SIGINT, SIGTERM or SIGHUP is passed to CMD; the VM is stopped if CMD
has not ended 5s later, or at a second signal.

Exit status: CMD's own; 128+n when signal n ended it; 124 --timeout passed;
125 usage or configuration error; 126 no VM could run here (no KVM, the agent
never came up, the VM ended under CMD); 127 CMD not found in the guest.
`

// execOptions is what `corral exec`'s flags set.
type execOptions struct {
	cfg          corral.Config
	memory       string
	logLevel     string
	root         string
	shares       []agentvm.Share
	workdir      string
	env          []string
	stdin, tty   bool
	timeout      time.Duration
	agentTimeout time.Duration
	cold         bool
	console      string
	sandbox      *sandboxFlags
	argv         []string
}

// newExecFlags defines `corral exec`'s flags on a new FlagSet.
func newExecFlags(stderr io.Writer) (*flag.FlagSet, *execOptions) {
	fs := flag.NewFlagSet("corral exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, execUsageText) }
	o := &execOptions{}
	cfg := &o.cfg
	fs.StringVar(&cfg.Kernel, "kernel", "", "guest kernel")
	fs.StringVar(&cfg.Cmdline, "cmdline", "", "appended to the kernel command line")
	addMachineFlags(fs, cfg, &o.memory)
	addInventoryFlags(fs, cfg)
	fs.DurationVar(&cfg.TTL, "ttl", 0, "how long the VM may run")
	fs.StringVar(&o.logLevel, "log", "warn", "log level")
	fs.StringVar(&o.root, "root", "", "the guest's / : a directory or an ext4 image")
	fs.Func("share", "HOST:GUEST[,ro] (repeatable)", func(v string) error {
		sh, err := parseExecShare(v)
		if err != nil {
			return err
		}
		o.shares = append(o.shares, sh)
		return nil
	})
	fs.StringVar(&o.workdir, "workdir", "", "the command's working directory")
	fs.Func("e", "K=V or K (repeatable)", func(v string) error {
		if k, _, _ := strings.Cut(v, "="); k == "" {
			return fmt.Errorf("-e %q: want K=V or K", v)
		}
		o.env = append(o.env, v)
		return nil
	})
	fs.BoolVar(&o.stdin, "i", false, "keep stdin open")
	fs.BoolVar(&o.tty, "t", false, "allocate a pseudo-terminal")
	fs.DurationVar(&o.timeout, "timeout", 0, "stop the VM after this long")
	fs.BoolVar(&o.cold, "cold", false, "boot; no warm snapshot")
	fs.DurationVar(&o.agentTimeout, "agent-timeout", agentvm.DefaultAgentTimeout, "wait for the agent")
	fs.StringVar(&o.console, "console", "", "guest console log file")
	o.sandbox = addSandboxFlags(fs)
	return fs, o
}

// parseExecArgs parses corral exec's command line; done says the command
// ends with status (help, or a usage error already reported).
func parseExecArgs(args []string, stderr io.Writer) (o *execOptions, status int, done bool) {
	fs, o := newExecFlags(stderr)
	if err := fs.Parse(expandShortFlags(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitOK, true
		}
		return nil, exitUsage, true
	}
	o.argv = fs.Args()
	usage := func(format string, a ...any) (*execOptions, int, bool) {
		fmt.Fprintf(stderr, "corral exec: "+format+"\n", a...)
		return nil, exitUsage, true
	}
	if len(o.argv) == 0 {
		return usage("no command given (corral exec [flags] -- CMD [ARGS...])")
	}
	if err := checkMachineSize(&o.cfg, o.memory); err != nil {
		return usage("%v", err)
	}
	if o.timeout < 0 {
		return usage("--timeout %v: must not be negative", o.timeout)
	}
	if o.agentTimeout <= 0 {
		return usage("--agent-timeout %v: must be positive", o.agentTimeout)
	}
	if o.workdir != "" && !filepath.IsAbs(o.workdir) {
		return usage("--workdir %q: must be an absolute path", o.workdir)
	}
	return o, 0, false
}

// expandShortFlags turns -it and -ti before "--" into -i -t (docker's
// spelling); the flag package takes one flag per argument.
func expandShortFlags(args []string) []string {
	end := -1
	for i, a := range args {
		if a == "--" {
			end = i
			break
		}
	}
	out := make([]string, 0, len(args)+1)
	for i, a := range args {
		if i < end && (a == "-it" || a == "-ti") {
			out = append(out, "-i", "-t")
			continue
		}
		out = append(out, a)
	}
	return out
}

// parseExecShare parses --share HOST:GUEST[,ro] (",rw" is the default).
// GUEST holds no ':', so the last one splits.
func parseExecShare(s string) (agentvm.Share, error) {
	var sh agentvm.Share
	rest := s
	if i := strings.LastIndex(s, ","); i >= 0 && (s[i+1:] == "ro" || s[i+1:] == "rw") {
		rest, sh.ReadOnly = s[:i], s[i+1:] == "ro"
	}
	i := strings.LastIndex(rest, ":")
	if i <= 0 || i == len(rest)-1 {
		return sh, fmt.Errorf("share %q: want HOST:GUEST[,ro]", s)
	}
	host, guest := rest[:i], rest[i+1:]
	if !filepath.IsAbs(guest) {
		return sh, fmt.Errorf("share %q: guest path %q must be absolute", s, guest)
	}
	abs, err := filepath.Abs(host)
	if err != nil {
		return sh, fmt.Errorf("share %q: %v", s, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return sh, fmt.Errorf("share %q: %v", s, err)
	}
	if !st.IsDir() {
		return sh, fmt.Errorf("share %q: %s is not a directory", s, abs)
	}
	sh.Host, sh.Guest = abs, guest
	return sh, nil
}

// execRoot maps --root to the guest's root: "" is the host's /, a
// directory is served over 9p, a regular file is an ext4 image.
func execRoot(root string) (agentvm.Root, error) {
	if root == "" {
		return agentvm.RootHost(), nil
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return agentvm.Root{}, fmt.Errorf("--root: %v", err)
	}
	st, err := os.Stat(abs)
	switch {
	case err != nil:
		return agentvm.Root{}, fmt.Errorf("--root: %v", err)
	case st.IsDir():
		return agentvm.RootDir(abs), nil
	case st.Mode().IsRegular():
		return agentvm.RootImage(abs), nil
	}
	return agentvm.Root{}, fmt.Errorf("--root %s: neither a directory nor an image file", root)
}

// execWorkdir is the command's working directory: --workdir, else the
// current directory when the guest sees the host's root, else /.
func execWorkdir(flagDir string, hostRoot bool, getwd func() (string, error)) string {
	if flagDir != "" {
		return flagDir
	}
	if hostRoot {
		if wd, err := getwd(); err == nil {
			return wd
		}
	}
	return "/"
}

// workdirHidden returns the guest mount (agent.GuestMounts: /tmp, /run,
// /dev...) that hides dir, the host directory the command would start in,
// from a guest on the host's root, or "" when the guest sees dir: outside
// them, or inside a share's guest path.
func workdirHidden(dir string, shares []agentvm.Share) string {
	guest := make([]string, len(shares))
	for i, s := range shares {
		if guest[i] = s.Guest; guest[i] == "" {
			guest[i] = s.Host
		}
		guest[i] = filepath.Clean(guest[i])
	}
	if _, shared := agent.Covering(dir, guest); shared {
		return ""
	}
	m, _ := agent.Covering(dir, agent.GuestMounts())
	return m
}

// execEnv builds the command's environment: PATH, HOME, TERM for a
// terminal, then each -e (K=V, or K for the host's value, left out when
// the host has none); a later setting of a name replaces an earlier one.
func execEnv(flags []string, tty bool, lookup func(string) (string, bool)) []string {
	env := []string{"PATH=" + execDefaultPath, "HOME=/root"}
	if tty {
		t, ok := lookup("TERM")
		if !ok || t == "" {
			t = "xterm"
		}
		env = append(env, "TERM="+t)
	}
	for _, e := range flags {
		if !strings.Contains(e, "=") {
			v, ok := lookup(e)
			if !ok {
				continue
			}
			e += "=" + v
		}
		env = append(env, e)
	}
	// Keep the last setting of each name, in first-seen order.
	idx := map[string]int{}
	out := env[:0:0]
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if i, ok := idx[k]; ok {
			out[i] = e
			continue
		}
		idx[k] = len(out)
		out = append(out, e)
	}
	return out
}

// execKernel picks the kernel and the command line it needs: --kernel,
// else $CORRAL_KERNEL, else the cached test kernel that tests/linux/kernel
// chooses for this host (with its command line).
func execKernel(flagKernel string, lookup func(string) (string, bool)) (path, cmdline string, err error) {
	if flagKernel != "" {
		return flagKernel, kernel.CmdlinePlain, nil
	}
	if k, ok := lookup(envKernel); ok && k != "" {
		return k, kernel.CmdlinePlain, nil
	}
	choice, err := kernel.ChooseHost()
	if err != nil {
		return "", "", fmt.Errorf("no kernel given (--kernel or $%s) and no test kernel: %v", envKernel, err)
	}
	_, vmlinux, err := kernel.Find(choice.Patched)
	if err != nil {
		return "", "", fmt.Errorf("no kernel given (--kernel or $%s), and the %s test kernel is not cached (%v); build it with %s", envKernel, choice.Kind(), err, choice.BuildHint())
	}
	return vmlinux, choice.Cmdline(), nil
}

// execAgent returns the agent to put into the guest: $CORRAL_AGENT, else
// the corral-agent beside this executable when it was built from the same
// source (siblingAgent) and is static, else this corral executable. It
// must be static.
func execAgent(lookup func(string) (string, bool)) (string, error) {
	if p, ok := lookup(agentvm.AgentEnv); ok && p != "" {
		return p, checkAgent(p)
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the corral executable (the guest agent): %v", err)
	}
	// One that cannot be an agent (built with cgo) is passed over, as
	// corral itself may still be one.
	if sib := siblingAgent(self); sib != "" && checkAgent(sib) == nil {
		return sib, nil
	}
	return self, checkAgent(self)
}

// checkAgent reads only the headers of the agent at p: a warm exec never
// reads the rest (the cache key keeps its hash), and 15 MB cost tens of
// milliseconds under TCG.
func checkAgent(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("reading the guest agent: %v", err)
	}
	defer f.Close()
	if err := initrd.CheckAgentAt(f); err != nil {
		return fmt.Errorf("%s cannot be the guest agent: %v (rebuild corral with CGO_ENABLED=0 go build ./cmd/corral)", p, err)
	}
	return nil
}

// guestVM is what corral exec uses of an agentvm.VM; tests fake it.
type guestVM interface {
	Command(name string, args ...string) *client.Cmd
	ConsoleTail(n int) []string
	Close() error
	Kill() error
}

// execDeps are corral exec's ties to the host; tests replace them.
type execDeps struct {
	lookupEnv func(string) (string, bool)
	getwd     func() (string, error)
	agent     func(lookup func(string) (string, bool)) (string, error)
	kernel    func(flagKernel string, lookup func(string) (string, bool)) (string, string, error)
	// start starts the VM: warm (agentvm.StartWarm) unless warm is nil.
	start   func(ctx context.Context, cfg agentvm.Config, warm *agentvm.Warm) (guestVM, error)
	signals func(c chan<- os.Signal) (stop func())
	warmDir func() (string, error)
}

func hostExecDeps() execDeps {
	return execDeps{
		lookupEnv: os.LookupEnv,
		getwd:     os.Getwd,
		agent:     execAgent,
		kernel:    execKernel,
		start: func(ctx context.Context, cfg agentvm.Config, warm *agentvm.Warm) (guestVM, error) {
			var vm *agentvm.VM
			var err error
			if warm != nil {
				vm, err = agentvm.StartWarm(ctx, cfg, *warm)
			} else {
				vm, err = agentvm.Start(ctx, cfg)
			}
			if err != nil {
				return nil, err
			}
			gomaxprocs.Reserve(vm.Machine().Config().CPUs) // this process is the VM's
			return vm, nil
		},
		warmDir: agentvm.DefaultWarmDir,
		signals: func(c chan<- os.Signal) func() {
			signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			return func() { signal.Stop(c) }
		},
	}
}

// execCommand implements `corral exec`.
func execCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return execMain(ctx, args, stdin, stdout, stderr, hostExecDeps())
}

var errExecTimeout = errors.New("--timeout passed")

// execSignal is the cause of a stop by signal.
type execSignal struct{ sig syscall.Signal }

func (e execSignal) Error() string { return "stopped by " + e.sig.String() }

func execMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, d execDeps) int {
	o, status, done := parseExecArgs(args, stderr)
	if done {
		return status
	}
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "corral: "+format+"\n", a...) }
	root, err := execRoot(o.root)
	if err != nil {
		say("%v", err)
		return exitUsage
	}
	kpath, kcmdline, err := d.kernel(o.cfg.Kernel, d.lookupEnv)
	if err != nil {
		say("%v", err)
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		say("--log: %v", err)
		return exitUsage
	}
	mc := o.cfg
	mc.Kernel = kpath
	extra, _ := d.lookupEnv(envCmdline)
	mc.Cmdline = strings.Join(strings.Fields(kcmdline+" "+execKernelParams+" "+extra+" "+o.cfg.Cmdline), " ")
	// The user's part of the machine, checked before anything is built
	// (agentvm.Start checks it again with its own devices added).
	if err := mc.Validate(); err != nil {
		say("%v", err)
		return exitUsage
	}
	agentPath, err := d.agent(d.lookupEnv)
	if err != nil {
		say("%v", err)
		return exitVMMFailure
	}
	// Last of the checks before anything is built, so that the others
	// report first.
	if o.workdir == "" && root == agentvm.RootHost() {
		if wd, err := d.getwd(); err == nil {
			if m := workdirHidden(wd, o.shares); m != "" {
				say("the current directory %s is not in the guest: the guest mounts its own %s over the host's; run corral exec from another directory, or give --workdir DIR, or share it (--share %s:%s)", wd, m, wd, wd)
				return exitUsage
			}
		}
	}
	mc.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	mc.Logger.Debug("exec: guest agent", "path", agentPath)
	steps := agentvm.NewSteps(mc.Logger, "exec")
	defer steps.Step("done")
	// Once confined, corral may remove files only in the directories its
	// machine writes: the temporary console log goes in the state
	// directory (Landlock's rules are set from mc, which names it).
	conDir := ""
	if o.sandbox.active() && o.sandbox.landlock {
		conDir = mc.StateDir
		if conDir == "" {
			conDir = inventory.StateDir()
		}
	}
	con, err := openExecConsole(o.console, conDir)
	if err != nil {
		say("--console: %v", err)
		return exitUsage
	}
	keepConsole := false
	defer func() { con.finish(keepConsole, stderr) }()
	mc.Console = con.f

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if o.timeout > 0 {
		t := time.AfterFunc(o.timeout, func() { cancel(errExecTimeout) })
		defer t.Stop()
	}
	var running atomic.Pointer[client.Cmd]
	sigs := make(chan os.Signal, 4)
	stopSignals := d.signals(sigs)
	defer stopSignals()
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		var first syscall.Signal
		for {
			select {
			case <-watchDone:
				return
			case s := <-sigs:
				sig, _ := s.(syscall.Signal)
				if first == 0 {
					first = sig
					if c := running.Load(); c != nil && c.SignalGroup(sig) == nil {
						// The command may end by it, with its own status;
						// the VM goes if it does not.
						time.AfterFunc(execSignalGrace, func() { cancel(execSignal{sig}) })
						continue
					}
				}
				cancel(execSignal{first})
			}
		}
	}()

	var warm *agentvm.Warm
	if !o.cold {
		dir, err := d.warmDir()
		if err == nil {
			// Landlock's rule for it needs it to exist, also when this
			// machine boots cold (agentvm makes it only for a warm one).
			err = os.MkdirAll(dir, 0o700)
		}
		if err != nil {
			mc.Logger.Info("warm: booting cold", "err", err)
		} else {
			warm = &agentvm.Warm{Dir: dir, Version: version}
			// A restored VMM maps its memory from the snapshot.
			o.sandbox.extraRead = append(o.sandbox.extraRead, dir)
		}
	}
	cfg := agentvm.Config{Machine: mc, Agent: agentPath, Root: root, Shares: o.shares, AgentTimeout: o.agentTimeout,
		// Cold: every device, share and file is open and the vCPUs have not
		// run. Warm: the VM is paused, and has run only the kernel and the
		// agent (see agentvm.StartWarm).
		Confine: func(c *corral.Config) error { return applySandbox(o.sandbox, c, c.Logger) }}
	vm, err := d.start(ctx, cfg, warm)
	if err != nil {
		keepConsole = true
		if st, ok := execCanceled(ctx, say); ok {
			return st
		}
		say("%v", err)
		var ae *agentvm.AgentError
		switch {
		case errors.Is(err, corral.ErrConfig) || errors.Is(err, agentvm.ErrConfig):
			return exitUsage
		case errors.As(err, &ae):
			if len(ae.Console) > 0 {
				say("the guest console's last lines:")
				fmt.Fprint(stderr, ae.ConsoleText())
			}
			say("the kernel boots with %s: --cmdline loglevel=7 puts all its messages on the console", execKernelParams)
		}
		return exitVMMFailure
	}
	steps.Step("VM ready")
	// Stop the VM whenever ctx ends (timeout, signal): a command's Wait
	// then returns.
	stopVM := context.AfterFunc(ctx, func() { vm.Kill() })
	defer stopVM()

	status, failed := runExecCommand(ctx, vm, o, root, stdin, stdout, stderr, d, &running, say, steps)
	if failed {
		keepConsole = true
	}
	if ctx.Err() != nil {
		vm.Kill()
	} else if err := vm.Close(); err != nil {
		say("warning: releasing the VM: %v", err)
	}
	steps.Step("VM closed")
	return status
}

// runExecCommand runs the command in the VM and returns corral exec's
// status; failed is set when the failure is corral's, not the command's.
func runExecCommand(ctx context.Context, vm guestVM, o *execOptions, root agentvm.Root, stdin io.Reader, stdout, stderr io.Writer,
	d execDeps, running *atomic.Pointer[client.Cmd], say func(string, ...any), steps *agentvm.Steps) (status int, failed bool) {
	cmd := vm.Command(o.argv[0], o.argv[1:]...)
	cmd.Env = execEnv(o.env, o.tty, d.lookupEnv)
	cmd.Dir = execWorkdir(o.workdir, root == agentvm.RootHost(), d.getwd)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if o.stdin {
		cmd.Stdin = stdin
	}
	if o.tty {
		restore, stopResize := execTerminal(cmd, stdin, stdout, running)
		defer restore()
		defer stopResize()
	}
	if err := cmd.Start(); err != nil {
		if st, ok := execCanceled(ctx, say); ok {
			return st, true
		}
		return execStartStatus(err, say)
	}
	steps.Step("command started")
	running.Store(cmd)
	err := cmd.Wait()
	running.Store(nil)
	steps.Step("command ended")
	var ee *client.ExitError
	if err == nil || errors.As(err, &ee) {
		if ee != nil {
			return ee.ShellStatus(), false
		}
		return exitOK, false
	}
	if st, ok := execCanceled(ctx, say); ok {
		return st, true
	}
	say("lost the command: %v", err)
	if tail := vm.ConsoleTail(20); len(tail) > 0 {
		say("the guest console's last lines:")
		for _, l := range tail {
			fmt.Fprintf(stderr, "  | %s\n", l)
		}
	}
	return exitVMMFailure, true
}

// execCanceled reports the status for a run that ctx ended: 124 for the
// timeout, 128+n for signal n.
func execCanceled(ctx context.Context, say func(string, ...any)) (int, bool) {
	if ctx.Err() == nil {
		return 0, false
	}
	cause := context.Cause(ctx)
	var es execSignal
	switch {
	case errors.Is(cause, errExecTimeout):
		say("timeout: stopped the VM")
		return exitTimeout, true
	case errors.As(cause, &es):
		say("%v: stopped the VM", es)
		return 128 + int(es.sig), true
	}
	say("stopped: %v", cause)
	return exitVMMFailure, true
}

// execStartStatus maps a command that did not start: 127 when the agent
// could not find it, 126 otherwise (as a shell does).
func execStartStatus(err error, say func(string, ...any)) (int, bool) {
	var pe *proto.Error
	if errors.As(err, &pe) && pe.Code == proto.CodeStart {
		say("%s", pe.Message)
		if strings.Contains(pe.Message, "not found") || strings.Contains(pe.Message, "no such file or directory") {
			return exitNotFound, false
		}
		return exitVMMFailure, false
	}
	say("%v", err)
	return exitVMMFailure, true
}

// execTerminal sets the command up for -t: the size of the host terminal
// (followed on SIGWINCH) and raw mode on it, so keys reach the guest.
func execTerminal(cmd *client.Cmd, stdin io.Reader, stdout io.Writer, running *atomic.Pointer[client.Cmd]) (restore, stop func()) {
	cmd.TTY = true
	restore, stop = func() {}, func() {}
	sizeFd := -1
	for _, s := range []any{stdout, stdin} {
		if f, ok := s.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			sizeFd = int(f.Fd())
			break
		}
	}
	if sizeFd >= 0 {
		if cols, rows, err := term.GetSize(sizeFd); err == nil {
			cmd.Rows, cmd.Cols = uint16(rows), uint16(cols)
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case <-winch:
					if c := running.Load(); c != nil {
						if cols, rows, err := term.GetSize(sizeFd); err == nil {
							c.Resize(uint16(rows), uint16(cols))
						}
					}
				}
			}
		}()
		stop = func() { signal.Stop(winch); close(done) }
	}
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if state, err := term.MakeRaw(int(f.Fd())); err == nil {
			restore = func() { term.Restore(int(f.Fd()), state) }
		}
	}
	return restore, stop
}

// execConsole is the guest console's log file.
type execConsole struct {
	f    *os.File
	path string
	temp bool // ours: removed unless kept
}

// openExecConsole opens --console FILE, or without one a temporary log in
// dir ("" is the temporary directory).
func openExecConsole(path, dir string) (*execConsole, error) {
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, err
		}
		return &execConsole{f: f, path: path}, nil
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	f, err := os.CreateTemp(dir, "corral-exec-*.log")
	if err != nil {
		return nil, err
	}
	return &execConsole{f: f, path: f.Name(), temp: true}, nil
}

// finish closes the log; a temporary one is removed unless keep, when its
// path is printed. An empty log (no VM ran) is not worth keeping.
func (c *execConsole) finish(keep bool, stderr io.Writer) {
	if st, err := c.f.Stat(); err == nil && st.Size() == 0 && c.temp {
		keep = false
	}
	c.f.Close()
	switch {
	case c.temp && !keep:
		os.Remove(c.path)
	case keep:
		fmt.Fprintf(stderr, "corral: the guest console is in %s\n", c.path)
	}
}
