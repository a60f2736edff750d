#!/usr/bin/env bash
# Coordinator throughput: a coordinator (release) over a job of REPEAT × ARC-Easy train (2251
# questions each), then `loadgen` with C concurrent synthetic clients leasing and submitting real
# records; one JSON line per run. First flat out (closed loop: saturation throughput) for each
# client count, then 1,000 clients paced to offer each rate in RATES records/s (latency under a
# given load).
#
# After each run, one more JSON line: the coordinator's CPU seconds (user + system) over it.
#
#   [SHARD=8] bash bench/coordinator.sh [CLIENTS="1 100 1000"] [REPEAT=100] [RATES="20000 25000"]
#
# SHARD is the job's shard_size, the examples per lease (loadgen asks for that many).
set -euo pipefail
CLIENTS="${1:-1 100 1000}"
REPEAT="${2:-100}"
RATES="${3-20000 25000}"
SHARD="${SHARD:-8}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
cargo build --release -q -p coordinator
cargo build --release -q -p drllm-tests --bin loadgen
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

run() { # CLIENTS RATE
  local DIR PORT COORD
  DIR=$(mktemp -d)
  {
    echo "output_dir = \"$DIR/out\""
    echo "shard_size = $SHARD"
    echo "lease_ttl_secs = 600"
    echo "part_size = 5000"
    echo "flush_secs = 0.5"
    for _ in $(seq 1 "$REPEAT"); do printf '[[datasets]]\nname = "arc_easy"\nsplit = "train"\n'; done
  } > "$DIR/job.toml"
  PORT=$((20000 + RANDOM % 20000))
  "$TARGET/release/coordinator" serve --job "$DIR/job.toml" --state "$DIR/state" \
    --listen "127.0.0.1:$PORT" 2> "$DIR/coordinator.log" &
  COORD=$!
  "$TARGET/release/loadgen" --url "http://127.0.0.1:$PORT" --clients "$1" --shard "$SHARD" --rate "$2"
  awk -v hz="$(getconf CLK_TCK)" '{printf "{\"coordinator_cpu_seconds\": %.2f}\n", ($14 + $15) / hz}' "/proc/$COORD/stat"
  kill "$COORD"; wait "$COORD" || true
  rm -rf "$DIR"
}

for C in $CLIENTS; do run "$C" 0; done
for R in $RATES; do run 1000 "$R"; done
