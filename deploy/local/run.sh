#!/usr/bin/env bash
# The main job on one machine: builds the binaries, fetches the default model, starts a
# coordinator and W workers on 127.0.0.1 over the first N ARC-Easy train questions, shows progress,
# waits, and prints the summary and where the Parquet is.
#
#   bash deploy/local/run.sh [N=20] [WORKERS=2]
#
# Environment: PORT (default 50051), SIMS (simulations per question, default 50), SUCCESS
# (correct | margin | agree), MIN_MARGIN (1.0), AGREE_FRACTION (0.5), STOP (paper | budget), EXPANSION (paper | tree),
# STRATEGY (mcts | probe | probe-skips),
# DATASET (arc_easy), SPLIT (train),
# RUN_DIR (default runs/local-<time>), CARGO_TARGET_DIR as usual.
set -euo pipefail
N="${1:-20}"
WORKERS="${2:-2}"
PORT="${PORT:-50051}"
SIMS="${SIMS:-50}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN_DIR="${RUN_DIR:-$ROOT/runs/local-$(date +%Y%m%d-%H%M%S)}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

cd "$ROOT"
echo "building (release)…" >&2
cargo build --release -q -p coordinator -p worker
bash scripts/fetch-model.sh >&2
mkdir -p "$RUN_DIR"
cat > "$RUN_DIR/job.toml" <<TOML
# Written by deploy/local/run.sh
output_dir = "$RUN_DIR/parquet"
reward = "choice-loglik"
shard_size = 2
lease_ttl_secs = 120
flush_secs = 2.0

[search]
num_simulations = $SIMS
success = "${SUCCESS:-correct}"
min_margin = ${MIN_MARGIN:-1.0}
agree_fraction = ${AGREE_FRACTION:-0.5}
stop = "${STOP:-paper}"
expansion = "${EXPANSION:-paper}"
strategy = "${STRATEGY:-mcts}"

[[datasets]]
name = "${DATASET:-arc_easy}"
split = "${SPLIT:-train}"
limit = $N
TOML

"$TARGET/release/coordinator" serve --job "$RUN_DIR/job.toml" --state "$RUN_DIR/state" \
  --listen "127.0.0.1:$PORT" --exit-when-done 2> "$RUN_DIR/coordinator.log" &
COORD=$!
pids=()
cleanup() { kill "${pids[@]}" "$COORD" 2>/dev/null || true; }
trap cleanup INT TERM
# Share the cores: each worker gets its slice (candle/rayon threads).
THREADS=$(( $(nproc) / WORKERS )); [ "$THREADS" -ge 1 ] || THREADS=1
for i in $(seq 1 "$WORKERS"); do
  RAYON_NUM_THREADS="$THREADS" RUST_LOG=info "$TARGET/release/worker" run --coordinator "http://127.0.0.1:$PORT" \
    --worker-id "local-$i" > "$RUN_DIR/worker-$i.json" 2> "$RUN_DIR/worker-$i.log" &
  pids+=($!)
done
tick=0
while kill -0 "$COORD" 2>/dev/null; do
  sleep 1
  tick=$((tick + 1))
  if [ $((tick % 5)) -eq 0 ]; then
    "$TARGET/release/coordinator" status --coordinator "http://127.0.0.1:$PORT" 2>/dev/null | head -1 >&2 || true
  fi
done
wait "$COORD" || { echo "coordinator failed, see $RUN_DIR/coordinator.log" >&2; exit 1; }
for p in "${pids[@]}"; do wait "$p" || echo "a worker failed, see $RUN_DIR/worker-*.log" >&2; done
for i in $(seq 1 "$WORKERS"); do echo "worker local-$i: $(cat "$RUN_DIR/worker-$i.json")" >&2; done
"$TARGET/release/coordinator" summarize "$RUN_DIR/parquet"
echo "Parquet parts: $RUN_DIR/parquet   (state: $RUN_DIR/state, logs: $RUN_DIR/*.log)" >&2
