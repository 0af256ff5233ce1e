#!/usr/bin/env bash
# it_inspect.sh: integration test of `workerd inspect`. Runs it, in text and --json, on every .gguf
# under ../shared/models and compares with the .meta.txt beside each (header numbers, every tensor's
# name, type, shape and offset, array summaries, hyperparameters); then on broken files and bad
# command lines, which must give exit status 2 and one line on stderr naming the file or option.
# Needs jq for the JSON checks. Ends with "N passed, N failed".
set -u
BUILD=${BUILD:-build}
W=$BUILD/workerd
SHARED=${LLORCH_SHARED:-../shared}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() {
  fail=$((fail + 1))
  echo "FAIL $*"
}

# "name type [shape] offset" lines of the tensors section of a meta.txt or inspect output.
tensor_lines() {
  sed -n '/^tensors (/,/^$/p' "$1" | sed -nE 's/^  ([^ ]+) +([^ ]+) +(\[[^]]*\]) off=([0-9]+).*/\1 \L\2\E \3 \4/p'
}

# Checks one model against its meta.txt.
check_model() {
  local m=$1 meta=${1%.gguf}.meta.txt out=$TMP/out.txt json=$TMP/out.json err=$TMP/err.txt
  local name=${m#"$SHARED"/}
  if [ ! -f "$meta" ]; then
    bad "$name: no meta.txt"
    return
  fi
  if ! "$W" inspect -m "$m" >"$out" 2>"$err"; then
    bad "$name: inspect failed: $(cat "$err")"
    return
  fi
  # header: "gguf version: 3, tensors: 48, kv: 19, alignment: 32, data offset: 14176"
  local hdr v nt nk al doff
  hdr=$(grep -m1 '^gguf version:' "$meta")
  read -r v nt nk al doff < <(echo "$hdr" | sed -E 's/[^0-9]+/ /g')
  local want got
  want=$(printf 'gguf version: %s\nalignment: %s\ndata offset: %s\ntensors: %s\nkv: %s' "$v" "$al" "$doff" "$nt" "$nk")
  got=$(sed -n '3,7p' "$out")
  if [ "$want" = "$got" ]; then ok; else bad "$name: header: got '$got', meta '$hdr'"; fi

  # tensors, in file order
  if diff <(tensor_lines "$meta") <(tensor_lines "$out") >"$TMP/diff" && [ "$(tensor_lines "$out" | wc -l)" -eq "$nt" ]; then
    ok
  else
    bad "$name: tensors differ from meta.txt"
    head -5 "$TMP/diff"
  fi

  # array summaries: every "[ARRAY T x N]" of the meta appears on the key's line
  local key summary arrays_ok=1
  while IFS= read -r line; do
    key=${line%% = *}
    key=${key#  }
    summary=${line#* = }
    grep -qF "  $key (array) = $summary" "$out" || {
      arrays_ok=0
      bad "$name: $key: no '$summary' in inspect's output"
    }
  done < <(grep -E '^  [^ ]+ = \[ARRAY ' "$meta")
  [ $arrays_ok = 1 ] && ok

  # hyperparameters: meta label -> inspect label; numbers equal within a relative 1e-6 (the dump
  # prints doubles, inspect 9 digits); "None" and "(absent)" the same
  local hp
  hp=$(awk '
    BEGIN {
      n = split("n_ctx_train|context length;n_embd|embedding length;n_layer|block count;" \
        "n_ff|feed-forward length;n_head|head count;n_head_kv|head count kv;" \
        "n_rot (rope.dimension_count)|rope dimensions;rope.freq_base|rope freq base;" \
        "rms_norm_eps|rms norm epsilon;vocab size (len tokenizer.ggml.tokens)|vocab size (tokens)", pairs, ";")
    }
    function num(x) { return x ~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/ }
    FNR == NR { i = index($0, ": "); if (i) meta[substr($0, 1, i - 1)] = substr($0, i + 2); next }
    /^hyperparameters/ { h = 1; next }
    h && /^$/ { h = 0 }
    h { i = index($0, ": "); got[substr($0, 3, i - 3)] = substr($0, i + 2) }
    END {
      for (k = 1; k <= n; k++) {
        split(pairs[k], p, "|")
        if (!(p[1] in meta)) continue
        a = meta[p[1]]; b = (p[2] in got) ? got[p[2]] : "(absent)"
        if (a == "None") a = "(absent)"
        if (a == b) continue
        if (num(a) && num(b)) { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; if (d <= 1e-6 * m) continue }
        printf "%s: inspect %s, meta %s; ", p[2], b, a
      }
    }' "$meta" "$out")
  if [ -z "$hp" ]; then ok; else bad "$name: $hp"; fi

  # the same through --json
  if ! "$W" inspect -m "$m" --json >"$json" 2>"$err"; then
    bad "$name: inspect --json failed: $(cat "$err")"
    return
  fi
  if jq -e --argjson v "$v" --argjson nt "$nt" --argjson nk "$nk" --argjson al "$al" \
    --argjson doff "$doff" '.version == $v and .n_tensors == $nt and .n_kv == $nk and
      .alignment == $al and .data_offset == $doff and (.tensors | length) == $nt and
      (.metadata | length) == $nk' "$json" >/dev/null &&
    diff <(tensor_lines "$meta") <(jq -r '.tensors[] | "\(.name) \(.type) [\(.shape | map(tostring) | join(", "))] \(.offset)"' "$json") >/dev/null; then
    ok
  else
    bad "$name: --json disagrees with meta.txt"
  fi
}

mapfile -t models < <(find "$SHARED/models" -name '*.gguf' 2>/dev/null | sort)
if [ ${#models[@]} -eq 0 ]; then
  if [ "${CI:-}" = true ]; then bad "no models under $SHARED/models (CI=true)"; else echo "skip: no models under $SHARED/models"; fi
fi
for m in "${models[@]}"; do
  check_model "$m"
done

# Exit status 2, nothing on stdout, one line on stderr containing each of the given strings.
expect_fatal() {
  local what=$1
  shift
  local args=() subs=()
  while [ "$1" != -- ]; do
    args+=("$1")
    shift
  done
  shift
  subs=("$@")
  "$W" inspect "${args[@]}" >"$TMP/o" 2>"$TMP/e"
  local rc=$? s
  if [ $rc -ne 2 ] || [ -s "$TMP/o" ] || [ "$(wc -l <"$TMP/e")" -ne 1 ]; then
    bad "$what: exit $rc, stdout $(wc -c <"$TMP/o") bytes, stderr: $(cat "$TMP/e")"
    return
  fi
  for s in "${subs[@]}"; do
    grep -qF -- "$s" "$TMP/e" || {
      bad "$what: no '$s' in: $(cat "$TMP/e")"
      return
    }
  done
  ok
}

# broken files, made from a real model
src=$SHARED/models/stories260K.gguf
if [ -f "$src" ]; then
  head -c 5000 "$src" >"$TMP/truncated.gguf"
  expect_fatal "truncated in the KVs" -m "$TMP/truncated.gguf" -- "$TMP/truncated.gguf" bad_format tokenizer.ggml.tokens
  expect_fatal "truncated --json" -m "$TMP/truncated.gguf" --json -- "$TMP/truncated.gguf" bad_format
  head -c 20000 "$src" >"$TMP/nodata.gguf"
  expect_fatal "truncated in the data" -m "$TMP/nodata.gguf" -- "$TMP/nodata.gguf" bad_format "past the end"
  { printf 'GGUF\001\000\000\000'; tail -c +9 "$src" | head -c 100; } >"$TMP/v1.gguf"
  expect_fatal "version 1" -m "$TMP/v1.gguf" -- "$TMP/v1.gguf" "unsupported GGUF version 1"
  { printf 'GGML'; tail -c +5 "$src" | head -c 100; } >"$TMP/magic.gguf"
  expect_fatal "bad magic" -m "$TMP/magic.gguf" -- "$TMP/magic.gguf" "bad magic"
elif [ "${CI:-}" = true ]; then
  bad "$src is missing (CI=true)"
fi
: >"$TMP/empty.gguf"
expect_fatal "empty file" -m "$TMP/empty.gguf" -- "$TMP/empty.gguf" empty
expect_fatal "missing file" -m "$TMP/none.gguf" -- "$TMP/none.gguf" "No such file"
expect_fatal "a directory" -m "$TMP" -- "$TMP" "not a regular file"
expect_fatal "no -m" -- "-m MODEL is required"
expect_fatal "unknown option" --bogus -- "--bogus"
expect_fatal "-m without a value" -m -- "-m needs a value"
expect_fatal "extra argument" -m "$TMP/empty.gguf" extra -- "unexpected argument"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
