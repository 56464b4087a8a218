// Package bench holds no Go code of its own: its commands are in the
// subfolders, and this test runs lib_test.sh, the test of the shell
// library the bench scripts share.
package bench

import (
	"os/exec"
	"testing"
)

func TestLib(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	out, err := exec.Command(bash, "lib_test.sh").CombinedOutput()
	if err != nil {
		t.Errorf("lib_test.sh: %v\n%s", err, out)
	}
}
