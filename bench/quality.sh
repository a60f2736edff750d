#!/usr/bin/env bash
# The whole loop, measured (issue 14): search ARC-Easy train under the paper's settings and under
# the margin rule with a budget-spending tree search, train routers from each (best-path and soft
# targets), choose each checkpoint's budget knob on ARC-Easy dev, then evaluate on ARC-Easy test
# (first TEST_LIMIT) and ARC-Challenge test (first CHALLENGE_LIMIT, out of domain) against the
# static model, the static-pruned path (greedy pruning on ARC-Easy dev) and the search oracle.
# Nothing is chosen on a test split. Writes $OUT/quality.md (the table for BENCHMARKS.md).
#
#   bash bench/quality.sh [N=400] [OUT=runs/quality]
#
# Environment: TEST_LIMIT (1000), CHALLENGE_LIMIT (1172 = all), DEV_LIMIT (300), PRUNE_LIMIT (100),
# MIN_MARGIN (1.0),
# KNOBS (budget values tried on dev, default "-0.5 -0.6 -0.7"), MAX_LAYERS (27: the knob is the
# most accurate on dev among those at or under this many layer executions; the pure router when
# none is), VARIANTS (default "paper-best paper-soft new-best new-soft"), and PAPER_RECORDS /
# NEW_RECORDS to reuse records from earlier searches instead of searching; ORACLE_EASY and
# ORACLE_CHALLENGE: records of searches over the test questions themselves (e.g. `worker search
# --dataset arc_easy --split test --limit 200 --out …`) for the oracle row (questions they cover).
set -euo pipefail
N="${1:-400}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${2:-$ROOT/runs/quality}" && cd "${2:-$ROOT/runs/quality}" && pwd)"
TEST_LIMIT="${TEST_LIMIT:-1000}"
CHALLENGE_LIMIT="${CHALLENGE_LIMIT:-1172}"
DEV_LIMIT="${DEV_LIMIT:-300}"
# Greedy pruning costs ~L candidate paths per removed layer per question: keep its split small.
# Both test sets are scored against the path pruned on ARC-Easy dev (nothing chosen on ARC-Challenge).
PRUNE_LIMIT="${PRUNE_LIMIT:-100}"
KNOBS="${KNOBS:--0.5 -0.6 -0.7}"
MAX_LAYERS="${MAX_LAYERS:-27}"
VARIANTS="${VARIANTS:-paper-best paper-soft new-best new-soft}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
cd "$ROOT"
cargo build --release -q -p coordinator -p worker -p trainer -p evaluator
bash scripts/fetch-model.sh >&2
log() { echo "[quality $(date +%H:%M:%S)] $*" >&2; }

# 1. Searches (2 local workers each), unless records are given.
search() { # name, extra env for deploy/local/run.sh
  local name=$1; shift
  if [ ! -d "$OUT/search-$name/parquet" ]; then
    log "search $name: $N ARC-Easy train questions"
    env RUN_DIR="$OUT/search-$name" "$@" bash deploy/local/run.sh "$N" 2 > "$OUT/search-$name.json"
  fi
  echo "$OUT/search-$name/parquet"
}
PAPER_RECORDS="${PAPER_RECORDS:-$(search paper)}"
NEW_RECORDS="${NEW_RECORDS:-$(search new SUCCESS=margin MIN_MARGIN="${MIN_MARGIN:-1.0}" STOP=budget EXPANSION=tree)}"

# 2. Routers: <records>-<targets>.
for v in $VARIANTS; do
  records=$PAPER_RECORDS; [ "${v%%-*}" = new ] && records=$NEW_RECORDS
  if [ ! -f "$OUT/routers-$v/router_config.json" ]; then
    log "train $v"
    "$BIN/trainer" train --records "$records" --out "$OUT/routers-$v" --targets "${v#*-}" \
      > "$OUT/train-$v.json"
  fi
done

# 3. The budget knob of each checkpoint, on ARC-Easy dev only.
for v in $VARIANTS; do
  for p in $KNOBS; do
    d="$OUT/dev-$v-p$p"
    [ -f "$d/report.json" ] || "$BIN/evaluator" run --routers "$OUT/routers-$v" --dataset arc_easy \
      --split dev --limit "$DEV_LIMIT" --budget="$p" --out "$d" > /dev/null
  done
  python3 - "$OUT" "$v" "$MAX_LAYERS" $KNOBS > "$OUT/knob-$v" <<'PY'
import json, sys
out, v, max_layers, knobs = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
rows = [(p, json.load(open(f"{out}/dev-{v}-p{p}/report.json"))["overall"]) for p in knobs]
ok = [(o["routed_accuracy"], p) for p, o in rows if o["mean_path_len"] <= max_layers]
print(max(ok)[1] if ok else "-0.5")
PY
  log "knob $v: $(cat "$OUT/knob-$v") (dev)"
done

# 4. Test evaluations: static, static-pruned (ARC-Easy dev), routed, oracle.
for v in $VARIANTS; do
  p=$(cat "$OUT/knob-$v")
  for set in "arc_easy $TEST_LIMIT" "arc_challenge $CHALLENGE_LIMIT"; do
    read -r ds limit <<< "$set"
    oracle="${ORACLE_EASY:-}"; [ "$ds" = arc_challenge ] && oracle="${ORACLE_CHALLENGE:-}"
    d="$OUT/test-$v-$ds"
    [ -f "$d/report.json" ] || { log "evaluate $v on $ds test"; "$BIN/evaluator" run \
      --routers "$OUT/routers-$v" --dataset "$ds" --split test --limit "$limit" --budget="$p" \
      --prune-dataset arc_easy --prune-split dev --prune-limit "$PRUNE_LIMIT" \
      ${oracle:+--oracle "$oracle"} --out "$d" > /dev/null; }
  done
done

# 5. The table.
python3 "$ROOT/bench/quality_table.py" "$OUT" $VARIANTS > "$OUT/quality.md"
cat "$OUT/quality.md"
