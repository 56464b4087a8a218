// Package e2e runs containerd-shim-corral-v2 under a private containerd
// (shim/internal/ctrdtest): ctr run, a detached task with exec, kill and
// delete, and a pod through the CRI plugin. The tests need KVM, root,
// containerd, the shim binary ($CORRAL_SHIM or on PATH) and a guest kernel
// ($CORRAL_KERNEL); scripts/test.sh runs them in tests/tcgkvm.
package e2e
