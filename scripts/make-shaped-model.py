#!/usr/bin/env python3
"""Writes a Llama-family checkpoint with the real shape of a known model and seeded random weights.

Why: drllm's engine must load and run Llama 3, Qwen2 and Qwen3 checkpoints from Hugging Face
folders (safetensors, either `config.json` form) and from GGUF files, and its numerics are checked
against transformers (scripts/torch_path_logits.py). Real checkpoints need a download this project
cannot do, and their numerics depend on details (Llama 3 RoPE scaling, tied or untied head, q/k/v
biases, q/k norms, a head_dim that is not hidden/heads) that tiny hand-made tests can miss. This
script makes such checkpoints locally, with no download:

  --size tiny  a few-MB model per architecture that exercises what changes numerics (see SHAPES);
  --size 1b    Llama-3.2-1B / Qwen2.5-1.5B / Qwen3-1.7B shapes, for benchmarks;
  --size 8b    Llama-3.1-8B / Qwen2.5-7B / Qwen3-8B shapes (build these on a host with the memory).

The folder gets `config.json` (transformers 5's form with `rope_parameters`, or with
`--config-form classic` the pre-v5 form with top-level `rope_theta` and `rope_scaling`),
`model.safetensors` (or shards), and the tokenizer of drllm's default model (SmolLM2, 49152
tokens; `tokenizer.json`, `tokenizer_config.json` with the chat template). With `--gguf TYPE` it
also gets `model-<type>.gguf`: the same weights in llama.cpp's layout (llama q/k rows permuted for
interleaved RoPE, Llama 3 scaling as `rope_freqs.weight`), with the tokenizer's GGUF metadata.

Weights: every parameter is drawn from a seeded normal (CPU generator, so the same --seed gives
the same weights on any --device): matrices N(0, 1/fan_in), i.e. about N(0, 0.02^2) at the real
sizes and large enough at tiny sizes that logits are far from uniform; RMSNorm weights 1 + N(0,
0.1^2); biases N(0, 0.1^2) (transformers would leave biases at 0 and norms at 1, which would hide
a missing bias or norm). The model is built on the meta device and materialized directly in the
target dtype, so an 8B model never has an f32 copy.
"""
import argparse
import json
import math
import os
import sys
import time

DEFAULT_TOKENIZER_GGUF = os.path.join(
    os.environ.get("DRLLM_CACHE", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "drllm")),
    "models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")

SMOLLM2_VOCAB = 49152  # the tokenizer's size: tiny models use it as their vocabulary

# Config keyword arguments (transformers 5 names) per (arch, size). `rope` is turned into
# `rope_parameters` (v5) or `rope_theta` + `rope_scaling` (classic).
SHAPES = {
    # Tied embeddings and Llama 3 RoPE scaling whose three regimes all occur within a few dozen
    # positions: with head_dim 16 and theta 1e4 the wavelengths are 6.3 (< 32/4: kept), 19.9
    # (between 32/4 and 32/1: interpolated) and 63, 199, ... (> 32: divided by 8).
    ("llama3", "tiny"): dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=SMOLLM2_VOCAB, tie_word_embeddings=True,
        rms_norm_eps=1e-5, max_position_embeddings=256,
        rope=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                  high_freq_factor=4.0, original_max_position_embeddings=32)),
    # Untied head; q/k/v biases (always on in Qwen2).
    ("qwen2", "tiny"): dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=SMOLLM2_VOCAB, tie_word_embeddings=False,
        rms_norm_eps=1e-6, max_position_embeddings=2048,
        rope=dict(rope_type="default", rope_theta=1000000.0)),
    # head_dim 32 != hidden 64 / 4 heads (q is 128 wide, o maps 128 -> 64); q/k RMSNorm; tied
    # like Qwen3-1.7B.
    ("qwen3", "tiny"): dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=SMOLLM2_VOCAB, tie_word_embeddings=True,
        rms_norm_eps=1e-6, max_position_embeddings=2048,
        rope=dict(rope_type="default", rope_theta=1000000.0)),
    # Llama-3.2-1B.
    ("llama3", "1b"): dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
        rms_norm_eps=1e-5, max_position_embeddings=131072,
        rope=dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                  high_freq_factor=4.0, original_max_position_embeddings=8192)),
    # Qwen2.5-1.5B(-Instruct).
    ("qwen2", "1b"): dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
        rms_norm_eps=1e-6, max_position_embeddings=32768,
        rope=dict(rope_type="default", rope_theta=1000000.0)),
    # Qwen3-1.7B.
    ("qwen3", "1b"): dict(
        hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
        rms_norm_eps=1e-6, max_position_embeddings=40960,
        rope=dict(rope_type="default", rope_theta=1000000.0)),
    # Llama-3.1-8B.
    ("llama3", "8b"): dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
        rms_norm_eps=1e-5, max_position_embeddings=131072,
        rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                  high_freq_factor=4.0, original_max_position_embeddings=8192)),
    # Qwen2.5-7B(-Instruct).
    ("qwen2", "8b"): dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
        rms_norm_eps=1e-6, max_position_embeddings=32768,
        rope=dict(rope_type="default", rope_theta=1000000.0)),
    # Qwen3-8B.
    ("qwen3", "8b"): dict(
        hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False,
        rms_norm_eps=1e-6, max_position_embeddings=40960,
        rope=dict(rope_type="default", rope_theta=1000000.0)),
}

GGUF_ARCH = {"llama3": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
NORM_STD = 0.1
BIAS_STD = 0.1
CHUNK = 1 << 24  # elements drawn at a time: bounds the f32 scratch to 64 MiB per step


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(
        description="Write a real-shaped Llama 3 / Qwen2 / Qwen3 checkpoint with seeded random weights "
                    "(Hugging Face folder, optionally also a GGUF of the same weights). No download.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python3 scripts/make-shaped-model.py --arch qwen3 --size tiny --dtype f32 --out /tmp/shaped/qwen3-tiny --gguf q8_0\n"
               "  python3 scripts/make-shaped-model.py --arch llama3 --size 1b --dtype bf16 --out /tmp/shaped/llama3-1b\n"
               "  python3 scripts/make-shaped-model.py --arch llama3 --size 8b --dtype bf16 --device cuda --out /data/llama3-8b\n"
               "\nThe same --arch/--size/--seed gives the same weights whatever --dtype and --device "
               "(up to the dtype's rounding).")
    p.add_argument("--arch", required=True, choices=["llama3", "qwen2", "qwen3"], help="model family")
    p.add_argument("--size", required=True, choices=["tiny", "1b", "8b"],
                   help="tiny: 4 layers, hidden 64 (see SHAPES in the script); 1b: Llama-3.2-1B / "
                        "Qwen2.5-1.5B / Qwen3-1.7B; 8b: Llama-3.1-8B / Qwen2.5-7B / Qwen3-8B")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"],
                   help="dtype of the safetensors weights (default: bf16)")
    p.add_argument("--config-form", default="v5", choices=["v5", "classic"],
                   help="v5: config.json as transformers 5 writes it (`rope_parameters`); classic: the "
                        "pre-v5 form (top-level `rope_theta`, `rope_scaling`) (default: v5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--out", required=True, help="output folder (created; existing files are overwritten)")
    p.add_argument("--gguf", choices=["q8_0", "f16", "f32"],
                   help="also write OUT/model-<type>.gguf with the same weights, 2-D matrices in this type")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the model is materialized and saved from (default: cpu)")
    p.add_argument("--tokenizer-gguf", default=DEFAULT_TOKENIZER_GGUF,
                   help="GGUF whose tokenizer the model gets (default: drllm's default model, %(default)s)")
    return p.parse_args()


# ------------------------------------------------------------------------------ config --------

def build_config(arch, size, bos, eos):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config
    kw = dict(SHAPES[(arch, size)])
    rope = dict(kw.pop("rope"))
    cls = {"llama3": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[arch]
    cfg = cls(**kw, rope_parameters=rope, bos_token_id=bos, eos_token_id=eos,
              hidden_act="silu", attention_dropout=0.0)
    cfg.architectures = [{"llama3": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                          "qwen3": "Qwen3ForCausalLM"}[arch]]
    return cfg


def rewrite_classic(path):
    """config.json in the pre-transformers-5 form: `rope_theta` at the top, `rope_scaling` with the
    scaling parameters (null for plain RoPE), no `rope_parameters`; `torch_dtype` for `dtype`."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp["rope_theta"]
    if rp.get("rope_type", "default") == "default":
        cfg["rope_scaling"] = None
    elif rp["rope_type"] == "llama3":
        cfg["rope_scaling"] = {k: rp[k] for k in ("rope_type", "factor", "low_freq_factor",
                                                   "high_freq_factor", "original_max_position_embeddings")}
    else:
        raise SystemExit(f"error: no classic form for rope_type {rp['rope_type']!r}")
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def set_token_ids(path, bos, eos):
    """The tokenizer's BOS/EOS ids in config.json (transformers normally writes them already from
    the config; the file is only rewritten, in its own key order, if it did not)."""
    with open(path) as f:
        cfg = json.load(f)
    if (cfg.get("bos_token_id"), cfg.get("eos_token_id")) == (bos, eos):
        return
    cfg["bos_token_id"], cfg["eos_token_id"] = bos, eos
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


# ------------------------------------------------------------------------------- model --------

def init_kind(name, shape):
    """(mean, std) of a parameter's normal draw."""
    if name.endswith("norm.weight"):  # input_layernorm, post_attention_layernorm, norm, q_norm, k_norm
        return 1.0, NORM_STD
    if name.endswith(".bias"):
        return 0.0, BIAS_STD
    if len(shape) == 2:
        return 0.0, shape[1] ** -0.5
    raise SystemExit(f"error: no init rule for parameter {name} of shape {tuple(shape)}")


def build_model(cfg, dtype, device, seed):
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.to_empty(device=device)
    # to_empty leaves buffers uninitialized: rebuild the rotary embeddings (inv_freq, f32).
    for name, mod in list(model.named_modules()):
        if type(mod).__name__.endswith("RotaryEmbedding"):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], type(mod)(model.config).to(device))
    leftover = [n for n, _ in model.named_buffers()
                if not type(model.get_submodule(n.rsplit(".", 1)[0])).__name__.endswith("RotaryEmbedding")]
    if leftover:
        raise SystemExit(f"error: buffers this script does not know how to initialize: {leftover}")
    if cfg.tie_word_embeddings and model.lm_head.weight is not model.model.embed_tokens.weight:
        model.tie_weights()
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == bool(cfg.tie_word_embeddings)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):  # shared params once
            mean, std = init_kind(name, p.shape)
            flat = p.view(-1)
            for start in range(0, flat.numel(), CHUNK):
                n = min(CHUNK, flat.numel() - start)
                draw = torch.randn(n, generator=gen, dtype=torch.float32)
                flat[start:start + n].copy_(draw.mul_(std).add_(mean))
    return model.eval()


# -------------------------------------------------------------------------------- gguf --------

def llama3_rope_factors(head_dim, theta, factor, low_freq_factor, high_freq_factor, original_max):
    """`rope_freqs.weight` as llama.cpp's convert_hf_to_gguf.py computes it for Llama 3 scaling:
    per frequency, the divisor the scaling applies to the plain RoPE frequency. (The converter reads
    original_max_position_embeddings from the top level of config.json, defaulting to 8192, which is
    the real value for Llama 3.x; here the value of the scaling parameters is used.)"""
    import numpy as np
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = original_max / low_freq_factor
    high_wavelen = original_max / high_freq_factor
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def permute_for_interleaved_rope(w, n_head):
    """llama.cpp's `LlamaModel.permute`: q/k rows of each head reordered from the halves layout of
    Hugging Face checkpoints to the interleaved (pairs) layout llama.cpp's `llama` RoPE expects."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF_TO_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
HF_TO_GGUF_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(hf):
    if hf in HF_TO_GGUF_GLOBAL:
        return HF_TO_GGUF_GLOBAL[hf]
    parts = hf.split(".", 3)  # model.layers.N.rest
    if parts[:2] != ["model", "layers"] or parts[3] not in HF_TO_GGUF_LAYER:
        raise SystemExit(f"error: no GGUF name for tensor {hf}")
    return f"blk.{int(parts[2])}.{HF_TO_GGUF_LAYER[parts[3]]}"


def write_gguf(model, cfg, arch, qtype_name, tok_gguf, path, model_name):
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
    from gguf.quants import quantize

    qtype = {"q8_0": GGMLQuantizationType.Q8_0, "f16": GGMLQuantizationType.F16,
             "f32": GGMLQuantizationType.F32}[qtype_name]
    ftype = {"q8_0": LlamaFileType.MOSTLY_Q8_0, "f16": LlamaFileType.MOSTLY_F16,
             "f32": LlamaFileType.ALL_F32}[qtype_name]
    a = GGUF_ARCH[arch]
    w = GGUFWriter(path, a)  # writes general.architecture
    w.add_string("general.name", model_name)
    w.add_uint32("general.file_type", int(ftype))
    w.add_uint32("general.quantization_version", 2)
    w.add_uint32(f"{a}.context_length", cfg.max_position_embeddings)
    w.add_uint32(f"{a}.embedding_length", cfg.hidden_size)
    w.add_uint32(f"{a}.block_count", cfg.num_hidden_layers)
    w.add_uint32(f"{a}.feed_forward_length", cfg.intermediate_size)
    w.add_uint32(f"{a}.attention.head_count", cfg.num_attention_heads)
    w.add_uint32(f"{a}.attention.head_count_kv", cfg.num_key_value_heads)
    head_dim = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    w.add_uint32(f"{a}.attention.key_length", head_dim)
    w.add_uint32(f"{a}.attention.value_length", head_dim)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    rp = cfg.rope_parameters
    w.add_float32(f"{a}.rope.freq_base", rp["rope_theta"])
    w.add_uint32(f"{a}.rope.dimension_count", head_dim)
    w.add_uint32(f"{a}.vocab_size", cfg.vocab_size)

    # The tokenizer: every `tokenizer.*` key (tokenizer.ggml.* and tokenizer.chat_template), types kept.
    reader = GGUFReader(tok_gguf)
    n_tok = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), main, sub_type=sub)
        n_tok += 1
    del reader

    n = 0
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp omits output.weight when the head is tied
        t = p.detach().to("cpu", torch.float32).numpy()
        if a == "llama" and name.endswith("self_attn.q_proj.weight"):
            t = permute_for_interleaved_rope(t, cfg.num_attention_heads)
        elif a == "llama" and name.endswith("self_attn.k_proj.weight"):
            t = permute_for_interleaved_rope(t, cfg.num_key_value_heads)
        t = np.ascontiguousarray(t)
        if t.ndim == 2:
            data = quantize(t, qtype)
            w.add_tensor(gguf_name(name), data, raw_dtype=qtype if qtype == GGMLQuantizationType.Q8_0 else None)
        else:
            w.add_tensor(gguf_name(name), t.astype(np.float32))
        n += 1
    if rp.get("rope_type", "default") == "llama3":
        factors = llama3_rope_factors(head_dim, rp["rope_theta"], rp["factor"], rp["low_freq_factor"],
                                      rp["high_freq_factor"], rp["original_max_position_embeddings"])
        w.add_tensor("rope_freqs.weight", factors)
        n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    log(f"wrote {path}: {n} tensors, {n_tok} tokenizer keys, {os.path.getsize(path) / 2**20:.1f} MiB")


# -------------------------------------------------------------------------------- main --------

def main():
    args = parse_args()
    if not os.path.isfile(args.tokenizer_gguf):
        raise SystemExit(f"error: tokenizer GGUF {args.tokenizer_gguf} not found; run `bash scripts/fetch-model.sh` "
                         "to fetch drllm's default model, or pass --tokenizer-gguf")
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stderr to this script's own lines

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    t0 = time.time()
    d, f = os.path.split(os.path.abspath(args.tokenizer_gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise SystemExit(f"error: the tokenizer of {args.tokenizer_gguf} has no BOS or EOS token")
    if len(tok) > SHAPES[(args.arch, args.size)]["vocab_size"]:
        raise SystemExit(f"error: the tokenizer has {len(tok)} tokens, more than the model's vocabulary")

    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    cfg = build_config(args.arch, args.size, tok.bos_token_id, tok.eos_token_id)
    model = build_model(cfg, dtype, args.device, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{args.arch} {args.size}: {n_params / 1e6:.1f}M parameters in {args.dtype}, built in {time.time() - t0:.1f}s")

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out, save_jinja_files=False)  # chat template inside tokenizer_config.json
    cfg_path = os.path.join(args.out, "config.json")
    set_token_ids(cfg_path, tok.bos_token_id, tok.eos_token_id)
    if args.config_form == "classic":
        rewrite_classic(cfg_path)
    with open(cfg_path) as fh:
        written = json.load(fh)
    rope_keys = {k: v for k, v in written.items() if "rope" in k}
    log(f"config.json ({args.config_form} form), RoPE keys: {json.dumps(rope_keys, sort_keys=True)}")

    if args.gguf:
        name = f"{args.arch}-{args.size}-shaped-seed{args.seed}"
        write_gguf(model, cfg, args.arch, args.gguf, args.tokenizer_gguf,
                   os.path.join(args.out, f"model-{args.gguf}.gguf"), name)
    size = sum(os.path.getsize(os.path.join(args.out, x)) for x in os.listdir(args.out))
    log(f"done: {args.out} ({size / 2**20:.1f} MiB) in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
