#!/usr/bin/env bash
# ARC-Easy (or ARC-Challenge) test scored by lm-evaluation-harness (`local-completions`) through
# `evaluator serve`, our OpenAI-compatible server (or llama.cpp's, for comparison): an outside
# check of the model (or the routed model) with the harness's own prompt, tokenization and acc /
# acc_norm. Tasks: bench/lm_eval/arc_{easy,challenge}_local.yaml. Writes
# $OUT/lm_eval/<model>/results_*.json and samples_<task>_*.jsonl (one line per question:
# arguments, log-likelihoods, acc, acc_norm), and prints acc, acc_norm and the wall time.
#
#   bash bench/lm_eval.sh [--limit N] [--routers CKPT] [--out DIR]
#
# --limit N: the first N test questions (default: all 2376). --out: default runs/lm_eval, or
# runs/lm_eval-routed with --routers. Environment: PORT (8765), BUDGET
# (serve --budget, for --routers), NUM_CONCURRENT (1: requests in flight), BATCH_SIZE
# (1: prompts per request), TASK (arc_easy or arc_challenge), SERVE_ARGS (more `evaluator serve`
# flags), TOKENIZED (True: token-id prompts; False: text, which llama.cpp's server needs),
# SERVER (drllm, or llama_cpp: `python -m llama_cpp.server` from LLAMA_PY, default
# $DRLLM_CACHE/venv-llama/bin/python, on the same GGUF with THREADS threads, default 2).
# lm-eval 0.4.13 goes into a venv under $DRLLM_CACHE/venv-lmeval (~930 MB, ~2 min from PyPI,
# once); nothing else is downloaded.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LIMIT=""
ROUTERS=""
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) LIMIT="$2"; shift 2 ;;
    --routers) ROUTERS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
# Routed and static runs default to their own folders, so that their samples never mix.
OUT="${OUT:-$ROOT/runs/lm_eval${ROUTERS:+-routed}}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PORT="${PORT:-8765}"
CACHE="${DRLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drllm}"
VENV="$CACHE/venv-lmeval"
LM_EVAL_VERSION=0.4.13
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
NAME=smollm2-135m-instruct
if [ -n "$ROUTERS" ]; then NAME="$NAME+routers"; fi
TASK="${TASK:-arc_easy}"
case "$TASK" in arc_easy|arc_challenge) ;; *) echo "TASK must be arc_easy or arc_challenge" >&2; exit 2 ;; esac
SERVER_KIND="${SERVER:-drllm}"
GGUF="$CACHE/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
log() { echo "[lm_eval $(date +%H:%M:%S)] $*" >&2; }

# 1. lm-eval (API extra: requests/aiohttp/tenacity) and transformers for the tokenizer; no torch.
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('lm_eval') != '$LM_EVAL_VERSION')" 2>/dev/null; then
  log "installing lm-eval $LM_EVAL_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "lm-eval[api]==$LM_EVAL_VERSION" "transformers==5.24.0"
fi

# 2. Binaries, model, and the model's tokenizer as a Hugging Face folder for lm-eval.
cd "$ROOT"
cargo build --release -q -p evaluator
bash scripts/fetch-model.sh >&2
"$BIN/evaluator" export-tokenizer --out "$OUT/tokenizer" >&2

# 3. The server (it loads the model before it listens, so /healthz means ready), stopped
# whatever happens next.
if [ "$SERVER_KIND" = llama_cpp ]; then
  LLAMA_PY="${LLAMA_PY:-$CACHE/venv-llama/bin/python}"
  log "starting llama.cpp's server (llama-cpp-python) on 127.0.0.1:$PORT"
  "$LLAMA_PY" -m llama_cpp.server --model "$GGUF" --model_alias "$NAME" --host 127.0.0.1 \
    --port "$PORT" --n_threads "${THREADS:-2}" --n_threads_batch "${THREADS:-2}" --n_ctx 2048 \
    --logits_all true --interrupt_requests false > "$OUT/serve.log" 2>&1 &
  HEALTH=/v1/models
else
  log "starting evaluator serve on 127.0.0.1:$PORT${ROUTERS:+ with routers $ROUTERS}"
  "$BIN/evaluator" serve --listen "127.0.0.1:$PORT" --served-model-name "$NAME" \
    ${ROUTERS:+--routers "$ROUTERS"} ${BUDGET:+--budget "$BUDGET"} ${SERVE_ARGS:-} \
    > "$OUT/serve.log" 2>&1 &
  HEALTH=/healthz
fi
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT$HEALTH" > /dev/null 2>&1 && break
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "evaluator serve exited; its log ($OUT/serve.log):" >&2
    cat "$OUT/serve.log" >&2
    exit 1
  fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT$HEALTH" > /dev/null

# 4. lm-eval, offline, from the repository root (the task's data path is relative to it).
# batch_size goes on the command line, not in --model_args (lm-eval passes both to the model).
log "lm_eval ${TASK}_drllm${LIMIT:+, first $LIMIT questions}, $SERVER_KIND, ${NUM_CONCURRENT:-1} in flight"
START=$(date +%s.%N)
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_DATASETS_CACHE="$CACHE/hf-datasets" \
  "$VENV/bin/lm_eval" run --model local-completions \
  --model_args "model=$NAME,base_url=http://127.0.0.1:$PORT/v1/completions,tokenizer_backend=huggingface,tokenizer=$OUT/tokenizer,tokenized_requests=${TOKENIZED:-True},num_concurrent=${NUM_CONCURRENT:-1},max_retries=3,timeout=600" \
  --batch_size "${BATCH_SIZE:-1}" \
  --include_path "$ROOT/bench/lm_eval" --tasks "${TASK}_drllm" \
  ${LIMIT:+--limit "$LIMIT"} --log_samples --output_path "$OUT/lm_eval" >&2

END=$(date +%s.%N)
curl -fsS "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt" 2>/dev/null || : > "$OUT/metrics.txt"

# 5. The scores, and the server's throughput over lm_eval's run (its start-up included).
results="$(ls -t "$OUT"/lm_eval/*/results_*.json | head -n 1)"
"$VENV/bin/python" - "$results" "$OUT/metrics.txt" "$START" "$END" "${TASK}_drllm" <<'PY' | tee "$OUT/summary.json"
import json, re, sys
r = json.load(open(sys.argv[1]))["results"][sys.argv[5]]
metrics = open(sys.argv[2]).read()
def total(name, labels=""):
    m = re.search(r"^" + name + r"(\{[^}]*" + labels + r"[^}]*\})? ([0-9.e+]+)$", metrics, re.M)
    return float(m.group(2)) if m else 0.0
secs = float(sys.argv[4]) - float(sys.argv[3])
requests = total("drllm_serve_requests_total", 'status="200"')
tokens = total("drllm_serve_tokens_total")
print(json.dumps({"results": sys.argv[1], "n": r.get("sample_len"),
                  "acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"],
                  "acc_norm": r["acc_norm,none"], "acc_norm_stderr": r["acc_norm_stderr,none"],
                  "lm_eval_seconds": round(secs, 1), "requests": int(requests),
                  "requests_per_s": round(requests / secs, 2), "tokens": int(tokens),
                  "tokens_per_s": round(tokens / secs, 1),
                  "inference_seconds": round(total("drllm_serve_inference_seconds_sum"), 1),
                  "layer_executions": int(total("drllm_serve_layer_executions_total"))}))
PY
