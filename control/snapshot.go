package control

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
)

// Pauser is a Target that can pause, resume and snapshot its machine
// (POST /v1/pause, /v1/resume, /v1/snapshot). A Target without it answers
// those with 501.
type Pauser interface {
	Pause(ctx context.Context, by Peer) error
	Resume(by Peer) error
	// Snapshot saves the paused machine to dir, then resumes it when
	// resume is set.
	Snapshot(ctx context.Context, dir string, resume bool, by Peer) error
}

// SnapshotRequest is POST /v1/snapshot's body.
type SnapshotRequest struct {
	// Dir is where the snapshot goes: an absolute path, as the VMM sees
	// it; it must not exist or be empty.
	Dir string `json:"dir"`
	// Resume lets the machine run on once the snapshot is written.
	Resume bool `json:"resume,omitempty"`
}

// State is what the pause, resume and snapshot requests answer.
type State struct {
	State string `json:"state"` // paused or running
	Dir   string `json:"dir,omitempty"`
}

// DecodeSnapshot reads and checks a snapshot request.
func DecodeSnapshot(r io.Reader) (SnapshotRequest, error) {
	var req SnapshotRequest
	b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return req, fmt.Errorf("reading the request: %w", err)
	}
	if len(b) > maxBody {
		return req, fmt.Errorf("request body over %d bytes", maxBody)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return req, fmt.Errorf("no snapshot directory given")
	}
	if err := decodeStrict(b, &req); err != nil {
		return req, err
	}
	if req.Dir == "" || !filepath.IsAbs(req.Dir) || filepath.Clean(req.Dir) != req.Dir {
		return req, fmt.Errorf("snapshot directory %q: want a clean absolute path", req.Dir)
	}
	return req, nil
}

func (s *Server) pauser(w http.ResponseWriter) (Pauser, bool) {
	p, ok := s.cfg.Target.(Pauser)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this machine cannot be paused")
	}
	return p, ok
}

func (s *Server) handlePause(w http.ResponseWriter, r *http.Request) {
	s.pauseOp(w, r, "pause", "paused", func(p Pauser, peer Peer) error { return p.Pause(r.Context(), peer) })
}

func (s *Server) handleResume(w http.ResponseWriter, r *http.Request) {
	s.pauseOp(w, r, "resume", "running", func(p Pauser, peer Peer) error { return p.Resume(peer) })
}

// pauseOp serves a bodiless POST that pauses or resumes the machine and
// answers its new state.
func (s *Server) pauseOp(w http.ResponseWriter, r *http.Request, name, state string, op func(Pauser, Peer) error) {
	if !s.authorize(w, r) || !method(w, r, http.MethodPost) {
		return
	}
	p, ok := s.pauser(w)
	if !ok {
		return
	}
	if err := DecodeEmpty(r.Body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	peer := peerFrom(r)
	s.cfg.Logger.Info("control: "+name, "peer_uid", peer.UID, "peer_pid", peer.PID)
	if err := op(p, peer); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, State{State: state})
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) || !method(w, r, http.MethodPost) {
		return
	}
	p, ok := s.pauser(w)
	if !ok {
		return
	}
	req, err := DecodeSnapshot(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	peer := peerFrom(r)
	s.cfg.Logger.Info("control: snapshot", "peer_uid", peer.UID, "peer_pid", peer.PID, "dir", req.Dir, "resume", req.Resume)
	if err := p.Snapshot(r.Context(), req.Dir, req.Resume, peer); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	st := State{State: "paused", Dir: req.Dir}
	if req.Resume {
		st.State = "running"
	}
	writeJSON(w, http.StatusOK, st)
}

// Pause pauses the machine; it returns once it is paused.
func (c *Client) Pause(ctx context.Context) (State, error) {
	var st State
	err := c.do(ctx, http.MethodPost, "/v1/pause", nil, &st)
	return st, err
}

// Resume lets a paused machine run on.
func (c *Client) Resume(ctx context.Context) (State, error) {
	var st State
	err := c.do(ctx, http.MethodPost, "/v1/resume", nil, &st)
	return st, err
}

// Snapshot pauses the machine (if it runs), saves it to dir (absolute, as
// the VMM sees it) and resumes it when resume is set.
func (c *Client) Snapshot(ctx context.Context, dir string, resume bool) (State, error) {
	var st State
	err := c.do(ctx, http.MethodPost, "/v1/snapshot", SnapshotRequest{Dir: dir, Resume: resume}, &st)
	return st, err
}
