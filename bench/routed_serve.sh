#!/usr/bin/env bash
# Routed serving throughput: `evaluator serve` one sequence at a time (--max-batch-tokens 0)
# against continuous batching, for the static model and a router checkpoint, in one run:
# bench/serve_load.py's chat load (REQUESTS requests, greedy, 32 tokens) at concurrency 1 and 16.
#
#   CKPT=runs/tok-ctl KNOB=0.5 bash bench/routed_serve.sh
#
# CKPT: any --routers folder (default: the token router random control, made here with
# `trainer tokens --random-skip 0.2` when missing). Prints one JSON line per measurement.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/drllm/target}"
REQUESTS="${REQUESTS:-64}"
KNOB="${KNOB:-0.5}"
PORT="${PORT:-8799}"
PY="${PY:-$HOME/.cache/drllm/venv/bin/python3}"
CKPT="${CKPT:-$ROOT/runs/tok-ctl}"
(cd "$ROOT" && cargo build --release -q -p evaluator -p trainer)
BIN="$CARGO_TARGET_DIR/release"
if [ ! -d "$CKPT" ]; then
  "$BIN/trainer" tokens --out "$CKPT" --random-skip 0.2 --dataset arc_easy >/dev/null
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for ck in static routed; do
  for mode in one batched; do
    args=(--listen "127.0.0.1:$PORT")
    [ "$ck" = routed ] && args+=(--routers "$CKPT" --budget "$KNOB")
    [ "$mode" = one ] && args+=(--max-batch-tokens 0)
    "$BIN/evaluator" serve "${args[@]}" >"$log" 2>/dev/null &
    pid=$!
    for _ in $(seq 120); do grep -q listening "$log" && break; sleep 1; done
    grep -q listening "$log" || { echo "the server did not start" >&2; kill "$pid"; exit 1; }
    for c in 1 16; do
      out=$("$PY" "$ROOT/bench/serve_load.py" --base-url "http://127.0.0.1:$PORT/v1" \
        --requests "$REQUESTS" --concurrency "$c")
      echo "{\"checkpoint\": \"$ck\", \"server\": \"$mode\", \"load\": $out}"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
