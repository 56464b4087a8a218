#!/usr/bin/env bash
# Sets up a fresh machine, builds corral and boots the default guest:
#   scripts/run.sh                 boot the hello test guest
#   scripts/run.sh FLAGS...        corral run FLAGS... instead
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p bin
CGO_ENABLED=0 go build -o bin/corral ./cmd/corral
if [ $# -gt 0 ]; then
  exec bin/corral run "$@"
fi
go run ./tests/guests/cmd/guestbuild -o bin hello >/dev/null
exec bin/corral run --kernel bin/hello.elf --cmdline "exit=0"
