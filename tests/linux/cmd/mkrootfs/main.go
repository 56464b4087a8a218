// Command mkrootfs writes the Corral test root file system as an uncompressed
// initramfs (newc cpio) or an ext4 image, for booting the test kernel by hand.
//
//	go run ./tests/linux/cmd/mkrootfs -o initramfs.cpio -shell
//	go run ./tests/linux/cmd/mkrootfs -o root.ext4 -ext4 64 -script test.sh -exit port
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mkrootfs:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("o", "", "output file (required)")
	ext4 := flag.Int("ext4", 0, "write an ext4 image of this many MiB instead of an initramfs")
	script := flag.String("script", "", "shell script file for /init to run")
	shell := flag.Bool("shell", false, "start an interactive shell on the console instead of a script")
	exit := flag.String("exit", "poweroff", "how /init ends the VM: poweroff, reboot, halt or port")
	noDHCP := flag.Bool("no-dhcp", false, "do not run udhcpc on unconfigured interfaces")
	busybox := flag.String("busybox", rootfs.DefaultBusybox, "static busybox binary")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		flag.Usage()
		return fmt.Errorf("need -o and no arguments")
	}
	opts := rootfs.InitramfsOptions{
		Busybox: *busybox,
		Shell:   *shell,
		Exit:    rootfs.ExitMethod(*exit),
		NoDHCP:  *noDHCP,
	}
	if *script != "" {
		b, err := os.ReadFile(*script)
		if err != nil {
			return err
		}
		opts.Script = string(b)
	}
	if *ext4 > 0 {
		return rootfs.BuildExt4(*out, *ext4, opts)
	}
	return rootfs.WriteInitramfs(*out, opts)
}
