#!/usr/bin/env python3
"""Checks drllm search records (Parquet) with pyarrow: schema, metadata and row invariants.

    python3 scripts/check_records.py FILE.parquet [--expect-rows N] [--expect-simulations N]

Exits non-zero with the first violated rule. Used by the test suite (worker/tests/records.rs) so
that the files are known to read in the Python ecosystem, not only in Rust.
"""
import argparse
import json
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq

# The expected columns come from README's "Search records" table, which a Rust test keeps equal to
# the column table the writer uses (drllm_contract::record::COLUMNS): one description, no copy.
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
TYPES = {
    "string": pa.string(), "string, nullable": pa.string(), "bool": pa.bool_(),
    "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float64": pa.float64(), "float64, nullable": pa.float64(),
    "list<uint16>": pa.list_(pa.uint16()), "list<uint8>": pa.list_(pa.uint8()),
    "list<float64>": pa.list_(pa.float64()), "list<list<uint16>>": pa.list_(pa.list_(pa.uint16())),
    "timestamp[ms, UTC]": pa.timestamp("ms", tz="UTC"),
}


def readme_columns():
    text = README.read_text()
    rows = text[text.index("### Search records"):].splitlines()
    start = next(i for i, l in enumerate(rows) if l.startswith("| column"))
    out = {}
    for line in rows[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.split("|")]
        for name in cells[1].split(","):
            out[name.strip().strip("`")] = TYPES[cells[2]]
    return out


COLUMNS = readme_columns()


def fail(msg):
    print(f"check_records: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--expect-rows", type=int)
    ap.add_argument("--expect-simulations", type=int)
    a = ap.parse_args()
    table = pq.read_table(a.file)
    meta = pq.read_metadata(a.file).metadata
    if meta.get(b"drllm.schema_version") != b"3":
        fail(f"schema version {meta.get(b'drllm.schema_version')!r}")
    cfg = json.loads(meta[b"drllm.search_config"])
    run = json.loads(meta[b"drllm.run_settings"])
    if run["search"] != cfg:
        fail(f"run_settings {run} disagree with search_config {cfg}")
    if a.expect_simulations is not None and cfg["num_simulations"] != a.expect_simulations:
        fail(f"search_config {cfg}")
    for name, typ in COLUMNS.items():
        if name not in table.column_names:
            fail(f"missing column {name}")
        if not table.schema.field(name).type.equals(typ):
            fail(f"column {name} has type {table.schema.field(name).type}, expected {typ}")
    if a.expect_rows is not None and table.num_rows != a.expect_rows:
        fail(f"{table.num_rows} rows, expected {a.expect_rows}")
    ids = table.column("example_id").to_pylist()
    if len(set(ids)) != len(ids):
        fail("duplicate example ids")
    for r in table.to_pylist():
        L = r["num_layers"]
        if len(r["best_decisions"]) != L or any(d not in (0, 1, 2) for d in r["best_decisions"]):
            fail(f"{r['example_id']}: best_decisions {r['best_decisions']}")
        if r["best_path_len"] != len(r["best_path"]) or sum(r["best_decisions"]) != len(r["best_path"]):
            fail(f"{r['example_id']}: path length disagrees with decisions")
        if r["best_path"] != sorted(r["best_path"]) or any(l >= L for l in r["best_path"]):
            fail(f"{r['example_id']}: invalid best path {r['best_path']}")
        if r["found"] != bool(r["good_paths"]) or (r["found"] and r["best_path"] not in r["good_paths"]):
            fail(f"{r['example_id']}: found/good_paths/best_path disagree")
        if r["good_margins"] and len(r["good_margins"]) != len(r["good_paths"]):
            fail(f"{r['example_id']}: good_margins not aligned with good_paths")
        if r["reward_mode"] == "choice-loglik" and r["original_margin"] is None:
            fail(f"{r['example_id']}: choice-loglik record without original_margin")
        if r["original_margin"] is not None and (r["original_margin"] > 0) != r["original_correct"]:
            fail(f"{r['example_id']}: original_margin {r['original_margin']} disagrees with original_correct")
        if r["distinct_layers"] != sum(1 for d in r["best_decisions"] if d > 0):
            fail(f"{r['example_id']}: distinct_layers")
        if not (1 <= r["simulations"] <= cfg["num_simulations"]) or len(r["model_fingerprint"]) != 32:
            fail(f"{r['example_id']}: simulations or fingerprint")
        if json.loads(r["search_config"]) != cfg:
            fail(f"{r['example_id']}: row config differs from file config")
        reward = run["reward"]
        row = {"mode": r["reward_mode"], "style": r["prompt_style"], "early_stop": r["early_stop"],
               "length_normalized": r["length_normalized"]}
        if row != reward or row["style"] not in ("instruct", "base"):
            fail(f"{r['example_id']}: row reward settings {row} vs file {reward}")
    print(f"ok: {table.num_rows} rows, {len(COLUMNS)} columns")


if __name__ == "__main__":
    main()
