#!/usr/bin/env bash
# Token routers (issue 37): the accuracy/compute Pareto curve of token routers trained at several
# execute targets, each certified (risk drop, δ = 1 point, ε = 0.05), against the static model,
# static-pruned paths, a random token mask at the same compute, and (from issue 25) the per-input
# routers. Everything is chosen on ARC-Easy train and dev; test only scores. Writes
# $OUT/tokens.md (the table for BENCHMARKS.md) and $OUT/pareto.svg.
#
#   bash bench/tokens.sh [OUT=runs/tokens]
#
# The questions:
#   train 0–TRAIN_LIMIT    the gates (`trainer tokens`, prompts only, no labels)
#   dev (first DEV_LIMIT)  each router at its trained point τ = 0.5 (the Pareto curve on dev), the
#                          random control's share, and the calibration of every router
#   test                   ARC-Easy (first TEST_LIMIT) and ARC-Challenge (first CHALLENGE_LIMIT)
# Rows: static; static-pruned to 29/28/27 layers (the greedy curve of issue 25 on ARC-Easy train
# 0–999: −19, −18, −20); each token router pure (τ = 0.5) and certified; the random control at the
# certified best router's share; the per-input routers as measured in issue 25.
#
# Environment: TARGETS (90 80 70 60: execute shares in %), TRAIN_LIMIT (320), DEV_LIMIT (570 = all
# dev), TEST_LIMIT (1000), CHALLENGE_LIMIT (1172), USAGE_LIMIT (300: token-usage questions), GRID
# (1,0.95,0.9,0.85,0.8,0.7,0.6,0.5), JOBS (2: evaluations run side by side, one thread each). Each step is skipped when its output exists.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/runs/tokens}" && cd "${1:-$ROOT/runs/tokens}" && pwd)"
TARGETS="${TARGETS:-90 80 70 60}"
TRAIN_LIMIT="${TRAIN_LIMIT:-320}"
DEV_LIMIT="${DEV_LIMIT:-570}"
TEST_LIMIT="${TEST_LIMIT:-1000}"
CHALLENGE_LIMIT="${CHALLENGE_LIMIT:-1172}"
USAGE_LIMIT="${USAGE_LIMIT:-300}"
GRID="${GRID:-1,0.95,0.9,0.85,0.8,0.7,0.6,0.5}"
JOBS="${JOBS:-2}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
# The table needs numpy: the test venv (scripts/test.sh) has it.
PY="${PYTHON:-$HOME/.cache/drllm/venv/bin/python3}"; [ -x "$PY" ] || PY=python3
cd "$ROOT"
cargo build --release -q -p worker -p trainer -p evaluator
bash scripts/fetch-model.sh >&2
log() { echo "[tokens $(date +%H:%M:%S)] $*" >&2; }
have() { [ -e "$OUT/$1" ]; }
# Runs its arguments in the background, at most JOBS at a time, each on one thread.
par() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  RAYON_NUM_THREADS=1 "$@" & }

# 1. Gates: one router per target (two threads: training runs alone).
for t in $TARGETS; do
  have "t$t/token_router.json" || { log "train target 0.$t on train 0–$TRAIN_LIMIT";
    "$BIN/trainer" tokens --dataset arc_easy --split train --limit "$TRAIN_LIMIT" \
      --target "0.$t" --out "$OUT/t$t" > "$OUT/train-t$t.json"; }
done

# 2. Dev: each router at its trained point; then calibration of each on dev.
for t in $TARGETS; do
  have "dev-t$t/report.json" || par "$BIN/evaluator" run --routers "$OUT/t$t" --budget 0.5 \
    --dataset arc_easy --split dev --limit "$DEV_LIMIT" --out "$OUT/dev-t$t" > /dev/null
done
wait
for t in $TARGETS; do
  have "t$t/certificate.json" || par "$BIN/evaluator" calibrate --routers "$OUT/t$t" \
    --dataset arc_easy --split dev --limit "$DEV_LIMIT" --grid "$GRID" \
    --risk drop --delta 0.01 --epsilon 0.05 > "$OUT/calibrate-t$t.md"
done
wait

# 3. The random control at the share of token-layers the best certified router skips on dev (the
# pure router that skips most on dev when no router certifies a routed point).
BEST="$("$PY" "$ROOT/bench/tokens_table.py" --best "$OUT" $TARGETS)"
read -r best_t best_skip <<< "$BEST"
log "best certified router: t$best_t, skips $best_skip of the routed token-layers on dev"
have control/token_router.json || "$BIN/trainer" tokens --dataset arc_easy --split train \
  --limit 1 --random-skip "$best_skip" --out "$OUT/control" > /dev/null

# 4. Test: pure and certified routers, the control, the static-pruned paths.
for set in "arc_easy $TEST_LIMIT" "arc_challenge $CHALLENGE_LIMIT"; do
  read -r ds limit <<< "$set"
  t=(--dataset "$ds" --split test --limit "$limit")
  as_static=""  # the first certified run whose certificate keeps the static model
  for r in $TARGETS; do
    if [ "$ds" = arc_easy ]; then
      have "test-t$r-pure-$ds/report.json" || par "$BIN/evaluator" run "${t[@]}" \
        --routers "$OUT/t$r" --budget 0.5 --out "$OUT/test-t$r-pure-$ds" > /dev/null
    fi
    # Certified runs that all fall back to the static model are one run, not one per target.
    if [ -n "$as_static" ] && [ "$("$PY" "$ROOT/bench/tokens_table.py" --chosen "$OUT" "$r")" \
        = static ]; then
      continue
    fi
    have "test-t$r-certified-$ds/report.json" || par "$BIN/evaluator" run "${t[@]}" \
      --routers "$OUT/t$r" --out "$OUT/test-t$r-certified-$ds" > /dev/null
    [ "$("$PY" "$ROOT/bench/tokens_table.py" --chosen "$OUT" "$r")" = static ] && as_static=$r
  done
  have "test-control-$ds/report.json" || par "$BIN/evaluator" run "${t[@]}" \
    --routers "$OUT/control" --budget 0.5 --out "$OUT/test-control-$ds" > /dev/null
  i=0
  for path in 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,20,21,22,23,24,25,26,27,28,29 \
      0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,20,21,22,23,24,25,26,27,28,29 \
      0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,21,22,23,24,25,26,27,28,29; do
    len=$((29 - i)); i=$((i + 1))
    have "pruned-$len-$ds.jsonl" || par "$BIN/evaluator" baseline "${t[@]}" --path "$path" \
      --records "$OUT/pruned-$len-$ds.jsonl" > "$OUT/pruned-$len-$ds.json"
  done
done
wait

# 5. Where the certified best router spends compute, on ARC-Easy test; realized prefill speedup
# of token routes at the same shares; the table and the plot.
# (at its trained point τ = 0.5 when its certificate keeps the static model: nothing to see there)
knob=(); [ "$("$PY" "$ROOT/bench/tokens_table.py" --chosen "$OUT" "$best_t")" = static ] && knob=(--budget 0.5)
have usage/usage.json || "$BIN/evaluator" token-usage --routers "$OUT/t$best_t" "${knob[@]}" \
  --dataset arc_easy --split test --limit "$USAGE_LIMIT" --out "$OUT/usage" > /dev/null
have bench-tokens.jsonl || "$BIN/worker" bench-tokens --dataset arc_easy --limit 24 \
  --skip 0,0.1,0.2,0.3 > "$OUT/bench-tokens.jsonl"
"$PY" "$ROOT/bench/tokens_table.py" "$OUT" $TARGETS > "$OUT/tokens.md"
cat "$OUT/tokens.md"
