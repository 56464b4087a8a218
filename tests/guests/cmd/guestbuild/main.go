// Command guestbuild compiles Corral test guests into a directory and prints
// their paths, one per line: guestbuild [-o dir] [name ...] (default: all).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/corral-vmm/corral/tests/guests"
)

func main() {
	out := flag.String("o", ".", "output directory")
	list := flag.Bool("list", false, "list the guest names and exit")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: guestbuild [-o dir] [name ...]\nguests: %v\n", guests.Names())
		flag.PrintDefaults()
	}
	flag.Parse()
	if *list {
		for _, n := range guests.Names() {
			fmt.Println(n)
		}
		return
	}
	names := flag.Args()
	if len(names) == 0 {
		names = guests.Names()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	for _, n := range names {
		p, err := guests.BuildContext(ctx, n, *out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "guestbuild:", err)
			os.Exit(1)
		}
		fmt.Println(p)
	}
}
