#!/usr/bin/env bash
# deps.sh: installs the Debian 12 packages llorch builds and tests with, when they are missing.
#   scripts/deps.sh           install what is missing (apt-get as root, else through sudo)
#   scripts/deps.sh --check   only say which packages are missing; exit 1 if any is
# The Makefile runs --check before the first compile, so a missing package is named, not a
# compiler error. Each entry: package, then a file that proves it is there.
set -euo pipefail

PKGS=(
  "libnng-dev:/usr/include/nng/nng.h"
  "libmsgpack-dev:/usr/include/msgpack.h"
  "libjemalloc-dev:/usr/include/jemalloc/jemalloc.h"
  "libopenblas-dev:/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h"
  "libpcre2-dev:/usr/include/pcre2.h"
  "clang:/usr/bin/clang"
  "libclang-rt-14-dev:/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a"
  "make:/usr/bin/make"
  "gcc:/usr/bin/gcc"
  "libjansson-dev:/usr/include/jansson.h"
  "jq:/usr/bin/jq"
  "libsodium-dev:/usr/include/sodium.h"
)

missing=()
for entry in "${PKGS[@]}"; do
  pkg=${entry%%:*}
  file=${entry#*:}
  [ -e "$file" ] || missing+=("$pkg")
done

if [ "${1:-}" = "--check" ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "llorch: missing Debian packages: ${missing[*]}" >&2
    echo "llorch: run scripts/deps.sh (or: apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  exit 0
fi

[ ${#missing[@]} -eq 0 ] && exit 0
echo "llorch: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  apt-get install -y --no-install-recommends "${missing[@]}" ||
    { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
else
  sudo apt-get install -y --no-install-recommends "${missing[@]}" ||
    { sudo apt-get update && sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
