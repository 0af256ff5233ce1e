#!/usr/bin/env bash
# run.sh: the README's first command (`make run`): installs what is missing, builds, starts orchd with two
# workers on the default model (scripts/default-model.sh) on a private socket, streams a completion of
# PROMPT through `orchctl submit`, then stops orchd (SIGTERM: it stops its workers and exits 0).
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${PROMPT:-Once upon a time}

scripts/deps.sh
make -j"$(nproc)" all
model=$(scripts/default-model.sh)
dir=$(mktemp -d /tmp/llorch-run.XXXXXX)
url="ipc://$dir/orchd.sock"
echo "llorch: orchd with 2 workers on $model, listening on $url" >&2

build/orchd -m "$model" -w 2 -l "$url" 2>"$dir/orchd.log" &
orchd=$!
stop() {
  kill -TERM "$orchd" 2>/dev/null || true
  wait "$orchd" 2>/dev/null || true
  rm -rf "$dir"
}
trap stop EXIT

for _ in $(seq 100); do
  build/orchctl -u "$url" health >/dev/null 2>&1 && break
  kill -0 "$orchd" 2>/dev/null || { cat "$dir/orchd.log" >&2; exit 1; }
  sleep 0.1
done
build/orchctl -u "$url" workers >&2
build/orchctl -u "$url" submit -n "${N:-128}" "$PROMPT"
echo
