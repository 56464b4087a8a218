package proto

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// fuzzRead decodes data as a stream of frames from dir: it must end in
// io.EOF, a truncation or a protocol error, never panic, and every message
// that decodes must encode back to the same payload.
func fuzzRead(t *testing.T, data []byte, from Direction) {
	r := NewReader(bytes.NewReader(data), from)
	for {
		f, err := r.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Next: unexpected error kind: %v", err)
			}
			return
		}
		if len(f.Payload) > MaxPayload(f.Type) {
			t.Fatalf("%s payload of %d bytes over its bound", f.Type, len(f.Payload))
		}
		m, err := f.Decode()
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("Decode %s: error not ErrProtocol: %v", f.Type, err)
			}
			continue
		}
		var again []byte
		switch m := m.(type) {
		case Hello:
			again = m.Append(nil)
		case *Exec:
			if again, err = m.Append(nil); err != nil {
				t.Fatalf("decoded Exec does not encode: %v", err)
			}
			back, err := ParseExec(again)
			if err != nil || !reflect.DeepEqual(back, m) {
				t.Fatalf("Exec %#v re-decoded as %#v, %v", m, back, err)
			}
			continue // the encoding of an unused field is not unique
		case *Setup:
			if again, err = m.Append(nil); err != nil {
				t.Fatalf("decoded Setup does not encode: %v", err)
			}
		case Signal:
			again = m.Append(nil)
		case Resize:
			again = m.Append(nil)
		case Exit:
			again = m.Append(nil)
		case *Error:
			if back, err := ParseError(m.Append(nil)); err != nil || back.Code != m.Code {
				t.Fatalf("Error %v re-decoded as %v, %v", m, back, err)
			}
			continue // invalid UTF-8 is replaced
		case uint32:
			again = AppendU32(nil, m)
		case []byte:
			again = m
		case nil:
			again = []byte{}
		default:
			t.Fatalf("Decode gave %T", m)
		}
		if !bytes.Equal(again, f.Payload) {
			t.Fatalf("%s payload %x re-encoded as %x", f.Type, f.Payload, again)
		}
	}
}

// FuzzAgentReader decodes what the agent reads: frames from the host.
func FuzzAgentReader(f *testing.F) {
	f.Add(hostSession(f))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzRead(t, data, FromHost) })
}

// FuzzHostReader decodes what the host reads: frames from the agent.
func FuzzHostReader(f *testing.F) {
	f.Add(agentSession(f))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzRead(t, data, FromAgent) })
}

// FuzzParseSetup decodes Setup payloads: an error wraps ErrProtocol, and a
// decoded Setup encodes back to the same bytes.
func FuzzParseSetup(f *testing.F) {
	for _, s := range []*Setup{{}, {Root: "9p:corral-root", Shares: []string{"corral-share0:/src", "corral-share1:/data:ro"}},
		{Root: "9p:corral-root:rw", Shares: []string{"corral-share0:/src"}, Hostname: "t1", Tmpfs: []string{"/scratch", "/run/x"}}} {
		p, err := s.Append(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := ParseSetup(p)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error not ErrProtocol: %v", err)
			}
			return
		}
		again, err := s.Append(nil)
		if err != nil {
			t.Fatalf("decoded Setup %#v does not encode: %v", s, err)
		}
		if !bytes.Equal(again, p) {
			t.Fatalf("Setup %x re-encoded as %x", p, again)
		}
	})
}
