# bench/lib.sh: what the bench scripts share; sourced, not run.
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"
#   bench_init NAME        # ROOT, WORK (removed on exit), QEMU, QBOOT; cd ROOT
#
# Discovery and builds (into $WORK): need_kvm, go_tool DIR, build_guests
# NAME..., find_corral (CORRAL_BIN), find_qemu (HAVE_QEMU), find_qboot
# (QEMU_BIOS). Statistics, on numbers one a line on stdin, "na" and other
# non-numbers ignored, printing "na" when nothing is left: median [DEC],
# span [DEC] ("lo-hi"), scale FACTOR; and ratio A B, div A B [DEC], field
# KEY LINE, fieldcol KEY FILE, col N FILE. bench/lib_test.sh tests them.

note() { printf '%s\n' "$*" >&2; }
die() { note "$BENCH: $*"; exit 1; }

# The script that sourced this file, found again after bench_init's cd.
BENCH_SCRIPT=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

# usage: prints the calling script's header comment (line 2 to "set -euo").
usage() { sed -n '2,/^set -euo/p' "$BENCH_SCRIPT" | sed '$d; s/^# \{0,1\}//'; }

# posint V...: true if every V is a positive decimal number.
posint() {
	local v
	for v in "$@"; do
		case $v in '' | *[!0-9]*) return 1 ;; esac
		[ "$((10#$v))" -gt 0 ] || return 1
	done
}

bench_init() { # NAME
	BENCH=$1
	ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	QEMU=${QEMU:-qemu-system-x86_64}
	QBOOT=${QBOOT:-/usr/share/qemu/qboot.rom}
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/$BENCH.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
	cd "$ROOT"
}

need_kvm() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not usable; nothing to measure"
}

# go_tool DIR: builds the Go command in DIR (relative to ROOT) as $WORK/<base>.
go_tool() { go build -o "$WORK/$(basename "$1")" "./$1"; }

# build_guests NAME...: builds test guests as $WORK/NAME.elf.
build_guests() {
	go_tool tests/guests/cmd/guestbuild
	"$WORK/guestbuild" -o "$WORK" "$@" >/dev/null
}

# find_corral: CORRAL_BIN is $CORRAL, else a fresh static build; empty (and
# a note saying why) when neither works, so the caller can go on without it.
find_corral() {
	CORRAL_BIN=${CORRAL:-}
	if [ -n "$CORRAL_BIN" ]; then
		[ -x "$CORRAL_BIN" ] && return 0
		note "$BENCH: CORRAL=$CORRAL_BIN is not executable; no corral row"
		CORRAL_BIN=
		return 0
	fi
	if CGO_ENABLED=0 go build -o "$WORK/corral" ./cmd/corral 2>"$WORK/corral-build.log"; then
		CORRAL_BIN=$WORK/corral
	else
		note "$BENCH: go build ./cmd/corral failed (or set CORRAL=path); no corral row:"
		head -20 "$WORK/corral-build.log" | sed 's/^/  /' >&2
	fi
}

# find_qemu: HAVE_QEMU=1 if $QEMU runs, else 0 with a note.
find_qemu() {
	HAVE_QEMU=1
	command -v "$QEMU" >/dev/null && return 0
	note "$BENCH: $QEMU not found (apt-get install -y qemu-system-x86); no qemu row"
	HAVE_QEMU=0
}

# find_qboot: QEMU_BIOS=(-bios $QBOOT) when qboot is installed, else empty
# (SeaBIOS: seconds slower to boot, same device figures) with a note.
find_qboot() {
	QEMU_BIOS=()
	if [ -r "$QBOOT" ]; then
		QEMU_BIOS=(-bios "$QBOOT")
	else
		note "$BENCH: $QBOOT missing: QEMU -M pc boots through SeaBIOS (seconds slower)"
	fi
}

# nums: the numeric lines of stdin, sorted.
nums() { grep -E '^-?[0-9]+(\.[0-9]+)?$' | sort -g || true; }

median() { # [DEC=1]
	nums | awk -v d="${1:-1}" '{a[NR]=$1} END {
		if (NR == 0) { print "na"; exit }
		m = NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.*f\n", d, m }'
}

span() { # [DEC=1] -> "lo-hi"
	nums | awk -v d="${1:-1}" 'NR == 1 {lo=$1} {hi=$1} END {
		if (NR == 0) print "na"; else printf "%.*f-%.*f\n", d, lo, d, hi }'
}

scale() { # FACTOR: each number times FACTOR; "na" kept
	awk -v f="$1" '$1 ~ /^-?[0-9]+(\.[0-9]+)?$/ {print $1 * f; next} {print}'
}

ratio() { div "$1" "$2" 2; }

div() { # A B [DEC=1]
	awk -v a="$1" -v b="$2" -v d="${3:-1}" 'BEGIN {
		num = "^-?[0-9]+(\\.[0-9]+)?$"
		if (a !~ num || b !~ num || b == 0) print "na"; else printf "%.*f\n", d, a/b }'
}

field() { # KEY LINE: the value of KEY=value among LINE's words, or na
	local kv
	for kv in $2; do [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }; done
	echo na
}

fieldcol() { # KEY FILE: field KEY of every line of FILE
	local l
	while read -r l; do field "$1" "$l"; done <"$2"
}

col() { awk -v c="$1" '{print $c}' "$2"; } # N FILE: column N of FILE
