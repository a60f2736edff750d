#!/usr/bin/env python3
"""The table of bench/quality.sh (issue 25): per test set, the static model, the static-pruned
paths of the greedy curve, Dr.LLM's routers pure and certified, the agree routers certified and
the path menu certified, with 95% Wilson intervals on accuracies, 95% paired bootstrap intervals
(10,000 resamples of the questions) on differences against static and against the static-pruned
path of the same length, layer executions, realized speedup and whether each certificate held.

Reads OUT/test-<system>-<dataset>/{report.json,examples.jsonl} (`evaluator run`),
OUT/pruned-<len>-<dataset>.jsonl (`evaluator baseline --records`), OUT/prune/prune.json and the
checkpoints' certificate.json.

    python3 bench/quality_table.py OUT
    python3 bench/quality_table.py --saves CERTIFICATE   # exit 0 when it saves a layer
"""
import json
import math
import os
import sys

import numpy as np

SETS = [("arc_easy", "ARC-Easy test"), ("arc_challenge", "ARC-Challenge test (out of domain)")]
CHECKPOINTS = [
    ("paper", "routers-paper", "Dr.LLM routers, paper labels, certified"),
    ("agree", "routers-agree", "routers on agree labels, certified"),
    ("menu", "menu", "path menu, certified"),
]


def wilson(k, n, z=1.959964):
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (mid - half, mid + half)


def paired(a, b, resamples=10_000, seed=0x5EED):
    """Mean of a − b (accuracy points) with a 95% percentile bootstrap interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    idx = np.random.default_rng(seed).integers(0, len(d), (resamples, len(d)))
    means = d[idx].mean(axis=1)
    return d.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


def fmt_diff(t):
    if t is None:
        return "–"
    m, lo, hi = (100 * x for x in t)
    return f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def fmt_acc(v):
    lo, hi = wilson(sum(v), len(v))
    return f"{100 * sum(v) / len(v):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def saves(cert):
    """Whether a certificate's chosen point runs fewer layers than its first (static) point, as
    `evaluator calibrate` says "no certified point saves a layer" otherwise."""
    if cert["chosen"] is None:
        return False
    return cert["points"][cert["chosen"]]["mean_layers"] < cert["points"][0]["mean_layers"]


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load(out, ds):
    """ids, static outcomes, routed systems {name: (outcomes, report, examples)}, pruned paths."""
    runs = {}
    for name in os.listdir(out):
        if name.startswith("test-") and name.endswith("-" + ds):
            system = name[len("test-"):-len(ds) - 1]
            d = os.path.join(out, name)
            if os.path.exists(os.path.join(d, "report.json")):
                runs[system] = (json.load(open(os.path.join(d, "report.json"))),
                                jsonl(os.path.join(d, "examples.jsonl")))
    if "paper-pure" not in runs:
        return None
    ids = [e["id"] for e in runs["paper-pure"][1]]
    static = [e["static_correct"] for e in runs["paper-pure"][1]]
    pruned = {}
    for name in os.listdir(out):
        if name.startswith("pruned-") and name.endswith(f"-{ds}.jsonl"):
            by = {r["id"]: r["correct"] for r in jsonl(os.path.join(out, name))}
            if all(i in by for i in ids):
                pruned[int(name.split("-")[1])] = [by[i] for i in ids]
    return ids, static, runs, pruned


def row(name, outcomes, static, pruned, layers, speed, held):
    near = pruned.get(round(layers))
    vs_pruned = paired(outcomes, near) if near is not None and round(layers) < 30 else None
    vs_static = paired(outcomes, static) if outcomes is not static else None
    return (f"| {name} | {fmt_acc(outcomes)} | {fmt_diff(vs_static)} | {fmt_diff(vs_pruned)} "
            f"| {layers:.2f} | {speed} | {held} |")


def held_text(report):
    h = report.get("certificate")
    if not h:
        return "–"
    verdict = "yes" if h["held"] else "**no**"
    return f"{verdict}: {h['risk']} {100 * h['evaluated_risk']:.1f} points (δ = {100 * h['delta']:g})"


def table(out, ds, title):
    loaded = load(out, ds)
    if loaded is None:
        return
    ids, static, runs, pruned = loaded
    n = len(ids)
    curve = json.load(open(os.path.join(out, "prune", "prune.json")))
    print(f"### {title}, n = {n}\n")
    print("| system | accuracy % [95% CI] | − static, points [95% paired CI] "
          "| − static-pruned (same length), points [95% paired CI] | layer executions "
          "| realized speedup | certificate held on test |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(row("static (all 30 layers)", static, static, pruned, 30.0, "1.00×", "–"))
    for p in curve["curve"][1:]:
        if p["len"] in pruned:
            removed = ",".join(str(q["removed_layer"]) for q in curve["curve"][1:]
                               if q["len"] >= p["len"])
            print(row(f"static-pruned to {p['len']} (greedy on {curve['examples']} train "
                      f"questions; removed {removed})", pruned[p["len"]], static, {}, p["len"],
                      "–", "–"))
    report, ex = runs["paper-pure"]
    print(row("Dr.LLM routers, paper labels, pure (budget −0.5, not certified)",
              [e["routed_correct"] for e in ex], static, pruned,
              report["overall"]["mean_path_len"], f"{report['overall']['realized_speedup']:.2f}×",
              "–"))
    for key, folder, name in CHECKPOINTS:
        cert_file = os.path.join(out, folder, "certificate.json")
        if not os.path.exists(cert_file):
            continue
        cert = json.load(open(cert_file))
        if not saves(cert):
            print(row(f"{name}: keeps no routed point → the static model", static, static,
                      pruned, 30.0, "1.00×", "yes (drop 0.0 points)"))
            continue
        report, ex = runs.get(f"{key}-certified", (None, None))
        if report is None:
            continue
        knob = cert["points"][cert["chosen"]]["budget"]
        print(row(f"{name} (knob {knob})", [e["routed_correct"] for e in ex], static, pruned,
                  report["overall"]["mean_path_len"],
                  f"{report['overall']['realized_speedup']:.2f}×", held_text(report)))
    print()


def main():
    if sys.argv[1] == "--saves":  # exit status 0 when the certificate saves a layer
        sys.exit(0 if saves(json.load(open(sys.argv[2]))) else 1)
    out = sys.argv[1]
    for ds, title in SETS:
        table(out, ds, title)


if __name__ == "__main__":
    main()
