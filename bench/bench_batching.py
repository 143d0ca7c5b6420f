"""n samples of one prompt: shared-prompt batched decoding vs independent calls.

Prints two ratios, each measured side by side in this run:
  1. n samples of one long prompt (~1,000 tokens): n independent cold calls
     through llama-cpp-python's high-level API (prompt re-evaluated each time)
     vs one cope call (prompt evaluated once, n sequences decoded as a batch).
     Target >= 2x.
  2. decode throughput, n sequences batched vs the same n generated one
     after another by the same engine (prompt cached in both). Target >= 3x.

    .venv/bin/python bench/bench_batching.py [--model qwen2.5-coder-0.5b] [--n 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from cope.models.base import GenParams
from cope.models.llamacpp import LlamaCppModel

PARAGRAPH = (
    "A farmer keeps careful records of every field, every harvest and every sale. "
    "In spring he plants wheat, barley and oats in rotation, and in autumn he weighs "
    "each cart before it leaves the yard, writing the numbers in a ledger. "
)


def long_prompt(model: LlamaCppModel, target: int) -> list[dict[str, str]]:
    text = ""
    while True:
        text += PARAGRAPH
        msgs = [{"role": "user", "content": text + "\nSummarize these records in one sentence."}]
        if len(model.engine.chat_tokens(msgs)) >= target:
            return msgs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("COPE_THREADS", 0)) or os.cpu_count())
    a = ap.parse_args()

    import llama_cpp

    ours = LlamaCppModel(a.model, n_threads=a.threads)
    msgs = long_prompt(ours, a.prompt_tokens)
    n_prompt = len(ours.engine.chat_tokens(msgs))
    params = GenParams(n=a.n, temperature=0.8, max_tokens=a.max_tokens, seed=1)

    ref = llama_cpp.Llama(model_path=str(ours.path), n_ctx=4096, n_threads=a.threads, verbose=False)
    ref.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=1)  # warm

    # 1. cold independent calls vs one shared-prompt batched call
    t0 = time.perf_counter()
    cold_tokens = 0
    for i in range(a.n):
        ref.reset()  # forget the prompt: each call is a fresh request
        out = ref.create_chat_completion(msgs, temperature=0.8, max_tokens=a.max_tokens, seed=i + 1)
        cold_tokens += out["usage"]["completion_tokens"]
    t_cold = time.perf_counter() - t0
    asyncio.run(ours.generate([{"role": "user", "content": "hi"}], GenParams(max_tokens=1)))  # evict prompt
    t0 = time.perf_counter()
    g = asyncio.run(ours.generate(msgs, params))
    t_ours = time.perf_counter() - t0
    print(f"model {a.model}, {a.threads} threads, prompt {n_prompt} tokens, n={a.n}, max_tokens={a.max_tokens}")
    print(f"  {a.n} independent cold calls : {t_cold:7.2f} s  ({cold_tokens} completion tokens)")
    print(f"  cope, one batched call     : {t_ours:7.2f} s  ({g.completion_tokens} completion tokens, "
          f"{g.extra['prompt_tokens_evaluated']} prompt tokens evaluated)")
    print(f"  speed-up (target >= 2x)    : {t_cold / t_ours:7.2f}x")

    # 2. decode throughput: batched vs sequential, prompt cached in both
    short = [{"role": "user", "content": "Write a short story about a dragon who learns to count."}]
    asyncio.run(ours.generate(short, GenParams(max_tokens=1)))
    t0 = time.perf_counter()
    seq_tokens = 0
    for i in range(a.n):
        seq_tokens += asyncio.run(ours.generate(short, GenParams(n=1, temperature=0.8, max_tokens=a.max_tokens * 2,
                                                                seed=100 + i))).completion_tokens
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    bat_tokens = asyncio.run(ours.generate(short, GenParams(n=a.n, temperature=0.8, max_tokens=a.max_tokens * 2,
                                                            seed=100))).completion_tokens
    t_bat = time.perf_counter() - t0
    r_seq, r_bat = seq_tokens / t_seq, bat_tokens / t_bat
    print(f"  sequential decode          : {r_seq:7.1f} tok/s ({seq_tokens} tokens)")
    print(f"  batched decode (n={a.n})      : {r_bat:7.1f} tok/s ({bat_tokens} tokens)")
    print(f"  throughput ratio (target >= 3x): {r_bat / r_seq:5.2f}x")


if __name__ == "__main__":
    main()
