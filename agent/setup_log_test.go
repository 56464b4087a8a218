package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestDeferredSetupQuiet: a deferred setup (the host's Setup request, a
// warm exec's) puts nothing on an info-level console when all goes well:
// the host hears it in the Ack, and each console line costs a restored
// guest emulated UART work. The same setup at boot still logs its steps
// (a deferred one that fails is reported in its Error and by the server).
func TestDeferredSetupQuiet(t *testing.T) {
	cfg, err := SetupConfig("9p:corral-root", []string{"corral-share0:/src"})
	if err != nil {
		t.Fatal(err)
	}
	for _, deferred := range []bool{false, true} {
		var out bytes.Buffer
		s, _ := newRecSetup(nil)
		s.log = slog.New(slog.NewTextHandler(&out, nil))
		api := s.baseMounts(baseMounts())
		if deferred {
			if err := (&Deferred{s: s, api: api}).Apply(cfg); err != nil {
				t.Fatal(err)
			}
		} else {
			s.apply(cfg, api)
			if err := s.err(); err != nil {
				t.Fatal(err)
			}
		}
		logged := strings.Contains(out.String(), "switched root") && strings.Contains(out.String(), "mounted share")
		if logged == deferred {
			t.Errorf("deferred %v: console %q; want the steps logged only at boot", deferred, out.String())
		}
	}
}
