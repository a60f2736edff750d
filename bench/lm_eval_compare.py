"""Question-by-question comparison of lm-eval's ARC-Easy samples (bench/lm_eval.sh, --log_samples)
with `evaluator baseline --records` on the same questions: the choice log-likelihoods, acc and
acc_norm on both sides, and every question where a verdict differs with the numbers behind it.

    python3 bench/lm_eval_compare.py SAMPLES.jsonl BASELINE_RECORDS.jsonl

lm-eval's acc_norm divides a choice's log-likelihood by the length of the choice text in
characters (no leading space); `evaluator baseline`'s divides by the UTF-8 bytes of the
continuation it scores (" " + the choice). The two can pick different choices when scores are
close; such questions are listed with both normalized scores.
"""
import json
import sys


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: lm_eval_compare.py SAMPLES.jsonl BASELINE_RECORDS.jsonl (one file each)")
    samples = {s["doc"]["id"]: s for s in lines(sys.argv[1])}
    ours = {r["id"].split("/", 1)[1]: r for r in lines(sys.argv[2])}
    common = [i for i in samples if i in ours]
    diff_acc, diff_norm, max_ll = [], [], 0.0
    totals = {"lm_eval_acc": 0, "lm_eval_acc_norm": 0, "ours_acc": 0, "ours_acc_norm": 0}
    for qid in common:
        s, r = samples[qid], ours[qid]
        lls = [float(x[0]) for x in s["filtered_resps"]]
        choices = s["doc"]["choices"]["text"]
        gold = int(s["target"])
        max_ll = max(max_ll, max(abs(a - b) for a, b in zip(lls, r["choice_logprobs"])))
        ours_acc = int(r["pick"] == gold)
        ours_norm = int(r["pick_norm"] == gold)
        totals["lm_eval_acc"] += int(s["acc"])
        totals["lm_eval_acc_norm"] += int(s["acc_norm"])
        totals["ours_acc"] += ours_acc
        totals["ours_acc_norm"] += ours_norm
        detail = {
            "id": qid, "gold": gold, "lm_eval_ll": lls, "ours_ll": r["choice_logprobs"],
            "lm_eval_norm": [ll / len(c) for ll, c in zip(lls, choices)],
            "ours_norm": [ll / len((" " + c).encode()) for ll, c in zip(r["choice_logprobs"], choices)],
        }
        if int(s["acc"]) != ours_acc:
            diff_acc.append(detail)
        if int(s["acc_norm"]) != ours_norm:
            detail["lm_eval_pick_norm"] = argmax(detail["lm_eval_norm"])
            detail["ours_pick_norm"] = r["pick_norm"]
            diff_norm.append(detail)
    n = len(common)
    print(json.dumps({
        "questions": n,
        **{k: v / n for k, v in totals.items()},
        "max_abs_loglik_difference": max_ll,
        "acc_differs": diff_acc,
        "acc_norm_differs": diff_norm,
    }, indent=1))


if __name__ == "__main__":
    main()
