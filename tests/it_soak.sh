#!/usr/bin/env bash
# it_soak.sh: the short form of scripts/soak in `make test`: 10 s, 8 clients over three tenants,
# a random worker SIGKILLed every 2 s; every stream must equal the undisturbed run or end with a
# stable retryable error, orchd's RSS and fds stay flat and it stops cleanly. The long run is
# `scripts/soak --seconds N` (docs/operations.md). Ends with "N passed, N failed".
set -u
BUILD=${BUILD:-build}
out=$(BUILD=$BUILD scripts/soak --seconds 10 --clients 8 --no-build 2>&1)
rc=$?
last=$(tail -1 <<<"$out")
if [ "$rc" -eq 0 ] && [[ "$last" =~ ^soak:\ [0-9]+\ requests,\ [0-9]+\ tokens,\ [1-9][0-9]*\ kills,\ 0\ lost,\ 0\ differing$ ]]; then
  echo "ok soak: $last"
  echo "1 passed, 0 failed"
else
  echo "$out" | tail -20
  echo "FAIL soak (exit $rc): $last"
  echo "0 passed, 1 failed"
fi
