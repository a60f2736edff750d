#!/usr/bin/env bash
# drllm against PyTorch + transformers at a real model size (a Llama-3.2-1B-shaped checkpoint with
# seeded random weights, scripts/make-shaped-model.py), in ONE run on this machine:
#
#   engine  `worker bench` in five modes: --dtype auto (the default: on a CPU with VNNI every
#           matrix held as q8_0 and computed by candle's batched int8 kernel), --dtype f32 (bf16
#           weights widened per matmul, plus the q8_0 decode copy), lean (--dtype f32
#           --decode-weights none: the bf16 weights only), --exact, and the same weights as a q8_0
#           GGUF; against bench/torch_engine_bench.py in bfloat16 and float32. Same prompt ids
#           (bench.rs `bench_ids`), prefill and decode
#           lengths, threads; the modes alternate ROUNDS times so that machine noise hits all alike.
#   search  `worker search` (choice-loglik, no early stop: every question spends exactly SIMS
#           simulations) against bench/torch_mcts.py on the same questions and settings.
#
# Every result is printed as `LABEL {json}` (the JSON gains `round` and, from /usr/bin/time -v,
# `time_max_rss_mib`), then a summary table with the drllm/torch ratios. Lines also go to
# $OUT/results.txt, logs next to them.
#
#   bash bench/engine_scale.sh                         # llama3 1b, THREADS=nproc, ROUNDS=2
#   SHAPED=/tmp/shaped/llama3-1b THREADS=2 ROUNDS=1 N=3 SIMS=10 bash bench/engine_scale.sh
#
# Environment: ARCH (llama3|qwen2|qwen3), SIZE (tiny|1b|8b), SHAPED (checkpoint folder; made when
# missing), THREADS, ROUNDS, PREFILL, DECODE, REPEATS, N (questions), SIMS (simulations per
# question), SEARCH_ROUNDS (default 1), PYTHON (with torch + transformers), OUT (default: a new
# temporary folder), BUILD=0 (skip `cargo build`), WORKER (the worker binary to use).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

ARCH="${ARCH:-llama3}"
SIZE="${SIZE:-1b}"
CACHE="${DRLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drllm}"
SHAPED="${SHAPED:-$CACHE/shaped/$ARCH-$SIZE-bf16}"
THREADS="${THREADS:-$(nproc)}"
ROUNDS="${ROUNDS:-2}"
SEARCH_ROUNDS="${SEARCH_ROUNDS:-1}"
PREFILL="${PREFILL:-128}"
DECODE="${DECODE:-64}"
REPEATS="${REPEATS:-3}"
N="${N:-5}"
SIMS="${SIMS:-20}"
PY="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/engine-scale.XXXXXX")}"
WORKER="${WORKER:-${CARGO_TARGET_DIR:-target}/release/worker}"
mkdir -p "$OUT"
RES="$OUT/results.txt"
: > "$RES"

"$PY" -c 'import torch, transformers, safetensors' 2>/dev/null || {
  echo "$PY lacks torch, transformers or safetensors (pip install torch transformers safetensors)" >&2
  exit 1
}
GGUF="$SHAPED/model-q8_0.gguf"
if [ ! -f "$SHAPED/config.json" ] || [ ! -f "$GGUF" ]; then
  echo "making the $ARCH-$SIZE-shaped bf16 checkpoint (and its q8_0 GGUF) in $SHAPED ..." >&2
  "$PY" scripts/make-shaped-model.py --arch "$ARCH" --size "$SIZE" --dtype bf16 --seed 0 \
    --out "$SHAPED" --gguf q8_0 >&2
fi
if [ "${BUILD:-1}" != 0 ]; then
  cargo build --release -q -p worker
fi
[ -x "$WORKER" ] || { echo "no worker binary at $WORKER" >&2; exit 1; }

TIME=()
if [ -x /usr/bin/time ] && /usr/bin/time -v true 2>/dev/null; then
  TIME=(/usr/bin/time -v -o "$OUT/time.txt")
else
  echo "note: no GNU time (Debian: apt-get install time); RSS from the programs' own peak_rss_mib" >&2
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || true)"
echo "# engine_scale: ${cpu:-unknown CPU}, $THREADS threads, $(date -u '+%F %T UTC'), commit $commit," \
  "model $SHAPED ($ARCH $SIZE bf16), prefill $PREFILL, decode $DECODE, repeats $REPEATS," \
  "search N=$N SIMS=$SIMS, rounds $ROUNDS" | tee -a "$RES"

# run LABEL ROUND CMD...: runs CMD (stdout's last line is its JSON), prints `LABEL {json}`.
run() {
  local label="$1" round="$2"
  shift 2
  local log="$OUT/$label.r$round"
  rm -f "$OUT/time.txt"
  if ! "${TIME[@]}" "$@" > "$log.out" 2> "$log.err"; then
    echo "FAILED: $label (round $round): $*" >&2
    tail -20 "$log.err" >&2
    exit 1
  fi
  local line
  line="$("$PY" - "$log.out" "$OUT/time.txt" "$round" <<'PY'
import json, os, re, sys
out, timef, rnd = sys.argv[1:]
last = [l for l in open(out).read().splitlines() if l.strip().startswith("{")][-1]
v = json.loads(last)
v["round"] = int(rnd)
if os.path.exists(timef):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(timef).read())
    if m:
        v["time_max_rss_mib"] = int(m.group(1)) / 1024
print(json.dumps(v))
PY
)"
  echo "$label $line" | tee -a "$RES"
}

export RAYON_NUM_THREADS="$THREADS"
B=(bench --prefill "$PREFILL" --decode "$DECODE" --repeats "$REPEATS")
T=(bench/torch_engine_bench.py --model "$SHAPED" --threads "$THREADS" --prefill "$PREFILL"
   --decode "$DECODE" --repeats "$REPEATS")
for round in $(seq "$ROUNDS"); do
  run drllm-auto "$round" "$WORKER" "${B[@]}" --model "$SHAPED" --dtype auto
  run drllm-f32 "$round" "$WORKER" "${B[@]}" --model "$SHAPED" --dtype f32
  run drllm-lean "$round" "$WORKER" "${B[@]}" --model "$SHAPED" --dtype f32 --decode-weights none
  run drllm-exact "$round" "$WORKER" "${B[@]}" --model "$SHAPED" --exact
  run drllm-q8_0-gguf "$round" "$WORKER" "${B[@]}" --model "$GGUF"
  run torch-bf16 "$round" "$PY" "${T[@]}" --dtype bfloat16
  run torch-f32 "$round" "$PY" "${T[@]}" --dtype float32
done

# The search: the same N ARC-Easy train questions, SIMS simulations each, no early stop on either
# side (`--stop budget` switches off the MCTS stops, `--no-early-stop` the generate-mode ones).
for round in $(seq "$SEARCH_ROUNDS"); do
  rm -rf "$OUT/search-parquet"
  run drllm-search "$round" "$WORKER" search --model "$SHAPED" --dataset arc_easy --split train \
    --limit "$N" --num-simulations "$SIMS" --reward choice-loglik --seed 0 --stop budget \
    --no-early-stop --out "$OUT/search-parquet"
  run torch-search "$round" "$PY" bench/torch_mcts.py --model "$SHAPED" --dtype bfloat16 \
    --threads "$THREADS" --dataset arc_easy --split train --limit "$N" --num-simulations "$SIMS" \
    --seed 0 --no-early-stop
done

"$PY" - "$RES" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    label, js = line.split(" ", 1)
    runs.setdefault(label, []).append(json.loads(js))

def rss(v):
    return v.get("time_max_rss_mib") or v.get("peak_rss_mib")

def best(label, key, pick):
    vals = [key(v) if callable(key) else v.get(key) for v in runs.get(label, [])]
    vals = [x for x in vals if x is not None]
    return pick(vals) if vals else None

def fmt(x, w=10, p=1):
    return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"

engine = [l for l in runs if not l.endswith("-search")]
stats = {l: {"rss": best(l, rss, max), "load": best(l, "load_s", min),
             "prefill": best(l, "prefill_tok_s", max), "decode": best(l, "decode_tok_s", max)}
         for l in engine}
print(f"\nengine (best of {max(len(v) for v in runs.values())} rounds; RSS the largest): "
      "peak RSS MiB, load s, prefill tok/s, decode tok/s")
print(f"{'':16}{'rss_mib':>10}{'load_s':>10}{'prefill':>10}{'decode':>10}")
for l in engine:
    s = stats[l]
    print(f"{l:16}{fmt(s['rss'], p=0)}{fmt(s['load'], p=2)}{fmt(s['prefill'])}{fmt(s['decode'], p=2)}")

def ratio(a, b):
    return a / b if a is not None and b else None

for ref in ("torch-bf16", "torch-f32"):
    if ref not in stats:
        continue
    print(f"\ndrllm / {ref} (RSS and load: lower is better; prefill and decode: higher is better)")
    print(f"{'':16}{'rss':>10}{'load':>10}{'prefill':>10}{'decode':>10}")
    for l in engine:
        if l.startswith("drllm"):
            r = {k: ratio(stats[l][k], stats[ref][k]) for k in stats[l]}
            print(f"{l:16}{fmt(r['rss'], p=2)}{fmt(r['load'], p=2)}{fmt(r['prefill'], p=2)}{fmt(r['decode'], p=2)}")

def search(label):
    vs = runs.get(label)
    if not vs:
        return None
    out = []
    for v in vs:
        secs = v.get("search_seconds", v.get("seconds"))  # drllm: search_seconds; torch: seconds
        out.append({"sims": v["simulations"], "paths": v["distinct_paths"],
                    "sims_s": v["simulations"] / secs if secs else None,
                    "paths_s": v["distinct_paths"] / secs if secs else None,
                    "sims_s_incl_load": v["simulations"] / v["seconds_incl_load"], "rss": rss(v)})
    b = max(out, key=lambda o: o["sims_s"] or 0)
    b["rss"] = max(o["rss"] or 0 for o in out) or None
    return b

d, t = search("drllm-search"), search("torch-search")
if d and t:
    print("\nsearch: simulations (and distinct paths judged) per second of search; incl. load: over the "
          "whole process")
    print(f"{'':16}{'sims':>8}{'paths':>8}{'sims/s':>10}{'paths/s':>10}{'incl_load':>10}{'rss_mib':>10}")
    for l, s in (("drllm-search", d), ("torch-search", t)):
        print(f"{l:16}{s['sims']:>8}{s['paths']:>8}{fmt(s['sims_s'], p=2)}{fmt(s['paths_s'], p=2)}"
              f"{fmt(s['sims_s_incl_load'], p=2)}{fmt(s['rss'], p=0)}")
    r = {k: ratio(d[k], t[k]) for k in ("sims_s", "paths_s", "sims_s_incl_load", "rss")}
    print(f"{'drllm / torch':16}{'':>16}{fmt(r['sims_s'], p=2)}{fmt(r['paths_s'], p=2)}"
          f"{fmt(r['sims_s_incl_load'], p=2)}{fmt(r['rss'], p=2)}")
    if d["sims"] != t["sims"]:
        print(f"WARNING: the searches ran different numbers of simulations ({d['sims']} vs {t['sims']})")
PY
echo "results and logs: $OUT" >&2
