#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh: apt-get, go mod download) and
# runs every check and test, in this order:
#   1. scripts/check-repo.sh: no tracked ELF binary or file over 1 MB
#   2. go vet ./...
#   3. a short fuzz pass over every fuzz target (scripts/fuzz.sh,
#      CORRAL_FUZZTIME per target, default 10s)
#   4. the Linux end-to-end tests (tests/e2e), building the test kernel
#      first if it is not cached. They run without the race detector: they
#      boot Linux within fixed time bounds that -race's slower VMM would
#      strain.
#   5. on a host without /dev/kvm or with a nested one (kvm_pvm), the KVM tests of ./kvm, the root package,
#      ./cmd/corral and the Linux guest packages (./agentvm, ./corraltest,
#      ./tests/linuxboot: corral exec, the agent, corraltest) inside a QEMU
#      TCG VM with emulated SVM (tests/tcgkvm), building the plain test
#      kernel first if it is not cached
#   6. the containerd shim's module (shim/, a Go module of its own): vet
#      and unit tests on the host (shim-unit; they start a private
#      containerd), and its end-to-end tests (shim/e2e: ctr run, ctr task
#      exec/kill/delete, a CRI pod) inside tests/tcgkvm (shim-in-tcg), and
#      ctr run and the detached task against containerd 2.2.9 built from
#      the module proxy (shim-in-tcg-containerd2)
#   7. every other package under the race detector: unit tests, KVM tests
#      with the test guests, network tests in their own namespaces, QEMU
#      comparisons. Last, so that its summary ends the output (unless an
#      earlier step failed: then a line naming it does).
# A test whose need (KVM, root, QEMU, a tool) is missing skips, saying why;
# CORRAL_REQUIRE=kvm,root,qemu,tools makes it fail instead (.ci/run sets
# it; see internal/testenv). Every step runs even when an earlier one
# failed; the exit status is non-zero if any did.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "test: CORRAL_REQUIRE=${CORRAL_REQUIRE:-} (needs listed there fail when missing; others skip)"
# Debian's own bzImage, for the loader's real-kernel test (cached outside
# the checkout; the test skips with a reason if this fails).
cache="${CORRAL_CACHE:-$HOME/.cache/corral}"
[ -s "$cache/debian-kernel/vmlinuz" ] || sh boot/testdata/fetch-debian-kernel.sh ||
  echo "test: could not fetch Debian's kernel; TestDebianKernel will skip"
# The end-to-end tests build the test kernel (cached, ~5-10 min) when it
# is not there yet.
export CORRAL_BUILD_KERNEL=1

failed=()
# Each step's output is kept too, so that the end of the output can say
# why a step failed: CI shows only the output's tail.
steplogs=$(mktemp -d)
trap 'rm -rf "$steplogs"' EXIT
step() { # step NAME COMMAND...: run it, remember a failure, go on
  local name=$1
  shift
  echo "test: $name: $*"
  "$@" 2>&1 | tee "$steplogs/$name.log" || failed+=("$name")
}
# why_failed: for each failed step, what its output says failed: each
# failed top-level test's last 30 lines (from its === RUN on), panics, and
# tcgkvm's and the scripts' error lines; at most 150 lines a step.
why_failed() {
  local name
  for name in "${failed[@]}"; do
    echo "test: why $name failed (from its output):"
    awk '
      /^=== RUN   [^\/]+$/ { n = 0 }
      { buf[n % 30] = $0; n++ }
      /^--- FAIL: / && !/\// {
        for (i = (n > 30 ? n - 30 : 0); i < n; i++) print buf[i % 30]
        next
      }
      /^(panic:|fatal error:|FAIL)/ || /^tcgkvm: .*(exit [1-9]|did not finish|failed|stopped|error)/ ||
        /^[a-z][a-z0-9-]*: .*(error|failed|FAIL|cannot|not found)/ { print }
    ' "$steplogs/$name.log" | head -150 | sed 's/^/test:   /'
  done
}
step check-repo scripts/check-repo.sh
step vet go vet ./...
step fuzz scripts/fuzz.sh "${CORRAL_FUZZTIME:-10s}"
step e2e go test -count=1 -timeout 45m ./tests/e2e/...
# A host without /dev/kvm (CI's own machine, a kvm_pvm guest whose kernel
# will not bind KVM) still runs the KVM tests: tests/tcgkvm boots a Debian
# kernel under QEMU TCG with an emulated AMD SVM CPU and runs them against
# the /dev/kvm inside, with kvm and root required. It ships the plain test
# kernel (built here first when not cached, ~10 min) and the agent, and
# then requires the kernel too, so the Linux guest tests (Linux L2 guests,
# 10-25 s each under TCG) fail rather than skip (~10 min in all).
# CORRAL_TCGKVM=off leaves it out. QEMU 7.2 sometimes leaves the L1
# kernel's timer interrupt pending without waking its CPU, which stopped it
# in one Linux L2 boot in three or four: tcgkvm nudges it with a newline
# on its serial port every second (tests/tcgkvm/README.md), and should it
# still stop, boots again for the binaries that had not finished, here up
# to 8 times, each going on where it stopped (a stall costs ~1.5 min).
# Speeds there are TCG speeds, and a test that waits on emulated guest
# work can miss its bound on a loaded host: -fail-retries 1 runs a
# binary's failed tests once more in a fresh boot; one that passes then is
# printed as FLAKY (repeated at the end of this script's output), one that
# fails again fails the step.
kvm_in_tcg() {
  local bin
  bin=$(mktemp -d)/tcgkvm
  go build -o "$bin" ./tests/tcgkvm || return 1
  tests/linux/build-kernel.sh --no-patches --lookup >/dev/null 2>&1 ||
    tests/linux/build-kernel.sh --no-patches || return 1
  "$bin" -stall-retries 8 -fail-retries 1 ./kvm . ./cmd/corral ./agentvm ./corraltest ./tests/linuxboot -- -test.timeout=20m
}
# tests/e2e (stock Linux: PVH and bzImage, SMP, blk, net with DHCP) in a
# tcgkvm run of its own: it ships mkfs.ext4 and debugfs into the VM
# (-host-files) and requires them (~1 min in the VM, ~2 with the L1 boot).
e2e_in_tcg() {
  local bin
  bin=$(mktemp -d)/tcgkvm
  go build -o "$bin" ./tests/tcgkvm || return 1
  tests/linux/build-kernel.sh --no-patches --lookup >/dev/null 2>&1 ||
    tests/linux/build-kernel.sh --no-patches || return 1
  "$bin" -stall-retries 8 -fail-retries 1 -host-files mkfs.ext4,debugfs,/etc/mke2fs.conf -require kvm,root,tools ./tests/e2e -- -test.timeout=25m
}
# The containerd shim (issue 14): its own module, so go vet ./... and the
# race step above and below do not reach it. The static shim binary goes
# into the cache (not /tmp: tcgkvm's VM mounts a tmpfs over /tmp).
shim_dir="${CORRAL_CACHE:-$HOME/.cache/corral}/shim-bin"
build_shim() {
  mkdir -p "$shim_dir" &&
    (cd shim && CGO_ENABLED=0 go build -o "$shim_dir/containerd-shim-corral-v2" ./cmd/containerd-shim-corral-v2)
}
# On the host: vet, unit tests under -race (ctrdtest starts a private containerd), and
# shim/e2e, which needs KVM and so runs here only on a host with /dev/kvm
# (with the test kernel this host needs, tests/linux/cmd/choosekernel: on
# a nested KVM the patched one, whose extra parameters go to the shim in
# $CORRAL_CMDLINE; and a static agent; elsewhere it skips here and runs in
# shim-in-tcg).
shim_unit() {
  build_shim || return 1
  local k=${CORRAL_KERNEL:-} extra=${CORRAL_CMDLINE:-} choice
  if [ -z "$k" ] && [ -e /dev/kvm ] && choice=$(go run ./tests/linux/cmd/choosekernel 2>/dev/null); then
    eval "$choice"
    k=$KERNEL_VMLINUX
    [ -n "$extra" ] || extra=${KERNEL_CMDLINE#"console=ttyS0 panic=-1"}
  fi
  local agent=${CORRAL_AGENT:-$shim_dir/corral-agent}
  [ -n "${CORRAL_AGENT:-}" ] || CGO_ENABLED=0 go build -o "$agent" ./cmd/corral-agent || return 1
  (cd shim && go vet ./... &&
    CORRAL_SHIM="$shim_dir/containerd-shim-corral-v2" CORRAL_KERNEL="$k" CORRAL_CMDLINE="${extra# }" CORRAL_AGENT="$agent" \
      CGO_ENABLED=1 go test -race -count=1 -timeout 15m ./...)
}
# shim/e2e in a tcgkvm run of its own: the shim, containerd and ctr go in
# at their host paths, and CORRAL_SHIM names the shim; containerd, ctr and
# busybox are required there (tools). /etc/hosts and /etc/resolv.conf too:
# the CRI plugin copies them into a host-network pod. Three tests, four or five Linux L2
# boots (~3-5 min with the L1 boot).
shim_in_tcg() {
  local bin dir=$shim_dir
  build_shim || return 1
  bin=$(mktemp -d)/tcgkvm
  go build -o "$bin" ./tests/tcgkvm || return 1
  tests/linux/build-kernel.sh --no-patches --lookup >/dev/null 2>&1 ||
    tests/linux/build-kernel.sh --no-patches || return 1
  "$bin" -stall-retries 4 -fail-retries 1 -host-files "containerd,ctr,/etc/hosts,/etc/resolv.conf,$dir/containerd-shim-corral-v2" \
    -env "CORRAL_SHIM=$dir/containerd-shim-corral-v2" -require kvm,root,tools \
    ./shim/e2e -- -test.timeout=20m
}
# The same against containerd 2.x (Debian packages only 1.6): containerd
# and ctr 2.2.9 built static from the Go module proxy by
# build-containerd.sh into the cache (cold ~3.5 CPU-min, 7 min on a busy
# 2-core host; cached 0.1 s), then ctr run --rm and the detached task in
# tcgkvm (~2-3 min with the L1 boot). CORRAL_CONTAINERD2=off leaves it out;
# CORRAL_CONTAINERD2=VERSION tests another release (docs/containerd.md).
shim_in_tcg_containerd2() {
  local bin b v=${CORRAL_CONTAINERD2:-on} dir=$shim_dir
  [ "$v" != on ] || v=2.2.9
  b=$(shim/internal/ctrdtest/build-containerd.sh "$v") || return 1
  build_shim || return 1
  bin=$(mktemp -d)/tcgkvm
  go build -o "$bin" ./tests/tcgkvm || return 1
  "$bin" -stall-retries 4 -fail-retries 1 -host-files "$b/containerd,$b/ctr,$dir/containerd-shim-corral-v2" \
    -env "CORRAL_SHIM=$dir/containerd-shim-corral-v2,CORRAL_CONTAINERD_BIN_DIR=$b" -require kvm,root,tools \
    -run '^(TestCtrRunRm|TestDetachedTask)$' ./shim/e2e -- -test.timeout=20m
}
step shim-unit shim_unit
# A nested /dev/kvm (kvm_pvm: guest ring 0 in KVM's instruction emulator)
# runs tests/e2e and the shim's end-to-end tests natively (above), but not
# yet the rest of the KVM tests: their time bounds are set for hardware
# KVM and tests/tcgkvm, and several ring-0 test guests and exec tests miss
# them here (2026-12-07). There the KVM tests run in tests/tcgkvm as on a
# host without /dev/kvm, and the race step runs with /dev/kvm unopenable.
nested_kvm=
if [ -e /dev/kvm ] && [ -e /sys/module/kvm_pvm ]; then
  nested_kvm=1
  echo "test: /dev/kvm is nested through kvm_pvm: the KVM tests run in tests/tcgkvm, the race step without /dev/kvm"
fi
if [ -e /dev/kvm ] && [ -z "$nested_kvm" ]; then
  echo "test: kvm-in-tcg: not needed (this host has /dev/kvm: the KVM tests run natively)"
elif [ "${CORRAL_TCGKVM:-on}" = off ]; then
  echo "test: kvm-in-tcg: off (CORRAL_TCGKVM=off): the KVM tests only skip on this host"
else
  step kvm-in-tcg kvm_in_tcg
  if [ -n "$nested_kvm" ]; then
    # Fewer L1 boots: its stalls (tests/tcgkvm/README.md) cost minutes each.
    echo "test: e2e-in-tcg, shim-in-tcg: not needed (tests/e2e and shim/e2e ran on the nested /dev/kvm above)"
  else
    step e2e-in-tcg e2e_in_tcg
    step shim-in-tcg shim_in_tcg
  fi
  if [ "${CORRAL_CONTAINERD2:-on}" = off ]; then
    echo "test: shim-in-tcg-containerd2: off (CORRAL_CONTAINERD2=off)"
  else
    step shim-in-tcg-containerd2 shim_in_tcg_containerd2
  fi
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "test: FAILED so far: ${failed[*]} (see above); running the remaining tests"
fi
# -race needs cgo (gcc, installed by setup.sh) even though Corral uses none.
echo "test: race: go test -race ./... except tests/e2e"
# without_kvm COMMAND...: runs it in a private mount namespace with a Unix
# socket bound over /dev/kvm, so that opening it fails (ENXIO) and the KVM
# tests skip as on a host without KVM (the nested-KVM case above).
without_kvm() {
  local d
  d=$(mktemp -d)
  printf '%s\n' 'package main' 'import ("net"; "os")' \
    'func main() { l, err := net.Listen("unix", os.Args[1]); if err != nil { panic(err) }; l.(*net.UnixListener).SetUnlinkOnClose(false); l.Close() }' >"$d/sock.go"
  go run "$d/sock.go" "$d/kvm" &&
    unshare -m sh -c 'mount --bind "$0" /dev/kvm && exec "$@"' "$d/kvm" "$@"
}
status=0
race=(go test -race -count=1 -timeout 45m $(go list ./... | grep -v '/tests/e2e$'))
if [ -n "$nested_kvm" ]; then
  CGO_ENABLED=1 without_kvm "${race[@]}" || status=$?
else
  CGO_ENABLED=1 "${race[@]}" || status=$?
fi
if grep -h '^tcgkvm: .*FLAKY: ' "$steplogs"/*.log >/dev/null 2>&1; then
  echo "test: flaky in tests/tcgkvm (failed, then passed when run again):"
  grep -h '^tcgkvm: .*FLAKY: ' "$steplogs"/*.log | sed 's/^/test:   /'
fi
if [ ${#failed[@]} -gt 0 ]; then
  why_failed
  echo "test: FAILED: ${failed[*]}"
  exit 1
fi
exit $status
