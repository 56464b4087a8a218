#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit tests, KVM tests with
# the test guests, the Linux end-to-end tests (skipped with a reason where
# /dev/kvm is missing), then a short fuzz pass over every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Debian's own bzImage, for the loader's real-kernel test (cached outside
# the checkout; the test skips with a reason if this fails).
cache="${CORRAL_CACHE:-$HOME/.cache/corral}"
[ -s "$cache/debian-kernel/vmlinuz" ] || sh boot/testdata/fetch-debian-kernel.sh ||
  echo "test: could not fetch Debian's kernel; TestDebianKernel will skip"
# The end-to-end tests build the test kernel (cached, ~5-10 min) when it
# is not there yet.
export CORRAL_BUILD_KERNEL=1
go vet ./...
go test -count=1 -timeout 80m ./...
scripts/fuzz.sh "${CORRAL_FUZZTIME:-10s}"
