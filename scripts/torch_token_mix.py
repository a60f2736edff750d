#!/usr/bin/env python3
"""Token routes run by transformers' own decoder layers, DLR's way: the reference drllm's token
route tests compare the engine and the token trainer against.

Why: drllm's token routes run each layer only on the tokens its gate marks; DLR (and this script)
run every layer on every token and mix `x + g·(F(x) − x)`. With 0/1 gates the two agree when a
skipped token's keys come from its passed-through state (`project`); under `mask` a query does not
see the keys of tokens that skipped the layer (its own excepted). This script runs the pieces of a
transformers Llama/Qwen2/Qwen3 model itself (embeddings, each decoder layer with the model's
rotary embedding and an explicit additive mask, the final norm, the LM head), f32, eager attention.

Input, a JSON file (--input):
  {"ids": [...], "kv": "project"|"mask", "masks": [[0/1 per token] per layer]}     forward mode
  {"ids": [...], "kv": ..., "router": {"keep_first": k, "w1": [...], "b1": [...], "w2": [...],
   "b2": [...], "shape": [G, r, d]}, "tau": .., "kd_temperature": .., "target": .., "lambda": ..,
   "mu": ..}                                                                       gradient mode
In gradient mode the gates are the router's soft probabilities (no noise, no straight-through),
contextual (read entering layer keep_first); the loss is T²·KL(full ‖ routed) over every row +
λ·mean gate + μ·(execute share − target)², and its gradient in the router's weights is printed.

Output, one JSON object on stdout: {"hidden": [[...] per row]} (the state after the last layer,
before the final norm) and, in gradient mode, {"loss": x, "grads": {"w1": [...], ...}}.
"""
import argparse
import json
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model folder (config.json, safetensors)")
    p.add_argument("--input", required=True, help="the JSON input described above")
    return p.parse_args()


def layer_mask(t, run, kv, dtype):
    """Additive mask [1, 1, T, T]: causal, and under `mask` the keys of tokens not run hidden
    from every other query."""
    import torch
    neg = torch.finfo(dtype).min
    m = torch.full((t, t), neg, dtype=dtype).triu(1)
    if kv == "mask":
        hide = ~run.bool()[None, :].expand(t, t) & ~torch.eye(t, dtype=torch.bool)
        m = m.masked_fill(hide, neg)
    return m[None, None]


def gates_of(router, x):
    """Run probabilities [T, G] of the router's gates from the states x [T, d]."""
    import torch
    g, r, d = router["shape"]
    z = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
    h = torch.relu(z @ router["w1"].reshape(g * r, d).T + router["b1"].reshape(g * r))
    return (h.reshape(-1, g, r) * router["w2"].reshape(g, r)).sum(-1) + router["b2"]


def run(lm, ids, kv, gate_of_layer):
    import torch
    m = lm.model
    t = ids.shape[1]
    x = m.embed_tokens(ids)
    pos = torch.arange(t).unsqueeze(0)
    rope = m.rotary_emb(x, position_ids=pos)
    gates = []
    for i, layer in enumerate(m.layers):
        g = gate_of_layer(i, x[0])  # [T] or None
        run_flags = torch.ones(t) if g is None else (g > 0.5).float().detach()
        y = layer(x, attention_mask=layer_mask(t, run_flags, kv, x.dtype), position_ids=pos,
                  position_embeddings=rope)
        if g is not None:
            gates.append(g)
            x = x + g[None, :, None] * (y - x)
        else:
            x = y
    return x[0], gates


def main():
    args = parse_args()
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    spec = json.load(open(args.input))
    lm = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    ids = torch.tensor([spec["ids"]])
    kv = spec["kv"]
    if "masks" in spec:
        masks = torch.tensor(spec["masks"], dtype=torch.float32)
        with torch.no_grad():
            x, _ = run(lm, ids, kv, lambda i, _x: masks[i])
        json.dump({"hidden": x.tolist()}, sys.stdout)
        return
    rt = spec["router"]
    router = {k: torch.tensor(rt[k], dtype=torch.float32, requires_grad=True)
              for k in ("w1", "b1", "w2", "b2")}
    router["shape"] = rt["shape"]
    k, tau = rt["keep_first"], spec["tau"]
    context = {}

    def gate(i, x):
        if i < k:
            return None
        if "logits" not in context:
            context["logits"] = gates_of(router, x)
        return torch.sigmoid(context["logits"][:, i - k] / tau)

    n_layers = len(lm.model.layers)
    temp = spec["kd_temperature"]
    with torch.no_grad():
        full, _ = run(lm, ids, kv, lambda i, _x: None)
        teacher = torch.log_softmax(lm.lm_head(lm.model.norm(full)) / temp, -1)
    x, gates = run(lm, ids, kv, gate)
    student = torch.log_softmax(lm.lm_head(lm.model.norm(x)) / temp, -1)
    kd = (teacher.exp() * (teacher - student)).sum(-1).mean() * temp * temp
    mean_gate = torch.stack(gates, 1).mean()
    share = mean_gate * (n_layers - k) / n_layers + k / n_layers
    loss = kd + spec["lambda"] * mean_gate + spec["mu"] * (share - spec["target"]) ** 2
    loss.backward()
    json.dump({"hidden": x.detach().tolist(), "loss": loss.item(),
               "grads": {n: router[n].grad.reshape(-1).tolist() for n in ("w1", "b1", "w2", "b2")}},
              sys.stdout)


if __name__ == "__main__":
    main()
