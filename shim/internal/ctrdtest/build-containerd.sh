#!/usr/bin/env bash
# build-containerd.sh VERSION: builds containerd and ctr VERSION (1.7.x or
# 2.x, e.g. 1.7.35, 2.2.9) from the Go module proxy into
# ${CORRAL_CACHE:-~/.cache/corral}/containerd/VERSION/{containerd,ctr} and
# prints that directory (the value for CORRAL_CONTAINERD_BIN_DIR). Debian
# 12 packages only containerd 1.6; the shim's e2e tests run against these
# too (docs/containerd.md).
#
# Static (CGO_ENABLED=0: tests/tcgkvm's VM has no libc), with the tags of
# the release Makefile's STATIC=1 build minus what needs cgo: no_btrfs
# (the btrfs snapshotter is cgo-only), no_devmapper, no_zfs; static_build
# drops Go plugin loading (1.7), urfave_cli_no_docs as the Makefile does.
# The version is stamped as the Makefile does, so `containerd --version`
# names it. Idempotent: nothing is rebuilt when both binaries are there
# and containerd reports VERSION.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 VERSION (e.g. 1.7.35, 2.2.9)" >&2; exit 2; }
v=${1#v}
case $v in
1.*) mod=github.com/containerd/containerd ;;
2.*) mod=github.com/containerd/containerd/v2 ;;
*) echo "build-containerd: version $v: only 1.x and 2.x are known" >&2; exit 2 ;;
esac
out="${CORRAL_CACHE:-$HOME/.cache/corral}/containerd/$v"
if [ -x "$out/containerd" ] && [ -x "$out/ctr" ] &&
  "$out/containerd" --version 2>/dev/null | grep -qF " v$v "; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
tags="no_btrfs no_devmapper no_zfs static_build urfave_cli_no_docs"
ldflags="-s -w -X $mod/version.Version=v$v -X $mod/version.Package=$mod -X $mod/version.Revision=corral-build"
# Built in containerd's own module, as its Makefile does: `go install
# PKG@VERSION` refuses a go.mod with exclude directives (1.7's has). The
# source comes from the module proxy into the module cache (read-only;
# nothing is written there: -mod=readonly, -o outside it). GOFLAGS: the
# caller's (e.g. -mod=vendor) must not apply.
src=$(cd / && GOFLAGS= go mod download -json "$mod@v$v" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] && [ -f "$src/go.mod" ] || { echo "build-containerd: go mod download $mod@v$v gave no source directory" >&2; exit 1; }
(cd "$src" && env CGO_ENABLED=0 GOFLAGS=-mod=readonly \
  go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/" ./cmd/containerd ./cmd/ctr) >&2
"$out/containerd" --version >&2
echo "$out"
