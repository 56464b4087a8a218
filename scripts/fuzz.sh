#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time each (default 10s):
#   scripts/fuzz.sh [DURATION]
# A crasher is left in its package's testdata/fuzz/TARGET and fails the run.
#
# Long campaigns (issue 16), a target at a time:
#   scripts/fuzz.sh --campaign DURATION [REGEXP]
# runs each target whose "package Target" matches REGEXP (default: all) for
# DURATION with $CORRAL_FUZZ_PARALLEL workers (default 1). The corpus is
# kept in the package's testdata/corpus/TARGET: it is loaded into Go's
# fuzz cache before the run and what the run found is copied back, so the
# next campaign starts where this one stopped (testdata/corpus is not
# testdata/fuzz, which go test runs as seeds on every test run). Prints a
# Markdown table row per target, from Go's last progress line:
# executions, their mean rate, the corpus Go fuzzed from (seeds, the kept
# corpus, the cache), the coverage-increasing inputs this run added, and
# findings (crashers, left in testdata/fuzz/TARGET as in the short pass).
set -euo pipefail
cd "$(dirname "$0")/.."
campaign=
if [ "${1:-}" = --campaign ]; then
  campaign=${2:?usage: scripts/fuzz.sh --campaign DURATION [REGEXP]}
  match=${3:-.}
fi
fuzztime=${1:-10s}
status=0
targets=0
# Only packages whose tests define a fuzz target: listing every package's
# tests would build each test binary once more. Go runs in each package's
# directory (go -C), so the nested shim module's targets run too.
dirs=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u)
if [ -n "$campaign" ]; then
  cache=$(go env GOCACHE)/fuzz
  echo "| package | target | time | executions | per s | corpus | new | findings |"
  echo "|---|---|---|---:|---:|---:|---:|---:|"
  for dir in $dirs; do
    # The targets' names from the source, not go test -list: that builds
    # the test binary of every package for each campaign (minutes on a
    # busy host, and a failure in a package the campaign does not touch).
    names=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //' | sort -u)
    pkg=
    for target in $names; do
      [ -n "$pkg" ] || pkg=$(go -C "$dir" list .)
      echo "$pkg $target" | grep -Eq -- "$match" || continue
      targets=$((targets + 1))
      kept="$dir/testdata/corpus/$target"
      work="$cache/$pkg/$target"
      mkdir -p "$kept" "$work"
      cp -n "$kept"/* "$work"/ 2>/dev/null || true
      log=$(mktemp)
      found=0
      if ! go -C "$dir" test -run '^$' -fuzz "^${target}\$" -fuzztime "$campaign" \
        -parallel "${CORRAL_FUZZ_PARALLEL:-1}" . >"$log" 2>&1; then
        if grep -q 'Failing input written to' "$log"; then
          found=1
          status=1
        elif grep -q '^    context deadline exceeded$' "$log" && grep -q '^fuzz: elapsed: .*execs: ' "$log"; then
          # Go's fuzz coordinator race as -fuzztime runs out (golang/go#75804,
          # as in the short pass below): the campaign ran its time, and a
          # crasher would have been written and named.
          echo "fuzz: $pkg $target: Go's fuzz coordinator race at -fuzztime (golang/go#75804), no input written: not a finding" >&2
        else
          cat "$log" >&2
          echo "fuzz: $pkg $target: the campaign failed without a crasher (log above)" >&2
          status=1
        fi
      fi
      # Go's last progress line: "fuzz: elapsed: 10m0s, execs: N (R/sec),
      # new interesting: X (total: Y)".
      last=$(grep '^fuzz: elapsed: .*execs: ' "$log" | tail -1 || true)
      execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
      secs=$(sed -n 's/^fuzz: elapsed: \([0-9hms.]*\),.*/\1/p' <<<"$last" |
        awk '{ t = 0; while (match($0, /^[0-9.]+[hms]/)) { v = substr($0, 1, RLENGTH - 1); u = substr($0, RLENGTH, 1);
          t += v * (u == "h" ? 3600 : u == "m" ? 60 : 1); $0 = substr($0, RLENGTH + 1) } print t }')
      rate=$([ -n "$execs" ] && [ "${secs:-0}" != 0 ] && echo $((execs / ${secs%.*})) || echo "?")
      new=$(sed -n 's/.*new interesting: \([0-9]*\).*/\1/p' <<<"$last")
      total=$(sed -n 's/.*(total: \([0-9]*\)).*/\1/p' <<<"$last")
      cp -n "$work"/* "$kept"/ 2>/dev/null || true
      echo "| $pkg | $target | $campaign | ${execs:-?} | $rate | ${total:-?} | ${new:-?} | $found |"
      [ "$found" -eq 0 ] || grep -A3 'Failing input written to' "$log" | sed 's/^/    /' >&2
      rm -f "$log"
    done
  done
  [ "$targets" -gt 0 ] || { echo "fuzz: no fuzz target matches $match"; exit 1; }
  exit $status
fi
for dir in $dirs; do
  pkg=$(go -C "$dir" list .)
  for target in $(go -C "$dir" test -list '^Fuzz' . | grep '^Fuzz' || true); do
    targets=$((targets + 1))
    echo "fuzz: $pkg $target ($fuzztime)"
    log=$(mktemp)
    corpus="$dir/testdata/fuzz/$target"
    for try in 1 2 3; do
      before=$(ls "$corpus" 2>/dev/null | sort || true)
      if go -C "$dir" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 200x . >"$log" 2>&1; then
        break
      fi
      after=$(ls "$corpus" 2>/dev/null | sort || true)
      # Go's fuzz coordinator can fail a target with a bare "context
      # deadline exceeded" as -fuzztime runs out, having found nothing
      # (golang/go#75804, fixed in Go 1.27): with no new input written,
      # that is not a crasher. Run the target again, up to three times in
      # all: on a busy machine the race came twice in a row (CI rehearsal,
      # virtio/vsock FuzzRestoreState).
      if [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$log" && [ "$try" -lt 3 ]; then
        echo "fuzz: $pkg $target: Go's fuzz coordinator race at -fuzztime (golang/go#75804, no input written); once more"
        continue
      fi
      cat "$log"
      if [ "$before" = "$after" ]; then
        echo "fuzz: $pkg $target FAILED (no new input in $corpus: see the log above)"
      else
        echo "fuzz: $pkg $target FAILED (a crasher is in $corpus)"
      fi
      status=1
      break
    done
    rm -f "$log"
  done
done
if [ "$targets" -eq 0 ]; then
  echo "fuzz: no fuzz targets found"
  exit 1
fi
echo "fuzz: $targets targets, $([ $status -eq 0 ] && echo ok || echo FAILED)"
exit $status
