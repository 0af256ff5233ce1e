#!/usr/bin/env bash
# default-model.sh: prints the path of the model `make run` (and the demos) use, choosing in order:
#   1. $MODEL when set;
#   2. ../shared/models/stories260K.gguf beside the checkout (a real trained 260K-parameter Llama);
#   3. stories260K downloaded from Hugging Face by scripts/fetch-model.sh (sha256-checked, cached);
#   4. offline: a tiny synthetic model from build/gguf-synth, with a warning that its text is noise.
# Needs `make` to have built build/gguf-synth for the last case.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${MODEL:-}" ]; then
  [ -f "$MODEL" ] || { echo "llorch: MODEL=$MODEL does not exist" >&2; exit 1; }
  echo "$MODEL"; exit 0
fi
if [ -f ../shared/models/stories260K.gguf ]; then
  echo "../shared/models/stories260K.gguf"; exit 0
fi
if path=$(scripts/fetch-model.sh stories260K 2>/dev/null); then
  echo "$path"; exit 0
fi
synth="${LLORCH_MODELS:-$HOME/.cache/llorch/models}/synthetic-tiny.gguf"
if [ ! -f "$synth" ]; then
  mkdir -p "$(dirname "$synth")"
  build/gguf-synth --n-embd 64 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 172 --vocab 512 \
    --type f32 --seed 1 -o "$synth" >&2
fi
echo "llorch: no real model found (set MODEL=path.gguf, or get one with scripts/fetch-model.sh);" \
  "using a synthetic model with random weights: its text is noise" >&2
echo "$synth"
