#!/usr/bin/env python3
"""The table and plot of bench/tokens.sh (issue 37): per test set, the static model, the
static-pruned paths, each token router pure (τ = 0.5) and certified, the random control, with
95% Wilson intervals, 95% paired bootstrap intervals against static and against the
static-pruned path nearest in compute, token-layers executed and saved, realized speedup and
whether each certificate held; then the dev Pareto points, where compute goes (token-usage) and
the realized prefill speedup of token routes (worker bench-tokens). Writes OUT/pareto.svg.

    python3 bench/tokens_table.py OUT 90 80 70 60
    python3 bench/tokens_table.py --best OUT 90 80 70 60   # "target skip" of the best certified
    python3 bench/tokens_table.py --chosen OUT 80          # "static" or "routed": its certificate
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality_table import fmt_acc, fmt_diff, held_text, jsonl, paired  # noqa: E402

LAYERS, KEEP_FIRST = 30, 4
SETS = [("arc_easy", "ARC-Easy test"), ("arc_challenge", "ARC-Challenge test (out of domain)")]


def run_dir(out, name, ds):
    d = os.path.join(out, f"test-{name}-{ds}")
    if not os.path.exists(os.path.join(d, "report.json")):
        return None
    return json.load(open(os.path.join(d, "report.json"))), jsonl(os.path.join(d, "examples.jsonl"))


def cert(out, t):
    f = os.path.join(out, f"t{t}", "certificate.json")
    return json.load(open(f)) if os.path.exists(f) else None


def chosen(c):
    """(knob, mean layers) of a certificate's chosen point, or None for the static model."""
    if c is None or c["chosen"] is None:
        return None
    p = c["points"][c["chosen"]]
    return (p["budget"], p["mean_layers"]) if p["mean_layers"] < LAYERS - 1e-9 else None


def best(out, targets):
    """The certified router with the fewest mean layers on dev, and the share of routed
    token-layers it skips there (the random control's probability)."""
    points = [(chosen(cert(out, t)), t) for t in targets]
    points = [(p[1], t) for p, t in points if p is not None]
    if not points:
        # Nothing certified: the control matches the pure router that skips the most on dev.
        points = [(json.load(open(os.path.join(out, f"dev-t{t}", "report.json")))["overall"][
            "mean_path_len"], t) for t in targets]
    mean, t = min(points)
    return t, (LAYERS - mean) / (LAYERS - KEEP_FIRST)


def row(name, outcomes, static, pruned, layers, speed, certificate):
    near = pruned.get(round(layers)) if round(layers) < LAYERS else None
    vs_pruned = paired(outcomes, near) if near is not None else None
    vs_static = paired(outcomes, static) if outcomes is not static else None
    saved = 100 * (1 - layers / LAYERS)
    return (f"| {name} | {fmt_acc(outcomes)} | {fmt_diff(vs_static)} | {fmt_diff(vs_pruned)} "
            f"| {layers:.2f} | {saved:.1f}% | {speed} | {certificate} |")


def table(out, ds, title, targets, points):
    first = next((r for t in targets for r in [run_dir(out, f"t{t}-certified", ds)] if r), None)
    if first is None:
        return
    ids = [e["id"] for e in first[1]]
    static = [e["static_correct"] for e in first[1]]
    pruned = {}
    for length in (29, 28, 27):
        f = os.path.join(out, f"pruned-{length}-{ds}.jsonl")
        if os.path.exists(f):
            by = {r["id"]: r["correct"] for r in jsonl(f)}
            if all(i in by for i in ids):
                pruned[length] = [by[i] for i in ids]
    print(f"### {title}, n = {len(ids)}\n")
    print("| system | accuracy % [95% CI] | − static, points [95% paired CI] | − static-pruned "
          "(nearest compute), points [95% paired CI] | layers run per token | token-layers "
          "saved | realized speedup | certificate held on test |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(row("static (all 30 layers)", static, static, pruned, 30.0, "1.00×", "–"))
    removed = {29: "19", 28: "19,18", 27: "19,18,20"}
    for length, outcomes in sorted(pruned.items(), reverse=True):
        print(row(f"static-pruned to {length} (issue 25's greedy curve; removed "
                  f"{removed[length]})", outcomes, static, {}, length, "–", "–"))
    systems = [(f"token router, target {t / 100:.1f}, pure (τ = 0.5)", f"t{t}-pure", t)
               for t in targets]
    systems += [(f"token router, target {t / 100:.1f}, certified", f"t{t}-certified", t)
                for t in targets]
    systems.append(("random token mask at the best router's share of skips", "control", None))
    to_static = [t for t in targets if chosen(cert(out, t)) is None]
    for name, key, t in systems:
        r = run_dir(out, key, ds)
        if r is None or (key.endswith("certified") and t in to_static[1:]):
            continue
        report, ex = r
        by = {e["id"]: e for e in ex}
        outcomes = [by[i]["routed_correct"] for i in ids]
        o = report["overall"]
        if key.endswith("certified"):
            c = chosen(cert(out, t))
            if c is None:
                name = (f"token router, target{'s' if len(to_static) > 1 else ''} "
                        f"{', '.join(f'{x / 100:.1f}' for x in to_static)}, certified → no "
                        "routed point: the static model")
            else:
                name += f" (τ = {c[0]})"
        print(row(name, outcomes, static, pruned, o["mean_path_len"],
                  f"{o['realized_speedup']:.2f}×", held_text(report)))
        points.append((ds, name, o["mean_path_len"], sum(outcomes) / len(outcomes)))
    print()


def dev_points(out, targets):
    print("### Dev (ARC-Easy dev, where targets are compared), trained point τ = 0.5\n")
    print("| target | questions | static % | routed % | layers run per token | certified point "
          "on dev (τ, layers) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for t in targets:
        f = os.path.join(out, f"dev-t{t}", "report.json")
        if not os.path.exists(f):
            continue
        o = json.load(open(f))["overall"]
        c = chosen(cert(out, t))
        cs = f"{c[0]}, {c[1]:.2f}" if c else "none (static)"
        print(f"| {t / 100:.1f} | {o['examples']} | {100 * o['static_accuracy']:.1f} "
              f"| {100 * o['routed_accuracy']:.1f} | {o['mean_path_len']:.2f} | {cs} |")
    print()


def usage(out):
    f = os.path.join(out, "usage", "usage.md")
    if os.path.exists(f):
        print("### Where compute goes (`evaluator token-usage`, the best router at the knob "
              "below)\n")
        print(open(f).read())


def speed(out):
    f = os.path.join(out, "bench-tokens.jsonl")
    if not os.path.exists(f):
        return
    print("### Realized prefill speedup of token routes (`worker bench-tokens`, random masks)\n")
    print("| skipped | keys of skipped tokens | structural | realized | realized / structural |")
    print("| --- | --- | --- | --- | --- |")
    for d in jsonl(f):
        print(f"| {100 * d['skipped_share']:.1f}% | {d['skipped_kv']} | "
              f"{d['structural_speedup']:.3f}× | {d['realized_speedup']:.3f}× | "
              f"{d['realized_over_structural']:.3f} |")
    print()


def plot(out, points):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: pareto.svg not drawn)", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(SETS), figsize=(11, 4.2))
    for ax, (ds, title) in zip(axes, SETS):
        for _, name, layers, acc in [p for p in points if p[0] == ds]:
            marker = "s" if "certified" in name else ("x" if "random" in name else "o")
            ax.scatter(layers, 100 * acc, marker=marker)
            ax.annotate(name.replace("token router, ", "").split(" (")[0], (layers, 100 * acc),
                        fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layers run per token (of 30)")
        ax.set_ylabel("accuracy %")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "pareto.svg"))


def main():
    args = sys.argv[1:]
    if args and args[0] == "--chosen":
        print("routed" if chosen(cert(args[1], int(args[2]))) else "static")
        return
    if args and args[0] == "--best":
        t, skip = best(args[1], [int(x) for x in args[2:]])
        print(t, f"{skip:.4f}")
        return
    out, targets = args[0], [int(x) for x in args[1:]]
    points = []
    for ds, title in SETS:
        table(out, ds, title, targets, points)
    dev_points(out, targets)
    usage(out)
    speed(out)
    plot(out, points)


if __name__ == "__main__":
    main()
