// Package agentcmd is the program of Corral's guest agent, so that more
// than one binary can be it: cmd/corral-agent is only this, and the static
// corral binary becomes the agent when Invoked says so (one binary to put
// into the guest).
//
// As the guest's PID 1 (the /init of the initrd agent/initrd builds) the
// agent sets the system up (agent.Init: API file systems, the root of
// corral.root=, the shares of corral.share=), reaps orphans, serves the
// host over vsock and powers the machine off on request. Problems go to
// the console as lines "corral-agent: error: ...". A setup problem does not
// stop the agent: it refuses every command with the problem, so the host
// learns why. Without vsock it cannot reach the host at all; it says so
// and powers off. Under another init it is an ordinary service:
//
//	corral-agent [-listen vsock:1024|unix:PATH|tcp:ADDR]
package agentcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/corral-vmm/corral/agent"
)

// Name is the program name under which a multi-call binary is the agent.
const Name = "corral-agent"

// Invoked reports whether a multi-call binary started with args (argv,
// program name first) as process pid should be the agent: under the name
// corral-agent, or as PID 1 under any name but corral's own (the kernel
// starts the initrd's /init, or /corral/agent with rdinit=; a container
// whose entry point is corral itself still gets the command-line tool),
// or as PID 1 given agent.InitArg (a kernel root's init=, which names
// the binary as it is, corral included).
func Invoked(args []string, pid int) bool {
	if len(args) == 0 {
		return false
	}
	base := filepath.Base(args[0])
	return base == Name || pid == 1 && (base != "corral" || slices.Contains(args[1:], agent.InitArg))
}

// Main runs the agent with the command-line arguments args (without the
// program name) and returns the exit status. As PID 1 it never returns:
// the kernel panics when init exits.
func Main(args []string) int {
	e := env{
		pid1:       os.Getpid() == 1,
		stderr:     os.Stderr,
		init:       agent.Init,
		listen:     agent.Listen,
		checkVsock: agent.CheckVsockTransport,
		announce:   agent.AnnounceReady,
		powerOff:   agent.PowerOff,
		watchCAD: func(ctx context.Context, log *slog.Logger, powerOff func() error) error {
			return (&agent.Orderly{Log: log, PowerOff: powerOff}).Watch(ctx)
		},
		settle: time.Second,
	}
	code := e.run(context.Background(), args)
	if e.pid1 {
		select {} // power-off failed or is under way
	}
	return code
}

// env is what the agent program uses of the system; tests replace it.
type env struct {
	pid1       bool
	stderr     io.Writer
	init       func(*slog.Logger) (*agent.Deferred, error)
	listen     func(spec string) (net.Listener, error)
	checkVsock func() error
	announce   func() error // tell the host the agent listens (agent.ReadyPort)
	powerOff   func() error
	watchCAD   func(ctx context.Context, log *slog.Logger, powerOff func() error) error // Ctrl-Alt-Del -> orderly power-off
	settle     time.Duration                                                            // for the console to drain before power-off
}

// consoleError prints err as the one-line console message the host and
// users look for.
func (e *env) consoleError(err error) {
	fmt.Fprintf(e.stderr, "%s: error: %v\n", Name, err)
}

func (e *env) run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	listen := fs.String("listen", fmt.Sprintf("vsock:%d", agent.DefaultPort), "where to serve: vsock:PORT, unix:PATH or tcp:ADDR")
	err := fs.Parse(args)
	switch {
	case e.pid1 && err != nil:
		// The kernel hands init the parameters it does not know; they must
		// not cost the host its agent.
		fmt.Fprintf(e.stderr, "%s: ignoring arguments %q: %v\n", Name, args, err)
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		return 2
	case !e.pid1 && fs.NArg() > 0:
		fmt.Fprintf(e.stderr, "%s: unexpected arguments %q\n", Name, fs.Args())
		return 2
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{ReplaceAttr: utcTime}))
	if err := agent.CloseOnExecInherited(); err != nil {
		log.Warn(Name+": commands may inherit the agent's descriptors", "err", err)
	}
	if err := e.serve(ctx, log, *listen); err != nil {
		e.consoleError(err)
		if e.pid1 {
			// Nobody can talk to this agent: end the machine, so that the
			// host sees it end instead of waiting.
			time.Sleep(e.settle)
			if err := e.powerOff(); err != nil {
				e.consoleError(err)
			}
		}
		return 1
	}
	return 0
}

// serve sets the system up as PID 1 and serves until the listener fails;
// its error means no host can reach the agent.
func (e *env) serve(ctx context.Context, log *slog.Logger, listen string) error {
	cfg := agent.Config{Logger: log}
	if e.pid1 {
		deferred, err := e.init(log)
		cfg.Deferred = deferred
		if err != nil {
			// Go on: the host learns the problem from every command.
			var se *agent.SetupError
			if !errors.As(err, &se) {
				se = &agent.SetupError{Problems: []error{err}}
			}
			for _, p := range se.Problems {
				e.consoleError(fmt.Errorf("guest setup: %w", p))
			}
			cfg.SetupError = se
		}
		r := agent.NewReaper()
		go r.Run(ctx)
		cfg.Reaper = r
		cfg.PowerOff = e.powerOff
		if e.watchCAD != nil {
			if err := e.watchCAD(ctx, log, e.powerOff); err != nil {
				log.Warn(Name+": Ctrl-Alt-Del will end the machine without syncing", "err", err)
			}
		}
	}
	l, err := e.listen(listen)
	if err != nil {
		return err
	}
	if e.pid1 && l.Addr().Network() == "vsock" {
		if err := e.checkVsock(); err != nil {
			l.Close()
			return err
		}
		if e.announce != nil {
			// Not waited for: serving does not depend on it.
			go func() {
				if err := e.announce(); err != nil {
					log.Debug(Name+": the host did not take the announcement", "err", err)
				}
			}()
		}
	}
	log.Info(Name+": serving", "addr", l.Addr(), "pid1", e.pid1)
	if err := agent.NewServer(cfg).Serve(ctx, l); ctx.Err() == nil {
		return err
	}
	return nil
}

// utcTime logs times in UTC. Formatting them in local time would load the
// time zone from /etc/localtime: as PID 1 on a kernel root, that is the
// host's, read over 9p (about 20 round trips before the agent serves).
func utcTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
		a.Value = slog.TimeValue(a.Value.Time().UTC())
	}
	return a
}
