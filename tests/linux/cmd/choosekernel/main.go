// Command choosekernel applies the test-kernel rule of tests/linux/kernel
// (kernel.Choose) to this host and prints the choice as shell assignments,
// so that scripts share the rule with the Go tests:
//
//	eval "$(go run ./tests/linux/cmd/choosekernel)"          # cached kernel, or exit 3
//	eval "$(go run ./tests/linux/cmd/choosekernel -build)"   # build it if missing (minutes)
//	eval "$(go run ./tests/linux/cmd/choosekernel -rule)"    # no kernel paths
//
// It prints KERNEL_KIND (plain or patched), KERNEL_REASON, KERNEL_CMDLINE,
// KERNEL_QEMU_CPU and, unless -rule, KERNEL_VMLINUX and KERNEL_BZIMAGE.
// CORRAL_LINUX_KERNEL=plain|patched overrides the detection.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/corral-vmm/corral/tests/linux/kernel"
)

// exitNotBuilt is the status when the chosen kernel is not cached (as build-kernel.sh --lookup).
const exitNotBuilt = 3

func main() {
	build := flag.Bool("build", false, "build the chosen kernel if it is not cached (installs Debian packages; minutes)")
	rule := flag.Bool("rule", false, "print only the choice and command line, not the kernel paths")
	flag.Parse()
	if flag.NArg() != 0 || (*build && *rule) {
		fmt.Fprintln(os.Stderr, "choosekernel: usage: choosekernel [-build | -rule]")
		os.Exit(2)
	}
	c, err := kernel.ChooseHost()
	if err != nil {
		fmt.Fprintln(os.Stderr, "choosekernel:", err)
		os.Exit(1)
	}
	var bz, vm string
	if !*rule {
		bz, vm, err = kernel.Find(c.Patched)
		if errors.Is(err, kernel.ErrNotBuilt) && *build {
			bz, vm, err = kernel.Build(context.Background(), c.Patched, os.Stderr)
		}
		if errors.Is(err, kernel.ErrNotBuilt) {
			fmt.Fprintf(os.Stderr, "choosekernel: the %s test kernel is not built (%s); run %s\n", c.Kind(), c.Reason, c.BuildHint())
			os.Exit(exitNotBuilt)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "choosekernel:", err)
			os.Exit(1)
		}
	}
	if err := write(os.Stdout, c, bz, vm); err != nil {
		fmt.Fprintln(os.Stderr, "choosekernel:", err)
		os.Exit(1)
	}
}

// write prints the choice as KEY='value' lines; empty paths are left out.
func write(w io.Writer, c kernel.Choice, bzImage, vmlinux string) error {
	vars := [][2]string{
		{"KERNEL_KIND", c.Kind()},
		{"KERNEL_REASON", c.Reason},
		{"KERNEL_CMDLINE", c.Cmdline()},
		{"KERNEL_QEMU_CPU", c.QEMUCPU()},
		{"KERNEL_VMLINUX", vmlinux},
		{"KERNEL_BZIMAGE", bzImage},
	}
	var b strings.Builder
	for _, v := range vars {
		if v[1] == "" && (v[0] == "KERNEL_VMLINUX" || v[0] == "KERNEL_BZIMAGE") {
			continue
		}
		fmt.Fprintf(&b, "%s=%s\n", v[0], shellQuote(v[1]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// shellQuote quotes s for a POSIX shell: inside single quotes, each quote
// in s closes them, is escaped with a backslash and reopens them.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
