#!/usr/bin/env python3
"""Last-position logits of a transformers model run along layer paths: the reference drllm's Rust
parity tests compare the engine against.

Why: drllm runs a decoder along an arbitrary layer path (indices of decoder layers in execution
order: `0,1,1,3` skips layer 2 and repeats layer 1). Stock transformers only runs 0..L-1, so this
script runs the pieces itself, as bench/torch_mcts.py's PathModel does: token embeddings, then for
each path position the transformers decoder layer of that index (the model's own rotary embedding
for positions 0..T-1, causal attention over the whole sequence, no KV cache), the final norm and the
LM head, at the last position only. Along the full path 0..L-1 this is the stock forward
(`--check-full` prints the difference).

Weights: `--model DIR` alone runs the Hugging Face folder as it is. With `--gguf FILE` as well, the
folder's config (architecture, RoPE, norms) is used but every weight is replaced by the GGUF's
tensor dequantized to f32 (llama q/k rows un-permuted back from llama.cpp's interleaved layout), so
the reference is transformers on exactly the numbers the GGUF holds.

Output, one JSON object on stdout:
  {"model": DIR, "gguf": FILE|null, "dtype": "float32", "vocab": N, "ids": [...],
   "paths": [{"path": [...], "logits": [N floats], "top": [[id, logit], ...] (with --top)}]}
"""
import argparse
import json
import math
import os
import sys


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def int_list(text):
    try:
        v = [int(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}")
    if not v:
        raise argparse.ArgumentTypeError("empty list")
    return v


def parse_args():
    p = argparse.ArgumentParser(
        description="Run a transformers Llama/Qwen2/Qwen3 model along layer paths and print the last "
                    "position's logits per path as JSON (the reference of drllm's parity tests).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python3 scripts/torch_path_logits.py --model /tmp/shaped/qwen3-tiny --ids 1,2,3,4 \\\n"
               "      --path 0,1,2,3 --path 0,2,3 --path 0,1,1,2,3 --top 5\n"
               "  python3 scripts/torch_path_logits.py --model /tmp/shaped/llama3-tiny \\\n"
               "      --gguf /tmp/shaped/llama3-tiny/model-q8_0.gguf --ids 1,2,3 --path 0,1,2,3 --check-full")
    p.add_argument("--model", required=True,
                   help="Hugging Face model folder (config.json, safetensors); with --gguf only its config is used")
    p.add_argument("--gguf", help="take every weight from this GGUF instead (dequantized to f32)")
    p.add_argument("--ids", required=True, type=int_list, help="token ids, comma-separated (e.g. 1,2,3)")
    p.add_argument("--path", action="append", type=int_list, default=None,
                   help="a layer path, comma-separated layer indices; repeat for several paths "
                        "(default: the full path 0..L-1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (default: float32)")
    p.add_argument("--top", type=int, metavar="K", help="also list the K largest logits per path as [id, logit]")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--check-full", action="store_true",
                   help="also run the stock forward model(ids) and print to stderr the max |difference| of "
                        "its last-position logits from this script's along the full path 0..L-1")
    return p.parse_args()


# ---------------------------------------------------------------------------- GGUF weights ----

def llama_unpermute(w, n_head):
    """Inverse of llama.cpp's `LlamaModel.permute` (interleaved RoPE rows back to halves)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_LAYER_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GGUF_GLOBAL_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def load_gguf_weights(lm, path):
    """Replaces every parameter of `lm` by the GGUF's tensor, dequantized to f32."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize

    cfg = lm.config
    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    want = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}.get(cfg.model_type)
    if arch != want:
        raise SystemExit(f"error: {path} is a `{arch}` GGUF but {cfg.model_type} config.json expects `{want}`")
    params = dict(lm.named_parameters())  # tied head: only model.embed_tokens.weight
    loaded = set()
    rope_freqs = None
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        w = w.reshape([int(x) for x in reversed(t.shape)])  # ggml ne order -> row-major
        if t.name == "rope_freqs.weight":
            rope_freqs = w
            continue
        if t.name in GGUF_GLOBAL_TO_HF:
            hf = GGUF_GLOBAL_TO_HF[t.name]
        else:
            parts = t.name.split(".", 2)
            if parts[0] != "blk" or parts[2] not in GGUF_LAYER_TO_HF:
                raise SystemExit(f"error: GGUF tensor {t.name} has no transformers counterpart")
            hf = f"model.layers.{int(parts[1])}.{GGUF_LAYER_TO_HF[parts[2]]}"
            if arch == "llama" and parts[2] == "attn_q.weight":
                w = llama_unpermute(w, cfg.num_attention_heads)
            elif arch == "llama" and parts[2] == "attn_k.weight":
                w = llama_unpermute(w, cfg.num_key_value_heads)
        if hf not in params:
            raise SystemExit(f"error: GGUF tensor {t.name} -> {hf}, which the model from config.json lacks "
                             f"(tie_word_embeddings={cfg.tie_word_embeddings})")
        p = params[hf]
        if tuple(p.shape) != w.shape:
            raise SystemExit(f"error: GGUF tensor {t.name} has shape {w.shape}, the model's {hf} {tuple(p.shape)}")
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))  # a copy: GGUF data is a read-only mmap
        loaded.add(hf)
    missing = sorted(set(params) - loaded)
    if missing:
        raise SystemExit(f"error: the GGUF has no tensor for {missing}")
    check_rope_freqs(lm, rope_freqs)


def check_rope_freqs(lm, rope_freqs):
    """The GGUF's `rope_freqs.weight` (per-frequency divisors) must be what config.json's RoPE
    scaling does, since the reference uses the config's rotary embedding."""
    import numpy as np
    import torch
    rot = lm.model.rotary_emb
    cfg = lm.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"]
    base = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    implied = (base / rot.inv_freq.float().cpu()).numpy()  # divisor the config applies
    got = np.ones_like(implied) if rope_freqs is None else rope_freqs.reshape(-1)
    if got.shape != implied.shape or not np.allclose(got, implied, rtol=1e-5, atol=0):
        raise SystemExit(f"error: the GGUF's RoPE frequency divisors {got.tolist()} differ from those "
                         f"config.json's rope_parameters imply {implied.tolist()}")


# ------------------------------------------------------------------------- path forward ------

def main():
    args = parse_args()
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stderr to this script's own lines

    dtype = getattr(torch, args.dtype)
    # eager attention: the plain matmul-softmax reference, the same code for every dtype and device.
    lm = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="eager")
    if args.gguf:
        load_gguf_weights(lm, args.gguf)
    lm = lm.to(args.device).eval()
    m = lm.model
    n_layers = len(m.layers)
    vocab = lm.config.vocab_size
    paths = args.path or [list(range(n_layers))]
    for path in paths:
        bad = [i for i in path if not 0 <= i < n_layers]
        if bad:
            raise SystemExit(f"error: layer indices {bad} out of range for {n_layers} layers")
    bad = [i for i in args.ids if not 0 <= i < vocab]
    if bad:
        raise SystemExit(f"error: token ids {bad} out of range for vocabulary {vocab}")

    ids = torch.tensor([args.ids], device=args.device)
    t = ids.shape[1]
    with torch.inference_mode():
        x0 = m.embed_tokens(ids)
        pos = torch.arange(t, device=args.device).unsqueeze(0)
        rope = m.rotary_emb(x0, position_ids=pos)  # token positions: independent of the path
        # Additive causal mask [1, 1, T, T]: 0 on and below the diagonal, the dtype's minimum above.
        mask = torch.full((t, t), torch.finfo(dtype).min, dtype=dtype, device=args.device).triu(1)[None, None]
        out = []
        for path in paths:
            x = x0
            for i in path:
                x = m.layers[i](x, attention_mask=mask, position_ids=pos, position_embeddings=rope)
            logits = lm.lm_head(m.norm(x[:, -1:]))[0, -1].float().cpu()
            entry = {"path": path, "logits": [float(f"{v:.9g}") for v in logits.tolist()]}
            if args.top:
                v, i = logits.topk(min(args.top, vocab))
                entry["top"] = [[int(a), float(f"{b:.9g}")] for a, b in zip(i.tolist(), v.tolist())]
            out.append(entry)
        if args.check_full:
            stock = lm(input_ids=ids).logits[0, -1].float().cpu()
            x = x0
            for i in range(n_layers):
                x = m.layers[i](x, attention_mask=mask, position_ids=pos, position_embeddings=rope)
            ours = lm.lm_head(m.norm(x[:, -1:]))[0, -1].float().cpu()
            diff = (stock - ours).abs().max().item()
            log(f"check-full: max |stock forward - full path| over {vocab} logits = {diff:.3g} "
                f"(logit scale: max |logit| {stock.abs().max().item():.3g})")
            if not math.isfinite(diff):
                raise SystemExit("error: non-finite logits")

    json.dump({"model": args.model, "gguf": args.gguf, "dtype": args.dtype, "vocab": vocab,
               "ids": args.ids, "paths": out}, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
