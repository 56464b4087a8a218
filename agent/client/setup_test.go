package client

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/agent/proto"
)

// TestSetupAgainstScripts: Setup's answers from an agent: Ack, an Error,
// an agent too old for Setup (version 1), and a wrong message.
func TestSetupAgainstScripts(t *testing.T) {
	refusal := &proto.Error{Code: proto.CodeStart, Message: "guest setup: mounting 9p share \"s\" on /s: no such device"}
	for _, tc := range []struct {
		name   string
		script []byte
		want   string // "" for success
		is     error
	}{
		{"ack", frames(t, hello(proto.Version), proto.Frame{Type: proto.TypeAck}), "", nil},
		{"setup failed", frames(t, hello(proto.Version), proto.Frame{Type: proto.TypeError, Payload: refusal.Append(nil)}), "no such device", &proto.Error{Code: proto.CodeStart}},
		{"version 1 agent", frames(t, hello(1)), "Setup needs 2 (update the guest agent)", ErrVersion},
		{"started", frames(t, hello(proto.Version), proto.Frame{Type: proto.TypeStarted, Payload: proto.AppendU32(nil, 1)}), "want Ack", proto.ErrProtocol},
		{"hang-up", frames(t, hello(proto.Version)), "Setup", nil}, // sending it, or waiting for the Ack
	} {
		err := Setup(context.Background(), fakeAgent(tc.script), "9p:corral-root", []string{"s:/s"})
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: %v, want %q (%v)", tc.name, err, tc.want, tc.is)
		}
	}
	if err := Setup(context.Background(), fakeAgent(nil), "a\x00b", nil); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("NUL in the root: %v", err)
	}
}
