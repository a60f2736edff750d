#!/usr/bin/env python3
"""PyTorch + transformers counterpart of `worker bench` (worker/src/bench.rs): load time, prefill
and greedy decode throughput along the full model, and peak memory, as ONE JSON line.

Same work as the Rust benchmark: the prompt is bench.rs `bench_ids` (`(i*7919+13) % (vocab-100)
+ 100`), a prefill is one forward of the prompt with the KV cache on and the logits of the last
position only, then its argmax; a decode is `--decode` single-token forwards with that cache,
greedy. One untimed warm-up, then `--repeats` timed repetitions; the best of each is reported.

  python3 bench/torch_engine_bench.py --model /tmp/shaped/llama3-1b --dtype bfloat16 --threads 2
"""
import argparse
import inspect
import json
import os
import resource
import sys
import time


def bench_ids(n, vocab):
    """worker/src/bench.rs `bench_ids`."""
    return [(i * 7919 + 13) % (vocab - 100) + 100 for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Hugging Face model folder (config.json, safetensors)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--threads", type=int, default=None, help="torch intra- and inter-op threads")
    ap.add_argument("--prefill", type=int, default=128, help="prompt tokens per prefill")
    ap.add_argument("--decode", type=int, default=64, help="tokens decoded one at a time after the prefill")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions (best reported; one warm-up first)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")

    import torch  # after argument parsing, so --help is fast
    if a.threads:
        # Inter-op threads can only be set before any parallel work starts: first thing.
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(a.threads)
    from transformers import AutoModelForCausalLM

    cuda = a.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    dtype = getattr(torch, a.dtype)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa")
    model = model.to(a.device).eval()
    sync()
    load_s = time.perf_counter() - t0
    vocab = model.config.get_text_config().vocab_size
    ids = torch.tensor([bench_ids(a.prefill, vocab)], device=a.device)

    # transformers >= 5.2x names the KV cache argument and output `cache`; older ones `past_key_values`.
    kv = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    best_prefill = best_decode = float("inf")
    with torch.inference_mode():
        for rep in range(a.repeats + 1):
            sync()
            t = time.perf_counter()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            nxt = int(out.logits[0, -1].argmax())  # int(): waits for the device
            cache = getattr(out, kv)
            prefill = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(a.decode):
                step = torch.tensor([[nxt]], device=a.device)
                out = model(input_ids=step, use_cache=True, logits_to_keep=1, **{kv: cache})
                cache = getattr(out, kv)
                nxt = int(out.logits[0, -1].argmax())
            sync()
            decode = time.perf_counter() - t
            del out, cache
            if rep > 0:
                best_prefill = min(best_prefill, prefill)
                best_decode = min(best_decode, decode)

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    res = {
        "engine": "torch",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model": os.path.abspath(a.model),
        "device": a.device,
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "load_s": load_s,
        "prefill_tokens": a.prefill,
        "prefill_tok_s": a.prefill / best_prefill,
        "decode_tokens": a.decode,
        "decode_tok_s": a.decode / best_decode if a.decode else None,
        "weights_mib": weights / (1 << 20),
        # Linux: ru_maxrss is in KiB.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if cuda:
        res["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / (1 << 20)
        res["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
