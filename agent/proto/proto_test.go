package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// hostSession is a well-formed stream of frames from the host.
func hostSession(t testing.TB) []byte {
	var b bytes.Buffer
	w := NewWriter(&b)
	e := &Exec{Path: "/bin/sh", Args: []string{"sh", "-c", "echo hi"}, Env: []string{"A=1"}, Dir: "/tmp", Cred: true, UID: 1000, GID: 100, TTY: true, Rows: 24, Cols: 80}
	ep, err := e.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	must(t, w.Send(TypeHello, 0, Hello{Min: 1, Max: 1}.Append(nil)))
	must(t, w.Send(TypeExec, 0, ep))
	must(t, w.Send(TypeCredit, StreamStdout, AppendU32(nil, 65536)))
	must(t, w.Send(TypeCredit, StreamStderr, AppendU32(nil, 65536)))
	must(t, w.Send(TypeData, StreamStdin, []byte("input\n")))
	must(t, w.Send(TypeClose, StreamStdin, nil))
	must(t, w.Send(TypeResize, 0, Resize{Rows: 50, Cols: 132}.Append(nil)))
	must(t, w.Send(TypeSignal, 0, Signal{Num: 15, Group: true}.Append(nil)))
	return b.Bytes()
}

// agentSession is a well-formed stream of frames from the agent.
func agentSession(t testing.TB) []byte {
	var b bytes.Buffer
	w := NewWriter(&b)
	must(t, w.Send(TypeHello, 0, Hello{Min: 1, Max: 1}.Append(nil)))
	must(t, w.Send(TypeStarted, 0, AppendU32(nil, 42)))
	must(t, w.Send(TypeCredit, StreamStdin, AppendU32(nil, 65536)))
	must(t, w.Send(TypeData, StreamStdout, []byte("out\n")))
	must(t, w.Send(TypeData, StreamStderr, []byte("err\n")))
	must(t, w.Send(TypeClose, StreamStdin, nil))
	must(t, w.Send(TypeClose, StreamStdout, nil))
	must(t, w.Send(TypeClose, StreamStderr, nil))
	must(t, w.Send(TypeExit, 0, Exit{Signaled: true, Value: 9, OOM: true}.Append(nil)))
	must(t, w.Send(TypeError, 0, (&Error{Code: CodeStart, Message: "exec: no such file"}).Append(nil)))
	must(t, w.Send(TypeAck, 0, nil))
	return b.Bytes()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, data []byte, from Direction) []any {
	t.Helper()
	r := NewReader(bytes.NewReader(data), from)
	var msgs []any
	for {
		f, err := r.Next()
		if err == io.EOF {
			return msgs
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		m, err := f.Decode()
		if err != nil {
			t.Fatalf("Decode %s: %v", f.Type, err)
		}
		if p, ok := m.([]byte); ok {
			m = string(p)
		}
		msgs = append(msgs, m)
	}
}

func TestRoundTrip(t *testing.T) {
	got := readAll(t, hostSession(t), FromHost)
	want := []any{
		Hello{1, 1},
		&Exec{Path: "/bin/sh", Args: []string{"sh", "-c", "echo hi"}, Env: []string{"A=1"}, Dir: "/tmp", Cred: true, UID: 1000, GID: 100, TTY: true, Rows: 24, Cols: 80},
		uint32(65536), uint32(65536), "input\n", nil, Resize{50, 132}, Signal{15, true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("host session decoded to\n%#v\nwant\n%#v", got, want)
	}
	got = readAll(t, agentSession(t), FromAgent)
	want = []any{
		Hello{1, 1}, uint32(42), uint32(65536), "out\n", "err\n", nil, nil, nil,
		Exit{Signaled: true, Value: 9, OOM: true}, &Error{Code: CodeStart, Message: "exec: no such file"}, nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("agent session decoded to\n%#v\nwant\n%#v", got, want)
	}
}

func TestExecEnvNilVersusEmpty(t *testing.T) {
	for _, env := range [][]string{nil, {}} {
		p, err := (&Exec{Path: "x", Env: env}).Append(nil)
		must(t, err)
		e, err := ParseExec(p)
		must(t, err)
		if (e.Env == nil) != (env == nil) {
			t.Errorf("Env %#v came back as %#v", env, e.Env)
		}
	}
}

// header builds a raw header.
func header(typ Type, s Stream, res uint16, n uint32) []byte {
	b := make([]byte, HeaderSize)
	b[offType], b[offStream] = byte(typ), byte(s)
	binary.LittleEndian.PutUint16(b[offReserved:], res)
	binary.LittleEndian.PutUint32(b[offLength:], n)
	return b
}

func TestBadHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  []byte
		from Direction
		want string
	}{
		{"unknown type", header(99, 0, 0, 0), FromHost, "unknown message type 99"},
		{"type zero", header(0, 0, 0, 0), FromAgent, "unknown message"},
		{"reserved", header(TypeAck, 0, 1, 0), FromAgent, "reserved field"},
		{"exec from agent", header(TypeExec, 0, 0, 30), FromAgent, "agent may not send Exec"},
		{"exit from host", header(TypeExit, 0, 0, 8), FromHost, "host may not send Exit"},
		{"stdout data from host", header(TypeData, StreamStdout, 0, 1), FromHost, "host may not send Data on stdout"},
		{"stream on signal", header(TypeSignal, StreamStdin, 0, 8), FromHost, "may not send Signal on stdin"},
		{"stream 7", header(TypeData, 7, 0, 1), FromAgent, "stream 7"},
		{"huge data", header(TypeData, StreamStdout, 0, 1<<31), FromAgent, "limit 32768"},
		{"huge exec", header(TypeExec, 0, 0, MaxExecPayload+1), FromHost, "limit 1048576"},
		{"wrong fixed size", header(TypeCredit, StreamStdout, 0, 5), FromHost, "want 4"},
		{"empty data", header(TypeData, StreamStdin, 0, 0), FromHost, "empty Data"},
	} {
		_, err := NewReader(bytes.NewReader(tc.hdr), tc.from).Next()
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrProtocol containing %q", tc.name, err, tc.want)
		}
	}
}

func TestTruncated(t *testing.T) {
	data := agentSession(t)
	for _, n := range []int{3, HeaderSize + 2} {
		r := NewReader(bytes.NewReader(data[:n]), FromAgent)
		if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: err %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	okExec, _ := (&Exec{Path: "p", Args: []string{"a"}}).Append(nil)
	badCount := bytes.Clone(okExec)
	binary.LittleEndian.PutUint32(badCount[offExecNArgs:], 1<<30)
	trailing := append(bytes.Clone(okExec), 0, 0, 0, 0)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"hello magic", second(ParseHello([]byte("XXXX\x01\x00\x01\x00")))},
		{"hello range", second(ParseHello([]byte("CRLA\x02\x00\x01\x00")))},
		{"exec count", second(ParseExec(badCount))},
		{"exec trailing", second(ParseExec(trailing))},
		{"exec short", second(ParseExec(okExec[:10]))},
		{"exec flags", second(ParseExec(append([]byte{0x80}, okExec[1:]...)))},
		{"credit zero", second(ParseCredit(AppendU32(nil, 0)))},
		{"credit huge", second(ParseCredit(AppendU32(nil, MaxWindow+1)))},
		{"signal zero", second(ParseSignal(Signal{Num: 0}.Append(nil)))},
		{"signal 65", second(ParseSignal(Signal{Num: 65}.Append(nil)))},
		{"exit status 256", second(ParseExit(Exit{Value: 256}.Append(nil)))},
		{"exit signal 0", second(ParseExit(Exit{Signaled: true}.Append(nil)))},
		{"error code 0", second(ParseError([]byte{0, 0, 0, 0}))},
	} {
		if !errors.Is(tc.err, ErrProtocol) {
			t.Errorf("%s: err %v, want ErrProtocol", tc.name, tc.err)
		}
	}
	if _, err := (&Exec{Path: "a\x00b"}).Append(nil); err == nil {
		t.Error("Exec with a NUL in its path encoded")
	}
	if _, err := (&Exec{Path: "p", Args: []string{strings.Repeat("x", MaxExecPayload)}}).Append(nil); err == nil {
		t.Error("Exec over MaxExecPayload encoded")
	}
}

func second[T any](_ T, err error) error { return err }

func TestNegotiate(t *testing.T) {
	if v, err := Negotiate(Hello{1, 7}); err != nil || v != Version {
		t.Errorf("Negotiate(1..7) = %d, %v; want %d", v, err, Version)
	}
	_, err := Negotiate(Hello{Version + 1, Version + 3})
	if want := fmt.Sprintf("peer speaks protocol versions %d..%d", Version+1, Version+3); !errors.Is(err, &Error{Code: CodeVersion}) || !strings.Contains(err.Error(), want) {
		t.Errorf("Negotiate(newer) err %v, want version mismatch naming both ranges", err)
	}
}

func TestWriterRefusesOversize(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.Send(TypeData, StreamStdout, make([]byte, MaxData+1)); err == nil {
		t.Error("Send of an oversize Data frame succeeded")
	}
}

func TestErrorMessageCut(t *testing.T) {
	e, err := ParseError((&Error{Code: CodeInternal, Message: strings.Repeat("é", MaxErrorMessage)}).Append(nil))
	must(t, err)
	if len(e.Message) > MaxErrorMessage || !strings.HasPrefix(e.Message, "éé") {
		t.Errorf("message of %d bytes", len(e.Message))
	}
}

func TestSetupRoundTrip(t *testing.T) {
	for _, s := range []*Setup{
		{},
		{Root: "9p:corral-root"},
		{Root: "blk:/dev/vda", Shares: []string{"corral-share0:/src", "corral-share1:/a b:ro"}},
		{Root: "9p:corral-root:rw", Hostname: "t1"},
		{Tmpfs: []string{"/scratch"}},
		{Root: "9p:r:rw", Shares: []string{"s:/s"}, Hostname: "h", Tmpfs: []string{"/a", "/b"}},
	} {
		var b bytes.Buffer
		p, err := s.Append(nil)
		must(t, err)
		must(t, NewWriter(&b).Send(TypeSetup, 0, p))
		got := readAll(t, b.Bytes(), FromHost)
		if len(got) != 1 || !reflect.DeepEqual(got[0], s) {
			t.Errorf("Setup %#v decoded as %#v", s, got)
		}
	}
	if _, err := NewReader(bytes.NewReader(header(TypeSetup, 0, 0, 12)), FromAgent).Next(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "agent may not send Setup") {
		t.Errorf("Setup from the agent: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(header(TypeSetup, 0, 0, MaxSetupPayload+1)), FromHost).Next(); !errors.Is(err, ErrProtocol) {
		t.Errorf("oversize Setup: %v", err)
	}
}

func TestParseSetupRejects(t *testing.T) {
	ok, err := (&Setup{Root: "9p:r", Shares: []string{"t:/p"}}).Append(nil)
	must(t, err)
	badCount := bytes.Clone(ok)
	binary.LittleEndian.PutUint32(badCount[offSetupShares:], 1<<30)
	flags := bytes.Clone(ok)
	flags[offSetupFlags] = 2
	// The system part: flagged but absent, flagged but empty (Append
	// never writes that), a tmpfs count beyond the payload, cut short.
	noSystem := bytes.Clone(ok)
	noSystem[offSetupFlags] = SetupSystem
	emptySystem := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(bytes.Clone(noSystem), 0), 0)
	sys, err := (&Setup{Root: "9p:r", Hostname: "h", Tmpfs: []string{"/t"}}).Append(nil)
	must(t, err)
	if sys[offSetupFlags] != SetupSystem {
		t.Errorf("flags %#x, want SetupSystem", sys[offSetupFlags])
	}
	tmpfsCount := bytes.Clone(sys)
	binary.LittleEndian.PutUint32(tmpfsCount[len(sys)-4-2-4:], 1<<30)
	long := bytes.Clone(ok)
	binary.LittleEndian.PutUint32(long[setupFixed:], 1000)
	nul := bytes.Clone(ok)
	nul[len(nul)-1] = 0
	for name, p := range map[string][]byte{
		"short": ok[:5], "count": badCount, "flags": flags, "length": long, "nul": nul,
		"trailing": append(bytes.Clone(ok), 0, 0, 0, 0), "empty": nil,
		"no system": noSystem, "empty system": emptySystem, "tmpfs count": tmpfsCount,
		"system short": sys[:len(sys)-1], "system no count": sys[:len(sys)-6-4],
		"system trailing": append(bytes.Clone(sys), 0),
	} {
		if _, err := ParseSetup(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err %v, want ErrProtocol", name, err)
		}
	}
	if _, err := (&Setup{Root: "a\x00b"}).Append(nil); err == nil {
		t.Error("Setup with a NUL encoded")
	}
	if _, err := (&Setup{Shares: []string{strings.Repeat("x", MaxSetupPayload)}}).Append(nil); err == nil {
		t.Error("Setup over MaxSetupPayload encoded")
	}
	if _, err := (&Setup{Tmpfs: []string{strings.Repeat("x", MaxSetupPayload)}}).Append(nil); err == nil {
		t.Error("Setup with a tmpfs over MaxSetupPayload encoded")
	}
	if _, err := (&Setup{Hostname: "a\x00"}).Append(nil); err == nil {
		t.Error("Setup with a NUL in the host name encoded")
	}
}

func TestSetupNeedsVersion(t *testing.T) {
	for _, tc := range []struct {
		s    Setup
		want uint16
	}{
		{Setup{}, SetupVersion},
		{Setup{Root: "9p:r", Shares: []string{"a:/a:ro"}}, SetupVersion},
		{Setup{Root: "9p:r:rw"}, SetupSystemVersion},
		{Setup{Hostname: "h"}, SetupSystemVersion},
		{Setup{Tmpfs: []string{"/t"}}, SetupSystemVersion},
	} {
		if got := tc.s.NeedsVersion(); got != tc.want {
			t.Errorf("%+v: NeedsVersion %d, want %d", tc.s, got, tc.want)
		}
	}
	if Version < SetupSystemVersion {
		t.Errorf("Version %d speaks no SetupSystem", Version)
	}
}
