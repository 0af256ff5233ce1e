#!/usr/bin/env bash
# it_bench.sh: scripts/bench runs to the end on a tiny synthetic shape and writes what it promises:
# the model once into its cache, a JSON result with every row (measured, or "unsupported" for a type
# the engine does not run yet), decode bounds from the measured bandwidth, the runs' memory, a
# markdown table; through orchd (one worker, a slot per stream), the streams' tokens and
# first-token times and the worker's memory; bad options fail with a message. Speed itself is not
# asserted (a shared machine).
# Ends with "N passed, N failed" like the C tests.
set -u
BUILD=${BUILD:-build}
export BUILD
pass=0
fail=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export LLORCH_BENCH_CACHE=$TMP/cache LLORCH_BENCH_RESULTS=$TMP/results

ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
check() { # name, jq filter that must print true, file
  local got
  got=$(jq -r "$2" "$3" 2>&1)
  if [ "$got" = true ]; then ok "$1"; else bad "$1" "$2 gave $got"; fi
}

# shellcheck disable=SC2054 # the commas are the options' lists
ARGS=(--tiny --types f16,q8_0 --threads 1,2 --reps 2 --prompt 40 --gen 8 --membw-mib 32
  --streams 1,3 --stream-gen 6)
if scripts/bench "${ARGS[@]}" >"$TMP/out" 2>"$TMP/err"; then
  ok runs_to_the_end
else
  bad runs_to_the_end "exit $?: $(tail -5 "$TMP/err")"
fi
res=$(sed -n 's/^results: //p' "$TMP/out")
if [ -n "$res" ] && [ -f "$res" ] && [[ $res == "$TMP/results/"* ]]; then
  ok results_json_written
else
  bad results_json_written "no results line or file: $(tail -3 "$TMP/out")"
  res=/dev/null
fi
check rows_for_each_type_and_threads \
  '[.rows[] | "\(.type)/\(.threads)"] == ["f16/1","f16/2","q8_0/1","q8_0/2"]' "$res"
check f16_measured '[.rows[] | select(.type == "f16") | .status == "ok"
  and (.prefill_tps.runs | length) == 2 and (.decode_tps.runs | length) == 2
  and .prefill_tps.mean > 0 and .decode_tps.mean > 0 and .prefill_tps.sd >= 0] | all' "$res"
check mean_is_the_mean_of_the_runs '[.rows[] | select(.status == "ok")
  | ((.decode_tps.runs | add / length) - .decode_tps.mean | fabs) < 1e-6] | all' "$res"
# q8_0 is measured once the engine runs it; until then the row says so and has no figures
check other_types_measured_or_unsupported '[.rows[] | select(.type == "q8_0")
  | (.status == "ok" and .decode_tps.mean > 0)
    or (.status == "unsupported" and .decode_tps == null and .prefill_tps == null)] | all' "$res"
check bandwidth_per_thread_count \
  '[.membw[] | .threads] == [1,2] and ([.membw[] | .best_gbps > 0] | all)' "$res"
check decode_bound_is_bandwidth_over_bytes '[.rows[] | .bytes_per_token > 0
  and .bytes_per_token < .file_bytes
  and ((.decode_bound_tps - .bandwidth_gbps * 1e9 / .bytes_per_token) | fabs) < 1e-3] | all' "$res"
check worker_memory_sampled '[.rows[] | select(.status == "ok")
  | .peak_anon_kib > 0 and .peak_rss_kib >= .peak_anon_kib] | all' "$res"
check machine_recorded '.machine.cores > 0 and (.machine.cpu | length) > 0
  and (.machine.load_average_start | length) > 0 and .prompt_tokens == 40' "$res"
check orchd_streams '.orchd.type == "f16" and ([.orchd.streams[] | .streams] == [1,3])
  and ([.orchd.streams[] | .gen_tokens > 0 and .gen_tokens <= .streams * 6 and .aggregate_tps > 0
        and .first_token_ms.mean > 0 and .first_token_ms.max >= .first_token_ms.mean] | all)' "$res"
check orchd_one_batching_worker '.orchd.workers == 1 and .orchd.threads_per_worker == .machine.cores
  and .orchd.slots_per_worker == 3' "$res"
check orchd_workers_memory '(.orchd.workers_memory | length) == .orchd.workers
  and ([.orchd.workers_memory[] | .pid > 0 and .private_kib > 0 and .peak_anon_kib > 0
        and .peak_rss_kib >= .peak_anon_kib] | all)' "$res"
check first_token_alone '[.rows[] | select(.status == "ok") | .first_token_ms.mean > 0] | all' "$res"
if [ "$(grep -c '^| tiny |' "$TMP/out")" -eq 4 ] && grep -q '^| shape | type |' "$TMP/out" &&
  grep -q '^through orchd: tiny f16, ' "$TMP/out"; then
  ok table_printed
else
  bad table_printed "$(cat "$TMP/out")"
fi

# The cache: a second run reuses the file it wrote.
f=$TMP/cache/synth-tiny-f16.gguf
before=$(stat -c %Y.%s "$f" 2>/dev/null)
sleep 1
if scripts/bench --tiny --types f16 --threads 1 --reps 1 --prompt 8 --gen 2 --membw-mib 8 --no-orchd \
  >"$TMP/out2" 2>"$TMP/err2" && ! grep -q writing "$TMP/err2" &&
  [ "$(stat -c %Y.%s "$f")" = "$before" ]; then
  ok model_cached_once
else
  bad model_cached_once "$(cat "$TMP/err2")"
fi

for opts in "--reps 0" "--types f17" "--threads 1,x" "--prompt 2" "--llama-bench $TMP/none" "--streams 0" "--bogus"; do
  # shellcheck disable=SC2086
  if scripts/bench --tiny $opts >"$TMP/o" 2>"$TMP/e"; then
    bad "rejects $opts" "exit 0"
  elif grep -q '^bench: ' "$TMP/e"; then
    ok "rejects $opts"
  else
    bad "rejects $opts" "no message: $(cat "$TMP/e")"
  fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
