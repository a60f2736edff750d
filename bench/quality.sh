#!/usr/bin/env bash
# Routers that must not cost accuracy, measured (issue 25): every system is chosen and certified
# on ARC-Easy train and dev only, then scored on ARC-Easy test and ARC-Challenge test against the
# static model and the static-pruned paths. Writes $OUT/quality.md (the table for BENCHMARKS.md).
#
#   bash bench/quality.sh [OUT=runs/quality]
#
# The questions, all ARC-Easy train unless said (nothing is chosen on test):
#   train 0–199        paper search → Dr.LLM routers (paper labels); agree search → agree routers
#   train 0–999        the probe (every single and double skip, agree rule) → trainer diagnose
#                      (PROBE_LIMIT, at most CURVE_LIMIT); the greedy pruning curve (candidates:
#                      the diagnosis's safest single skips)
#   train 1000–1599    the path menu's gate (the menu leaves out all the questions it was chosen on)
#   dev + train        calibration of each checkpoint (risk drop, δ = 1 point, ε = 0.05), less
#                      the questions that checkpoint was trained or chosen on
# Rows: static; static-pruned (each length of the curve); Dr.LLM routers pure (budget −0.5) and
# certified; agree routers certified; the path menu certified. A certified checkpoint whose
# certificate keeps no routed point runs the static model: its row is the static row, and says so.
#
# Environment: TEST_LIMIT (1000; 2376 = all of ARC-Easy test), CHALLENGE_LIMIT (1172 = all),
# PROBE_LIMIT (1000), CURVE_LIMIT (1000), GATE_LIMIT (1600: the gate gets train
# CURVE_LIMIT…GATE_LIMIT), SEARCH_LIMIT
# (200), CANDIDATES (the curve's candidate layers, default: the diagnosis's 8 safest single skips
# at or after layer 8), DOWN_TO (27), and PROBE_RECORDS / PAPER_RECORDS / AGREE_RECORDS to reuse
# records of earlier searches. Each step is skipped when its output exists (rerun to resume).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/runs/quality}" && cd "${1:-$ROOT/runs/quality}" && pwd)"
TEST_LIMIT="${TEST_LIMIT:-1000}"
CHALLENGE_LIMIT="${CHALLENGE_LIMIT:-1172}"
PROBE_LIMIT="${PROBE_LIMIT:-1000}"
CURVE_LIMIT="${CURVE_LIMIT:-1000}"
GATE_LIMIT="${GATE_LIMIT:-1600}"
SEARCH_LIMIT="${SEARCH_LIMIT:-200}"
DOWN_TO="${DOWN_TO:-27}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
CERT=(--risk drop --delta 0.01 --epsilon 0.05)
cd "$ROOT"
cargo build --release -q -p coordinator -p worker -p trainer -p evaluator
bash scripts/fetch-model.sh >&2
log() { echo "[quality $(date +%H:%M:%S)] $*" >&2; }
have() { [ -e "$OUT/$1" ]; }

# 1. Searches: the probe (fleet of 2 local workers), paper and agree searches of SEARCH_LIMIT.
if [ -z "${PROBE_RECORDS:-}" ]; then
  PROBE_RECORDS="$OUT/probe/parquet"
  have probe/parquet || { log "probe: $PROBE_LIMIT questions (about 86 min on 2 cores)";
    RUN_DIR="$OUT/probe" STRATEGY=probe-skips SUCCESS=agree bash deploy/local/run.sh \
      "$PROBE_LIMIT" 2 > "$OUT/probe.json"; }
fi
search() { # name, extra flags
  local name=$1; shift
  have "search-$name" || { log "search $name: $SEARCH_LIMIT questions";
    "$BIN/worker" search --dataset arc_easy --split train --limit "$SEARCH_LIMIT" --lanes 2 "$@" \
      --out "$OUT/search-$name" >&2; }
  echo "$OUT/search-$name"
}
PAPER_RECORDS="${PAPER_RECORDS:-$(search paper)}"
AGREE_RECORDS="${AGREE_RECORDS:-$(search agree --success agree)}"

# 2. The diagnosis and the greedy curve on the probed questions.
have diagnosis/diagnosis.json || { log "diagnose";
  "$BIN/trainer" diagnose --records "$PROBE_RECORDS" --out "$OUT/diagnosis" > /dev/null; }
CANDIDATES="${CANDIDATES:-$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(",".join([str(l) for l, _ in d["single_skips"] if l >= 8][:8]))' "$OUT/diagnosis/diagnosis.json")}"
have prune/prune.json || { log "greedy curve on train 0–$CURVE_LIMIT, layers $CANDIDATES";
  "$BIN/evaluator" prune --dataset arc_easy --split train --limit "$CURVE_LIMIT" \
    --layers "$CANDIDATES" --down-to "$DOWN_TO" --reuse-budget-mib 8 --out "$OUT/prune" > /dev/null; }

# 3. Checkpoints, each certified on dev + train less its own questions.
for v in paper agree; do
  records=$PAPER_RECORDS; [ $v = agree ] && records=$AGREE_RECORDS
  have "routers-$v/router_config.json" || { log "train $v";
    "$BIN/trainer" train --records "$records" --out "$OUT/routers-$v" > "$OUT/train-$v.json"; }
  have "routers-$v/certificate.json" || { log "calibrate $v";
    "$BIN/evaluator" calibrate --routers "$OUT/routers-$v" --dataset arc_easy --split dev \
      --split train --limit 700 --exclude-records "$records" "${CERT[@]}" > "$OUT/calibrate-$v.md"; }
done
have menu/path_menu.json || { log "path menu: gate on train $CURVE_LIMIT–$GATE_LIMIT";
  "$BIN/trainer" menu --dataset arc_easy --split train --limit "$GATE_LIMIT" \
    --curve "$OUT/prune/prune.json" --diagnosis "$OUT/diagnosis/diagnosis.json" \
    --exclude-records "$PROBE_RECORDS" --out "$OUT/menu" > "$OUT/menu.md"; }
have menu/certificate.json || { log "calibrate the menu";
  "$BIN/evaluator" calibrate --routers "$OUT/menu" --dataset arc_easy --split dev --split train \
    --exclude-records "$PROBE_RECORDS" "${CERT[@]}" > "$OUT/calibrate-menu.md"; }

# 4. Test: routed runs (each with the static model on the same questions), the curve's paths.
for set in "arc_easy $TEST_LIMIT" "arc_challenge $CHALLENGE_LIMIT"; do
  read -r ds limit <<< "$set"
  t=(--dataset "$ds" --split test --limit "$limit")
  run() { # name, flags
    local name=$1; shift
    have "test-$name-$ds/report.json" || { log "test $name on $ds";
      "$BIN/evaluator" run "${t[@]}" "$@" --out "$OUT/test-$name-$ds" > /dev/null; }
  }
  run paper-pure --routers "$OUT/routers-paper" --budget=-0.5
  for v in paper agree menu; do
    dir="$OUT/routers-$v"; [ $v = menu ] && dir="$OUT/menu"
    # A certificate without a routed point runs the static model: the table uses the static row.
    if python3 "$ROOT/bench/quality_table.py" --saves "$dir/certificate.json"; then
      run "$v-certified" --routers "$dir"; fi
  done
  python3 -c '
import json, sys
for p in json.load(open(sys.argv[1]))["curve"][1:]:
    print(p["len"], ",".join(map(str, p["path"])))' "$OUT/prune/prune.json" |
  while read -r len path; do
    have "pruned-$len-$ds.jsonl" || { log "static-pruned to $len on $ds";
      "$BIN/evaluator" baseline "${t[@]}" --path "$path" --records "$OUT/pruned-$len-$ds.jsonl" \
        > "$OUT/pruned-$len-$ds.json"; }
  done
done

# 5. The table.
python3 "$ROOT/bench/quality_table.py" "$OUT" > "$OUT/quality.md"
cat "$OUT/quality.md"
