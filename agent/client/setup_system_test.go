package client

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/agent/proto"
)

// TestSetupRequestVersions: a Setup with a host name, tmpfs or a
// read-write root needs a version 3 agent; against a version 2 one the
// client says so and sends no Setup, while a plain Setup still goes.
func TestSetupRequestVersions(t *testing.T) {
	for _, tc := range []struct {
		req  *proto.Setup
		want string // "" for sent
	}{
		{&proto.Setup{Root: "9p:corral-root", Shares: []string{"s:/s"}}, ""},
		{&proto.Setup{Root: "9p:corral-root:rw"}, "this Setup needs 3 (update the guest agent)"},
		{&proto.Setup{Hostname: "t1"}, "this Setup needs 3"},
		{&proto.Setup{Tmpfs: []string{"/scratch"}}, "this Setup needs 3"},
	} {
		host, guest := net.Pipe()
		got := make(chan []proto.Frame, 1)
		go func() {
			defer guest.Close()
			var fs []proto.Frame
			r := proto.NewReader(guest, proto.FromHost)
			f, err := r.Next() // Hello
			if err != nil {
				got <- fs
				return
			}
			fs = append(fs, f)
			guest.Write(frames(t, hello(2)))
			if f, err = r.Next(); err == nil {
				fs = append(fs, f)
				guest.Write(frames(t, proto.Frame{Type: proto.TypeAck}))
			}
			io.Copy(io.Discard, guest)
			got <- fs
		}()
		err := SetupRequest(context.Background(), host, tc.req)
		fs := <-got
		if tc.want == "" {
			if err != nil || len(fs) != 2 || fs[1].Type != proto.TypeSetup {
				t.Errorf("%+v: %v, frames %v; want it sent and acknowledged", tc.req, err, fs)
			}
			continue
		}
		if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want ErrVersion with %q", tc.req, err, tc.want)
		}
		if len(fs) != 1 {
			t.Errorf("%+v: the agent got %d frames, want the Hello only", tc.req, len(fs))
		}
	}
}
