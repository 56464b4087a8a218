package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Version is the protocol version this package speaks; MinVersion the
// oldest it accepts from a peer. Version 2 added Setup (SetupVersion),
// version 3 its SetupSystem part and the read-write root
// (SetupSystemVersion), version 4 the synced power-off Ack
// (SyncedPowerOffVersion), version 5 a request after Setup's Ack on the
// same connection (ExecAfterSetupVersion), version 6 Exec's path resolved
// on the host (ResolvedVersion).
const (
	Version    = 6
	MinVersion = 1
)

// SetupVersion is the first version with the Setup message: a session
// that negotiated less must not send it.
const SetupVersion = 2

// SetupSystemVersion is the first version whose Setup may carry a host
// name, tmpfs mounts (SetupSystem) and a read-write root ("9p:TAG:rw"):
// a session that negotiated less must not send them (Setup.NeedsVersion).
const SetupSystemVersion = 3

// SyncedPowerOffVersion is the first version whose agent syncs the
// guest's file systems before it acks PowerOff: the host may stop the
// machine on the Ack instead of waiting for the guest's power-off (when
// no device of its holds guest writes: a writable disk keeps the guest's
// orderly path).
const SyncedPowerOffVersion = 4

// ExecAfterSetupVersion is the first version whose session goes on after
// Setup's Ack: the host may send one more request, Exec or PowerOff, on
// the same connection, as it would after Hello (a warm machine's first
// command then costs no dial and Hello of its own). In an older session
// the agent closes the connection after the Ack.
const ExecAfterSetupVersion = 5

// ResolvedVersion is the first version whose Exec may carry the program's
// path as the host resolved it in the host's own root (Exec.Resolved,
// flag ExecResolved): a session that negotiated less must not send it.
const ResolvedVersion = 6

// Magic opens every Hello payload, so a peer speaking something else is
// recognised at once.
const Magic = "CRLA"

// Type is a frame's message type.
type Type uint8

// Message types; see the package documentation for their payloads.
const (
	TypeHello    Type = 1
	TypeExec     Type = 2
	TypePowerOff Type = 3
	TypeStarted  Type = 4
	TypeData     Type = 5
	TypeClose    Type = 6
	TypeCredit   Type = 7
	TypeSignal   Type = 8
	TypeResize   Type = 9
	TypeExit     Type = 10
	TypeError    Type = 11
	TypeAck      Type = 12
	TypeSetup    Type = 13 // version 2
)

var typeNames = [...]string{
	TypeHello: "Hello", TypeExec: "Exec", TypePowerOff: "PowerOff", TypeStarted: "Started",
	TypeData: "Data", TypeClose: "Close", TypeCredit: "Credit", TypeSignal: "Signal",
	TypeResize: "Resize", TypeExit: "Exit", TypeError: "Error", TypeAck: "Ack",
	TypeSetup: "Setup",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Stream names one of a command's standard streams in Data, Close and
// Credit frames.
type Stream uint8

// Streams. StreamNone is the stream field of every other frame.
const (
	StreamNone   Stream = 0
	StreamStdin  Stream = 1
	StreamStdout Stream = 2
	StreamStderr Stream = 3
)

func (s Stream) String() string {
	switch s {
	case StreamNone:
		return "none"
	case StreamStdin:
		return "stdin"
	case StreamStdout:
		return "stdout"
	case StreamStderr:
		return "stderr"
	}
	return fmt.Sprintf("stream %d", uint8(s))
}

// Header layout.
const (
	HeaderSize  = 8
	offType     = 0
	offStream   = 1
	offReserved = 2
	offLength   = 4
)

// Bounds.
const (
	// MaxData is the largest Data payload.
	MaxData = 32 << 10
	// MaxExecPayload is the largest Exec payload (argv, environment,
	// directory and path together).
	MaxExecPayload = 1 << 20
	// MaxSetupPayload is the largest Setup payload: what fits on a kernel
	// command line, with room to spare.
	MaxSetupPayload = 64 << 10
	// MaxErrorMessage is the longest message in an Error frame.
	MaxErrorMessage = 1024
	// MaxWindow is the most credit a receiver may have outstanding on one
	// stream; a grant beyond it is a protocol error.
	MaxWindow = 16 << 20
)

// ErrProtocol is wrapped by every error about a malformed or unexpected
// frame.
var ErrProtocol = errors.New("protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Direction says who sent a frame; it decides which types and streams are
// valid.
type Direction uint8

// Directions.
const (
	FromHost  Direction = 1
	FromAgent Direction = 2
)

func (d Direction) String() string {
	if d == FromHost {
		return "host"
	}
	return "agent"
}

// Header is a decoded frame header.
type Header struct {
	Type   Type
	Stream Stream
	Length uint32
}

// MaxPayload is the largest payload a frame of type t may have, and -1 for
// unknown types. Fixed-size messages must have exactly their size (see
// fixedSize).
func MaxPayload(t Type) int {
	switch t {
	case TypeExec:
		return MaxExecPayload
	case TypeData:
		return MaxData
	case TypeSetup:
		return MaxSetupPayload
	case TypeError:
		return errFixed + MaxErrorMessage
	}
	if n, ok := fixedSize(t); ok {
		return n
	}
	return -1
}

// fixedSize is the exact payload size of fixed-size message types.
func fixedSize(t Type) (int, bool) {
	switch t {
	case TypeHello:
		return helloSize, true
	case TypePowerOff, TypeClose, TypeAck:
		return 0, true
	case TypeStarted, TypeCredit:
		return 4, true
	case TypeSignal:
		return signalSize, true
	case TypeResize:
		return resizeSize, true
	case TypeExit:
		return exitSize, true
	}
	return 0, false
}

// allowed reports whether dir may send type t on stream s.
func allowed(dir Direction, t Type, s Stream) bool {
	switch t {
	case TypeData:
		if dir == FromHost {
			return s == StreamStdin
		}
		return s == StreamStdout || s == StreamStderr
	case TypeClose:
		return s == StreamStdin || (dir == FromAgent && (s == StreamStdout || s == StreamStderr))
	case TypeCredit:
		if dir == FromHost {
			return s == StreamStdout || s == StreamStderr
		}
		return s == StreamStdin
	}
	if s != StreamNone {
		return false
	}
	switch t {
	case TypeHello:
		return true
	case TypeExec, TypePowerOff, TypeSignal, TypeResize, TypeSetup:
		return dir == FromHost
	case TypeStarted, TypeExit, TypeError, TypeAck:
		return dir == FromAgent
	}
	return false
}

// ParseHeader decodes and checks a header sent by dir: known type, valid
// stream for it, zero reserved field, length within the type's bound.
func ParseHeader(b []byte, dir Direction) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, protoErr("header of %d bytes, want %d", len(b), HeaderSize)
	}
	h := Header{
		Type:   Type(b[offType]),
		Stream: Stream(b[offStream]),
		Length: binary.LittleEndian.Uint32(b[offLength:]),
	}
	max := MaxPayload(h.Type)
	if max < 0 {
		return h, protoErr("%s sent unknown message %s", dir, h.Type)
	}
	if r := binary.LittleEndian.Uint16(b[offReserved:]); r != 0 {
		return h, protoErr("%s sent %s with reserved field %#x", dir, h.Type, r)
	}
	if !allowed(dir, h.Type, h.Stream) {
		return h, protoErr("%s may not send %s on %s", dir, h.Type, h.Stream)
	}
	if n, ok := fixedSize(h.Type); ok && h.Length != uint32(n) {
		return h, protoErr("%s sent %s of %d bytes, want %d", dir, h.Type, h.Length, n)
	}
	if h.Length > uint32(max) {
		return h, protoErr("%s sent %s of %d bytes, limit %d", dir, h.Type, h.Length, max)
	}
	if h.Type == TypeData && h.Length == 0 {
		return h, protoErr("%s sent an empty Data frame", dir)
	}
	return h, nil
}

// PutHeader encodes h into b[:HeaderSize].
func PutHeader(b []byte, h Header) {
	b[offType] = byte(h.Type)
	b[offStream] = byte(h.Stream)
	binary.LittleEndian.PutUint16(b[offReserved:], 0)
	binary.LittleEndian.PutUint32(b[offLength:], h.Length)
}

// Frame is one decoded frame.
type Frame struct {
	Type    Type
	Stream  Stream
	Payload []byte
}

// Reader reads the frames one peer sends.
type Reader struct {
	r   io.Reader
	dir Direction
	hdr [HeaderSize]byte
	buf []byte
}

// NewReader returns a Reader of the frames dir sends on r.
func NewReader(r io.Reader, from Direction) *Reader {
	return &Reader{r: r, dir: from}
}

// Next reads one frame. Its Payload is valid until the next call. It returns
// io.EOF when r ends between frames, an error wrapping io.ErrUnexpectedEOF
// when it ends inside one, and one wrapping ErrProtocol for a bad header.
// It allocates at most the payload bound of the frame's type.
func (r *Reader) Next() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Frame{}, fmt.Errorf("proto: %s closed the connection inside a frame header: %w", r.dir, err)
		}
		return Frame{}, err
	}
	h, err := ParseHeader(r.hdr[:], r.dir)
	if err != nil {
		return Frame{}, err
	}
	if cap(r.buf) < int(h.Length) {
		r.buf = make([]byte, h.Length)
	}
	p := r.buf[:h.Length]
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("proto: reading %d-byte %s payload from %s: %w", h.Length, h.Type, r.dir, err)
	}
	return Frame{Type: h.Type, Stream: h.Stream, Payload: p}, nil
}

// Writer sends frames; it is safe for concurrent use and writes each frame
// with one Write call.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer sending on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w}
}

// Send writes one frame. It refuses payloads over the type's bound.
func (w *Writer) Send(t Type, s Stream, payload []byte) error {
	if max := MaxPayload(t); max < 0 || len(payload) > max {
		return fmt.Errorf("proto: %d-byte %s payload over the limit %d", len(payload), t, max)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n := HeaderSize + len(payload)
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	b := w.buf[:n]
	PutHeader(b, Header{Type: t, Stream: s, Length: uint32(len(payload))})
	copy(b[HeaderSize:], payload)
	_, err := w.w.Write(b)
	if cap(w.buf) > 2*MaxData {
		w.buf = nil // do not keep an Exec-sized buffer for the whole session
	}
	return err
}
