#!/usr/bin/env bash
# Fails when a file git tracks is an ELF binary or larger than 1 MB, unless
# it lies under a testdata/ directory: built programs and big artifacts
# belong in caches, not in the repository.
#   scripts/check-repo.sh [REPO]      (default: this checkout)
# It reads what git tracks (the index), not the working tree.
set -euo pipefail
repo=${1:-"$(dirname "$0")/.."}
cd "$repo"
limit=$((1000 * 1000))

modes=() shas=() paths=()
while IFS= read -r -d '' entry; do # "mode sha stage<TAB>path"
  read -r mode sha _ <<<"${entry%%$'\t'*}"
  modes+=("$mode") shas+=("$sha") paths+=("${entry#*$'\t'}")
done < <(git ls-files -s -z)
# Sizes from one git process; the magic bytes are read only for the few
# files git itself finds binary (every ELF file is: it holds NUL bytes).
mapfile -t sizes < <(printf '%s\n' "${shas[@]}" | git cat-file --batch-check='%(objectsize)')
declare -A binary=()
while IFS= read -r -d '' entry; do # "i/EOL w/EOL attr/...<TAB>path"
  case "$entry" in i/-text*) binary["${entry#*$'\t'}"]=1 ;; esac
done < <(git ls-files --eol -z)

bad=0 n=0
for i in "${!paths[@]}"; do
  path=${paths[$i]} size=${sizes[$i]}
  case "${modes[$i]}" in 100644 | 100755) ;; *) continue ;; esac # links, submodules
  n=$((n + 1))
  case "/$path" in */testdata/*) continue ;; esac
  if [ "$size" -gt "$limit" ]; then
    echo "check-repo: $path is $size bytes, over 1 MB outside testdata/"
    bad=1
  fi
  if [ -n "${binary[$path]:-}" ] &&
    [ "$(git cat-file blob "${shas[$i]}" | head -c 4 | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
    echo "check-repo: $path is an ELF binary"
    bad=1
  fi
done
if [ "$bad" -ne 0 ]; then
  echo "check-repo: FAIL (git rm --cached the files above and add them to .gitignore)"
  exit 1
fi
echo "check-repo: ok ($n tracked files: no ELF binary, none over 1 MB outside testdata/)"
