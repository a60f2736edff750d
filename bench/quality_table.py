#!/usr/bin/env python3
"""The table of bench/quality.sh: reads OUT/test-<variant>-<dataset>/report.json (written by
`evaluator run --prune-split …`), OUT/knob-<variant> and OUT/train-<variant>.json, and prints
Markdown: per test set, static, static-pruned and each variant's routed accuracy with 95%
intervals, paired differences, layer executions and realized speedup.

    python3 bench/quality_table.py OUT VARIANT [VARIANT …]
"""
import json
import os
import sys

SETS = [("arc_easy", "ARC-Easy test"), ("arc_challenge", "ARC-Challenge test (out of domain)")]


def pct(x):
    return f"{100 * x:.1f}"


def interval(ci):
    return f"[{pct(ci[0])}, {pct(ci[1])}]"


def diff(d):
    if d is None:
        return "–"
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def main():
    out, variants = sys.argv[1], sys.argv[2:]
    for ds, title in SETS:
        reports = {}
        for v in variants:
            f = os.path.join(out, f"test-{v}-{ds}", "report.json")
            if os.path.exists(f):
                reports[v] = json.load(open(f))
        if not reports:
            continue
        first = next(iter(reports.values()))["overall"]
        n, layers = first["examples"], first["num_layers"]
        print(f"### {title}, n = {n}\n")
        print("| system | accuracy % [95% CI] | − static, points [95% paired CI] "
              "| − static-pruned, points [95% CI] | layer executions | realized speedup |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| static (all {layers} layers) | {pct(first['static_accuracy'])} "
              f"{interval(first['static_accuracy_ci'])} | – | – | {layers} | 1.00× |")
        pruned_seen = set()
        for v, r in reports.items():
            sp, o = r.get("static_pruned"), r["overall"]
            if sp and sp["len"] not in pruned_seen:
                pruned_seen.add(sp["len"])
                removed = ",".join(str(x) for x in sp["removed_layers"]) or "none"
                on = f"{sp.get('chosen_on_dataset', ds)} {sp['chosen_on_split']}"
                print(f"| static-pruned to {sp['len']} (greedy on {on}, "
                      f"removed {removed}) | {pct(o['static_pruned_accuracy'])} "
                      f"{interval(o['static_pruned_accuracy_ci'])} | "
                      f"{100 * (o['static_pruned_accuracy'] - o['static_accuracy']):+.1f} | – | "
                      f"{sp['len']} | – |")
        for v, r in reports.items():
            o = r["overall"]
            knob = open(os.path.join(out, f"knob-{v}")).read().strip()
            records, targets = v.split("-", 1)
            print(f"| routed: {records} records, {targets} targets, p = {knob} | "
                  f"{pct(o['routed_accuracy'])} {interval(o['routed_accuracy_ci'])} | "
                  f"{diff(o['routed_minus_static'])} | {diff(o.get('routed_minus_static_pruned'))} | "
                  f"{o['mean_path_len']:.2f} | {o['realized_speedup']:.2f}× |")
        oracle = [r["overall"] for r in reports.values() if r["overall"].get("oracle_accuracy")]
        if oracle:
            o = oracle[0]
            print(f"| oracle (search found a good path; {o['oracle_examples']} questions) | "
                  f"{pct(o['oracle_accuracy'])} | – | – | – | – |")
        print()


if __name__ == "__main__":
    main()
