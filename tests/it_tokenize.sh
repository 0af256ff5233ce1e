#!/usr/bin/env bash
# it_tokenize.sh: `workerd tokenize` and `workerd detokenize` as the contract drives them: ids
# against llama.cpp's reference (../shared/ref/tokenize-*.jsonl, looked up by case id), full models
# and vocab-only files (SentencePiece and BPE), `--` before a text that starts with '-', and bad
# input (missing or broken model, bad --ids, bad options): one line on stderr, nothing on stdout, a
# nonzero exit that is not a signal. Ends with "N passed, N failed".
set -u
BUILD=${BUILD:-build}
W="$BUILD/workerd"
SHARED=${LLORCH_SHARED:-../shared}
M="$SHARED/models"
REF="$SHARED/ref"
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { pass=$((pass + 1)); echo "ok $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

# The JSON array of field ("ids_bos" or "ids_nobos") in case id of a reference file.
ref_ids() {
  grep "\"id\":\"$2\"" "$REF/$1" | sed -n "s/.*\"$3\":\(\[[^]]*\]\).*/\1/p"
}

# expect_out NAME WANT CMD...: the command succeeds and prints exactly WANT.
expect_out() {
  local name=$1 want=$2 got rc
  shift 2
  got=$("$@" 2>"$tmp/err")
  rc=$?
  if [ $rc -ne 0 ]; then
    bad "$name" "exit $rc: $(head -c 300 "$tmp/err")"
  elif [ "$got" != "$want" ]; then
    bad "$name" "got $got, want $want"
  else
    ok "$name"
  fi
}

# expect_err NAME WORDS CMD...: nonzero exit, not a signal, nothing on stdout, one stderr line
# containing WORDS.
expect_err() {
  local name=$1 words=$2 rc lines
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  lines=$(wc -l <"$tmp/err")
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then
    bad "$name" "exit $rc"
  elif [ -s "$tmp/out" ]; then
    bad "$name" "stdout: $(head -c 200 "$tmp/out")"
  elif [ "$lines" -ne 1 ] || ! grep -qF -- "$words" "$tmp/err"; then
    bad "$name" "stderr ($lines lines): $(head -c 300 "$tmp/err")"
  else
    ok "$name"
  fi
}

if [ ! -x "$W" ] || [ ! -f "$M/stories260K.gguf" ]; then
  echo "missing $W or $M/stories260K.gguf"
  [ "${CI:-}" = true ] && { echo "0 passed, 1 failed"; exit 1; }
  echo "0 passed, 0 failed"
  exit 0
fi

S="$M/stories260K.gguf"
L="$M/llama-2-tiny-random.gguf"
SPM="$M/vocab/ggml-vocab-llama-spm.gguf"
PHI="$M/vocab/ggml-vocab-phi-3.gguf"

# expect_ref NAME MODEL REF CASE FIELD [OPTION] TEXT: `tokenize` prints the ids that field
# (ids_bos or ids_nobos) of case CASE holds in ../shared/ref/REF.
expect_ref() {
  local name=$1 model=$2 ref=$3 case=$4 field=$5
  shift 5
  expect_out "$name" "{\"ids\":$(ref_ids "$ref" "$case" "$field")}" "$W" tokenize -m "$model" "$@"
}

# tokenize: BOS by the model's rule, --no-bos, full models and vocab-only files
expect_ref stories_bos "$S" tokenize-stories260K.jsonl t18 ids_bos "Once upon a time"
expect_ref stories_nobos "$S" tokenize-stories260K.jsonl t18 ids_nobos --no-bos "Once upon a time"
expect_ref llama2_unicode "$L" tokenize-llama-2-tiny-random.jsonl t25 ids_bos "Café naïve — 日本"
expect_ref vocab_only_whitespace "$SPM" tokenize-ggml-vocab-llama-spm.jsonl t17 ids_bos \
  $'hello   \n\n   world'
expect_ref phi3_user_defined "$PHI" tokenize-ggml-vocab-phi-3.jsonl t36 ids_nobos --no-bos \
  "</s> <unk>"
expect_out empty_text '{"ids":[1]}' "$W" tokenize -m "$SPM" ""
expect_out dash_text_after_double_dash '{"ids":[1,448,29916]}' "$W" tokenize -m "$SPM" -- "-x"

# BPE vocab-only files: Llama-3 adds <|begin_of_text|>, Qwen2 adds nothing; GPT-NeoX has no
# tokenizer.ggml.pre (llama.cpp's "default" splitter, with a warning on stderr)
V="$M/vocab"
expect_ref llama3_unicode "$V/ggml-vocab-llama-bpe.gguf" tokenize-ggml-vocab-llama-bpe.jsonl t25 \
  ids_bos "Café naïve — 日本"
expect_ref llama3_nobos "$V/ggml-vocab-llama-bpe.gguf" tokenize-ggml-vocab-llama-bpe.jsonl t24 \
  ids_nobos --no-bos "don't won't can't I'm"
expect_ref qwen2_whitespace "$V/ggml-vocab-qwen2.gguf" tokenize-ggml-vocab-qwen2.jsonl t17 ids_bos \
  $'hello   \n\n   world'
expect_ref neox_default_pre "$V/ggml-vocab-gpt-neox.gguf" tokenize-ggml-vocab-gpt-neox.jsonl t22 \
  ids_bos "1,000,000 and 42%"
expect_ref deepseek_cjk "$V/ggml-vocab-deepseek-llm.gguf" tokenize-ggml-vocab-deepseek-llm.jsonl \
  t27 ids_bos "你好，世界"

# detokenize: the reference round trip, BOS keeps the next token's space (llama.cpp), byte
# pieces completing a character, JSON escaping of quotes and control bytes
expect_out detok_unicode '{"text":"Café naïve — 日本"}' "$W" detokenize -m "$L" \
  --ids "$(ref_ids tokenize-llama-2-tiny-random.jsonl t25 ids_nobos | tr -d '[]')"
expect_out detok_bos '{"text":" Hello world"}' "$W" detokenize -m "$SPM" --ids 1,15043,3186
expect_out detok_bytes '{"text":"ï"}' "$W" detokenize -m "$S" --ids 198,178
expect_out detok_split_char $'{"text":"w\xef\xbf\xbd"}' "$W" detokenize -m "$S" --ids 424,198
expect_out detok_escapes '{"text":"\"\n\u0001"}' "$W" detokenize -m "$SPM" --ids 29908,13,4
expect_out detok_empty '{"text":""}' "$W" detokenize -m "$S" --ids ""
expect_out detok_llama3 '{"text":"Café naïve — 日本"}' "$W" detokenize \
  -m "$V/ggml-vocab-llama-bpe.gguf" \
  --ids "$(ref_ids tokenize-ggml-vocab-llama-bpe.jsonl t25 ids_bos | tr -d '[]')"
expect_out detok_gpt2_clean '{"text":"Hello, world."}' "$W" detokenize \
  -m "$V/ggml-vocab-gpt-2.gguf" --ids 15496,837,995,764

# bad input
head -c 4096 "$S" >"$tmp/truncated.gguf"
echo "not a model" >"$tmp/text.gguf"
expect_err missing_file "nonexistent" "$W" tokenize -m "$tmp/nonexistent.gguf" "x"
expect_err truncated_file "workerd tokenize" "$W" tokenize -m "$tmp/truncated.gguf" "x"
expect_err not_gguf "workerd detokenize" "$W" detokenize -m "$tmp/text.gguf" --ids 1
expect_err ids_letters "--ids" "$W" detokenize -m "$S" --ids 1,a
expect_err ids_empty_item "--ids" "$W" detokenize -m "$S" --ids 1,,2
expect_err ids_negative "--ids" "$W" detokenize -m "$S" --ids -1
expect_err ids_trailing_comma "--ids" "$W" detokenize -m "$S" --ids 1,
expect_err ids_too_big "--ids" "$W" detokenize -m "$S" --ids 99999999999
expect_err ids_out_of_range "out of range" "$W" detokenize -m "$S" --ids 1,512
expect_err ids_missing "--ids" "$W" detokenize -m "$S"
expect_err no_model "-m MODEL" "$W" tokenize "x"
expect_err no_text "TEXT" "$W" tokenize -m "$S"
expect_err dash_text_without_double_dash "unknown option" "$W" tokenize -m "$S" "-x"
expect_err two_texts "unexpected argument" "$W" tokenize -m "$S" a b
expect_err option_without_value "needs a value" "$W" tokenize -m

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
