#!/usr/bin/env bash
# fetch-model.sh: downloads a GGUF model from Hugging Face into the model cache and checks its sha256.
#   scripts/fetch-model.sh NAME      download (if not cached) and print the file's path
#   scripts/fetch-model.sh --list    the names it knows
# The cache is $LLORCH_MODELS (default ~/.cache/llorch/models). Where this table pins a sha256 the file
# must match it; elsewhere the file must match the sha256 Hugging Face publishes for it (the LFS object id,
# read from the Hub's API at the pinned revision). Models are never committed to the repository.
set -euo pipefail

CACHE=${LLORCH_MODELS:-$HOME/.cache/llorch/models}

# name | repository | revision | file | sha256 (or "hub" to take Hugging Face's published one)
MODELS=$(cat <<'TABLE'
stories260K|ggml-org/models|main|tinyllamas/stories260K.gguf|270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d
tinyllama-q4_k_m|TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF|main|tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf|hub
tinyllama-q8_0|TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF|main|tinyllama-1.1b-chat-v1.0.Q8_0.gguf|hub
llama-2-7b-q4_0|TheBloke/Llama-2-7B-GGUF|main|llama-2-7b.Q4_0.gguf|hub
llama-2-7b-q4_k_m|TheBloke/Llama-2-7B-GGUF|main|llama-2-7b.Q4_K_M.gguf|hub
llama-2-7b-q8_0|TheBloke/Llama-2-7B-GGUF|main|llama-2-7b.Q8_0.gguf|hub
mistral-7b-instruct-q4_k_m|TheBloke/Mistral-7B-Instruct-v0.2-GGUF|main|mistral-7b-instruct-v0.2.Q4_K_M.gguf|hub
qwen2.5-0.5b-instruct-q8_0|Qwen/Qwen2.5-0.5B-Instruct-GGUF|main|qwen2.5-0.5b-instruct-q8_0.gguf|hub
TABLE
)

die() { echo "fetch-model: $*" >&2; exit 1; }

if [ "${1:-}" = "--list" ]; then
  echo "$MODELS" | cut -d'|' -f1
  exit 0
fi
[ $# -eq 1 ] || die "usage: scripts/fetch-model.sh NAME | --list"
line=$(echo "$MODELS" | grep "^$1|" || true)
[ -n "$line" ] || die "unknown model '$1' (scripts/fetch-model.sh --list shows the names)"
IFS='|' read -r name repo rev file sha <<<"$line"
command -v curl >/dev/null || die "curl is needed (apt-get install -y curl)"

out="$CACHE/$name.gguf"
if [ "$sha" = "hub" ]; then
  api="https://huggingface.co/api/models/$repo/tree/$rev"
  sha=$(curl -fsSL --max-time 30 "$api" | tr '{' '\n' | grep -F "\"path\":\"$file\"" |
        grep -o '"oid":"[0-9a-f]\{64\}"' | head -1 | cut -d'"' -f4) ||
    die "cannot read the sha256 of $file from $api (offline?)"
  [ -n "$sha" ] || die "Hugging Face publishes no sha256 for $repo/$file"
fi

if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --status; then
  echo "$out"
  exit 0
fi
mkdir -p "$CACHE"
url="https://huggingface.co/$repo/resolve/$rev/$file"
echo "fetch-model: downloading $url" >&2
curl -fL --retry 3 --connect-timeout 15 -o "$out.part" "$url" || { rm -f "$out.part"; die "download of $url failed"; }
echo "$sha  $out.part" | sha256sum -c --status || { rm -f "$out.part"; die "sha256 of $file does not match $sha"; }
mv "$out.part" "$out"
echo "$out"
