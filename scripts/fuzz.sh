#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time each (default 10s):
#   scripts/fuzz.sh [DURATION]
# A crasher is left in its package's testdata/fuzz/TARGET and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
status=0
targets=0
# Only packages whose tests define a fuzz target: listing every package's
# tests would build each test binary once more.
dirs=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u)
for dir in $dirs; do
  pkg=$(go list "$dir")
  for target in $(go test -list '^Fuzz' "$dir" | grep '^Fuzz' || true); do
    targets=$((targets + 1))
    echo "fuzz: $pkg $target ($fuzztime)"
    log=$(mktemp)
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 200x "$dir" >"$log" 2>&1; then
      cat "$log"
      echo "fuzz: $pkg $target FAILED (a crasher is in that package's testdata/fuzz/$target)"
      status=1
    fi
    rm -f "$log"
  done
done
if [ "$targets" -eq 0 ]; then
  echo "fuzz: no fuzz targets found"
  exit 1
fi
echo "fuzz: $targets targets, $([ $status -eq 0 ] && echo ok || echo FAILED)"
exit $status
