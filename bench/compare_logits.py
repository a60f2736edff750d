#!/usr/bin/env python3
"""Compares drllm's last-position logits (`worker logits` JSON) with transformers' along the same
layer path (scripts/torch_path_logits.py JSON), as one JSON line.

  worker logits --model DIR --prompt-file p.txt --path 0,1,1,3 --top 128256 > drllm.json
  python3 scripts/torch_path_logits.py --model DIR --ids <drllm.json's ids> --path 0,1,1,3 > torch.json
  python3 bench/compare_logits.py --drllm drllm.json --torch torch.json

Reports whether both ran the same token ids and path, the top-K ids of each (K = --k, default 10),
whether the argmax and the top-K (as a set, and in order) agree, and the largest |logit difference|:
over the whole vocabulary when drllm printed every logit (`worker logits --top <vocab>`), else over
the ids drllm printed. `max_abs_logit` (transformers') gives the scale. Exit status 0 whenever both
files could be read; judge the numbers.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drllm", required=True, help="`worker logits` output (JSON)")
    ap.add_argument("--torch", required=True, help="scripts/torch_path_logits.py output (JSON)")
    ap.add_argument("--k", type=int, default=10, help="top-K compared (default 10)")
    a = ap.parse_args()

    d = json.loads(open(a.drllm).read().strip().splitlines()[-1])
    t = json.load(open(a.torch))
    path = [int(i) for i in d["path"]]
    entries = t["paths"]
    entry = next((e for e in entries if [int(i) for i in e["path"]] == path), None)
    same_path = entry is not None
    if entry is None:
        entry = entries[0]
    ref = entry["logits"]
    vocab = len(ref)
    ours = {int(i): float(v) for i, v in d["top"]}  # drllm: [[id, logit], ...], largest first
    k = min(a.k, vocab, len(d["top"]))
    top_t = sorted(range(vocab), key=lambda i: (-ref[i], i))[:k]
    top_d = [int(i) for i, _ in d["top"][:k]]
    diffs = [abs(v - ref[i]) for i, v in ours.items()]
    worst = max(ours, key=lambda i: abs(ours[i] - ref[i]))
    out = {
        "ids_equal": [int(i) for i in d["ids"]] == [int(i) for i in t["ids"]],
        "tokens": len(d["ids"]),
        "path_equal": same_path,
        "path_len": len(path),
        "k": k,
        "top1_equal": top_d[:1] == top_t[:1],
        "topk_same_order": top_d == top_t,
        "topk_overlap": len(set(top_d) & set(top_t)),
        "max_abs_diff": max(diffs),
        "max_abs_diff_at": worst,
        "diff_over": "vocab" if len(ours) >= vocab else f"drllm top {len(ours)}",
        "max_abs_diff_topk": max(abs(ours[i] - ref[i]) for i in top_d),
        "max_abs_logit": max(abs(x) for x in ref),
        "drllm_top": top_d,
        "torch_top": top_t,
        "torch_dtype": t.get("dtype"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
