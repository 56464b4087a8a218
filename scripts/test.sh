#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit tests, KVM tests with
# the test guests, the Linux end-to-end tests (skipped with a reason where
# /dev/kvm is missing), then a short fuzz pass over every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
go vet ./...
go test -count=1 -timeout 80m ./...
scripts/fuzz.sh "${CORRAL_FUZZTIME:-10s}"
