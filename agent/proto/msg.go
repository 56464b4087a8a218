package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Hello payload layout.
const (
	helloSize   = 8
	offHelloMag = 0
	offHelloMin = 4
	offHelloMax = 6
)

// Hello is the first message each way: the host offers versions Min..Max,
// the agent answers with Min == Max == the version chosen.
type Hello struct {
	Min, Max uint16
}

// Append appends h's payload to b.
func (h Hello) Append(b []byte) []byte {
	var p [helloSize]byte
	copy(p[offHelloMag:], Magic)
	binary.LittleEndian.PutUint16(p[offHelloMin:], h.Min)
	binary.LittleEndian.PutUint16(p[offHelloMax:], h.Max)
	return append(b, p[:]...)
}

// ParseHello decodes a Hello payload.
func ParseHello(p []byte) (Hello, error) {
	if len(p) != helloSize {
		return Hello{}, protoErr("Hello of %d bytes, want %d", len(p), helloSize)
	}
	if string(p[offHelloMag:offHelloMag+4]) != Magic {
		return Hello{}, protoErr("Hello magic %q, want %q: the peer is not a Corral agent or host", p[offHelloMag:offHelloMag+4], Magic)
	}
	h := Hello{Min: binary.LittleEndian.Uint16(p[offHelloMin:]), Max: binary.LittleEndian.Uint16(p[offHelloMax:])}
	if h.Min > h.Max {
		return Hello{}, protoErr("Hello offers versions %d..%d", h.Min, h.Max)
	}
	return h, nil
}

// Negotiate picks the highest version in both peer's range and
// MinVersion..Version, or returns an *Error with CodeVersion.
func Negotiate(peer Hello) (uint16, error) {
	v := min(peer.Max, Version)
	if v < peer.Min || v < MinVersion {
		return 0, &Error{Code: CodeVersion, Message: fmt.Sprintf("peer speaks protocol versions %d..%d, this side %d..%d", peer.Min, peer.Max, MinVersion, Version)}
	}
	return v, nil
}

// Exec flags.
const (
	ExecTTY  = 1 << 0 // run on a pseudo-terminal; stderr is merged into stdout
	ExecCred = 1 << 1 // UID and GID are set
	ExecEnv  = 1 << 2 // Env is the whole environment (else the agent's own)
	// ExecResolved (version 6): Resolved and Visited follow Env.
	ExecResolved = 1 << 3
	execAll      = ExecTTY | ExecCred | ExecEnv | ExecResolved
)

// Exec payload layout: fixed fields, then the strings Path, Dir, Args...,
// Env..., each as a u32 length and its bytes; with ExecResolved, then the
// string Resolved, a u32 count and the Visited strings.
const (
	offExecFlags = 0
	offExecUID   = 4
	offExecGID   = 8
	offExecRows  = 12
	offExecCols  = 14
	offExecNArgs = 16
	offExecNEnv  = 20
	execFixed    = 24
)

// Exec asks the agent to run a command.
type Exec struct {
	Path string   // program; without a slash it is looked up in PATH
	Args []string // argv, Args[0] included; empty means {Path}
	Env  []string // KEY=value; nil means the agent's environment
	Dir  string   // working directory; empty means the agent's
	// Cred: run as UID and GID (with no supplementary groups).
	Cred     bool
	UID, GID uint32
	// TTY: run on a new pseudo-terminal of Rows x Cols as the controlling
	// terminal of a new session.
	TTY        bool
	Rows, Cols uint16
	// Resolved (version 6, needs Env) is where the host found Path, which
	// has no slash, in Env's PATH, looking in the host's own root, which
	// the guest's root overlays: Visited lists every absolute path that
	// lookup examined, symbolic links' targets included. The agent uses
	// Resolved instead of its own search only where the guest's view of
	// every Visited path is the host's (see the agent's lookPath); empty
	// means the agent searches.
	Resolved string
	Visited  []string
}

// Append appends e's payload to b.
func (e *Exec) Append(b []byte) ([]byte, error) {
	var flags uint32
	if e.TTY {
		flags |= ExecTTY
	}
	if e.Cred {
		flags |= ExecCred
	}
	if e.Env != nil {
		flags |= ExecEnv
	}
	if e.Path == "" {
		return b, errors.New("proto: Exec with an empty path")
	}
	if e.Resolved != "" {
		if e.Env == nil {
			return b, errors.New("proto: Exec with a resolved path but no environment")
		}
		flags |= ExecResolved
	} else if len(e.Visited) > 0 {
		return b, errors.New("proto: Exec with visited paths but no resolved path")
	}
	start := len(b)
	var f [execFixed]byte
	binary.LittleEndian.PutUint32(f[offExecFlags:], flags)
	binary.LittleEndian.PutUint32(f[offExecUID:], e.UID)
	binary.LittleEndian.PutUint32(f[offExecGID:], e.GID)
	binary.LittleEndian.PutUint16(f[offExecRows:], e.Rows)
	binary.LittleEndian.PutUint16(f[offExecCols:], e.Cols)
	binary.LittleEndian.PutUint32(f[offExecNArgs:], uint32(len(e.Args)))
	binary.LittleEndian.PutUint32(f[offExecNEnv:], uint32(len(e.Env)))
	b = append(b, f[:]...)
	strs := append(append([]string{e.Path, e.Dir}, e.Args...), e.Env...)
	if flags&ExecResolved != 0 {
		strs = append(strs, e.Resolved)
	}
	put := func(s string) error {
		if strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("proto: Exec string %q holds a NUL byte", s)
		}
		if len(b)-start+4+len(s) > MaxExecPayload {
			return fmt.Errorf("proto: Exec of %s over the limit of %d bytes", e.Path, MaxExecPayload)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
		return nil
	}
	for _, s := range strs {
		if err := put(s); err != nil {
			return b[:start], err
		}
	}
	if flags&ExecResolved != 0 {
		if len(b)-start+4 > MaxExecPayload {
			return b[:start], fmt.Errorf("proto: Exec of %s over the limit of %d bytes", e.Path, MaxExecPayload)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Visited)))
		for _, s := range e.Visited {
			if err := put(s); err != nil {
				return b[:start], err
			}
		}
	}
	return b, nil
}

// ParseExec decodes an Exec payload. It allocates at most about twice the
// payload's size.
func ParseExec(p []byte) (*Exec, error) {
	if len(p) < execFixed {
		return nil, protoErr("Exec of %d bytes, want at least %d", len(p), execFixed)
	}
	if len(p) > MaxExecPayload {
		return nil, protoErr("Exec of %d bytes, limit %d", len(p), MaxExecPayload)
	}
	flags := binary.LittleEndian.Uint32(p[offExecFlags:])
	if flags&^execAll != 0 {
		return nil, protoErr("Exec with unknown flags %#x", flags&^execAll)
	}
	e := &Exec{
		TTY:  flags&ExecTTY != 0,
		Cred: flags&ExecCred != 0,
		UID:  binary.LittleEndian.Uint32(p[offExecUID:]),
		GID:  binary.LittleEndian.Uint32(p[offExecGID:]),
		Rows: binary.LittleEndian.Uint16(p[offExecRows:]),
		Cols: binary.LittleEndian.Uint16(p[offExecCols:]),
	}
	nargs := binary.LittleEndian.Uint32(p[offExecNArgs:])
	nenv := binary.LittleEndian.Uint32(p[offExecNEnv:])
	rest := p[execFixed:]
	// Each string takes at least its 4-byte length, which bounds the counts
	// before anything is allocated for them.
	if uint64(nargs)+uint64(nenv)+2 > uint64(len(rest)/4) {
		return nil, protoErr("Exec claims %d arguments and %d variables in %d bytes", nargs, nenv, len(rest))
	}
	next := func(what string) (string, error) {
		if len(rest) < 4 {
			return "", protoErr("Exec ends before the length of its %s", what)
		}
		n := binary.LittleEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(n) > uint64(len(rest)) {
			return "", protoErr("Exec %s of %d bytes with %d left", what, n, len(rest))
		}
		s := string(rest[:n])
		rest = rest[n:]
		if strings.IndexByte(s, 0) >= 0 {
			return "", protoErr("Exec %s holds a NUL byte", what)
		}
		return s, nil
	}
	var err error
	if e.Path, err = next("path"); err != nil {
		return nil, err
	}
	if e.Path == "" {
		return nil, protoErr("Exec with an empty path")
	}
	if e.Dir, err = next("directory"); err != nil {
		return nil, err
	}
	if nargs > 0 {
		e.Args = make([]string, nargs)
	}
	for i := range e.Args {
		if e.Args[i], err = next("argument"); err != nil {
			return nil, err
		}
	}
	if flags&ExecEnv != 0 {
		e.Env = make([]string, nenv)
	} else if nenv != 0 {
		return nil, protoErr("Exec has %d variables but no environment flag", nenv)
	}
	for i := range e.Env {
		if e.Env[i], err = next("environment variable"); err != nil {
			return nil, err
		}
	}
	if flags&ExecResolved != 0 {
		if flags&ExecEnv == 0 {
			return nil, protoErr("Exec has a resolved path but no environment flag")
		}
		if e.Resolved, err = next("resolved path"); err != nil {
			return nil, err
		}
		if e.Resolved == "" {
			return nil, protoErr("Exec with an empty resolved path")
		}
		if len(rest) < 4 {
			return nil, protoErr("Exec ends before its count of visited paths")
		}
		nvis := binary.LittleEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(nvis) > uint64(len(rest)/4) {
			return nil, protoErr("Exec claims %d visited paths in %d bytes", nvis, len(rest))
		}
		if nvis > 0 {
			e.Visited = make([]string, nvis)
		}
		for i := range e.Visited {
			if e.Visited[i], err = next("visited path"); err != nil {
				return nil, err
			}
		}
	}
	if len(rest) != 0 {
		return nil, protoErr("Exec has %d trailing bytes", len(rest))
	}
	return e, nil
}

// Setup payload layout: fixed fields, then the strings Root and Shares...,
// each as a u32 length and its bytes; with SetupSystem in the flags, then
// the string Hostname, a u32 count and the Tmpfs strings.
const (
	offSetupFlags  = 0 // SetupSystem, or 0
	offSetupShares = 4 // number of shares
	setupFixed     = 8
)

// SetupSystem is the Setup flag saying that Hostname and Tmpfs follow the
// shares (version 3, SetupSystemVersion). Append sets it exactly when
// either is set, so a Setup without them reads as in version 2.
const SetupSystem = 1

// Setup asks an agent whose setup was deferred (corral.setup=deferred on
// the kernel command line) for the root switch and share mounts it would
// have made at boot. The strings are the values of the kernel parameters:
// Root that of corral.root= ("" keeps the initramfs), each of Shares that
// of one corral.share= (TAG:PATH[:ro]), Hostname that of corral.hostname=
// ("" leaves it), each of Tmpfs that of one corral.tmpfs=; the agent
// checks them as it checks its command line.
type Setup struct {
	Root     string
	Shares   []string
	Hostname string
	Tmpfs    []string
}

// NeedsVersion returns the first protocol version that carries s: a root
// mounted read-write (":rw"), a host name or a tmpfs need
// SetupSystemVersion.
func (s *Setup) NeedsVersion() uint16 {
	if s.system() || strings.HasSuffix(s.Root, ":rw") {
		return SetupSystemVersion
	}
	return SetupVersion
}

// system reports whether s carries the SetupSystem part: a host name or
// a tmpfs (a read-write root is a value of Root).
func (s *Setup) system() bool { return s.Hostname != "" || len(s.Tmpfs) > 0 }

// Append appends s's payload to b.
func (s *Setup) Append(b []byte) ([]byte, error) {
	start := len(b)
	var f [setupFixed]byte
	binary.LittleEndian.PutUint32(f[offSetupShares:], uint32(len(s.Shares)))
	system := s.system()
	if system {
		binary.LittleEndian.PutUint32(f[offSetupFlags:], SetupSystem)
	}
	b = append(b, f[:]...)
	var err error
	str := func(v string) {
		if err != nil {
			return
		}
		if strings.IndexByte(v, 0) >= 0 {
			err = fmt.Errorf("proto: Setup string %q holds a NUL byte", v)
			return
		}
		if len(b)-start+4+len(v) > MaxSetupPayload {
			err = fmt.Errorf("proto: Setup over the limit of %d bytes", MaxSetupPayload)
			return
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	str(s.Root)
	for _, v := range s.Shares {
		str(v)
	}
	if system {
		str(s.Hostname)
		if err == nil && len(b)-start+4 > MaxSetupPayload {
			err = fmt.Errorf("proto: Setup over the limit of %d bytes", MaxSetupPayload)
		}
		if err == nil {
			b = binary.LittleEndian.AppendUint32(b, uint32(len(s.Tmpfs)))
		}
		for _, v := range s.Tmpfs {
			str(v)
		}
	}
	if err != nil {
		return b[:start], err
	}
	return b, nil
}

// ParseSetup decodes a Setup payload. It allocates at most about twice the
// payload's size.
func ParseSetup(p []byte) (*Setup, error) {
	if len(p) < setupFixed {
		return nil, protoErr("Setup of %d bytes, want at least %d", len(p), setupFixed)
	}
	if len(p) > MaxSetupPayload {
		return nil, protoErr("Setup of %d bytes, limit %d", len(p), MaxSetupPayload)
	}
	flags := binary.LittleEndian.Uint32(p[offSetupFlags:])
	if flags&^SetupSystem != 0 {
		return nil, protoErr("Setup with unknown flags %#x", flags)
	}
	n := binary.LittleEndian.Uint32(p[offSetupShares:])
	rest := p[setupFixed:]
	// Each string takes at least its 4-byte length: bound the count before
	// allocating for it.
	if uint64(n)+1 > uint64(len(rest)/4) {
		return nil, protoErr("Setup claims %d shares in %d bytes", n, len(rest))
	}
	next := func(what string) (string, error) {
		if len(rest) < 4 {
			return "", protoErr("Setup ends before the length of its %s", what)
		}
		l := binary.LittleEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(l) > uint64(len(rest)) {
			return "", protoErr("Setup %s of %d bytes with %d left", what, l, len(rest))
		}
		v := string(rest[:l])
		rest = rest[l:]
		if strings.IndexByte(v, 0) >= 0 {
			return "", protoErr("Setup %s holds a NUL byte", what)
		}
		return v, nil
	}
	s := &Setup{}
	var err error
	if s.Root, err = next("root"); err != nil {
		return nil, err
	}
	if n > 0 {
		s.Shares = make([]string, n)
	}
	for i := range s.Shares {
		if s.Shares[i], err = next("share"); err != nil {
			return nil, err
		}
	}
	if flags&SetupSystem != 0 {
		if s.Hostname, err = next("host name"); err != nil {
			return nil, err
		}
		if len(rest) < 4 {
			return nil, protoErr("Setup ends before its tmpfs count")
		}
		nt := binary.LittleEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(nt) > uint64(len(rest)/4) {
			return nil, protoErr("Setup claims %d tmpfs paths in %d bytes", nt, len(rest))
		}
		if nt > 0 {
			s.Tmpfs = make([]string, nt)
		}
		for i := range s.Tmpfs {
			if s.Tmpfs[i], err = next("tmpfs path"); err != nil {
				return nil, err
			}
		}
		if s.Hostname == "" && len(s.Tmpfs) == 0 {
			// Append sets the flag only for something to carry: one
			// encoding per Setup.
			return nil, protoErr("Setup has flag SetupSystem with neither host name nor tmpfs")
		}
	}
	if len(rest) != 0 {
		return nil, protoErr("Setup has %d trailing bytes", len(rest))
	}
	return s, nil
}

// AppendU32 appends the payload of Started (pid) and Credit (bytes).
func AppendU32(b []byte, v uint32) []byte {
	return binary.LittleEndian.AppendUint32(b, v)
}

// ParseU32 decodes a Started or Credit payload.
func ParseU32(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, protoErr("4-byte message of %d bytes", len(p))
	}
	return binary.LittleEndian.Uint32(p), nil
}

// ParseCredit decodes a Credit payload: a grant of 1..MaxWindow bytes.
func ParseCredit(p []byte) (uint32, error) {
	n, err := ParseU32(p)
	if err != nil {
		return 0, err
	}
	if n == 0 || n > MaxWindow {
		return 0, protoErr("Credit of %d bytes, want 1..%d", n, MaxWindow)
	}
	return n, nil
}

// Signal payload layout.
const (
	signalSize     = 8
	offSignalNum   = 0
	offSignalFlags = 4
	// SignalGroup sends the signal to the command's process group.
	SignalGroup = 1 << 0
	// MaxSignal is the largest Linux signal number.
	MaxSignal = 64
)

// Signal asks the agent to signal the command.
type Signal struct {
	Num   uint32
	Group bool
}

// Append appends s's payload to b.
func (s Signal) Append(b []byte) []byte {
	var flags uint32
	if s.Group {
		flags |= SignalGroup
	}
	b = binary.LittleEndian.AppendUint32(b, s.Num)
	return binary.LittleEndian.AppendUint32(b, flags)
}

// ParseSignal decodes a Signal payload.
func ParseSignal(p []byte) (Signal, error) {
	if len(p) != signalSize {
		return Signal{}, protoErr("Signal of %d bytes, want %d", len(p), signalSize)
	}
	s := Signal{Num: binary.LittleEndian.Uint32(p[offSignalNum:])}
	flags := binary.LittleEndian.Uint32(p[offSignalFlags:])
	if flags&^SignalGroup != 0 {
		return Signal{}, protoErr("Signal with unknown flags %#x", flags)
	}
	if s.Num == 0 || s.Num > MaxSignal {
		return Signal{}, protoErr("Signal number %d, want 1..%d", s.Num, MaxSignal)
	}
	s.Group = flags&SignalGroup != 0
	return s, nil
}

// Resize payload layout.
const (
	resizeSize    = 4
	offResizeRows = 0
	offResizeCols = 2
)

// Resize sets the terminal size of a TTY command.
type Resize struct {
	Rows, Cols uint16
}

// Append appends r's payload to b.
func (r Resize) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, r.Rows)
	return binary.LittleEndian.AppendUint16(b, r.Cols)
}

// ParseResize decodes a Resize payload.
func ParseResize(p []byte) (Resize, error) {
	if len(p) != resizeSize {
		return Resize{}, protoErr("Resize of %d bytes, want %d", len(p), resizeSize)
	}
	return Resize{Rows: binary.LittleEndian.Uint16(p[offResizeRows:]), Cols: binary.LittleEndian.Uint16(p[offResizeCols:])}, nil
}

// Exit payload layout.
const (
	exitSize     = 8
	offExitKind  = 0
	offExitFlags = 1
	offExitRes   = 2
	offExitValue = 4

	ExitCode   = 1 // the command exited; Value is its status 0..255
	ExitSignal = 2 // a signal ended it; Value is the signal number

	ExitCoreDumped = 1 << 0
	ExitOOM        = 1 << 1 // the kernel's OOM killer ended it
	exitFlagsAll   = ExitCoreDumped | ExitOOM
)

// Exit reports how the command ended.
type Exit struct {
	Signaled   bool  // ended by signal Value, else exited with status Value
	Value      int32 // exit status 0..255 or signal number 1..64
	CoreDumped bool
	OOM        bool
}

// Append appends e's payload to b.
func (e Exit) Append(b []byte) []byte {
	var p [exitSize]byte
	p[offExitKind] = ExitCode
	if e.Signaled {
		p[offExitKind] = ExitSignal
	}
	if e.CoreDumped {
		p[offExitFlags] |= ExitCoreDumped
	}
	if e.OOM {
		p[offExitFlags] |= ExitOOM
	}
	binary.LittleEndian.PutUint32(p[offExitValue:], uint32(e.Value))
	return append(b, p[:]...)
}

// ParseExit decodes an Exit payload.
func ParseExit(p []byte) (Exit, error) {
	if len(p) != exitSize {
		return Exit{}, protoErr("Exit of %d bytes, want %d", len(p), exitSize)
	}
	if p[offExitFlags]&^exitFlagsAll != 0 || binary.LittleEndian.Uint16(p[offExitRes:]) != 0 {
		return Exit{}, protoErr("Exit with unknown flags %#x or reserved bits", p[offExitFlags])
	}
	e := Exit{
		Value:      int32(binary.LittleEndian.Uint32(p[offExitValue:])),
		CoreDumped: p[offExitFlags]&ExitCoreDumped != 0,
		OOM:        p[offExitFlags]&ExitOOM != 0,
	}
	switch p[offExitKind] {
	case ExitCode:
		if e.Value < 0 || e.Value > 255 {
			return Exit{}, protoErr("Exit status %d, want 0..255", e.Value)
		}
	case ExitSignal:
		e.Signaled = true
		if e.Value < 1 || e.Value > MaxSignal {
			return Exit{}, protoErr("Exit signal %d, want 1..%d", e.Value, MaxSignal)
		}
	default:
		return Exit{}, protoErr("Exit kind %d", p[offExitKind])
	}
	return e, nil
}

// ErrorCode classifies an Error message.
type ErrorCode uint16

// Error codes.
const (
	CodeProtocol ErrorCode = 1 // the peer broke the protocol
	CodeVersion  ErrorCode = 2 // no common protocol version
	CodeStart    ErrorCode = 3 // the command could not be started
	CodeRefused  ErrorCode = 4 // the request is not allowed here (power-off when not PID 1)
	CodeInternal ErrorCode = 5 // the agent failed
)

func (c ErrorCode) String() string {
	switch c {
	case CodeProtocol:
		return "protocol error"
	case CodeVersion:
		return "version mismatch"
	case CodeStart:
		return "start failed"
	case CodeRefused:
		return "refused"
	case CodeInternal:
		return "agent failure"
	}
	return fmt.Sprintf("error code %d", uint16(c))
}

// Error payload layout: code, reserved, then the message.
const (
	offErrCode = 0
	offErrRes  = 2
	errFixed   = 4
)

// Error is an Error message, and the error the host library returns for
// one. errors.Is(err, &Error{Code: c}) matches on the code alone.
type Error struct {
	Code    ErrorCode
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("agent: %s: %s", e.Code, e.Message)
}

// Is matches another *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Append appends e's payload to b; a long message is cut to
// MaxErrorMessage bytes.
func (e *Error) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(e.Code))
	b = binary.LittleEndian.AppendUint16(b, 0)
	m := e.Message
	if len(m) > MaxErrorMessage {
		m = m[:MaxErrorMessage]
	}
	return append(b, m...)
}

// ParseError decodes an Error payload.
func ParseError(p []byte) (*Error, error) {
	if len(p) < errFixed || len(p) > errFixed+MaxErrorMessage {
		return nil, protoErr("Error of %d bytes, want %d..%d", len(p), errFixed, errFixed+MaxErrorMessage)
	}
	if binary.LittleEndian.Uint16(p[offErrRes:]) != 0 {
		return nil, protoErr("Error with reserved bits set")
	}
	code := ErrorCode(binary.LittleEndian.Uint16(p[offErrCode:]))
	if code < CodeProtocol || code > CodeInternal {
		return nil, protoErr("Error with unknown code %d", code)
	}
	return &Error{Code: code, Message: strings.ToValidUTF8(string(p[errFixed:]), "?")}, nil
}

// Decode decodes f's payload into its message: Hello, *Exec, *Setup, Signal,
// Resize, Exit, *Error, a uint32 for Started and Credit (Credit checked as
// ParseCredit does), the payload itself for Data, and nil for the empty
// messages. It does not check the direction: ParseHeader did.
func (f Frame) Decode() (any, error) {
	switch f.Type {
	case TypeHello:
		return ParseHello(f.Payload)
	case TypeExec:
		return ParseExec(f.Payload)
	case TypeSetup:
		return ParseSetup(f.Payload)
	case TypeStarted:
		return ParseU32(f.Payload)
	case TypeCredit:
		return ParseCredit(f.Payload)
	case TypeSignal:
		return ParseSignal(f.Payload)
	case TypeResize:
		return ParseResize(f.Payload)
	case TypeExit:
		return ParseExit(f.Payload)
	case TypeError:
		return ParseError(f.Payload)
	case TypeData:
		return f.Payload, nil
	case TypePowerOff, TypeClose, TypeAck:
		if len(f.Payload) != 0 {
			return nil, protoErr("%s with a %d-byte payload", f.Type, len(f.Payload))
		}
		return nil, nil
	}
	return nil, protoErr("unknown message %s", f.Type)
}
