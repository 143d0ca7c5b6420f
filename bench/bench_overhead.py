"""Engine overhead: a full cascade vs raw backend calls making the same generations.

The cascade runs all three COPE stages (thresholds set so none accepts early)
through a wrapper that records every backend call; the same calls are then
replayed directly on the backend with the same seeds, so both sides decode
the same tokens. Ratio = raw time / cascade time (target >= 0.95: the engine,
prompts, voting and math-verify add at most 5%).

    .venv/bin/python bench/bench_overhead.py [--model qwen2.5-coder-0.5b] [--n 4] [--reps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace

from cope.api import Cope
from cope.cascade import NEVER
from cope.models.llamacpp import LlamaCppModel

PROBLEM = ("A shop sells pencils in packs of 12. Maria buys 7 packs and gives 15 pencils to her "
           "friends. How many pencils does she have left?")


class Recorder:
    def __init__(self, model):
        self.model, self.spec, self.calls = model, model.spec, []

    async def generate(self, messages, params):
        self.calls.append(("generate", messages, params))
        return await self.model.generate(messages, params)

    async def generate_many(self, prompts, params):
        self.calls.append(("generate_many", prompts, params))
        return await self.model.generate_many(prompts, params)


async def replay(model, calls) -> None:
    for kind, arg, params in calls:
        await getattr(model, kind)(arg, params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()

    base = LlamaCppModel(a.model)
    rec = Recorder(base)
    c = Cope(small=rec, large=rec, n=a.n, max_tokens=a.max_tokens)
    st = c.config.stages
    c.config = replace(c.config, stages=(replace(st[0], threshold=NEVER), replace(st[1], threshold=NEVER), st[2]))
    c.solve(PROBLEM, seed=1)  # warm: load weights, fill caches, import math-verify
    t_cascade, t_raw = [], []
    for _ in range(a.reps):
        rec.calls.clear()
        t0 = time.perf_counter()
        c.solve(PROBLEM, seed=1)
        t_cascade.append(time.perf_counter() - t0)
        calls = list(rec.calls)
        t0 = time.perf_counter()
        asyncio.run(replay(base, calls))
        t_raw.append(time.perf_counter() - t0)
    tc, tr = min(t_cascade), min(t_raw)
    print(f"model {a.model}, n={a.n}, {len(calls)} backend calls per solve, best of {a.reps}")
    print(f"  cascade solve     : {tc:7.2f} s")
    print(f"  raw backend calls : {tr:7.2f} s")
    print(f"  ratio raw/cascade (target >= 0.95): {tr / tc:.3f}")


if __name__ == "__main__":
    main()
