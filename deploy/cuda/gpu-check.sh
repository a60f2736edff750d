#!/usr/bin/env bash
# The GPU host's checks of issue 8, as one script for a short lease: the CUDA binaries from
# deploy/cuda/build.sh against the reference logits, a local search, the same search with several
# lanes, the engine benchmark, the PyTorch + transformers baseline with identical settings, and
# (5b) the realized speedup of token routes, (5c) the server under a concurrent load. Writes
# every result as JSON lines to
# $OUT/gpu-check.jsonl (and logs next to it).
#
#   BIN=dist/cuda MODEL=/path/SmolLM2-135M-Instruct.Q4_1.gguf OUT=/tmp/out N=30 \
#     bash deploy/cuda/gpu-check.sh
#
# Section 6 then makes a Llama-3.1-8B-shaped bf16 checkpoint (seeded random weights,
# scripts/make-shaped-model.py, on the GPU; or uses SHAPED8B when that folder holds one) and
# records drllm against transformers on it: logits parity (bench/compare_logits.py), the engine
# benchmark, and the search's simulations/s with the same questions and simulations and no early
# stop. N8 (default 10) questions, SIMS8 (default 50) simulations each; SKIP8B=1 skips it.
#
# Needs: an NVIDIA driver for CUDA 13, the CUDA 13 cuBLAS / cudart / cuRAND libraries (found in
# Python's nvidia wheels when LD_LIBRARY_PATH lacks them), python3 with torch, transformers and
# gguf for the baseline (skipped, and said so, when missing). REF defaults to the reference file
# vendored in engine/tests/data.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${BIN:-$ROOT/dist/cuda}"
MODEL="${MODEL:?MODEL=path of the GGUF}"
REF="${REF:-$ROOT/engine/tests/data/smollm2_135m_q4_1.json}"
OUT="${OUT:-$ROOT/runs/gpu-check}"
N="${N:-30}"
LANES="${LANES:-4}"
DEVICE="${DEVICE:-cuda}"   # cpu: a dry run of this script on any machine
mkdir -p "$OUT"
RES="$OUT/gpu-check.jsonl"
: > "$RES"
note() { echo "$*" >&2; }
record() { # record NAME JSON
  printf '{"check":"%s","result":%s}\n' "$1" "${2:-null}" >> "$RES"
}

if ! ldconfig -p 2>/dev/null | grep -q 'libcublas.so.13'; then
  libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = {os.path.dirname(p) for r in roots
        for p in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so.1[0-3]*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
note "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
nvidia-smi -L >&2 || note "nvidia-smi failed"
ldd "$BIN/worker" | grep -E "cuda|cublas|curand" >&2

# 1. Parity: exact f32 on the GPU against the exact reference (tolerance as on the CPU), then the
#    default mode (`--dtype auto`: bf16 matmuls on a GPU; the record keeps the max |Δlogit| whatever
#    the verdict at the f32 tolerance).
for mode in exact fast; do
  flag=$([ "$mode" = exact ] && echo --exact)
  out=$("$BIN/worker" parity --device "$DEVICE" --model "$MODEL" $flag --reference "$REF" 2>"$OUT/parity-$mode.log")
  note "parity ($mode): exit $?"
  record "parity-$mode" "$(printf '%s' "$out" | python3 -c 'import json,sys; v=json.load(sys.stdin); v.pop("reports"); print(json.dumps(v))' 2>/dev/null || echo null)"
done

# 2. Engine benchmark (prefill/decode tokens/s) on the GPU.
out=$("$BIN/worker" bench --device "$DEVICE" --model "$MODEL" 2>"$OUT/bench.log" | tail -1)
record bench "${out:-null}"

# 3. The search on the GPU, one process, N ARC-Easy train questions, default settings.
out=$("$BIN/worker" search --device "$DEVICE" --model "$MODEL" --dataset arc_easy --limit "$N" \
  --out "$OUT/search" 2>"$OUT/search.log" | tail -1)
record search "${out:-null}"

# 4. The same questions through a coordinator and one worker with LANES lanes.
PORT=50123
cat > "$OUT/job.toml" <<TOML
output_dir = "$OUT/lanes-parquet"
reward = "choice-loglik"
shard_size = 1
lease_ttl_secs = 300
flush_secs = 1.0
[[datasets]]
name = "arc_easy"
split = "train"
limit = $N
TOML
rm -rf "$OUT/lanes-state" "$OUT/lanes-parquet"
"$BIN/coordinator" serve --job "$OUT/job.toml" --state "$OUT/lanes-state" \
  --listen "127.0.0.1:$PORT" --exit-when-done 2>"$OUT/coordinator.log" &
coord=$!
out=$("$BIN/worker" run --device "$DEVICE" --model "$MODEL" --coordinator "http://127.0.0.1:$PORT" \
  --concurrency "$LANES" 2>"$OUT/lanes.log")
wait "$coord"
record "lanes-$LANES" "${out:-null}"

# 5. The PyTorch + transformers baseline, same questions and settings.
if python3 -c 'import torch, transformers, gguf' 2>/dev/null; then
  out=$(python3 "$ROOT/bench/torch_mcts.py" --device "${DEVICE%%:*}" --model "$MODEL" --dataset arc_easy \
    --split train --limit "$N" 2>"$OUT/torch.log" | tail -1)
  record torch-baseline "${out:-null}"
else
  note "torch, transformers or gguf missing: no baseline"
  record torch-baseline null
fi
# 5b. Token routes (issue 37): realized vs structural prefill speedup of random token masks on
#     ARC-Easy prompts (choice-loglik rows) and chat-templated ones (generate), both key treatments.
for reward in choice-loglik generate; do
  "$BIN/worker" bench-tokens --device "$DEVICE" --dataset arc_easy --limit 24 --reward "$reward" \
    --skip 0,0.1,0.3 --rounds 3 2>"$OUT/bench-tokens-$reward.log" |
    while read -r line; do record "bench-tokens-$reward" "$line"; done
done

# 5c. Serving (issue 39): `evaluator serve` on the GPU (continuous batching, prefix cache) under
#     bench/serve_load.py's chat load at concurrency 1, 4 and 16 (plain HTTP when the host has no
#     `openai` package); one request at a time (--max-batch-tokens 0) as the baseline.
for mode in batched one-at-a-time; do
  args=""; [ "$mode" = one-at-a-time ] && args="--max-batch-tokens 0 --prefix-cache-mib 0"
  # shellcheck disable=SC2086
  "$BIN/evaluator" serve --device "$DEVICE" --model "$MODEL" --listen 127.0.0.1:8799 $args \
    > "$OUT/serve-$mode.log" 2>&1 &
  spid=$!
  for _ in $(seq 1 120); do curl -fsS http://127.0.0.1:8799/healthz > /dev/null 2>&1 && break; sleep 1; done
  for c in 1 4 16; do
    out=$(python3 "$ROOT/bench/serve_load.py" --base-url http://127.0.0.1:8799/v1 \
      --requests "${REQUESTS:-200}" --concurrency "$c" 2>>"$OUT/serve-$mode.log" | tail -1)
    record "serve-$mode-c$c" "${out:-null}"
  done
  kill "$spid"; wait "$spid" 2>/dev/null
done

# 6. A Llama-3.1-8B-shaped bf16 checkpoint (seeded random weights): drllm against transformers
#    on the GPU. Every step records null when it fails and the script goes on.
if [ "${SKIP8B:-0}" = 1 ]; then
  note "SKIP8B=1: no 8B-shaped checks"
elif ! python3 -c 'import torch, transformers, safetensors' 2>/dev/null; then
  note "torch, transformers or safetensors missing: no 8B-shaped checks"
  for c in make-8b parity-8b-full-bf16-vs-torch-bfloat16 parity-8b-full-bf16-vs-torch-float32 \
           parity-8b-path-bf16-vs-torch-bfloat16 parity-8b-path-bf16-vs-torch-float32 \
           parity-8b-full-exact-vs-torch-float32 bench-8b torch-bench-8b search-8b torch-search-8b; do
    record "$c" null
  done
else
  TDEV="${DEVICE%%:*}"  # the Python scripts take cpu or cuda
  N8="${N8:-10}"
  SIMS8="${SIMS8:-50}"
  if [ -n "${SHAPED8B:-}" ] && [ -f "$SHAPED8B/config.json" ]; then
    DIR8="$SHAPED8B"
    record make-8b "{\"dir\":\"$DIR8\",\"made\":false}"
  else
    DIR8="${SHAPED8B:-$OUT/llama3-8b-shaped}"
    t=$SECONDS
    if python3 "$ROOT/scripts/make-shaped-model.py" --arch llama3 --size 8b --dtype bf16 --seed 0 \
         --device "$TDEV" --out "$DIR8" >"$OUT/make-8b.log" 2>&1 && [ -f "$DIR8/config.json" ]; then
      record make-8b "{\"dir\":\"$DIR8\",\"made\":true,\"seconds\":$((SECONDS - t))}"
    else
      note "make-shaped-model.py failed (see $OUT/make-8b.log)"
      record make-8b null
      DIR8=""
    fi
  fi
  if [ -n "$DIR8" ]; then
    # 6a. Logits parity, last position of one prompt, full path and a path with a skip and a
    #     repeat: drllm bf16 against transformers bf16 and f32 (sdpa-free eager reference), drllm
    #     --exact against transformers f32. drllm prints every logit (--top vocab).
    vocab=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c.get("vocab_size") or c["text_config"]["vocab_size"])' "$DIR8/config.json")
    layers=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c.get("num_hidden_layers") or c["text_config"]["num_hidden_layers"])' "$DIR8/config.json")
    full=$(python3 -c "print(','.join(map(str, range($layers))))")
    # an edited path: layer L/3 skipped, layer L/2 run twice (8B: 10 skipped, 16 repeated)
    edited=$(python3 -c "L=$layers; p=list(range(L)); p.insert(p.index(L//2), L//2); p.remove(L//3); print(','.join(map(str, p)))")
    printf 'Question: Which factor will most likely cause a person to develop a fever?\nAnswer: a bacterial population in the bloodstream' > "$OUT/prompt-8b.txt"
    ids=""
    for spec in "full bf16 $full --dtype bf16" "path bf16 $edited --dtype bf16" "full exact $full --exact"; do
      set -- $spec
      "$BIN/worker" logits --device "$DEVICE" --model "$DIR8" --prompt-file "$OUT/prompt-8b.txt" \
        --path "$3" --top "$vocab" ${4:-} ${5:-} > "$OUT/logits-8b-$1-$2.json" 2>"$OUT/logits-8b-$1-$2.log" \
        || { note "worker logits ($1 $2) failed"; rm -f "$OUT/logits-8b-$1-$2.json"; }
      [ -z "$ids" ] && [ -s "$OUT/logits-8b-$1-$2.json" ] && \
        ids=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["ids"])))' "$OUT/logits-8b-$1-$2.json" 2>/dev/null)
    done
    if [ -n "$ids" ]; then
      for tdt in bfloat16 float32; do
        python3 "$ROOT/scripts/torch_path_logits.py" --model "$DIR8" --ids "$ids" --path "$full" --path "$edited" \
          --dtype "$tdt" --device "$TDEV" > "$OUT/torch-logits-8b-$tdt.json" 2>"$OUT/torch-logits-8b-$tdt.log" \
          || { note "torch_path_logits.py ($tdt) failed"; rm -f "$OUT/torch-logits-8b-$tdt.json"; }
      done
    else
      note "worker logits gave no token ids: no transformers reference"
    fi
    for spec in "full bf16 bfloat16" "full bf16 float32" "path bf16 bfloat16" "path bf16 float32" "full exact float32"; do
      set -- $spec
      out=""
      if [ -s "$OUT/logits-8b-$1-$2.json" ] && [ -s "$OUT/torch-logits-8b-$3.json" ]; then
        out=$(python3 "$ROOT/bench/compare_logits.py" --drllm "$OUT/logits-8b-$1-$2.json" \
          --torch "$OUT/torch-logits-8b-$3.json" 2>>"$OUT/compare-8b.log")
      fi
      record "parity-8b-$1-$2-vs-torch-$3" "${out:-null}"
    done

    # 6b. Engine benchmark: drllm bf16 against transformers bf16 (same prompt ids, lengths).
    out=$("$BIN/worker" bench --device "$DEVICE" --dtype bf16 --model "$DIR8" 2>"$OUT/bench-8b.log" | tail -1)
    record bench-8b "${out:-null}"
    out=$(python3 "$ROOT/bench/torch_engine_bench.py" --device "$TDEV" --dtype bfloat16 --model "$DIR8" \
      2>"$OUT/torch-bench-8b.log" | tail -1)
    record torch-bench-8b "${out:-null}"

    # 6c. The search, simulations/s: the same N8 questions, SIMS8 simulations each, no early stop
    #     (`--stop budget`: the MCTS stops; `--no-early-stop`: the generate-mode ones).
    out=$("$BIN/worker" search --device "$DEVICE" --dtype bf16 --model "$DIR8" --dataset arc_easy \
      --split train --limit "$N8" --num-simulations "$SIMS8" --reward choice-loglik --seed 0 \
      --stop budget --no-early-stop --out "$OUT/search-8b" 2>"$OUT/search-8b.log" | tail -1)
    record search-8b "${out:-null}"
    out=$(python3 "$ROOT/bench/torch_mcts.py" --device "$TDEV" --dtype bfloat16 --model "$DIR8" \
      --dataset arc_easy --split train --limit "$N8" --num-simulations "$SIMS8" --seed 0 --no-early-stop \
      2>"$OUT/torch-search-8b.log" | tail -1)
    record torch-search-8b "${out:-null}"
  fi
fi
cat "$RES"
