#!/usr/bin/env bash
# run.sh: runs every unit test binary in $BUILD/tests and every integration script tests/it_*.sh,
# prints each one's result line, and exits 1 if any failed. Integration scripts get BUILD in their
# environment and end, like the C tests, with "N passed, N failed". Each runs under a time bound
# (TEST_TIMEOUT seconds, default 900: several times the slowest, test_model under ASan), so a test that
# hangs fails with its name instead of hanging `make test`; timeout signals the test's whole
# process group, so daemons a script started go too.
set -u
BUILD=${BUILD:-build}
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
failed=()
total_pass=0
total_fail=0

run_one() {
  local name=$1; shift
  local log
  log=$(mktemp)
  local start=$SECONDS
  timeout --kill-after=10 "$TEST_TIMEOUT" "$@" >"$log" 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "timed out after $TEST_TIMEOUT s (TEST_TIMEOUT)" >>"$log"
  fi
  local summary
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  if [ $rc -ne 0 ] || [ -z "$summary" ]; then
    echo "FAIL $name (exit $rc, $((SECONDS - start)) s): ${summary:-no summary line}"
    grep -vE '^ok ' "$log" | tail -60
    failed+=("$name")
  else
    echo "ok   $name: $summary ($((SECONDS - start)) s)"
  fi
  if [ -n "$summary" ]; then
    total_pass=$((total_pass + $(echo "$summary" | cut -d' ' -f1)))
    total_fail=$((total_fail + $(echo "$summary" | cut -d' ' -f3)))
  fi
  rm -f "$log"
}

for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  run_one "$(basename "$t")" "$t"
done
for s in tests/it_*.sh; do
  [ -f "$s" ] || continue
  run_one "$(basename "$s")" env BUILD="$BUILD" bash "$s"
done

echo "all: $total_pass passed, $total_fail failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
