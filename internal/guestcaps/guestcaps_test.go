package guestcaps

import (
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/caps.md")

const page = "../../docs/caps.md"

// docs/caps.md is exactly what List renders: a changed constant or reason
// fails here until the page is regenerated.
func TestCapsPageCurrent(t *testing.T) {
	want := Markdown()
	if *update {
		if err := os.WriteFile(page, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is out of date; run go test ./internal/guestcaps -update\n--- want:\n%s", page, want)
	}
}

func TestEveryCapHasAReason(t *testing.T) {
	for _, c := range List() {
		if c.Value <= 0 || c.Why == "" || c.Const == "" {
			t.Errorf("%+v", c)
		}
	}
}
