#!/usr/bin/env bash
# run.sh: the README's first command (`make run`): installs what is missing, builds, and runs the main
# job on the default model (scripts/default-model.sh): a streamed completion of PROMPT.
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${PROMPT:-Once upon a time}

scripts/deps.sh
make -j"$(nproc)" all
model=$(scripts/default-model.sh)
echo "llorch: model $model" >&2
build/workerd generate -m "$model" -n "${N:-128}" "$PROMPT"
echo
