// Package agent is the guest side of Corral's agent protocol
// (agent/proto): a Server that runs commands for the host and streams their
// standard I/O live with per-stream flow control. cmd/corral-agent wraps
// it as the guest's PID 1 (see Init) or as an ordinary service.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/proto"
)

// DefaultWindow is the stdin credit the agent grants when Config.StdinWindow
// is zero.
const DefaultWindow = 256 << 10

// Config configures a Server.
type Config struct {
	// Logger receives session failures; nil discards them.
	Logger *slog.Logger
	// StdinWindow is how many stdin bytes the agent holds for a command that
	// has not read them yet; 0 means DefaultWindow.
	StdinWindow uint32
	// PowerOff powers the machine off; nil refuses power-off requests (an
	// agent that is not PID 1 must not).
	PowerOff func() error
	// Sync flushes the guest's file systems before a power-off request is
	// acked (the host may stop the machine on the Ack:
	// proto.SyncedPowerOffVersion); nil means sync(2).
	Sync func()
	// Reaper, when set, collects the exit status of every command: required
	// when the agent reaps all children (PID 1), which would otherwise
	// steal the statuses. Its Run must be running. Nil waits by pid.
	Reaper *Reaper
	// HandshakeTimeout bounds the wait for Hello and the request; 0 means
	// 10 s.
	HandshakeTimeout time.Duration
	// SetupError, when set, is why the system is not as the host asked
	// (Init's *SetupError): every command is refused with it, as a start
	// failure, so none runs without its root or shares. Power-off still
	// works.
	SetupError error
	// Deferred, when set, is the setup an agent booted with
	// corral.setup=deferred left for the host: a Setup request carries it
	// out, once, and every command before that is refused (CodeRefused).
	// Init returns one for a setup done at boot as well, already applied:
	// Setup is refused, as without one. Either way, when the root is an
	// overlay over a 9p share, the first command may use a path the host
	// resolved there (proto.Exec.Resolved).
	Deferred *Deferred
}

// Stats counts what a Server did.
type Stats struct {
	Sessions       uint64 // connections served
	ProtocolErrors uint64 // sessions the host ended with a protocol error
	Started        uint64 // commands started
	// HostResolved counts commands started at the path the host resolved
	// (proto.Exec.Resolved), without the agent's own PATH search.
	HostResolved uint64
	StartErrors  uint64 // commands that could not be started
	BytesIn      uint64 // stdin bytes written to commands
	BytesOut     uint64 // stdout and stderr bytes sent to the host
	// MaxStdinQueued is the most stdin bytes ever held for a command that
	// had not read them: at most StdinWindow.
	MaxStdinQueued uint64
}

// Server serves the agent protocol. Its methods are safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger

	sessions, protocolErrors, started, startErrors atomic.Uint64
	bytesIn, bytesOut, maxStdinQueued              atomic.Uint64
	// execs counts Exec requests that got as far as their start: only
	// the first may use the host's resolved path (lookPath).
	execs, resolvedUsed atomic.Uint64
	// mountinfo is the guest's mount table (tests give their own).
	mountinfo string
}

// NewServer returns a Server configured by cfg.
func NewServer(cfg Config) *Server {
	if cfg.StdinWindow == 0 {
		cfg.StdinWindow = DefaultWindow
	}
	cfg.StdinWindow = min(cfg.StdinWindow, proto.MaxWindow)
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, mountinfo: "/proc/self/mountinfo"}
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Sessions:       s.sessions.Load(),
		ProtocolErrors: s.protocolErrors.Load(),
		Started:        s.started.Load(),
		HostResolved:   s.resolvedUsed.Load(),
		StartErrors:    s.startErrors.Load(),
		BytesIn:        s.bytesIn.Load(),
		BytesOut:       s.bytesOut.Load(),
		MaxStdinQueued: s.maxStdinQueued.Load(),
	}
}

// Serve accepts connections on l and serves each in its own goroutine until
// ctx ends (it then closes l) or Accept fails. Sessions still running when
// it returns go on until their commands end.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("agent: accept on %s: %w", l.Addr(), err)
		}
		go func() {
			if err := s.ServeConn(ctx, c); err != nil {
				s.log.Warn("agent: session failed", "remote", c.RemoteAddr(), "err", err)
			}
		}()
	}
}

// ServeConn serves one session on conn and closes it. It returns nil when
// the session ended by the protocol's rules (the host may have been sent an
// Error, such as a command that could not start), and an error when the
// host broke the protocol or went away before the end.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	s.sessions.Add(1)
	ss := &session{s: s, conn: conn, w: proto.NewWriter(conn), r: proto.NewReader(conn, proto.FromHost)}
	err := ss.run(ctx)
	if errors.Is(err, proto.ErrProtocol) {
		s.protocolErrors.Add(1)
		if !ss.errSent {
			ss.sendError(proto.CodeProtocol, err.Error())
		}
	}
	if ss.errSent {
		// The host may still send what it pipelined behind its request
		// (stdin credit): closing now would fail its writes before it read
		// the Error, and it would report a broken pipe instead of the
		// reason (a start or setup failure). Wait, briefly, for it to close.
		conn.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, conn)
	}
	return err
}

type session struct {
	errSent bool   // an Error went out: the session's last frame
	version uint16 // negotiated
	s       *Server
	conn    net.Conn
	w       *proto.Writer
	r       *proto.Reader
}

// sendError sends a final Error without waiting long on a host that does
// not read.
func (ss *session) sendError(code proto.ErrorCode, msg string) {
	ss.errSent = true
	ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
	ss.w.Send(proto.TypeError, 0, (&proto.Error{Code: code, Message: msg}).Append(nil))
}

func (ss *session) run(ctx context.Context) error {
	ss.conn.SetDeadline(time.Now().Add(ss.s.cfg.HandshakeTimeout))
	f, err := ss.r.Next()
	if err != nil {
		if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNRESET) {
			// A connection the host gave up on before its Hello reached
			// the agent, reset by a warm restore's vsock transport reset
			// when the snapshot caught it: nobody to answer, and a console
			// warning would cost the restored exec its UART time.
			return nil
		}
		return fmt.Errorf("agent: reading Hello: %w", err)
	}
	if f.Type != proto.TypeHello {
		return fmt.Errorf("agent: host sent %s first, want Hello: %w", f.Type, proto.ErrProtocol)
	}
	hello, err := proto.ParseHello(f.Payload)
	if err != nil {
		return fmt.Errorf("agent: host Hello: %w", err)
	}
	v, err := proto.Negotiate(hello)
	if err != nil {
		ss.sendError(proto.CodeVersion, err.(*proto.Error).Message)
		return nil
	}
	ss.version = v
	if err := ss.w.Send(proto.TypeHello, 0, proto.Hello{Min: v, Max: v}.Append(nil)); err != nil {
		return fmt.Errorf("agent: sending Hello: %w", err)
	}
	if f, err = ss.r.Next(); err != nil {
		if err == io.EOF || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, os.ErrDeadlineExceeded) {
			// A readiness probe (agentvm.Start greets until the agent
			// answers) hangs up after the Hello: not a failure. A vsock
			// peer that closes at once can leave the socket reset rather
			// than shut down (ENOTCONN, seen on every restored warm
			// machine): no warning on the console for that either. Nor
			// for a probe still open when a warm snapshot was taken: the
			// restored guest's clock jumps past its deadline (a console
			// warning costs a restored exec hundreds of UART exits).
			return nil
		}
		return fmt.Errorf("agent: reading the request: %w", err)
	}
	ss.conn.SetDeadline(time.Time{})
	for afterSetup := false; ; afterSetup = true {
		more, err := ss.request(ctx, f, afterSetup)
		if !more || err != nil {
			return err
		}
		// Setup was acked in a session of ExecAfterSetupVersion: the host
		// may send its command here, whenever it has one (no deadline).
		if f, err = ss.r.Next(); err != nil {
			if err == io.EOF || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNRESET) {
				return nil // the host had no command for this session
			}
			return fmt.Errorf("agent: reading the request after Setup: %w", err)
		}
	}
}

// request serves the session's request f (afterSetup: the one a version
// 5 session may send after Setup's Ack). more reports a Setup acked in a
// session that goes on (proto.ExecAfterSetupVersion).
func (ss *session) request(ctx context.Context, f proto.Frame, afterSetup bool) (more bool, err error) {
	switch f.Type {
	case proto.TypePowerOff:
		return false, ss.powerOff()
	case proto.TypeSetup:
		if afterSetup {
			return false, fmt.Errorf("agent: host sent a second Setup in one session: %w", proto.ErrProtocol)
		}
		if ss.version < proto.SetupVersion {
			return false, fmt.Errorf("agent: host sent Setup in a protocol version %d session (Setup is version %d): %w", ss.version, proto.SetupVersion, proto.ErrProtocol)
		}
		req, err := proto.ParseSetup(f.Payload)
		if err != nil {
			return false, fmt.Errorf("agent: host Setup: %w", err)
		}
		if v := req.NeedsVersion(); ss.version < v {
			return false, fmt.Errorf("agent: host sent a Setup of protocol version %d (host name, tmpfs or read-write root) in a version %d session: %w", v, ss.version, proto.ErrProtocol)
		}
		acked, err := ss.setup(req)
		return acked && ss.version >= proto.ExecAfterSetupVersion, err
	case proto.TypeExec:
		e, err := proto.ParseExec(f.Payload)
		if err != nil {
			return false, fmt.Errorf("agent: host Exec: %w", err)
		}
		if e.Resolved != "" && ss.version < proto.ResolvedVersion {
			return false, fmt.Errorf("agent: host sent an Exec with a resolved path (protocol version %d) in a version %d session: %w", proto.ResolvedVersion, ss.version, proto.ErrProtocol)
		}
		if d := ss.s.cfg.Deferred; d != nil {
			applied, err := d.Status()
			if !applied {
				ss.s.startErrors.Add(1)
				ss.sendError(proto.CodeRefused, "agent: no command before Setup: this agent's setup is deferred ("+SetupPrefix+SetupDeferred+") and the host has not sent Setup")
				return false, nil
			}
			if err != nil {
				ss.s.startErrors.Add(1)
				ss.sendError(proto.CodeStart, err.Error())
				return false, nil
			}
		}
		if err := ss.s.cfg.SetupError; err != nil {
			ss.s.startErrors.Add(1)
			ss.sendError(proto.CodeStart, err.Error())
			return false, nil
		}
		return false, ss.exec(ctx, e)
	}
	after := "Hello, want Exec, Setup or PowerOff"
	if afterSetup {
		after = "Setup's Ack, want Exec or PowerOff"
	}
	return false, fmt.Errorf("agent: host sent %s after %s: %w", f.Type, after, proto.ErrProtocol)
}

// setup carries out a Setup request: Ack when the root and shares are in
// place (acked); Error CodeStart with the problems (kernel options named)
// when they are not, or when the request's values are bad (the setup is
// then still to do); CodeRefused when there is nothing to set up.
func (ss *session) setup(req *proto.Setup) (acked bool, err error) {
	d := ss.s.cfg.Deferred
	if d == nil || d.atBoot {
		ss.sendError(proto.CodeRefused, "agent: Setup refused: the system was set up at boot (the kernel command line has no "+SetupPrefix+SetupDeferred+")")
		return false, nil
	}
	cfg, err := SetupRequestConfig(req)
	if err != nil {
		ss.sendError(proto.CodeStart, err.Error())
		return false, nil
	}
	if err := d.Apply(cfg); err != nil {
		if errors.Is(err, ErrSetupDone) {
			ss.sendError(proto.CodeRefused, err.Error())
			return false, nil
		}
		ss.s.log.Warn("agent: deferred setup failed", "err", err)
		ss.sendError(proto.CodeStart, err.Error())
		return false, nil
	}
	if err := ss.w.Send(proto.TypeAck, 0, nil); err != nil {
		return false, fmt.Errorf("agent: sending Setup Ack: %w", err)
	}
	return true, nil
}

func (ss *session) powerOff() error {
	if ss.s.cfg.PowerOff == nil {
		ss.sendError(proto.CodeRefused, "power-off refused: the agent is not PID 1")
		return nil
	}
	// The Ack promises the sync (SyncedPowerOffVersion): a host may stop
	// the machine as soon as it reads it.
	if ss.s.cfg.Sync != nil {
		ss.s.cfg.Sync()
	} else {
		unix.Sync()
	}
	if err := ss.w.Send(proto.TypeAck, 0, nil); err != nil {
		return fmt.Errorf("agent: sending power-off Ack: %w", err)
	}
	// Give the Ack time to reach the host: it closes the connection on
	// receipt, so wait for that (bounded) before the machine goes away.
	ss.conn.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, ss.conn)
	if err := ss.s.cfg.PowerOff(); err != nil {
		return fmt.Errorf("agent: power-off: %w", err)
	}
	return nil
}

// credit is the send window of one output stream.
type credit struct {
	mu    sync.Mutex
	cond  sync.Cond
	avail uint64
	dead  bool
}

func newCredit() *credit {
	c := &credit{}
	c.cond.L = &c.mu
	return c
}

// add grants n more bytes; false when the grant exceeds MaxWindow.
func (c *credit) add(n uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.avail+uint64(n) > proto.MaxWindow {
		return false
	}
	c.avail += uint64(n)
	c.cond.Broadcast()
	return true
}

// wait blocks until there is credit and returns it, or 0 once stopped.
func (c *credit) wait() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.avail == 0 && !c.dead {
		c.cond.Wait()
	}
	if c.dead {
		return 0
	}
	return c.avail
}

func (c *credit) consume(n int) {
	c.mu.Lock()
	c.avail -= uint64(n)
	c.mu.Unlock()
}

func (c *credit) stop() {
	c.mu.Lock()
	c.dead = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// stdinQueue holds stdin bytes the host sent within its credit until the
// command takes them.
type stdinQueue struct {
	mu          sync.Mutex
	cond        sync.Cond
	buf         []byte
	outstanding uint64 // credit the host still has
	closed      bool   // the host sent Close
	dead        bool
}

func newStdinQueue(window uint32) *stdinQueue {
	q := &stdinQueue{outstanding: uint64(window)}
	q.cond.L = &q.mu
	return q
}

// push queues data from the host; it returns the queue length, or an error
// when the host broke the protocol.
func (q *stdinQueue) push(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, fmt.Errorf("agent: host sent stdin Data after Close: %w", proto.ErrProtocol)
	}
	if uint64(len(p)) > q.outstanding {
		return 0, fmt.Errorf("agent: host sent %d stdin bytes with %d bytes of credit: %w", len(p), q.outstanding, proto.ErrProtocol)
	}
	q.outstanding -= uint64(len(p))
	if len(q.buf) == 0 {
		q.buf = q.buf[:0]
	}
	q.buf = append(q.buf, p...)
	q.cond.Broadcast()
	return len(q.buf), nil
}

func (q *stdinQueue) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("agent: host closed stdin twice: %w", proto.ErrProtocol)
	}
	q.closed = true
	q.cond.Broadcast()
	return nil
}

// pop moves up to len(dst) queued bytes into dst. It returns eof once the
// host closed stdin and everything was taken, and stop when the session
// ends.
func (q *stdinQueue) pop(dst []byte) (n int, eof, stop bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.buf) == 0 && !q.closed && !q.dead {
		q.cond.Wait()
	}
	if q.dead {
		return 0, false, true
	}
	if len(q.buf) == 0 {
		return 0, true, false
	}
	n = copy(dst, q.buf)
	q.buf = q.buf[n:]
	return n, false, false
}

// regrant returns n bytes of credit to the host's account.
func (q *stdinQueue) regrant(n int) {
	q.mu.Lock()
	q.outstanding += uint64(n)
	q.mu.Unlock()
}

func (q *stdinQueue) stop() {
	q.mu.Lock()
	q.dead = true
	q.buf = nil
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (s *Server) noteStdinQueued(n int) {
	for {
		old := s.maxStdinQueued.Load()
		if uint64(n) <= old || s.maxStdinQueued.CompareAndSwap(old, uint64(n)) {
			return
		}
	}
}

func (ss *session) exec(ctx context.Context, e *proto.Exec) error {
	s := ss.s
	first := s.execs.Add(1) == 1
	if e.Resolved != "" && !(first && s.cfg.Deferred != nil && s.cfg.Deferred.pristineRoot()) {
		e.Resolved = "" // the guest's root may differ from the host's by now
	}
	p, err := startProcess(e, s.cfg.Reaper, s.mountinfo)
	if err != nil {
		s.startErrors.Add(1)
		ss.sendError(proto.CodeStart, err.Error())
		return nil
	}
	s.started.Add(1)
	if p.resolved {
		s.resolvedUsed.Add(1)
	}
	exited := make(chan proto.Exit, 1)
	waitErr := make(chan error, 1)
	go func() {
		x, err := p.wait()
		if err != nil {
			waitErr <- err
			return
		}
		exited <- x
	}()

	credits := map[proto.Stream]*credit{proto.StreamStdout: newCredit(), proto.StreamStderr: newCredit()}
	q := newStdinQueue(s.cfg.StdinWindow)
	var pumps sync.WaitGroup
	var pumpErr atomic.Pointer[error]
	abort := func() {
		for _, c := range credits {
			c.stop()
		}
		q.stop()
		p.closeFiles()
	}
	defer func() {
		abort()
		ss.conn.Close()
		pumps.Wait()
	}()

	if err := ss.w.Send(proto.TypeStarted, 0, proto.AppendU32(nil, uint32(p.pid))); err != nil {
		p.kill()
		return fmt.Errorf("agent: sending Started: %w", err)
	}
	if err := ss.w.Send(proto.TypeCredit, proto.StreamStdin, proto.AppendU32(nil, s.cfg.StdinWindow)); err != nil {
		p.kill()
		return fmt.Errorf("agent: sending stdin Credit: %w", err)
	}
	for _, o := range p.outputs {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			if err := ss.pump(o, credits[o.stream], p.tty); err != nil {
				pumpErr.CompareAndSwap(nil, &err)
			}
		}()
	}
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		ss.feedStdin(p, q)
	}()
	hostErr := make(chan error, 1)
	go func() { hostErr <- ss.readHost(p, credits, q) }()

	var x proto.Exit
	select {
	case x = <-exited:
	case err := <-waitErr:
		p.kill()
		ss.sendError(proto.CodeInternal, err.Error())
		return err
	case <-ctx.Done():
		p.kill()
		ss.sendError(proto.CodeInternal, "agent: shutting down")
		return fmt.Errorf("agent: %w", ctx.Err())
	case err := <-hostErr:
		// The host went away or broke the protocol: nobody will read the
		// output, so end the command rather than leave it blocked on credit.
		p.kill()
		if err == io.EOF {
			err = fmt.Errorf("agent: host closed the connection before the command ended: %w", io.ErrUnexpectedEOF)
		}
		if errors.Is(err, proto.ErrProtocol) {
			// Before the deferred close, which unblocks the pumps.
			ss.sendError(proto.CodeProtocol, err.Error())
		}
		return err
	}
	outDone := make(chan struct{})
	go func() {
		// Only the output pumps: stdin may still be blocked on a host
		// that never closes it.
		for _, o := range p.outputs {
			<-o.done
		}
		close(outDone)
	}()
	select {
	case <-outDone:
	case err := <-hostErr:
		if err == io.EOF {
			err = fmt.Errorf("agent: host closed the connection before the output ended: %w", io.ErrUnexpectedEOF)
		}
		if errors.Is(err, proto.ErrProtocol) {
			ss.sendError(proto.CodeProtocol, err.Error())
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	if perr := pumpErr.Load(); perr != nil {
		return *perr
	}
	if err := ss.w.Send(proto.TypeExit, 0, x.Append(nil)); err != nil {
		return fmt.Errorf("agent: sending Exit: %w", err)
	}
	return nil
}

// pump streams one output of the command to the host within its credit:
// with no credit it stops reading, so the command blocks in write(2).
func (ss *session) pump(o *output, c *credit, tty bool) error {
	defer close(o.done)
	stream, f := o.stream, o.f
	buf := make([]byte, proto.MaxData)
	for {
		n := c.wait()
		if n == 0 {
			return nil
		}
		m, err := f.Read(buf[:min(n, proto.MaxData)])
		if m > 0 {
			c.consume(m)
			if err := ss.w.Send(proto.TypeData, stream, buf[:m]); err != nil {
				return fmt.Errorf("agent: sending %s: %w", stream, err)
			}
			ss.s.bytesOut.Add(uint64(m))
		}
		if err != nil {
			// A terminal's master reads EIO once no process holds the
			// slave: that is its end of file.
			if err != io.EOF && !(tty && errors.Is(err, syscall.EIO)) {
				if errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
					return nil // the session ended
				}
				ss.s.log.Warn("agent: reading command output", "stream", stream, "err", err)
			}
			if err := ss.w.Send(proto.TypeClose, stream, nil); err != nil {
				return fmt.Errorf("agent: sending %s Close: %w", stream, err)
			}
			return nil
		}
	}
}

// feedStdin writes queued stdin to the command, returning credit as the
// command takes it. When the command closes its stdin the rest is dropped
// and the host is told to stop.
func (ss *session) feedStdin(p *process, q *stdinQueue) {
	buf := make([]byte, proto.MaxData)
	broken := false
	for {
		n, eof, stop := q.pop(buf)
		if stop {
			return
		}
		if eof {
			p.closeStdin()
			return
		}
		if broken {
			continue
		}
		if _, err := p.stdin.Write(buf[:n]); err != nil {
			broken = true
			p.closeStdin()
			ss.w.Send(proto.TypeClose, proto.StreamStdin, nil)
			continue
		}
		ss.s.bytesIn.Add(uint64(n))
		q.regrant(n)
		if err := ss.w.Send(proto.TypeCredit, proto.StreamStdin, proto.AppendU32(nil, uint32(n))); err != nil {
			return
		}
	}
}

// readHost handles the host's frames while the command runs. It returns
// io.EOF when the host closes the connection.
func (ss *session) readHost(p *process, credits map[proto.Stream]*credit, q *stdinQueue) error {
	for {
		f, err := ss.r.Next()
		if err != nil {
			return err
		}
		switch f.Type {
		case proto.TypeData:
			n, err := q.push(f.Payload)
			if err != nil {
				return err
			}
			ss.s.noteStdinQueued(n)
		case proto.TypeClose:
			if err := q.close(); err != nil {
				return err
			}
		case proto.TypeCredit:
			n, err := proto.ParseCredit(f.Payload)
			if err != nil {
				return fmt.Errorf("agent: host Credit: %w", err)
			}
			if !credits[f.Stream].add(n) {
				return fmt.Errorf("agent: host granted more than %d bytes of %s credit: %w", proto.MaxWindow, f.Stream, proto.ErrProtocol)
			}
		case proto.TypeSignal:
			sig, err := proto.ParseSignal(f.Payload)
			if err != nil {
				return fmt.Errorf("agent: host Signal: %w", err)
			}
			p.signal(sig)
		case proto.TypeResize:
			r, err := proto.ParseResize(f.Payload)
			if err != nil {
				return fmt.Errorf("agent: host Resize: %w", err)
			}
			p.resize(r)
		default:
			return fmt.Errorf("agent: host sent %s while a command runs: %w", f.Type, proto.ErrProtocol)
		}
	}
}
