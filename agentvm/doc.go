// Package agentvm boots a machine with Corral's guest agent as its init
// and runs commands in it, os/exec style: what `corral exec` and
// corraltest are built on.
//
//	vm, err := agentvm.Start(ctx, agentvm.Config{
//		Machine: corral.Config{Kernel: "bzImage", Cmdline: "console=ttyS0 panic=-1"},
//		Agent:   "/path/to/static/corral-agent", // or $CORRAL_AGENT
//		Root:    agentvm.RootHost(),             // the host's / read-only, a tmpfs overlay
//		Shares:  []agentvm.Share{{Host: dir, Guest: "/work"}},
//	})
//	if err != nil { ... } // an *AgentError says why the agent never answered
//	defer vm.Close()      // powers off through the agent, then stops the machine
//	out, err := vm.Command("uname", "-r").Output()
//
// Start puts the agent into the initrd (agent/initrd: the user's initrd,
// then a cpio with /init -> /corral/agent), adds a vsock device unless
// Config.Machine has one, serves the root and the shares over virtio-9p (or
// the root image over virtio-blk), and appends to the kernel command line
// the keys the agent reads as PID 1:
//
//	corral.root=9p:TAG       the share TAG is the read-only lower layer of an overlay root
//	corral.root=blk:/dev/vda the first virtio-blk disk (ext4) is
//	corral.share=TAG:PATH[:ro] mount share TAG at PATH in the final root
//
// With RootHost and no initrd of the user's there is no initrd at all: a
// kernel root (agent.KernelRootParams) has the kernel mount the host's /
// over 9p and run the agent from its host path, so only the pages the
// agent touches cross into the guest, instead of the whole binary being
// copied out of an initramfs in the guest at boot.
//
// It then dials the agent's vsock port (agent.DefaultPort) until the agent
// answers a protocol Hello, with a short backoff, bounded by
// Config.AgentTimeout; it stops waiting at once when the machine ends or
// the kernel panics. Failing, it returns an *AgentError with the reason
// and the last lines of the guest's console, which a ring keeps in front of
// Config.Machine.Console for the whole life of the VM (VM.ConsoleTail).
//
// Each Command dials its own vsock connection when it starts: commands run
// concurrently and a failed one takes nothing else down.
//
// The guest kernel needs CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS (the
// agent's channel), CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS (root and
// shares over 9p; built in, for a kernel root), CONFIG_OVERLAY_FS and CONFIG_TMPFS (the writable root),
// CONFIG_DEVTMPFS, and CONFIG_VIRTIO_BLK with CONFIG_EXT4_FS for RootImage;
// tests/linux/kernel.config has them all.
package agentvm
