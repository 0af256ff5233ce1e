#!/usr/bin/env bash
# it_generate.sh: `workerd generate` as the contract drives it, on the real stories260K model:
# greedy ids equal llama.cpp's reference, streamed text equals the JSON text, a seed gives the same
# tokens at 1 and 2 threads, stop strings cut the text, --chat renders the model's chat template
# (synthetic models with the Llama-3 and Qwen2 vocabularies), and bad options or files give a
# one-line error with exit status 2. Ends with "N passed, N failed" like the C tests.
set -u
BUILD=${BUILD:-build}
SHARED=${LLORCH_SHARED:-../shared}
W="$BUILD/workerd"
MODEL="$SHARED/models/stories260K.gguf"
REF="$SHARED/ref/stories260K.jsonl"
pass=0
fail=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
# JF FILE KEY [ID]: field KEY of the first JSON line of FILE ("-": stdin) whose "id" is ID (any line
# without ID); arrays print comma-joined, strings raw.
JF() {
  jq -rn --arg k "$2" --arg id "${3:-}" \
    'first(inputs | select($id == "" or .id == $id)) | .[$k] |
     if type == "array" then map(tostring) | join(",") else . end' "$1"
}

if [ ! -f "$MODEL" ] || [ ! -f "$REF" ]; then
  if [ "${CI:-}" = true ]; then
    echo "FAIL missing $MODEL or $REF"
    echo "0 passed, 1 failed"
    exit 1
  fi
  echo "skip: $MODEL or $REF missing"
  echo "0 passed, 0 failed"
  exit 0
fi

# Greedy: the first 48 ids of -n 64 are llama.cpp's p02_once_upon ids.
if "$W" generate -m "$MODEL" -n 64 --temp 0 --ignore-eos --json "Once upon a time" >"$TMP/g.json" 2>"$TMP/g.err"; then
  want=$(JF "$REF" gen_ids p02_once_upon)
  got=$(JF "$TMP/g.json" gen_ids | cut -d, -f1-48)
  n=$(JF "$TMP/g.json" gen_ids | tr ',' '\n' | wc -l)
  if [ "$got" = "$want" ] && [ "$n" -eq 64 ]; then ok greedy_ids_match_llama_cpp
  else bad greedy_ids_match_llama_cpp "got $got ($n ids), want $want"; fi
  want=$(JF "$REF" prompt_ids p02_once_upon)
  got=$(JF "$TMP/g.json" prompt_ids)
  if [ "$got" = "$want" ]; then ok prompt_ids_match_llama_cpp
  else bad prompt_ids_match_llama_cpp "got $got, want $want"; fi
  for f in prefill_ms decode_ms text; do
    jq -e --arg k "$f" 'has($k)' "$TMP/g.json" >/dev/null || bad json_fields "no $f"
  done
  [ "$(wc -l <"$TMP/g.json")" -eq 1 ] && ok json_one_line || bad json_one_line "$(cat "$TMP/g.json")"
else
  bad greedy_ids_match_llama_cpp "exit $?: $(cat "$TMP/g.err")"
fi

# Streamed text: exactly llama.cpp's bytes for every reference case (48 greedy tokens each), and
# the same text as --json gives.
for id in $(grep -o '"id":"[^"]*"' "$REF" | cut -d'"' -f4); do
  p=$(JF "$REF" prompt "$id"; printf x); p=${p%x}; p=${p%$'\n'}
  want=$(JF "$REF" gen_text_hex "$id")
  if "$W" generate -m "$MODEL" -n 48 --temp 0 --ignore-eos -- "$p" >"$TMP/s.txt" 2>"$TMP/s.err"; then
    got=$(od -An -v -tx1 "$TMP/s.txt" | tr -d ' \n')
    if [ "$got" = "$want" ]; then ok "streamed_text_$id"
    else bad "streamed_text_$id" "got $got, want $want"; fi
  else
    bad "streamed_text_$id" "exit $?: $(cat "$TMP/s.err")"
  fi
done
"$W" generate -m "$MODEL" -n 48 --temp 0 --ignore-eos "Once upon a time" >"$TMP/s.txt" 2>/dev/null
"$W" generate -m "$MODEL" -n 48 --temp 0 --ignore-eos --json "Once upon a time" >"$TMP/s.json" 2>/dev/null
JF "$TMP/s.json" text | head -c -1 >"$TMP/json.txt"
cmp -s "$TMP/s.txt" "$TMP/json.txt" && ok json_text_equals_stream || bad json_text_equals_stream "$(cat "$TMP/json.txt")"

# Sampling with a seed: the same tokens at 1 and 2 threads and run to run; another seed differs.
seeded() { "$W" generate -m "$MODEL" -n 40 --temp 1.0 --seed "$1" -t "$2" --ignore-eos --json "Once upon a time" 2>/dev/null | JF - gen_ids; }
a=$(seeded 42 1); b=$(seeded 42 2); c=$(seeded 42 2); d=$(seeded 43 2)
if [ -n "$a" ] && [ "$a" = "$b" ] && [ "$b" = "$c" ]; then ok seed_same_tokens_1_and_2_threads
else bad seed_same_tokens_1_and_2_threads "t1 $a / t2 $b / t2 again $c"; fi
[ -n "$d" ] && [ "$a" != "$d" ] && ok other_seed_other_tokens || bad other_seed_other_tokens "$d"
"$W" generate -m "$MODEL" -n 8 --json "Once" >"$TMP/r.json" 2>/dev/null
seed=$(JF "$TMP/r.json" seed)
e=$(JF "$TMP/r.json" gen_ids)
f=$("$W" generate -m "$MODEL" -n 8 --seed "$seed" --json "Once" 2>/dev/null | JF - gen_ids)
[ -n "$seed" ] && [ -n "$e" ] && [ "$e" = "$f" ] && ok random_seed_reported_and_repeatable || bad random_seed_reported_and_repeatable "seed '$seed': '$e' vs '$f'"

# Stop strings: the text is cut before the stop string, which spans several tokens.
"$W" generate -m "$MODEL" -n 64 --temp 0 --stop "Lily. She" --stop "zebra" --json "Once upon a time" >"$TMP/stop.json" 2>/dev/null
got=$(JF "$TMP/stop.json" text); reason=$(JF "$TMP/stop.json" reason)
if [ "$got" = ", there was a little girl named " ] && [ "$reason" = stop ]; then ok stop_string_cuts
else bad stop_string_cuts "text '$got' reason '$reason'"; fi
"$W" generate -m "$MODEL" -n 64 --temp 0 --stop "Lily. She" "Once upon a time" >"$TMP/stop.txt" 2>/dev/null
[ "$(cat "$TMP/stop.txt")" = ", there was a little girl named " ] && ok stop_string_streamed || bad stop_string_streamed "'$(cat "$TMP/stop.txt")'"

# End of generation: on a small synthetic model (built-in vocabulary, </s> = 2) a hot sampler meets
# </s> for some seed; the run stops there with reason eos, and --ignore-eos with the same seed gives
# the same ids up to it and then exactly N in all.
if "$BUILD/gguf-synth" --n-embd 64 --n-layer 1 --n-head 4 --n-ff 128 --vocab 300 -o "$TMP/syn.gguf" >/dev/null 2>&1; then
  hot=(--temp 1.5 --top-k 0 --top-p 1 --min-p 0)
  found=
  for s in $(seq 1 60); do
    "$W" generate -m "$TMP/syn.gguf" -n 64 "${hot[@]}" --seed "$s" --json hello >"$TMP/e.json" 2>/dev/null
    if [ "$(JF "$TMP/e.json" reason)" = eos ]; then found=$s; break; fi
  done
  if [ -n "$found" ]; then
    ids=$(JF "$TMP/e.json" gen_ids)
    all=$("$W" generate -m "$TMP/syn.gguf" -n 64 "${hot[@]}" --seed "$found" --ignore-eos --json hello 2>/dev/null | JF - gen_ids)
    n_all=$(echo "$all" | tr ',' '\n' | wc -l)
    if [ "${ids##*,}" = 2 ] && [ "${all#"$ids",}" != "$all" ] && [ "$n_all" -eq 64 ]; then ok eos_stops_ignore_eos_goes_on
    else bad eos_stops_ignore_eos_goes_on "seed $found: $ids / $all ($n_all ids)"; fi
  else
    bad eos_stops_ignore_eos_goes_on "no seed in 1..60 met </s>"
  fi
else
  bad eos_stops_ignore_eos_goes_on "gguf-synth failed"
fi

# A stop string's start held back at the last token is released: the run ends there anyway.
got=$("$W" generate -m "$MODEL" -n 10 --temp 0 --stop " Lily. She" "Once upon a time" 2>/dev/null)
[ "$got" = ", there was a little girl named Lily" ] && ok held_back_text_released_at_the_end || bad held_back_text_released_at_the_end "'$got'"

# -- ends the options: a prompt may start with '-'.
"$W" generate -m "$MODEL" -n 4 --temp 0 --json -- "-dash" >"$TMP/dash.json" 2>"$TMP/dash.err" &&
  [ -n "$(JF "$TMP/dash.json" gen_ids)" ] && ok dash_prompt_after_double_dash || bad dash_prompt_after_double_dash "$(cat "$TMP/dash.err")"

# --chat: the prompt is one user message in the model's chat template, tokenized with special
# tokens parsed. Synthetic models with real vocabularies: Llama-3's (llama3 header tokens) and
# Qwen2.5's (ChatML with its default system message). The expected ids are built from
# `workerd tokenize` of the plain-text pieces between the markers and the markers' published ids
# (Llama-3: <|begin_of_text|> 128000, <|start_header_id|> 128006, <|end_header_id|> 128007,
# <|eot_id|> 128009; Qwen2: <|im_start|> 151644, <|im_end|> 151645; tests/test_chat.c checks
# that the rendered markers tokenize into these special tokens).
tok() { "$W" tokenize -m "$1" --no-bos -- "$2" 2>/dev/null | jq -r '.ids | map(tostring) | join(",")'; }
chat_check() { # NAME MODEL FAMILY WANT_IDS
  local name=$1 model=$2 family=$3 want=$4
  if "$W" generate -m "$model" --chat -n 3 --temp 0 --ignore-eos --json Hi >"$TMP/c.json" 2>"$TMP/c.err"; then
    got=$(JF "$TMP/c.json" prompt_ids); fam=$(JF "$TMP/c.json" chat_format)
    n=$(JF "$TMP/c.json" gen_ids | tr ',' '\n' | wc -l)
    if [ "$got" = "$want" ] && [ "$fam" = "$family" ] && [ "$n" -eq 3 ] && [ ! -s "$TMP/c.err" ]; then ok "$name"
    else bad "$name" "got $got ($fam, $n ids), want $want ($family); $(head -2 "$TMP/c.err")"; fi
  else
    bad "$name" "exit $?: $(cat "$TMP/c.err")"
  fi
}
L3="$TMP/llama3.gguf"; Q2="$TMP/qwen2.gguf"
small=(--n-embd 32 --n-layer 1 --n-head 2 --n-ff 64 --tied-output)
if "$BUILD/gguf-synth" "${small[@]}" --rope-base 500000 --vocab-from "$SHARED/models/vocab/ggml-vocab-llama-bpe.gguf" -o "$L3" >/dev/null 2>&1 &&
   "$BUILD/gguf-synth" "${small[@]}" --arch qwen2 --vocab-from "$SHARED/models/vocab/ggml-vocab-qwen2.gguf" -o "$Q2" >/dev/null 2>&1; then
  bos=$("$W" inspect -m "$L3" | sed -n 's/^ *tokenizer.ggml.bos_token_id (uint32) = //p')
  [ "$bos" = 128000 ] && ok chat_llama3_bos_id || bad chat_llama3_bos_id "$bos"
  chat_check chat_llama3_prompt_ids "$L3" llama3 \
    "128000,128006,$(tok "$L3" user),128007,$(tok "$L3" $'\n\nHi'),128009,128006,$(tok "$L3" assistant),128007,$(tok "$L3" $'\n\n')"
  sys=$'system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.'
  chat_check chat_qwen2_prompt_ids "$Q2" chatml \
    "151644,$(tok "$Q2" "$sys"),151645,$(tok "$Q2" $'\n'),151644,$(tok "$Q2" $'user\nHi'),151645,$(tok "$Q2" $'\n'),151644,$(tok "$Q2" $'assistant\n')"
  # without --chat the same prompt is plain text: no marker
  got=$("$W" generate -m "$L3" -n 1 --temp 0 --json Hi 2>/dev/null | JF - prompt_ids)
  [ "$got" = "128000,$(tok "$L3" Hi)" ] && ok chat_off_plain_prompt || bad chat_off_plain_prompt "$got"
else
  bad chat_models "gguf-synth failed"
fi
# No template (stories260K): ChatML, said once on stderr; its markers are plain text there.
if "$W" generate -m "$MODEL" --chat -n 2 --temp 0 --json Hi >"$TMP/c.json" 2>"$TMP/c.err"; then
  want="1,$(tok "$MODEL" $'<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n')"
  got=$(JF "$TMP/c.json" prompt_ids)
  if [ "$got" = "$want" ] && [ "$(JF "$TMP/c.json" chat_format)" = chatml ] &&
     [ "$(grep -c 'no chat template llorch recognises; using ChatML' "$TMP/c.err")" -eq 1 ]; then ok chat_fallback_chatml
  else bad chat_fallback_chatml "got $got, want $want; $(cat "$TMP/c.err")"; fi
else
  bad chat_fallback_chatml "exit $?: $(cat "$TMP/c.err")"
fi

# Bad options and files: one line on stderr, exit status 2, nothing on stdout.
printf 'not a gguf file at all' >"$TMP/junk.gguf"
head -c 5000 "$MODEL" >"$TMP/cut.gguf"
expect_fatal() {
  local name=$1; shift
  "$W" generate "$@" >"$TMP/f.out" 2>"$TMP/f.err"
  local rc=$?
  local lines
  lines=$(wc -l <"$TMP/f.err")
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && [ ! -s "$TMP/f.out" ]; then ok "$name"
  else bad "$name" "exit $rc, $lines stderr lines: $(head -3 "$TMP/f.err")"; fi
}
expect_fatal bad_temp -m "$MODEL" --temp abc "x"
expect_fatal negative_temp -m "$MODEL" --temp -1 "x"
expect_fatal top_p_over_one -m "$MODEL" --top-p 1.5 "x"
expect_fatal bad_n -m "$MODEL" -n 12x "x"
expect_fatal bad_seed -m "$MODEL" --seed -5 "x"
expect_fatal unknown_option -m "$MODEL" --frobnicate "x"
expect_fatal missing_value -m "$MODEL" "x" --temp
expect_fatal missing_model "x"
expect_fatal missing_prompt -m "$MODEL"
expect_fatal no_such_file -m "$TMP/none.gguf" "x"
expect_fatal not_gguf -m "$TMP/junk.gguf" "x"
expect_fatal truncated_gguf -m "$TMP/cut.gguf" "x"
expect_fatal vocab_only_file -m "$SHARED/models/vocab/ggml-vocab-llama-spm.gguf" "x"
expect_fatal bad_threads -m "$MODEL" -t 0 "x"
expect_fatal ctx_too_small -m "$MODEL" --ctx 2 "Once upon a time"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
