// Package client is the host side of Corral's agent protocol
// (agent/proto): an os/exec-shaped Cmd that runs a command in the guest
// over one connection to corral-agent (a vsock connection from the
// machine, or any net.Conn), with live, flow-controlled stdout and stderr.
package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/corral-vmm/corral/agent/proto"
)

// DefaultWindow is the output credit per stream when Cmd.Window is zero:
// the most bytes of one stream the client holds for a slow writer.
const DefaultWindow = 256 << 10

// ErrVersion matches (errors.Is) the error for an agent that speaks no
// protocol version this package does.
var ErrVersion = &proto.Error{Code: proto.CodeVersion}

// ErrRefused matches the agent's refusal of a request, such as a power-off
// by an agent that is not PID 1.
var ErrRefused = &proto.Error{Code: proto.CodeRefused}

// Credential is the user and group to run a command as.
type Credential struct {
	UID, GID uint32
}

// Cmd is a command to run in the guest, shaped like os/exec.Cmd. A Cmd
// uses its connection for one command and closes it in Wait.
type Cmd struct {
	// Path is the program; without a slash the agent looks it up in the
	// command's PATH in the guest.
	Path string
	// Args holds the command line, Args[0] included; empty means {Path}.
	Args []string
	// Env is the environment; nil means the agent's.
	Env []string
	// Dir is the working directory in the guest; empty means the agent's.
	Dir string
	// Stdin, when set, is copied to the command's standard input, then
	// closed; nil gives it an empty one. Wait does not wait for a Read of
	// Stdin that never returns.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output as it comes; nil
	// discards it. Writes to them hold the command back, never lose data.
	// When both are the same writer (and its type is comparable), it gets
	// one Write at a time, of the two streams' bytes in the order the
	// agent sent them, as with os/exec.
	Stdout, Stderr io.Writer
	// Credential, when set, runs the command as that user and group.
	Credential *Credential
	// TTY runs the command on a pseudo-terminal of Rows x Cols; its output
	// (stderr included) arrives on Stdout.
	TTY        bool
	Rows, Cols uint16
	// Window is the output credit per stream; 0 means DefaultWindow.
	Window uint32
	// WaitDelay bounds how long Wait waits for the agent after ctx ended
	// and the kill was sent; 0 waits as long as the agent takes.
	WaitDelay time.Duration
	// HostRoot, when set, is the host directory the guest's root overlays
	// read-only over 9p ("/" for the host's own root): Start looks Path up
	// in Env's PATH there (LookPathIn) and hands the agent the result,
	// which an agent of protocol version 6 or later uses for its first
	// command (after its Setup, or after a boot that set the root up)
	// instead of its own search, each of whose lookups is a 9P round
	// trip. Where the guest's view may differ (a mount, an earlier
	// command's writes) the agent searches itself.
	HostRoot string

	conn net.Conn
	ctx  context.Context

	w       *proto.Writer
	r       *proto.Reader
	pid     int
	started bool
	version uint16 // negotiated already (CommandAfterHello); 0: Start greets

	mu        sync.Mutex
	cond      sync.Cond
	outs      [2]*outStream // stdout, stderr
	stdinCred uint64        // stdin bytes the agent can take
	stdinDone bool          // the agent closed stdin, or the session ended
	exit      *proto.Exit
	fail      error // protocol, connection or agent error
	killed    bool  // ctx ended and the kill was sent
	finished  bool  // the reader ended

	readerDone chan struct{}
	writers    sync.WaitGroup
	stopCtx    func() bool
	waitOnce   sync.Once
	waitErr    error
	closeAfter []io.Closer
	stderrBuf  *bytes.Buffer
}

// Command returns a Cmd running name with args over conn.
func Command(conn net.Conn, name string, args ...string) *Cmd {
	return &Cmd{Path: name, Args: append([]string{name}, args...), conn: conn}
}

// CommandContext is Command with a context: when ctx ends before the
// command, the command and its process group are sent SIGKILL.
func CommandContext(ctx context.Context, conn net.Conn, name string, args ...string) *Cmd {
	c := Command(conn, name, args...)
	c.ctx = ctx
	return c
}

// CommandAfterHello is CommandContext (ctx may be nil) on a connection
// whose Hellos were exchanged already at protocol version v and whose
// session takes an Exec now: a readiness probe's, or a Setup session
// SetupOpen left open. It costs no Hello round trip of its own.
func CommandAfterHello(ctx context.Context, conn net.Conn, v uint16, name string, args ...string) *Cmd {
	c := Command(conn, name, args...)
	c.ctx, c.version = ctx, v
	return c
}

// Run starts the command and waits for it.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the command and returns its standard output. Unless Stderr
// is set, an *ExitError holds the end of the standard error.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("client: Stdout already set")
	}
	var out bytes.Buffer
	c.Stdout = &out
	if c.Stderr == nil {
		c.stderrBuf = &bytes.Buffer{}
		c.Stderr = &capWriter{b: c.stderrBuf, max: 32 << 10}
	}
	err := c.Run()
	return out.Bytes(), err
}

// CombinedOutput runs the command and returns its standard output and
// standard error together, in the order the agent sent them.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("client: Stdout or Stderr already set")
	}
	// One writer for both: its bytes come in arrival order.
	var b bytes.Buffer
	c.Stdout, c.Stderr = &b, &b
	err := c.Run()
	return b.Bytes(), err
}

// Pid is the command's process id in the guest, once started.
func (c *Cmd) Pid() int { return c.pid }

// Stats are a Cmd's flow-control counters.
type Stats struct {
	// MaxBuffered is the most bytes of stdout and of stderr the client
	// held at once for a writer that had not taken them: at most Window.
	MaxBuffered [2]int
}

// Stats returns the command's counters.
func (c *Cmd) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s Stats
	for i, o := range c.outs {
		if o != nil {
			s.MaxBuffered[i] = o.maxBuf
		}
	}
	return s
}

// Start starts the command: it negotiates the protocol version and returns
// once the agent has started the command or refused to.
func (c *Cmd) Start() error {
	if c.started {
		return errors.New("client: already started")
	}
	if c.conn == nil {
		return errors.New("client: Cmd has no connection (use Command)")
	}
	c.started = true
	c.cond.L = &c.mu
	ctx := c.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		c.conn.Close()
		return err
	}
	win := c.Window
	if win == 0 {
		win = DefaultWindow
	}
	win = min(win, proto.MaxWindow)
	e := &proto.Exec{Path: c.Path, Args: c.Args, Env: c.Env, Dir: c.Dir, TTY: c.TTY, Rows: c.Rows, Cols: c.Cols}
	if c.Credential != nil {
		e.Cred, e.UID, e.GID = true, c.Credential.UID, c.Credential.GID
	}
	if c.HostRoot != "" && c.Env != nil {
		if p, visited, ok := LookPathIn(c.HostRoot, c.Path, c.Env); ok {
			e.Resolved, e.Visited = p, visited
		}
	}
	if _, err := e.Append(nil); err != nil {
		c.conn.Close()
		return fmt.Errorf("client: %w", err)
	}
	// Until Started, ctx ending cuts the connection: there is no command
	// to kill yet.
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	err := c.start(e, win)
	if !stop() && err != nil {
		err = fmt.Errorf("client: starting %s: %w", c.Path, ctx.Err())
	}
	if err != nil {
		c.conn.Close()
		return err
	}
	c.conn.SetDeadline(time.Time{})

	c.readerDone = make(chan struct{})
	for _, q := range c.openOutputs(win) {
		c.writers.Add(1)
		go c.writeOut(q)
	}
	go c.readLoop()
	if c.Stdin != nil {
		go c.feedStdin()
	} else {
		c.mu.Lock() // readLoop runs already, and sets it too
		c.stdinDone = true
		c.mu.Unlock()
		c.w.Send(proto.TypeClose, proto.StreamStdin, nil)
	}
	if c.ctx != nil {
		c.stopCtx = context.AfterFunc(c.ctx, c.onCancel)
	}
	return nil
}

func (c *Cmd) start(e *proto.Exec, win uint32) error {
	if c.version == 0 {
		v, err := negotiate(c.conn)
		if err != nil {
			return err
		}
		c.version = v
	}
	if c.version < proto.ResolvedVersion {
		e.Resolved, e.Visited = "", nil
	}
	exec, err := e.Append(nil)
	if err != nil {
		return fmt.Errorf("client: %w", err) // checked before: cannot happen
	}
	c.w = proto.NewWriter(c.conn)
	c.r = proto.NewReader(c.conn, proto.FromAgent)
	// A send can fail because the agent refused the command and closed
	// the connection before reading our Credit: its Error frame may still
	// be waiting to be read, and it says more than EPIPE.
	var sendErr error
	if err := c.w.Send(proto.TypeExec, 0, exec); err != nil {
		sendErr = fmt.Errorf("client: sending Exec: %w", err)
	}
	for _, s := range []proto.Stream{proto.StreamStdout, proto.StreamStderr} {
		if sendErr != nil {
			break
		}
		if err := c.w.Send(proto.TypeCredit, s, proto.AppendU32(nil, win)); err != nil {
			sendErr = fmt.Errorf("client: sending %s Credit: %w", s, err)
		}
	}
	f, err := c.r.Next()
	if err != nil {
		if sendErr != nil {
			return sendErr
		}
		return fmt.Errorf("client: waiting for the agent to start %s: %w", c.Path, eofErr(err))
	}
	// Started after a failed Credit send: the agent took the Exec and may
	// already have run the command and sent Exit and closed before our
	// grant arrived (a command without output needs none): what it sent
	// is still to be read, and is the answer.
	if sendErr != nil && f.Type != proto.TypeError && f.Type != proto.TypeStarted {
		return sendErr
	}
	switch f.Type {
	case proto.TypeStarted:
		pid, err := proto.ParseU32(f.Payload)
		if err != nil {
			return fmt.Errorf("client: agent Started: %w", err)
		}
		c.pid = int(pid)
		return nil
	case proto.TypeError:
		return agentError(f.Payload)
	}
	return fmt.Errorf("client: agent sent %s, want Started: %w", f.Type, proto.ErrProtocol)
}

// negotiate sends Hello and returns the version the agent chose.
func negotiate(conn net.Conn) (uint16, error) {
	w := proto.NewWriter(conn)
	if err := w.Send(proto.TypeHello, 0, proto.Hello{Min: proto.MinVersion, Max: proto.Version}.Append(nil)); err != nil {
		return 0, fmt.Errorf("client: sending Hello: %w", err)
	}
	f, err := proto.NewReader(conn, proto.FromAgent).Next()
	if err != nil {
		return 0, fmt.Errorf("client: waiting for the agent's Hello: %w", eofErr(err))
	}
	switch f.Type {
	case proto.TypeHello:
		h, err := proto.ParseHello(f.Payload)
		if err != nil {
			return 0, fmt.Errorf("client: agent Hello: %w", err)
		}
		if h.Min != h.Max || h.Max < proto.MinVersion || h.Max > proto.Version {
			return 0, fmt.Errorf("client: agent chose protocol versions %d..%d, this side speaks %d..%d: %w", h.Min, h.Max, proto.MinVersion, proto.Version, ErrVersion)
		}
		return h.Max, nil
	case proto.TypeError:
		return 0, agentError(f.Payload)
	}
	return 0, fmt.Errorf("client: agent sent %s, want Hello: %w", f.Type, proto.ErrProtocol)
}

// Setup asks the agent on conn, booted with corral.setup=deferred, for
// its root switch and share mounts (see proto.Setup: root and shares are
// values of corral.root= and corral.share=), and closes conn. It returns
// once they are in place; a *proto.Error otherwise: CodeStart with the
// problems (kernel options named), ErrRefused when the agent was set up
// at boot or already had its Setup; ErrVersion for an agent older than
// proto.SetupVersion.
func Setup(ctx context.Context, conn net.Conn, root string, shares []string) error {
	return SetupRequest(ctx, conn, &proto.Setup{Root: root, Shares: shares})
}

// SetupRequest is Setup with the whole request: a host name, tmpfs
// mounts and a read-write root too, which need an agent of
// proto.SetupSystemVersion (ErrVersion otherwise).
func SetupRequest(ctx context.Context, conn net.Conn, req *proto.Setup) error {
	return runSetup(ctx, conn, 0, req)
}

// SetupAfterHello is SetupRequest on a connection whose Hellos were
// exchanged already, at protocol version v (a readiness probe's: a warm
// machine's Setup then costs no dial and Hello of its own). A deadline
// the Hello left on conn is cleared: ctx alone bounds the Setup.
func SetupAfterHello(ctx context.Context, conn net.Conn, v uint16, req *proto.Setup) error {
	return runSetup(ctx, conn, v, req)
}

// SetupOpen is SetupAfterHello, but leaves conn open once the agent has
// acked when the session's version v lets the host send its command on it
// (proto.ExecAfterSetupVersion): open reports that, and the caller then
// owns conn (CommandAfterHello runs a command on it; closing it ends the
// session). Otherwise, or on an error, conn is closed.
func SetupOpen(ctx context.Context, conn net.Conn, v uint16, req *proto.Setup) (open bool, err error) {
	if v == 0 {
		conn.Close()
		return false, errors.New("client: SetupOpen needs the version negotiated on conn")
	}
	keep := v >= proto.ExecAfterSetupVersion
	err = setupSession(ctx, conn, v, req, keep)
	return keep && err == nil, err
}

// runSetup sends req on conn, greeting the agent first unless v (the
// version negotiated already) is set, waits for its answer and closes conn.
func runSetup(ctx context.Context, conn net.Conn, v uint16, req *proto.Setup) error {
	return setupSession(ctx, conn, v, req, false)
}

// setupSession is runSetup; keep leaves conn open after an Ack.
func setupSession(ctx context.Context, conn net.Conn, v uint16, req *proto.Setup, keep bool) (err error) {
	defer func() {
		if !keep || err != nil {
			conn.Close()
		}
	}()
	// Encoded once, before any Hello: a request that cannot be sent costs
	// no session.
	p, err := req.Append(nil)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if v != 0 {
		// The probe's Hello deadline may have passed by now (the machine
		// was confined meanwhile, or a restored guest's clock jumped).
		conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err = setupOn(conn, v, req.NeedsVersion(), p)
	if !stop() && err == nil && keep {
		// ctx ended as the Ack came: its deadline may be on conn now,
		// which a command on it would trip over.
		return fmt.Errorf("client: setup: %w", ctx.Err())
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("client: setup: %w", ctx.Err())
	}
	return err
}

// setupOn sends the Setup payload p, which needs protocol version need,
// and reads the agent's answer; v is the negotiated version, 0 to greet.
func setupOn(conn net.Conn, v, need uint16, p []byte) error {
	if v == 0 {
		var err error
		if v, err = negotiate(conn); err != nil {
			return err
		}
	}
	if v < need {
		return fmt.Errorf("client: the agent speaks protocol version %d, this Setup needs %d (update the guest agent): %w", v, need, ErrVersion)
	}
	if err := proto.NewWriter(conn).Send(proto.TypeSetup, 0, p); err != nil {
		return fmt.Errorf("client: sending Setup: %w", err)
	}
	f, err := proto.NewReader(conn, proto.FromAgent).Next()
	if err != nil {
		return fmt.Errorf("client: waiting for the Setup Ack: %w", eofErr(err))
	}
	switch f.Type {
	case proto.TypeAck:
		return nil
	case proto.TypeError:
		return agentError(f.Payload)
	}
	return fmt.Errorf("client: agent sent %s, want Ack: %w", f.Type, proto.ErrProtocol)
}

func agentError(p []byte) error {
	e, err := proto.ParseError(p)
	if err != nil {
		return fmt.Errorf("client: agent Error: %w", err)
	}
	return e
}

func eofErr(err error) error {
	if err == io.EOF {
		return fmt.Errorf("agent closed the connection: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// onCancel kills the command when the context ends first.
func (c *Cmd) onCancel() {
	c.mu.Lock()
	done := c.finished
	if !done {
		c.killed = true
	}
	c.mu.Unlock()
	if done {
		return
	}
	c.w.Send(proto.TypeSignal, 0, proto.Signal{Num: uint32(syscall.SIGKILL), Group: true}.Append(nil))
	if c.WaitDelay > 0 {
		time.AfterFunc(c.WaitDelay, func() {
			c.mu.Lock()
			if !c.finished && c.fail == nil {
				c.fail = fmt.Errorf("client: agent did not end %s within WaitDelay %v of the kill: %w", c.Path, c.WaitDelay, c.ctx.Err())
			}
			c.mu.Unlock()
			c.conn.Close()
		})
	}
}

// Signal sends sig to the command.
func (c *Cmd) Signal(sig syscall.Signal) error { return c.signal(sig, false) }

// SignalGroup sends sig to the command's process group.
func (c *Cmd) SignalGroup(sig syscall.Signal) error { return c.signal(sig, true) }

func (c *Cmd) signal(sig syscall.Signal, group bool) error {
	if c.w == nil || c.readerDone == nil {
		return errors.New("client: not started")
	}
	if sig <= 0 || sig > proto.MaxSignal {
		return fmt.Errorf("client: signal %d out of range", sig)
	}
	if err := c.w.Send(proto.TypeSignal, 0, proto.Signal{Num: uint32(sig), Group: group}.Append(nil)); err != nil {
		return fmt.Errorf("client: sending signal %v: %w", sig, err)
	}
	return nil
}

// Resize sets the size of the command's terminal.
func (c *Cmd) Resize(rows, cols uint16) error {
	if c.w == nil || c.readerDone == nil {
		return errors.New("client: not started")
	}
	if err := c.w.Send(proto.TypeResize, 0, proto.Resize{Rows: rows, Cols: cols}.Append(nil)); err != nil {
		return fmt.Errorf("client: sending Resize: %w", err)
	}
	return nil
}

// setFail records the first failure and wakes everyone.
func (c *Cmd) setFail(err error) {
	c.mu.Lock()
	if c.fail == nil {
		c.fail = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// readLoop handles the agent's frames until Exit or a failure. It never
// blocks on the caller's writers: output is buffered within the credit
// granted and written by writeOut.
func (c *Cmd) readLoop() {
	defer close(c.readerDone)
	err := c.readFrames()
	c.mu.Lock()
	if err != nil && c.fail == nil {
		c.fail = err
	}
	c.finished = true
	c.stdinDone = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *Cmd) readFrames() error {
	for {
		f, err := c.r.Next()
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("client: agent closed the connection before the exit status of %s: %w", c.Path, io.ErrUnexpectedEOF)
			}
			if errors.Is(err, proto.ErrProtocol) {
				return fmt.Errorf("client: %w", err)
			}
			return fmt.Errorf("client: reading from the agent: %w", err)
		}
		switch f.Type {
		case proto.TypeData, proto.TypeClose:
			if f.Stream == proto.StreamStdin {
				c.mu.Lock()
				c.stdinDone = true
				c.cond.Broadcast()
				c.mu.Unlock()
				continue
			}
			if err := c.deliver(f); err != nil {
				return err
			}
		case proto.TypeCredit:
			n, err := proto.ParseCredit(f.Payload)
			if err != nil {
				return fmt.Errorf("client: agent Credit: %w", err)
			}
			c.mu.Lock()
			c.stdinCred += uint64(n)
			over := c.stdinCred > proto.MaxWindow
			c.cond.Broadcast()
			c.mu.Unlock()
			if over {
				return fmt.Errorf("client: agent granted more than %d bytes of stdin credit: %w", proto.MaxWindow, proto.ErrProtocol)
			}
		case proto.TypeExit:
			x, err := proto.ParseExit(f.Payload)
			if err != nil {
				return fmt.Errorf("client: agent Exit: %w", err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, o := range c.outs {
				if !o.closed {
					return fmt.Errorf("client: agent sent Exit before closing %s: %w", o.stream, proto.ErrProtocol)
				}
			}
			c.exit = &x
			return nil
		case proto.TypeError:
			return agentError(f.Payload)
		default:
			return fmt.Errorf("client: agent sent %s while %s runs: %w", f.Type, c.Path, proto.ErrProtocol)
		}
	}
}

// feedStdin copies Stdin to the agent within its credit.
func (c *Cmd) feedStdin() {
	buf := make([]byte, proto.MaxData)
	for {
		c.mu.Lock()
		for c.stdinCred == 0 && !c.stdinDone {
			c.cond.Wait()
		}
		if c.stdinDone {
			c.mu.Unlock()
			return
		}
		n := min(c.stdinCred, proto.MaxData)
		c.mu.Unlock()
		m, err := c.Stdin.Read(buf[:n])
		c.mu.Lock()
		done := c.stdinDone
		if m > 0 && !done {
			c.stdinCred -= uint64(m)
		}
		c.mu.Unlock()
		if done {
			return
		}
		if m > 0 {
			if c.w.Send(proto.TypeData, proto.StreamStdin, buf[:m]) != nil {
				return
			}
		}
		if err != nil {
			// A read error ends stdin like EOF; the command sees its end.
			c.w.Send(proto.TypeClose, proto.StreamStdin, nil)
			return
		}
	}
}

// Wait waits for the command to exit and for its output to reach Stdout
// and Stderr, then closes the connection. It returns nil for a zero exit
// status, an *ExitError for another, a *proto.Error the agent sent, or the
// connection or protocol failure.
func (c *Cmd) Wait() error {
	if c.readerDone == nil {
		return errors.New("client: not started")
	}
	c.waitOnce.Do(func() { c.waitErr = c.wait() })
	return c.waitErr
}

func (c *Cmd) wait() error {
	<-c.readerDone
	c.writers.Wait()
	if c.stopCtx != nil {
		c.stopCtx()
	}
	c.conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	x := *c.exit
	if x.Signaled || x.Value != 0 {
		ee := &ExitError{Exit: x}
		if c.stderrBuf != nil {
			ee.Stderr = c.stderrBuf.Bytes()
		}
		return ee
	}
	for _, o := range c.outs {
		if o.q != nil && o.q.writeErr != nil {
			return o.q.writeErr
		}
	}
	if c.killed {
		return c.ctx.Err()
	}
	return nil
}

// ExitError reports a command that ended unsuccessfully.
type ExitError struct {
	Exit proto.Exit
	// Stderr holds the end of the standard error when Output captured it.
	Stderr []byte
}

// ExitCode is the exit status, or -1 when a signal ended the command (as
// in os.ProcessState).
func (e *ExitError) ExitCode() int {
	if e.Exit.Signaled {
		return -1
	}
	return int(e.Exit.Value)
}

// Signal is the signal that ended the command, or -1.
func (e *ExitError) Signal() syscall.Signal {
	if !e.Exit.Signaled {
		return -1
	}
	return syscall.Signal(e.Exit.Value)
}

// ShellStatus is the status a shell reports: the exit status, or 128+n
// for signal n.
func (e *ExitError) ShellStatus() int {
	if e.Exit.Signaled {
		return 128 + int(e.Exit.Value)
	}
	return int(e.Exit.Value)
}

func (e *ExitError) Error() string {
	var s string
	if e.Exit.Signaled {
		s = "signal: " + syscall.Signal(e.Exit.Value).String()
		if e.Exit.CoreDumped {
			s += " (core dumped)"
		}
	} else {
		s = fmt.Sprintf("exit status %d", e.Exit.Value)
	}
	if e.Exit.OOM {
		s += " (killed by the OOM killer)"
	}
	return s
}

// PowerOff asks the agent on conn to power the machine off and closes
// conn. It returns once the agent has accepted; ErrRefused when the agent
// is not PID 1.
func PowerOff(ctx context.Context, conn net.Conn) error {
	_, err := PowerOffSynced(ctx, conn)
	return err
}

// PowerOffSynced is PowerOff, and reports whether the agent synced the
// guest's file systems before it accepted (protocol version 4,
// proto.SyncedPowerOffVersion): the host may then stop the machine at once
// rather than wait for the guest's power-off, unless a device holds guest
// writes the sync only handed to it (a writable disk).
func PowerOffSynced(ctx context.Context, conn net.Conn) (synced bool, err error) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	synced, err = powerOff(conn)
	if err != nil && ctx.Err() != nil {
		return false, fmt.Errorf("client: power-off: %w", ctx.Err())
	}
	return synced, err
}

func powerOff(conn net.Conn) (synced bool, err error) {
	v, err := negotiate(conn)
	if err != nil {
		return false, err
	}
	if err := proto.NewWriter(conn).Send(proto.TypePowerOff, 0, nil); err != nil {
		return false, fmt.Errorf("client: sending PowerOff: %w", err)
	}
	f, err := proto.NewReader(conn, proto.FromAgent).Next()
	if err != nil {
		return false, fmt.Errorf("client: waiting for the power-off Ack: %w", eofErr(err))
	}
	switch f.Type {
	case proto.TypeAck:
		return v >= proto.SyncedPowerOffVersion, nil
	case proto.TypeError:
		return false, agentError(f.Payload)
	}
	return false, fmt.Errorf("client: agent sent %s, want Ack: %w", f.Type, proto.ErrProtocol)
}

// capWriter keeps the first max bytes.
type capWriter struct {
	b   *bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
