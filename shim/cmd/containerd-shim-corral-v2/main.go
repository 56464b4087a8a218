// Command containerd-shim-corral-v2 is containerd's runtime v2 shim for
// Corral (runtime type io.containerd.corral.v2): each task is a Corral
// microVM, run inside this process, with the bundle's root file system as
// the guest's root over virtio-9p and the OCI process run by the guest
// agent. See shim/task for what each task API call does.
package main

import (
	"context"

	"github.com/containerd/containerd/runtime/v2/shim"

	"github.com/corral-vmm/corral/shim/task"
)

func main() {
	task.RegisterPlugin()
	shim.RunManager(context.Background(), task.NewManager(task.RuntimeName))
}
