// Command corral-agent is Corral's guest agent: it runs commands for the
// host over the protocol of agent/proto. As the guest's PID 1 (the /init
// of the initrd Corral builds, see agent/initrd) it also mounts what the
// system needs and the 9p shares named by corral.share= on the kernel
// command line, reaps orphans, and powers the machine off on request.
// Under another init it is an ordinary service:
//
//	corral-agent [-listen vsock:1024|unix:PATH|tcp:ADDR]
//
// Build it static: CGO_ENABLED=0 go build ./cmd/corral-agent.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/corral-vmm/corral/agent"
)

func main() {
	listen := flag.String("listen", fmt.Sprintf("vsock:%d", agent.DefaultPort), "where to serve: vsock:PORT, unix:PATH or tcp:ADDR")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pid1 := os.Getpid() == 1
	if err := run(log, *listen, pid1); err != nil {
		log.Error("corral-agent", "err", err)
		if pid1 {
			// PID 1 must not exit: the kernel would panic. Power off so the
			// host sees the machine end instead.
			time.Sleep(time.Second)
			agent.PowerOff()
			select {}
		}
		os.Exit(1)
	}
}

func run(log *slog.Logger, listen string, pid1 bool) error {
	ctx := context.Background()
	cfg := agent.Config{Logger: log}
	if pid1 {
		if err := agent.Init(log); err != nil {
			// Go on: a missing share should not cost the host its agent.
			log.Error("corral-agent: init", "err", err)
		}
		r := agent.NewReaper()
		go r.Run(ctx)
		cfg.Reaper = r
		cfg.PowerOff = agent.PowerOff
	}
	l, err := agent.Listen(listen)
	if err != nil {
		return err
	}
	log.Info("corral-agent: serving", "addr", l.Addr(), "pid1", pid1)
	return agent.NewServer(cfg).Serve(ctx, l)
}
