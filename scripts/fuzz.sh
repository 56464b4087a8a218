#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time each (default 10s):
#   scripts/fuzz.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
status=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $target ($fuzztime)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 200x "$pkg" >/tmp/corral-fuzz.log 2>&1; then
      cat /tmp/corral-fuzz.log
      echo "fuzz: $pkg $target FAILED (a crasher is in that package's testdata/fuzz/$target)"
      status=1
    fi
  done
done
exit $status
