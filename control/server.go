package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// SocketName is the control socket's file name in a machine's directory.
const SocketName = "control.sock"

// Stop timeouts: DefaultStopTimeout when a request names none, at most
// MaxStopTimeout (a typo such as "10h" should not keep a VM for hours).
const (
	DefaultStopTimeout = 10 * time.Second
	MaxStopTimeout     = time.Hour
	maxBody            = 4 << 10
)

// Peer is who is at the other end of a control connection, from
// SO_PEERCRED: the credentials it had when it connected.
type Peer struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	PID int32  `json:"pid"`
}

// Info is what GET /v1/vm answers: the machine's state and what it knows of
// its record. Zero fields are left out.
type Info struct {
	ID      string            `json:"id"`
	Name    string            `json:"name,omitempty"`
	State   string            `json:"state"` // created, running, paused, stopping, ended
	Labels  map[string]string `json:"labels,omitempty"`
	PID     int               `json:"pid,omitempty"`
	UID     int               `json:"uid"`
	Kernel  string            `json:"kernel,omitempty"`
	CPUs    int               `json:"cpus,omitempty"`
	Memory  uint64            `json:"memory,omitempty"`
	Started time.Time         `json:"started,omitzero"`
	// TTL and TTLLeft are Go durations ("1m30s"); empty without a TTL.
	TTL     string `json:"ttl,omitempty"`
	TTLLeft string `json:"ttl_left,omitempty"`
	Exit    string `json:"exit,omitempty"` // how it ended, once it has
}

// Ended is what POST /v1/stop and /v1/kill answer once the machine has
// ended.
type Ended struct {
	Exit string `json:"exit"` // how it ended, as corral.Exit.String says
	// Graceful: the guest powered off or reset on the request, before the
	// timeout; false when it had to be stopped hard.
	Graceful bool `json:"graceful"`
}

// StopRequest is POST /v1/stop's body; an empty body asks for the default.
type StopRequest struct {
	Timeout string `json:"timeout,omitempty"` // a Go duration, 0 to MaxStopTimeout
}

// Target is the machine a Server controls. Shutdown and Kill return once
// the machine has ended (or ctx is done: the client went away).
type Target interface {
	Info() Info
	Shutdown(ctx context.Context, timeout time.Duration, by Peer) (Ended, error)
	Kill(ctx context.Context, by Peer) (Ended, error)
	Metrics() []Metric
}

// Config configures a Server.
type Config struct {
	Target Target
	// Owner is the uid allowed besides root; the VMM's own uid by default
	// (-1 selects it).
	Owner int
	// Authorize, when set, replaces the owner-or-root check (tests).
	Authorize func(Peer) error
	Logger    *slog.Logger
}

// ErrForbidden is what the server answers (403) to a peer that is neither
// the owner nor root; Client methods wrap it.
var ErrForbidden = errors.New("control: permission denied")

// Server serves one machine's control socket.
type Server struct {
	cfg  Config
	http *http.Server
	ln   net.Listener
	path string
	done chan struct{}
}

type peerKey struct{}

type peerResult struct {
	p   Peer
	err error
}

// Listen creates the socket at path (mode 0600, a stale socket file there
// is replaced) and serves it until Close.
func Listen(path string, cfg Config) (*Server, error) {
	if cfg.Target == nil {
		return nil, errors.New("control: no target")
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control: removing stale socket: %w", err)
		}
	}
	// The umask makes the socket 0600 from the start: chmod afterwards
	// would leave a moment in which others could connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control: listen: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	return Serve(ln, cfg), nil
}

// Serve serves cfg.Target on a listener of Unix connections (Listen's, or a
// test's). It returns at once.
func Serve(ln net.Listener, cfg Config) *Server {
	if cfg.Owner < 0 {
		cfg.Owner = os.Getuid()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, ln: ln, done: make(chan struct{})}
	if a, ok := ln.Addr().(*net.UnixAddr); ok {
		s.path = a.Name
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/vm", s.handleVM)
	mux.HandleFunc("/v1/stop", s.handleStop)
	mux.HandleFunc("/v1/kill", s.handleKill)
	mux.HandleFunc("/v1/pause", s.handlePause)
	mux.HandleFunc("/v1/resume", s.handleResume)
	mux.HandleFunc("/v1/snapshot", s.handleSnapshot)
	mux.HandleFunc("/metrics", s.handleMetrics)
	mux.HandleFunc("/v1/metrics", s.handleMetricsJSON)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if s.authorize(w, r) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s (have /v1/vm, /v1/stop, /v1/kill, /v1/metrics, /metrics)", r.URL.Path))
		}
	})
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, err := PeerOf(c)
			return context.WithValue(ctx, peerKey{}, peerResult{p, err})
		},
	}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln) // ErrServerClosed after Close
	}()
	return s
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting connections, lets requests in flight finish for at
// most grace (a stop request answers once the machine has ended), then
// closes what is left and removes the socket file.
func (s *Server) Close(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if err != nil {
		err = s.http.Close()
	}
	<-s.done
	return err
}

// PeerOf returns the credentials of the process at the other end of a Unix
// connection (SO_PEERCRED).
func PeerOf(c net.Conn) (Peer, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return Peer{}, fmt.Errorf("control: peer credentials: %T is not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	if cerr != nil {
		return Peer{}, fmt.Errorf("control: SO_PEERCRED: %w", cerr)
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}

// authorize answers 403 (or 500 when the credentials could not be read)
// and returns false unless the peer may use the socket.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	pr, _ := r.Context().Value(peerKey{}).(peerResult)
	if pr.err != nil || r.Context().Value(peerKey{}) == nil {
		writeError(w, http.StatusInternalServerError, "cannot read the peer's credentials")
		return false
	}
	check := s.cfg.Authorize
	if check == nil {
		check = func(p Peer) error {
			if p.UID == 0 || int64(p.UID) == int64(s.cfg.Owner) {
				return nil
			}
			return fmt.Errorf("uid %d is neither the machine's owner (uid %d) nor root", p.UID, s.cfg.Owner)
		}
	}
	if err := check(pr.p); err != nil {
		s.cfg.Logger.Warn("control: request refused", "peer_uid", pr.p.UID, "peer_pid", pr.p.PID, "path", r.URL.Path)
		writeError(w, http.StatusForbidden, err.Error())
		return false
	}
	return true
}

func peerFrom(r *http.Request) Peer {
	pr, _ := r.Context().Value(peerKey{}).(peerResult)
	return pr.p
}

func (s *Server) handleVM(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) || !method(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Target.Info())
}

func (s *Server) handleStop(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) || !method(w, r, http.MethodPost) {
		return
	}
	timeout, err := DecodeStop(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := peerFrom(r)
	s.cfg.Logger.Info("control: stop", "peer_uid", p.UID, "peer_pid", p.PID, "timeout", timeout)
	e, err := s.cfg.Target.Shutdown(r.Context(), timeout, p)
	s.answerEnded(w, e, err)
}

func (s *Server) handleKill(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) || !method(w, r, http.MethodPost) {
		return
	}
	if err := DecodeEmpty(r.Body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := peerFrom(r)
	s.cfg.Logger.Info("control: kill", "peer_uid", p.UID, "peer_pid", p.PID)
	e, err := s.cfg.Target.Kill(r.Context(), p)
	s.answerEnded(w, e, err)
}

func (s *Server) answerEnded(w http.ResponseWriter, e Ended, err error) {
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) || !method(w, r, http.MethodGet) {
		return
	}
	w.Header().Set("Content-Type", MetricsContentType)
	w.WriteHeader(http.StatusOK)
	_ = WriteMetrics(w, s.cfg.Target.Metrics())
}

// handleMetricsJSON serves the metrics as JSON, families merged as in the
// text format, for `corral ps --json --metrics`.
func (s *Server) handleMetricsJSON(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) || !method(w, r, http.MethodGet) {
		return
	}
	ms, err := MergeMetrics(s.cfg.Target.Metrics())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

// DecodeStop reads a POST /v1/stop body: empty, or a StopRequest and
// nothing else. It returns the timeout, DefaultStopTimeout when none is
// given.
func DecodeStop(r io.Reader) (time.Duration, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return 0, fmt.Errorf("reading the request: %w", err)
	}
	if len(b) > maxBody {
		return 0, fmt.Errorf("request body over %d bytes", maxBody)
	}
	var req StopRequest
	if len(bytes.TrimSpace(b)) > 0 {
		if err := decodeStrict(b, &req); err != nil {
			return 0, err
		}
	}
	if req.Timeout == "" {
		return DefaultStopTimeout, nil
	}
	d, err := time.ParseDuration(req.Timeout)
	if err != nil {
		return 0, fmt.Errorf("timeout %q: not a duration such as \"10s\"", req.Timeout)
	}
	if d < 0 || d > MaxStopTimeout {
		return 0, fmt.Errorf("timeout %s: must be between 0 and %s", d, MaxStopTimeout)
	}
	return d, nil
}

// DecodeEmpty reads a body that must be empty or an empty JSON object.
func DecodeEmpty(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	if len(b) > maxBody {
		return fmt.Errorf("request body over %d bytes", maxBody)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	var v struct{}
	return decodeStrict(b, &v)
}

// decodeStrict decodes exactly one JSON object with only known fields.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("bad JSON body: %v", err)
	}
	if d.More() {
		return errors.New("bad JSON body: more than one value")
	}
	var extra json.RawMessage
	if err := d.Decode(&extra); err != io.EOF {
		return errors.New("bad JSON body: data after the object")
	}
	return nil
}

func method(w http.ResponseWriter, r *http.Request, want string) bool {
	if r.Method == want || (want == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	w.Header().Set("Allow", want)
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, want))
	return false
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
