#!/usr/bin/env bash
# `evaluator serve` against llama.cpp's server (llama-cpp-python, the same GGUF, the same
# threads), same clients, same machine, one run (issue 39). Three servers: drllm as it was before
# batching ("one at a time": --max-batch-tokens 0 --prefix-cache-mib 0), drllm (continuous
# batching, prefix cache), llama.cpp. For each: (a) lm-eval-harness arc_challenge through
# local-completions at num_concurrent 1 and 8 (text prompts: llama.cpp's server takes no token
# ids), wall time and acc; (b) bench/serve_load.py, REQUESTS chat requests (greedy, 32 tokens,
# streamed) at concurrency 1, 4 and 16: requests/s, p50/p99 latency, time to first token.
#
#   bash bench/serve.sh [--out DIR]
#   ROUTERS=CKPT BUDGET=0.5 SERVERS="today drllm" LM_EVAL_RUNS=none CONCURRENCY="1 16" \
#     REQUESTS=64 bash bench/serve.sh   # routed serving, one at a time against batched
#
# Environment: LIMIT (arc_challenge questions, default all 1172), REQUESTS (200), THREADS (2),
# CONCURRENCY (the load's, "1 4 16"), ROUTERS (a --routers folder the drllm servers serve, at
# BUDGET, default 0.5; e.g. the token random control `trainer tokens --random-skip 0.2 --dataset
# arc_easy --out CKPT`), SERVERS ("today drllm llama_cpp", the load's; "none" runs no load),
# LM_EVAL_RUNS (server:in-flight pairs, "none" runs none; default
# "today:8 drllm:1 drllm:8 llama_cpp:1 llama_cpp:8"; today serves one request at a time, so its
# num_concurrent 1 and 8 differ only by lm-eval's own overlap), PY (a python with `openai`, default ~/.cache/drllm/venv),
# LLAMA_PY (a python with llama-cpp-python[server], default ~/.cache/drllm/venv-llama; built
# from PyPI's source package: `pip install 'llama-cpp-python[server]'`, ~15 min on 2 cores).
# Writes DIR/load.jsonl, DIR/lm_eval-*/summary.json and prints the tables' rows as JSON lines.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/runs/serve-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CACHE="${DRLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drllm}"
PY="${PY:-$CACHE/venv/bin/python}"
LLAMA_PY="${LLAMA_PY:-$CACHE/venv-llama/bin/python}"
export LLAMA_PY THREADS="${THREADS:-2}" BUDGET="${BUDGET:-0.5}"
SERVERS="${SERVERS:-today drllm llama_cpp}"
[ "$SERVERS" = none ] && SERVERS=""
LM_EVAL_RUNS="${LM_EVAL_RUNS:-today:8 drllm:1 drllm:8 llama_cpp:1 llama_cpp:8}"
[ "$LM_EVAL_RUNS" = none ] && LM_EVAL_RUNS=""
if [ -n "${ROUTERS:-}" ]; then
  [ -d "$ROUTERS" ] || { echo "ROUTERS=$ROUTERS is not a folder (make one with trainer)" >&2; exit 1; }
  ROUTERS="$(cd "$ROUTERS" && pwd)"
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
GGUF="$CACHE/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
PORT=8766
log() { echo "[serve-bench $(date +%H:%M:%S)] $*" >&2; }
"$PY" -c "import openai" || { echo "PY=$PY has no openai: $PY -m pip install openai" >&2; exit 1; }
case " $SERVERS $LM_EVAL_RUNS " in *llama_cpp*) "$LLAMA_PY" -c "import llama_cpp.server" || {
  echo "LLAMA_PY=$LLAMA_PY has no llama_cpp.server: pip install 'llama-cpp-python[server]'" >&2
  exit 1
} ;; esac
cd "$ROOT"
cargo build --release -q -p evaluator
bash scripts/fetch-model.sh >&2

serve_args() {
  case "$1" in
    today) echo "--max-batch-tokens 0 --prefix-cache-mib 0" ;;
    drllm) echo "" ;;
  esac
}

# (b) The load, each server started once for its concurrencies.
for server in $SERVERS; do
  log "load: $server"
  if [ "$server" = llama_cpp ]; then
    "$LLAMA_PY" -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" \
      --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx 2048 --interrupt_requests false \
      > "$OUT/load-$server.log" 2>&1 &
  else
    # shellcheck disable=SC2046
    "$BIN/evaluator" serve --listen "127.0.0.1:$PORT" --max-queue 64 $(serve_args "$server") \
      ${ROUTERS:+--routers "$ROUTERS" --budget "$BUDGET"} \
      > "$OUT/load-$server.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$PORT/v1/models" > /dev/null 2>&1 && break
    sleep 1
  done
  for c in ${CONCURRENCY:-1 4 16}; do
    "$PY" "$ROOT/bench/serve_load.py" --base-url "http://127.0.0.1:$PORT/v1" \
      --requests "${REQUESTS:-200}" --concurrency "$c" \
      | "$PY" -c "import json,sys; r=json.load(sys.stdin); r['server']='$server'; print(json.dumps(r))" \
      | tee -a "$OUT/load.jsonl"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

# (a) lm-eval arc_challenge at 1 and 8 in flight.
for run in $LM_EVAL_RUNS; do
  server="${run%%:*}" c="${run##*:}"
  kind=drllm; [ "$server" = llama_cpp ] && kind=llama_cpp
  log "lm_eval arc_challenge: $server, $c in flight"
  TASK=arc_challenge SERVER="$kind" NUM_CONCURRENT="$c" TOKENIZED=False PORT=$((PORT + 1)) \
    SERVE_ARGS="$(serve_args "$server")" \
    bash "$ROOT/bench/lm_eval.sh" ${LIMIT:+--limit "$LIMIT"} ${ROUTERS:+--routers "$ROUTERS"} --out "$OUT/lm_eval-$server-c$c" \
    | "$PY" -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); r['server']='$server'; r['num_concurrent']=$c; print(json.dumps(r))" \
    | tee -a "$OUT/lm_eval.jsonl"
done
