#!/usr/bin/env bash
# Engine benchmark, drllm vs llama.cpp on the same GGUF, token ids and cores (BENCHMARKS.md).
# Alternates the two engines ROUNDS times so that machine noise hits both alike.
# llama.cpp comes from PyPI's llama-cpp-python, built once into ~/.cache/drllm/bench-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"
model="${MODEL:-${DRLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drllm}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
venv="${BENCH_VENV:-$HOME/.cache/drllm/bench-venv}"
threads="${THREADS:-$(nproc)}"

[ -f "$model" ] || bash scripts/fetch-model.sh
if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python into $venv (once; several minutes) ..." >&2
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet llama-cpp-python numpy
fi
cargo build --release -q -p worker
bin="${CARGO_TARGET_DIR:-target}/release/worker"

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads, $(date -u +%F)"
for _ in $(seq "$rounds"); do
  RAYON_NUM_THREADS="$threads" "$bin" bench --model "$model" "$@"
  "$venv/bin/python" bench/llama_cpp_bench.py --model "$model" --threads "$threads"
done
