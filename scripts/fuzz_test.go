package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// TestFuzzCampaign runs fuzz.sh --campaign over a small module of its
// own: a target that never fails keeps its corpus under
// testdata/corpus, and one that crashes on an input the fuzzer finds in
// seconds is reported as a finding and fails the campaign.
func TestFuzzCampaign(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the Go fuzzer for a few seconds a target")
	}
	testenv.MustHaveCommand(t, "bash", "bash")
	goCmd := testenv.MustHaveCommand(t, "go", "go")
	dir := t.TempDir()
	script, err := os.ReadFile("fuzz.sh")
	if err != nil {
		t.Fatal(err)
	}
	// A module path of its own: Go's fuzz cache is keyed by package, and
	// the corpus must come from this run, not an earlier test's.
	mod := "example.com/fuzzcampaign/" + filepath.Base(dir)
	files := map[string]string{
		"scripts/fuzz.sh": string(script),
		"go.mod":          "module " + mod + "\n\ngo 1.22\n",
		"p/p.go":          "package p\n\n// Parse fails on inputs that start with 'A'.\nfunc Parse(b []byte) int {\n\tif len(b) > 0 && b[0] == 'A' {\n\t\tpanic(\"found\")\n\t}\n\treturn len(b)\n}\n",
		"p/p_test.go": "package p\n\nimport \"testing\"\n\n" +
			"func FuzzQuiet(f *testing.F) {\n\tf.Add([]byte(\"x\"))\n\tf.Fuzz(func(t *testing.T, b []byte) {\n\t\tif len(b) > 0 && b[0] == 'A' {\n\t\t\treturn\n\t\t}\n\t\tParse(b)\n\t})\n}\n\n" +
			"func FuzzCrash(f *testing.F) {\n\tf.Add([]byte(\"x\"))\n\tf.Fuzz(func(t *testing.T, b []byte) { Parse(b) })\n}\n",
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	campaign := func(match string) (string, error) {
		cmd := exec.Command("bash", "scripts/fuzz.sh", "--campaign", "3s", match)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(goCmd)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := campaign("FuzzQuiet")
	if err != nil {
		t.Fatalf("quiet campaign: %v\n%s", err, out)
	}
	row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(mod) + `/p \| FuzzQuiet \| 3s \| ([0-9]+) \| ([0-9]+) \| ([0-9]+) \| ([0-9]+) \| 0 \|$`)
	m := row.FindStringSubmatch(out)
	if m == nil || m[1] == "0" {
		t.Fatalf("no FuzzQuiet row with executions and no findings:\n%s", out)
	}
	kept, err := os.ReadDir(filepath.Join(dir, "p/testdata/corpus/FuzzQuiet"))
	if err != nil || len(kept) == 0 {
		t.Errorf("no corpus kept in p/testdata/corpus/FuzzQuiet (%v, %d files); row %q", err, len(kept), m[0])
	}

	out, err = campaign("FuzzCrash")
	if err == nil {
		t.Fatalf("a campaign that found a crasher exited 0:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(mod) + `/p \| FuzzCrash \| 3s \| .* \| 1 \|$`).MatchString(out) {
		t.Errorf("no FuzzCrash row with one finding:\n%s", out)
	}
	crashers, _ := os.ReadDir(filepath.Join(dir, "p/testdata/fuzz/FuzzCrash"))
	if len(crashers) == 0 || !strings.Contains(out, "Failing input written to") {
		t.Errorf("the crasher is not in p/testdata/fuzz/FuzzCrash or not named in the output:\n%s", out)
	}
	if strings.Contains(out, "FuzzQuiet") {
		t.Errorf("the campaign ran targets its pattern does not match:\n%s", out)
	}
}
