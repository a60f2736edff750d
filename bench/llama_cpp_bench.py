#!/usr/bin/env python3
"""llama.cpp side of the engine benchmark (BENCHMARKS.md): prefill and decode tokens/s on the
same GGUF, the same token ids as `worker bench` (see bench_ids in worker/src/bench.rs) and the
same thread count. Needs `pip install llama-cpp-python`.

    python3 bench/llama_cpp_bench.py --model ~/.cache/drllm/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import resource
import time

from llama_cpp import Llama


def bench_ids(n, vocab):
    return [((i * 7919 + 13) % (vocab - 100)) + 100 for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    llm = Llama(model_path=a.model, n_ctx=1024, n_batch=512, n_threads=a.threads,
                n_threads_batch=a.threads, verbose=False)
    ids = bench_ids(a.prefill, llm.n_vocab())
    best_p, best_d = float("inf"), float("inf")
    for rep in range(a.repeats + 1):
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        p = time.perf_counter() - t
        tok = int(llm.scores[llm.n_tokens - 1].argmax())
        t = time.perf_counter()
        for _ in range(a.decode):
            llm.eval([tok])
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
        d = time.perf_counter() - t
        if rep > 0:
            best_p, best_d = min(best_p, p), min(best_d, d)
    print(json.dumps({
        "engine": "llama.cpp (llama-cpp-python)",
        "threads": a.threads,
        "prefill_tokens": a.prefill,
        "prefill_tok_s": a.prefill / best_p,
        "decode_tokens": a.decode,
        "decode_tok_s": a.decode / best_d,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
