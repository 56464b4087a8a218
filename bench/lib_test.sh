#!/usr/bin/env bash
# lib_test.sh: tests bench/lib.sh's statistics and helpers without KVM.
# Prints one line per failed check and exits 1 if any failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

FAILED=0
check() { # NAME GOT WANT
	if [ "$2" != "$3" ]; then
		echo "FAIL $1: got '$2', want '$3'"
		FAILED=1
	fi
}

check "median odd" "$(printf '3\n1\n2\n' | median)" 2.0
check "median even" "$(printf '4\n1\n3\n2\n' | median 2)" 2.50
check "median numeric sort" "$(printf '10\n9\n100\n' | median 0)" 10
check "median skips na" "$(printf 'na\n5\nna\n7\n' | median 0)" 6
check "median skips words" "$(printf 'failed\n1.5\n' | median 1)" 1.5
check "median empty" "$(printf 'na\n' | median)" na
check "median nothing" "$(median </dev/null)" na
check "span" "$(printf '8\n13\n9\n' | span 0)" 8-13
check "span decimals" "$(printf '0.25\n1.5\n' | span 2)" 0.25-1.50
check "span empty" "$(printf 'na\n' | span)" na
check "scale" "$(printf '1500\nna\n' | scale 0.001 | tr '\n' ' ')" "1.5 na "
check "ratio" "$(ratio 13 100)" 0.13
check "ratio na" "$(ratio na 100)" na
check "ratio zero" "$(ratio 1 0)" na
check "div" "$(div 4710 1024)" 4.6
check "div decimals" "$(div 45500 1000 0)" 46
check "field" "$(field exit_ms 'status=7 first_byte_ms=13.2 exit_ms=40')" 40
check "field prefix" "$(field exit 'exit_ms=40')" na
check "field missing" "$(field x 'a=1')" na

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
printf 'a=1 b=2\nb=4\n' >"$T/runs"
check "fieldcol" "$(fieldcol b "$T/runs" | median 0)" 3
check "fieldcol na" "$(fieldcol a "$T/runs" | tr '\n' ' ')" "1 na "
printf '10 x\n30 y\n20 z\n' >"$T/cols"
check "col" "$(col 1 "$T/cols" | median 0)" 20
check "col 2" "$(col 2 "$T/cols" | tr -d '\n')" xyz

posint 5 12 && r=yes || r=no
check "posint" "$r" yes
for bad in 0 00 -1 1.5 x ""; do
	posint 3 "$bad" && r=yes || r=no
	check "posint '$bad'" "$r" no
done

BENCH=lib_test
check "die" "$( (die "boom") 2>&1; echo " rc=$?")" "lib_test: boom
 rc=1"

QBOOT=$T/no-qboot.rom find_qboot 2>/dev/null
check "find_qboot missing" "${#QEMU_BIOS[@]}" 0
: >"$T/qboot.rom"
QBOOT=$T/qboot.rom find_qboot
check "find_qboot" "${QEMU_BIOS[*]}" "-bios $T/qboot.rom"
QEMU=$T/no-qemu find_qemu 2>/dev/null
check "find_qemu missing" "$HAVE_QEMU" 0
CORRAL=$T/runs find_corral 2>/dev/null
check "find_corral not executable" "$CORRAL_BIN" ""

exit "$FAILED"
