#!/usr/bin/env bash
# The coordinator on a real full filesystem: its output folder on a 1 MiB tmpfs filled to the
# brim, 10 load-generator clients offering 400 records/s of one ARC-Easy train job (2,251
# examples). Prints when the ENOSPC shows in `coordinator status`, the ERROR log line, /readyz
# and the drllm_failing gauge; frees the space after 5 s; then the load generator's line, the
# final status, the recovery log lines and a pyarrow count of the parts (every example exactly
# once). Needs root (mount).
#
#   sudo bash bench/full_disk.sh
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
cd "$ROOT"
cargo build --release -q -p coordinator -p drllm-tests --bin coordinator --bin loadgen || exit 1
W=$(mktemp -d); M=$W/mnt
mkdir -p "$M" && mount -t tmpfs -o size=1m tmpfs "$M" || { echo "cannot mount a tmpfs (root needed)" >&2; exit 1; }
C=""
trap '[ -n "$C" ] && kill $C 2>/dev/null; wait $C 2>/dev/null; umount "$M"; rm -rf "$W"' EXIT
{ echo "output_dir = \"$M/out\""; echo "shard_size = 8"; echo "part_size = 500"; echo "flush_secs = 0.5"
  printf '[[datasets]]\nname = "arc_easy"\nsplit = "train"\n'; } > "$W/job.toml"
mkdir -p "$M/out"
PORT=$((20000 + RANDOM % 20000)); HP=$((PORT + 1)); URL="http://127.0.0.1:$PORT"
"$BIN/coordinator" serve --job "$W/job.toml" --state "$W/state" --listen "127.0.0.1:$PORT" \
  --metrics-listen "127.0.0.1:$HP" 2> "$W/c.log" &
C=$!
sleep 1
dd if=/dev/zero of="$M/filler" bs=4k 2>/dev/null; df -k "$M" | tail -1
T0=$(date +%s.%N)
since() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$(date +%s.%N)" "$T0"; }
"$BIN/loadgen" --url "$URL" --clients 10 --rate 400 > "$W/lg.out" 2>&1 &
LG=$!
for _ in $(seq 1 20); do
  sleep 1
  S=$("$BIN/coordinator" status --coordinator "$URL" 2>&1 | grep -m1 PROBLEM)
  if [ -n "$S" ]; then echo "t+$(since)s status: $S"; break; fi
done
echo "log: $(grep -m1 ERROR "$W/c.log" | cut -c1-300)"
echo "readyz: $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HP/readyz") $(curl -s "http://127.0.0.1:$HP/readyz" | head -c 200)"
echo "metrics: $(curl -s "http://127.0.0.1:$HP/metrics" | grep '^drllm_failing')"
sleep 5; rm "$M/filler"; echo "freed the space at t+$(since)s"
wait $LG; cat "$W/lg.out"
"$BIN/coordinator" status --coordinator "$URL" 2>&1 | head -2
grep -m3 "recovered\|committed part" "$W/c.log" | cut -c1-200
python3 - "$M/out" <<'PY'
import collections, glob, sys
import pyarrow.parquet as pq
files = sorted(glob.glob(sys.argv[1] + "/*.parquet"))
ids = [i for f in files for i in pq.read_table(f, columns=["example_id"]).column("example_id").to_pylist()]
c = collections.Counter(ids)
print(f"parts {len(files)}, records {len(ids)}, distinct {len(c)}, duplicated {sum(v > 1 for v in c.values())}")
PY
