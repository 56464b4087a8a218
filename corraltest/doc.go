// Package corraltest starts Corral virtual machines inside Go tests and runs
// commands in them:
//
//	func TestUname(t *testing.T) {
//		t.Parallel()
//		vm := corraltest.StartT(t, corraltest.Config{}) // kernel from $CORRAL_KERNEL
//		out, err := vm.Command("uname", "-r").Output()
//		...
//	}
//
// StartT boots the machine with Corral's guest agent as its init (package
// agentvm), sends the guest's console to t.Log line by line, and in
// t.Cleanup powers the machine off, releases it and checks that the
// descriptors it opened are closed. Where /dev/kvm cannot be opened the test
// skips with the reason; with "kvm" in $CORRAL_REQUIRE it fails instead, so
// a CI run cannot pass by skipping. Without a kernel (Config.Machine.Kernel,
// else $CORRAL_KERNEL) the test skips (fails with "kernel" in
// $CORRAL_REQUIRE); a kernel or agent named but missing
// fails it. The agent is Config.Agent, else $CORRAL_AGENT, else a static
// build of cmd/corral-agent made with the go command into
// $CORRAL_CACHE/corraltest (default <user cache dir>/corral/corraltest), once
// per test binary. StartMachineT starts a guest that has no agent.
//
// VM.Command returns an os/exec-shaped command (Stdin, Stdout, Stderr, Run,
// Output, CombinedOutput; an *ExitError with ExitCode); VM.Expect waits for
// the console to match a regular expression; VM.DialVsock connects to a
// vsock port of the guest.
//
// Tests may call StartT under t.Parallel: the package keeps no state of its
// own, and the leak check does not blame one machine for another's
// descriptors.
//
// # The leak check
//
// A machine's descriptors cannot be told from another machine's by their
// names alone (every VM has an "anon_inode:kvm-vm"), and a closed number is
// soon reused, so the check works on open files, not on numbers:
//
//  1. corral.New marks the creation of a machine in its log (the "vm"
//     attribute before it opens anything, "vm.created" after). corraltest
//     gives each machine a logger that lists /proc/self/fd at both points.
//     Machines created through corraltest in one process are created one at
//     a time (an flock on the test binary, held from the first mark to the
//     second), so no other machine opens descriptors in between.
//  2. The descriptors that appeared in between and that only a machine opens
//     are the machine's own: /dev/kvm, KVM's anonymous inodes (kvm-vm,
//     kvm-vcpu:N), /dev/net/tun and the machine's disk images. Each is
//     duplicated (pinned), so its open file outlives the number.
//  3. After Close, a number still open on the same open file as its pin
//     (kcmp(2) KCMP_FILE) is a leak and fails the test; a number closed or
//     reused for another open file is not. A /dev/net/tun descriptor counts
//     only when it is attached to one of this machine's TAP devices (other
//     tests may open /dev/net/tun at any time). The pins are closed then.
//
// When the creation window shows other than exactly one new kvm-vm
// descriptor (a machine created outside corraltest at the same moment, or
// one closed whose numbers this one reused), nothing can be attributed:
// the check is skipped and says so in the test log, never a false failure.
// Descriptors the machine opens after creation (on shared directories,
// vsock connections) are outside the check: running machines open those at
// any time, so they cannot be attributed.
package corraltest
