"""The `openai` client from PyPI against `evaluator serve` (evaluator/tests/openai.rs starts the
server and runs this): streaming and non-streaming agree, chat and completions, sampling is
reproducible by seed and does sample, `n` gives n choices, stop strings hold in streams, usage
arrives in the last chunk, unsupported settings are refused with a 400. Prints one JSON line.
"""
import json
import sys

import openai


def main():
    base = sys.argv[1]
    client = openai.OpenAI(base_url=base, api_key="unused")
    model = client.models.list().data[0].id
    out = {}

    # Completions: the stream's pieces join into the non-streamed text.
    prompt = "Once upon a time, in a small village,"
    whole = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0)
    chunks = list(client.completions.create(
        model=model, prompt=prompt, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text, (text, whole.choices[0].text)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and all(f is None for f in finishes[:-1])
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    out["completion_chunks"] = len(chunks)

    # A stop string holds in a stream as in a whole answer.
    stopped = client.completions.create(model=model, prompt=prompt, max_tokens=24,
                                        temperature=0, stop=["."])
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt=prompt, max_tokens=24, temperature=0, stop=["."], stream=True))
    assert streamed == stopped.choices[0].text and "." not in streamed, (streamed, stopped)

    # Chat: the role first, then content whose log-probs cover it token by token.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=20,
                                           temperature=0, logprobs=True, top_logprobs=2)
    chunks = list(client.chat.completions.create(
        model=model, messages=messages, max_tokens=20, temperature=0, logprobs=True,
        top_logprobs=2, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == whole.choices[0].message.content, (content, whole)
    streamed_lp = [t.logprob for c in chunks if c.choices[0].logprobs
                   for t in c.choices[0].logprobs.content]
    whole_lp = [t.logprob for t in whole.choices[0].logprobs.content]
    assert streamed_lp == whole_lp, (streamed_lp, whole_lp)
    out["chat_chunks"] = len(chunks)

    # Sampling: the same seed gives the same tokens; n choices; it does sample.
    def sample(seed, n=1):
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=16,
                                           temperature=1.0, top_p=0.95, seed=seed, n=n,
                                           extra_body={"top_k": 50})
        return [c.message.content for c in r.choices]
    first = sample(7, n=3)
    assert len(first) == 3 and sample(7, n=3) == first, first
    streamed = client.chat.completions.create(model=model, messages=messages, max_tokens=16,
                                              temperature=1.0, top_p=0.95, seed=7, n=3,
                                              extra_body={"top_k": 50}, stream=True)
    joined = ["", "", ""]
    for c in streamed:
        for ch in c.choices:
            joined[ch.index] += ch.delta.content or ""
    assert joined == first, (joined, first)
    greedy = whole.choices[0].message.content
    drawn = first + sample(8) + sample(9)
    assert any(d != greedy for d in drawn), drawn
    out["sampled_distinct"] = len(set(drawn))

    # Refusals name the field.
    try:
        client.completions.create(model=model, prompt=prompt, temperature=5)
        raise AssertionError("temperature 5 was accepted")
    except openai.BadRequestError as e:
        assert "temperature" in str(e), e
    print(json.dumps(out))


if __name__ == "__main__":
    main()
