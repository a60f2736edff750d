#!/usr/bin/env bash
# The GPU host's checks of issue 8, as one script for a short lease: the CUDA binaries from
# deploy/cuda/build.sh against the reference logits, a local search, the same search with several
# lanes, the engine benchmark, and the PyTorch + transformers baseline with identical settings.
# Writes every result as JSON lines to $OUT/gpu-check.jsonl (and logs next to it).
#
#   BIN=dist/cuda MODEL=/path/SmolLM2-135M-Instruct.Q4_1.gguf OUT=/tmp/out N=30 \
#     bash deploy/cuda/gpu-check.sh
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
#    default mode (on a GPU every matmul is f32 too).
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
cat "$RES"
