#!/usr/bin/env python3
"""An OpenAI-client load on an OpenAI-compatible server (bench/serve.sh): REQUESTS chat requests
(greedy, `max_tokens` each, streamed so that the time to the first token is seen) from CONCURRENCY
client threads. Prints one JSON line: requests/s, completion tokens/s, latency and time-to-first-
token percentiles. Uses the `openai` client from PyPI; where it is missing (a GPU host without
network) a plain-HTTP client reads the same server-sent events.

    python3 bench/serve_load.py --base-url http://127.0.0.1:8765/v1 --requests 200 --concurrency 16
"""
import argparse
import json
import statistics
import threading
import time

import urllib.request

try:
    import openai
except ImportError:
    openai = None

TOPICS = ["the sea", "a robot", "winter", "bread", "a violin", "Mars", "tea", "rain", "a forest",
          "chess", "a lighthouse", "honey", "the moon", "a bicycle", "snow", "a library"]


def prompt(i):
    return f"Write two sentences about {TOPICS[i % len(TOPICS)]} (request {i})."


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def openai_chat(base):
    """Streams a greedy chat completion: yields (content, completion tokens or None)."""
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=3600)
    model = client.models.list().data[0].id

    def chat(text, max_tokens):
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
            temperature=0, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            content = chunk.choices[0].delta.content if chunk.choices else None
            yield content, chunk.usage.completion_tokens if chunk.usage else None
    return chat


def plain_chat(base):
    """The same over urllib: server-sent events read line by line."""
    def chat(text, max_tokens):
        body = json.dumps({"messages": [{"role": "user", "content": text}],
                           "max_tokens": max_tokens, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        req = urllib.request.Request(base + "/chat/completions", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3600) as r:
            for line in r:
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                content = (chunk["choices"][0].get("delta", {}).get("content")
                           if chunk.get("choices") else None)
                usage = (chunk.get("usage") or {}).get("completion_tokens")
                yield content, usage
    return chat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    chat = openai_chat(a.base_url) if openai else plain_chat(a.base_url)
    lat, ttft, tokens, errors = [], [], [], []
    lock = threading.Lock()
    nxt = iter(range(a.requests))

    def worker():
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            t0 = time.perf_counter()
            first, n, chunks = None, 0, 0
            try:
                for content, usage in chat(prompt(i), a.max_tokens):
                    if content:
                        chunks += 1
                        if first is None:
                            first = time.perf_counter() - t0
                    if usage:
                        n = usage
            except Exception as e:  # a refused or failed request counts, not hidden
                with lock:
                    errors.append(str(e)[:200])
                continue
            with lock:
                lat.append(time.perf_counter() - t0)
                ttft.append(first if first is not None else lat[-1])
                # A server that sends no usage in streams (llama-cpp-python): one chunk a token.
                tokens.append(n or chunks)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    print(json.dumps({
        "concurrency": a.concurrency, "requests": len(lat), "errors": len(errors),
        "error_sample": errors[:1], "wall_s": round(wall, 2),
        "requests_per_s": round(len(lat) / wall, 3),
        "completion_tokens_per_s": round(sum(tokens) / wall, 1),
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_p99_s": round(percentile(lat, 99), 3) if lat else None,
        "ttft_p50_s": round(statistics.median(ttft), 3) if ttft else None,
        "ttft_p99_s": round(percentile(ttft, 99), 3) if ttft else None,
        "mean_completion_tokens": round(sum(tokens) / max(1, len(tokens)), 1),
    }))


if __name__ == "__main__":
    main()
