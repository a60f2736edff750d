#!/usr/bin/env python3
"""Dr.LLM's length-aware MCTS over layer paths in plain PyTorch + transformers: the baseline that
drllm's search speed (simulations/s) is compared against. See bench/torch_mcts.md.

Ports, as faithfully as Python allows:
  core/src/search/mcts.rs   the search (actions, UCB with length penalty, expansion, early stops)
  core/src/tasks/reward.rs  the choice-loglik reward (summed log-prob of each continuation, `acc`)
  core/src/tasks/prompts.rs context `Question: {stem}\\nAnswer:`, continuations ` {choice}`
  core/src/tasks/dataset.rs ARC loading (ids `arc_easy/<id>`, choices re-lettered A, B, ...)
Only the random stream differs (Python's `random`, seeded per example).
"""
import argparse
import hashlib
import json
import math
import os
import random
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GGUF = os.path.join(
    os.environ.get("DRLLM_CACHE", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "drllm")),
    "models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
ARC_FILES = {("arc_easy", "train"): "ARC-Easy-Train", ("arc_easy", "dev"): "ARC-Easy-Dev",
             ("arc_easy", "validation"): "ARC-Easy-Dev", ("arc_easy", "test"): "ARC-Easy-Test",
             ("arc_challenge", "train"): "ARC-Challenge-Train", ("arc_challenge", "dev"): "ARC-Challenge-Dev",
             ("arc_challenge", "validation"): "ARC-Challenge-Dev", ("arc_challenge", "test"): "ARC-Challenge-Test"}


# ---------------------------------------------------------------- data (dataset.rs, parse_arc) --

def _string(v):
    """dataset.rs `string`: a non-blank string, or a number written as text; else invalid."""
    if isinstance(v, str) and v.strip():
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise ValueError(f"bad field {v!r}")


def load_arc(dataset, split, limit):
    path = os.path.join(HERE, "..", "data", "arc", ARC_FILES[(dataset, split)] + ".jsonl")
    out, seen = [], set()
    for line in open(path, encoding="utf-8"):
        if limit is not None and len(out) >= limit:
            break
        if not line.strip():
            continue
        try:  # invalid lines of the vendored files are skipped, as the Rust loader does
            v = json.loads(line)
            ex_id = f"{dataset}/{_string(v['id'])}"
            choices = v["question"]["choices"]
            if len(choices) < 2:
                raise ValueError("fewer than 2 choices")
            texts = [_string(c["text"]) for c in choices]
            labels = [_string(c["label"]) for c in choices]
            gold = labels.index(_string(v["answerKey"]))
            if ex_id in seen:
                raise ValueError("duplicate id")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"skipped line: {e}", file=sys.stderr)
            continue
        seen.add(ex_id)
        out.append({"id": ex_id, "question": _string(v["question"]["stem"]), "choices": texts, "gold": gold})
    return out


# ------------------------------------------------------------- model along a layer path --------

def hf_bos_prefix(folder, tok):
    """What drllm prepends for a Hugging Face folder: tokenizer.rs `encode(text, true)` runs the
    folder's tokenizer.json as is, so the prefix is whatever its post-processor adds in front (BOS
    for Llama 3, nothing for Qwen). tokenizer_config.json's `add_bos_token`, when it disagrees, is
    only reported: drllm does not read it."""
    path = os.path.join(folder, "tokenizer.json")
    if os.path.exists(path):
        from tokenizers import Tokenizer
        raw = Tokenizer.from_file(path)
        plain = raw.encode("Answer", add_special_tokens=False).ids
        full = raw.encode("Answer", add_special_tokens=True).ids
        k = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
        prefix = full[:k]
    else:  # no tokenizer.json (drllm cannot load such a folder): transformers' own rule
        plain = tok("Answer", add_special_tokens=False).input_ids
        full = tok("Answer", add_special_tokens=True).input_ids
        prefix = full[:len(full) - len(plain)] if full[-len(plain):] == plain else []
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(cfg_path):
        want = json.load(open(cfg_path, encoding="utf-8")).get("add_bos_token")
        if want is not None and bool(want) != bool(prefix):
            print(f"note: tokenizer_config.json add_bos_token={want} but tokenizer.json adds {prefix}; "
                  "following tokenizer.json as drllm does", file=sys.stderr)
    return prefix


class PathModel:
    """The transformers Llama model run along any layer path: embeddings, then `layers[i]` for each
    path position i (skips and repeats allowed), final norm, LM head on the rows asked for."""

    def __init__(self, model, device, dtype):
        # sdpa with no mask is causal attention (checked in `parity`); eager with no mask would not be.
        if os.path.isdir(model) and os.path.exists(os.path.join(model, "config.json")):
            # A Hugging Face folder (config.json, safetensors, tokenizer.json).
            self.tok = AutoTokenizer.from_pretrained(model)
            self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, attn_implementation="sdpa")
            self.bos = hf_bos_prefix(model, self.tok)
        else:
            d, f = os.path.dirname(model), os.path.basename(model)
            self.tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
            self.lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dtype, attn_implementation="sdpa")
            # tokenizer.rs: `encode(text, true)` prepends BOS only when the GGUF says add_bos_token.
            from gguf import GGUFReader
            field = GGUFReader(model).fields.get("tokenizer.ggml.add_bos_token")
            self.bos = [self.lm.config.bos_token_id] if field is not None and bool(field.contents()) else []
        self.lm = self.lm.to(device).eval()
        self.m = self.lm.model
        self.device = device
        self.num_layers = len(self.m.layers)

    def encode(self, text):
        return self.bos + self.tok(text, add_special_tokens=False).input_ids

    @torch.inference_mode()
    def hidden(self, ids, path):
        """Hidden rows after running `path` on a [B, T] batch (right padding is harmless: causal)."""
        x = self.m.embed_tokens(ids)
        pos = torch.arange(ids.shape[1], device=self.device).unsqueeze(0)
        rope = self.m.rotary_emb(x, position_ids=pos)  # positions are token positions, path-independent
        for layer in path:
            x = self.m.layers[layer](x, attention_mask=None, position_ids=pos, position_embeddings=rope)
        return x

    @torch.inference_mode()
    def logits(self, h):
        return self.lm.lm_head(self.m.norm(h))


@torch.inference_mode()
def parity(pm):
    """Max |logit difference| of the full path [0..L) against the stock model's forward, and of a
    prefix run alone against the same rows inside a longer sequence (causality, so padding is safe)."""
    ids = torch.tensor([pm.encode("Question: Which factor will most likely cause a person to develop a "
                                  "fever?\nAnswer: a bacterial population in the bloodstream")], device=pm.device)
    stock = pm.lm(input_ids=ids).logits.float()
    ours = pm.logits(pm.hidden(ids, list(range(pm.num_layers)))).float()
    k = ids.shape[1] // 2
    prefix = pm.logits(pm.hidden(ids[:, :k], list(range(pm.num_layers)))).float()
    return (stock - ours).abs().max().item(), (prefix - ours[:, :k]).abs().max().item()


# ------------------------------------------------------- choice-loglik reward (reward.rs) -------

class ChoiceLoglik:
    """One example's reward: every choice's prompt + continuation-but-last-token in one batch; the
    pick is the argmax of the summed continuation log-probs (`acc`; the Rust search's default,
    `length_normalized: false`). `acc_norm` (per byte) is computed too, for reporting."""

    def __init__(self, pm, ex):
        self.pm, self.ex = pm, ex
        context = f"Question: {ex['question']}\nAnswer:"
        prompt = pm.encode(context)
        self.t = len(prompt)
        self.conts = []
        for c in ex["choices"]:
            cont = f" {c}"
            ids = pm.encode(context + cont)[self.t:]  # lm-eval-harness: what follows the context's tokens
            if not ids:
                ids = pm.tok(cont, add_special_tokens=False).input_ids
            self.conts.append((ids, len(cont.encode("utf-8"))))
        rows = [prompt + ids[:-1] for ids, _ in self.conts]
        width = max(map(len, rows))
        self.batch = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=pm.device)
        # For choice i, the logits of rows t-1 .. t-1+len(cont)-1 score its continuation tokens.
        self.sel_b = torch.tensor([i for i, (ids, _) in enumerate(self.conts) for _ in ids], device=pm.device)
        self.sel_t = torch.tensor([self.t - 1 + k for ids, _ in self.conts for k in range(len(ids))], device=pm.device)
        self.target = torch.tensor([tid for ids, _ in self.conts for tid in ids], device=pm.device)

    def __call__(self, path):
        h = self.pm.hidden(self.batch, path)[self.sel_b, self.sel_t]  # only the rows that are scored
        lp = torch.log_softmax(self.pm.logits(h).float(), dim=-1)
        tok_lp = lp.gather(1, self.target[:, None])[:, 0].double().cpu().tolist()
        logprobs, k = [], 0
        for ids, _ in self.conts:
            logprobs.append(sum(tok_lp[k:k + len(ids)]))
            k += len(ids)
        argmax = lambda s: max(range(len(s)), key=lambda i: (s[i], -i))  # first of the largest
        pick = argmax(logprobs)
        pick_norm = argmax([lp / max(nb, 1) for lp, (_, nb) in zip(logprobs, self.conts)])
        return {"correct": pick == self.ex["gold"], "pick": pick, "pick_norm": pick_norm,
                "correct_norm": pick_norm == self.ex["gold"], "logprobs": logprobs}


# ----------------------------------------------------------------------- MCTS (mcts.rs) ---------

class Node:
    __slots__ = ("path", "parent", "children", "untried", "visits", "reward_sum")

    def __init__(self, path, parent, untried):
        self.path, self.parent, self.children, self.untried = path, parent, [], untried
        self.visits, self.reward_sum = 0, 0.0


class Mcts:
    def __init__(self, num_layers, cfg, example_id):
        self.cfg, self.L = cfg, num_layers
        # mcts.rs derives each example's stream from blake3(seed, id); here blake2b seeds `random`.
        h = hashlib.blake2b(cfg["seed"].to_bytes(8, "little") + example_id.encode(), digest_size=8)
        self.rng = random.Random(int.from_bytes(h.digest(), "little"))
        self.nodes, self.rewards, self.order = [], {}, []
        self.add_node(tuple(range(num_layers)), None)

    def actions(self, path):
        """Skip 1 or 2 consecutive positions anywhere; repeat a position (layer at most twice, path
        shorter than max_len_factor * L). Shuffled; expansion pops from the end."""
        n = len(path)
        acts = [("skip", s, z) for s in range(n) for z in (1, 2) if s + z <= n]
        if n < self.cfg["max_len_factor"] * self.L:
            acts += [("repeat", p, 0) for p in range(n) if path.count(path[p]) < 2]
        self.rng.shuffle(acts)
        return acts

    @staticmethod
    def apply(action, path):
        kind, a, b = action
        return path[:a] + path[a + b:] if kind == "skip" else path[:a + 1] + (path[a],) + path[a + 1:]

    def add_node(self, path, parent):
        self.nodes.append(Node(path, parent, self.actions(path)))
        nid = len(self.nodes) - 1
        if parent is not None:
            self.nodes[parent].children.append(nid)
        return nid

    def ucb(self, nid, total):
        n = self.nodes[nid]
        if n.visits == 0:
            return math.inf
        return (n.reward_sum / n.visits + self.cfg["exploration"] * math.sqrt(math.log(total) / n.visits)
                - self.cfg["length_penalty"] * (len(n.path) / self.L))

    def select(self, total):
        nid = 0
        while self.nodes[nid].children:
            children = self.nodes[nid].children
            if self.rng.random() < self.cfg["random_prob"]:
                nid = children[self.rng.randrange(len(children))]
            else:
                best = children[0]
                for c in children[1:]:  # first child with the largest score
                    if self.ucb(c, total) > self.ucb(best, total):
                        best = c
                nid = best
        return nid

    def evaluate(self, path, reward):
        if path not in self.rewards:  # each path evaluated once per example
            self.rewards[path] = reward(list(path))
            self.order.append(path)
        return self.rewards[path]

    def run(self, reward):
        L = self.L
        original = self.evaluate(tuple(range(L)), reward)
        # mcts.rs `simulate`: the paper's early stops only under `stop = paper`; `budget` (the Rust
        # `--stop budget`, here also `--no-early-stop`) spends every simulation.
        early = self.cfg["stop"] == "paper"
        best_len, stop, sims = L, "budget", 0
        for sim in range(self.cfg["num_simulations"]):
            sims = sim + 1
            nid = self.select(sim + 1)
            node = self.nodes[nid]
            if node.visits > 0 and node.untried:
                nid = self.add_node(self.apply(node.untried.pop(), node.path), nid)
            path = self.nodes[nid].path
            r = self.evaluate(path, reward)
            if r and len(path) < best_len:
                best_len = len(path)
            cur = nid
            while cur is not None:
                self.nodes[cur].visits += 1
                self.nodes[cur].reward_sum += float(r)
                cur = self.nodes[cur].parent
            if early and r and not original:
                stop = "fixed-wrong-answer"
                break
            if early and r and best_len + 2 <= L:
                stop = "shorter-correct-path"
                break
        good = [p for p in self.order if self.rewards[p]]
        # Shortest good path, ties: fewer distinct layers, then first found; none: the full path.
        best = min(good, key=lambda p: (len(p), len(set(p)))) if good else tuple(range(L))
        return {"original_correct": original, "found": bool(good), "good_paths": len(good),
                "best_path": list(best), "simulations": sims, "distinct_paths": len(self.rewards), "stop": stop}


# ----------------------------------------------------------------------------------- main -------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_GGUF,
                    help="GGUF file or Hugging Face model folder (default: drllm's cached SmolLM2 GGUF)")
    ap.add_argument("--dataset", default="arc_easy", choices=["arc_easy", "arc_challenge"])
    ap.add_argument("--split", default="train", choices=["train", "dev", "validation", "test"])
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--num-simulations", type=int, default=50)
    ap.add_argument("--exploration", type=float, default=1.8)
    ap.add_argument("--length-penalty", type=float, default=3.0)
    ap.add_argument("--random-prob", type=float, default=0.1)
    ap.add_argument("--max-len-factor", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop", default="paper", choices=["paper", "budget"],
                    help="paper: stop at the first fixing or two-shorter good path; budget: spend every "
                         "simulation (worker search --stop)")
    ap.add_argument("--no-early-stop", action="store_true",
                    help="same as --stop budget: every question runs exactly --num-simulations simulations")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = ap.parse_args()
    if a.no_early_stop:
        a.stop = "budget"
    if a.threads:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(a.threads)
    cfg = {"num_simulations": a.num_simulations, "exploration": a.exploration, "length_penalty": a.length_penalty,
           "random_prob": a.random_prob, "max_len_factor": a.max_len_factor, "seed": a.seed, "stop": a.stop}

    t0 = time.time()
    pm = PathModel(a.model, a.device, getattr(torch, a.dtype))
    load_s = time.time() - t0
    t = time.time()
    diff, causal_diff = parity(pm)
    parity_s = time.time() - t
    print(f"loaded in {load_s:.1f}s; full path vs stock logits: max abs diff {diff:.3g}; "
          f"prefix alone vs in longer sequence: {causal_diff:.3g} ({parity_s:.1f}s)", file=sys.stderr)
    examples = load_arc(a.dataset, a.split, a.limit)

    tot = {"simulations": 0, "distinct_paths": 0, "seconds": 0.0, "found": 0, "original": 0,
           "original_norm": 0, "fixed": 0, "best_len": 0, "stops": {}}
    for ex in examples:
        if a.device == "cuda":
            torch.cuda.synchronize()
        t = time.time()
        reward = ChoiceLoglik(pm, ex)
        first = {}

        def correct(path):
            out = reward(path)
            first.setdefault("full", out)  # the first path evaluated is the full path
            return out["correct"]

        o = Mcts(pm.num_layers, cfg, ex["id"]).run(correct)
        if a.device == "cuda":
            torch.cuda.synchronize()
        secs = time.time() - t
        full = first["full"]
        tot["simulations"] += o["simulations"]
        tot["distinct_paths"] += o["distinct_paths"]
        tot["seconds"] += secs
        tot["found"] += o["found"]
        tot["original"] += o["original_correct"]
        tot["original_norm"] += full["correct_norm"]
        tot["fixed"] += o["found"] and not o["original_correct"]
        tot["best_len"] += len(o["best_path"])
        tot["stops"][o["stop"]] = tot["stops"].get(o["stop"], 0) + 1
        print(json.dumps({"id": ex["id"], "gold": "ABCDEFGH"[ex["gold"]], "pick": "ABCDEFGH"[full["pick"]],
                          "pick_norm": "ABCDEFGH"[full["pick_norm"]],
                          "logprobs": [round(x, 4) for x in full["logprobs"]],
                          "original_correct": o["original_correct"], "found": o["found"],
                          "best_len": len(o["best_path"]), "best_path": o["best_path"], "stop": o["stop"],
                          "simulations": o["simulations"], "distinct_paths": o["distinct_paths"],
                          "seconds": round(secs, 3)}), flush=True)

    n = len(examples)
    # Like worker search's `seconds_incl_load` (its clock starts before the dataset and the model
    # load): everything but the parity check above, which drllm does not run.
    incl_load = time.time() - t0 - parity_s
    print(json.dumps({
        "examples": n, "simulations": tot["simulations"], "distinct_paths": tot["distinct_paths"],
        "seconds": round(tot["seconds"], 3),
        "simulations_per_s": round(tot["simulations"] / tot["seconds"], 3) if tot["seconds"] else None,
        "found_rate": tot["found"] / n, "original_accuracy": tot["original"] / n,
        "original_acc_norm": tot["original_norm"] / n, "fixed": tot["fixed"],
        "mean_best_len": tot["best_len"] / n, "stops": tot["stops"],
        "paths_per_s": round(tot["distinct_paths"] / tot["seconds"], 3) if tot["seconds"] else None,
        "load_s": round(load_s, 3), "seconds_incl_load": round(incl_load, 3),
        "simulations_per_s_incl_load": round(tot["simulations"] / incl_load, 3),
        "early_stop": a.stop == "paper",
        "full_path_logits_max_abs_diff": diff, "device": a.device, "dtype": a.dtype,
        "threads": torch.get_num_threads(), "search": cfg}))


if __name__ == "__main__":
    main()
