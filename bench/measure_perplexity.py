"""Perplexity of the small model's answers to MT-Bench first turns: where to put max_perplexity.

For a sample of MT-Bench first turns (``--per-category`` questions of each
category, picked by position so the sample is the same on every machine),
the small model writes ``--n`` candidates with the open task's executor
prompt and no plan, at the temperature and length of a COPE stage. Each
candidate's perplexity is exp(-mean logprob) of its tokens under the model
that wrote it. Per question the script reports the candidate the open task
keeps (the least perplexed one that is not a refusal or a loop) and, for
comparison, the plain minimum. Its summary gives the distribution of the
kept perplexities; their median is the threshold at which half of such
stages would stop (``DEFAULT_MAX_PERPLEXITY`` in ``cope.tasks.open`` was set
that way).

    .venv/bin/python bench/measure_perplexity.py [--model local/qwen2.5-coder-0.5b]
        [--per-category 2] [--n 8] [--temperature 0.8] [--max-tokens 200] [--seed 1]
        [--threads N] [--out FILE.json]
    .venv/bin/python bench/measure_perplexity.py --from FILE.json   # summarise a saved run again

Slow on 2 cores: 16 questions x 8 candidates took about 23 minutes on a
busy 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (as numpy's default), without numpy."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(label: str, values: list[float]) -> str:
    qs = ", ".join(f"p{int(q * 100)} {quantile(values, q):.3f}" for q in (0.1, 0.25, 0.5, 0.75, 0.9))
    return f"{label}: n={len(values)} min {min(values):.3f}, {qs}, max {max(values):.3f}"


def report(rows: list[dict], n: int) -> None:
    """Per-question and summary lines over measured rows (fresh or loaded from a saved run)."""
    from cope.tasks.open import choose

    kept, plain, first4 = [], [], []
    set_aside: dict[str, int] = {}
    by_cat: dict[str, list[float]] = {}
    for r in rows:
        ppls = r["perplexities"]
        pick = choose(r["texts"], ppls)
        for reason in pick.reasons:
            if reason:
                set_aside[reason] = set_aside.get(reason, 0) + 1
        best = ppls[pick.index] if pick.index is not None and pick.eligible else None
        measured = [x for x in ppls if x is not None]
        low = min(measured) if measured else None
        head = choose(r["texts"][:4], ppls[:4])
        if head.index is not None and head.eligible:
            first4.append(ppls[head.index])
        if best is not None:
            kept.append(best)
            by_cat.setdefault(r["category"], []).append(best)
        if low is not None:
            plain.append(low)
        spread = ", ".join("-" if x is None else f"{x:.2f}" for x in ppls)
        flag = "" if low is None or best == low else f"  (lowest set aside: {pick.reasons[ppls.index(low)]})"
        print(f"q{r['question_id']:<4} {r['category']:<11} kept {'-' if best is None else f'{best:.3f}':<6} "
              f"[{spread}] truncated {r['truncated']}/{len(ppls)}{flag}")
    print()
    print(summary(f"kept candidate (best eligible of {n}) per question", kept))
    print(summary(f"plain lowest of {n} per question", plain))
    print(summary("kept candidate among the first 4 per question", first4))
    print(summary("every candidate", [x for r in rows for x in r["perplexities"] if x is not None]))
    print("set aside: " + (", ".join(f"{k} {v}" for k, v in sorted(set_aside.items())) or "none"))
    print("per category (median kept): " + ", ".join(f"{c} {statistics.median(v):.2f}" for c, v in by_cat.items()))
    print(f"median kept perplexity: {statistics.median(kept):.3f}  <- the suggested max_perplexity")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="local/qwen2.5-coder-0.5b")
    ap.add_argument("--per-category", type=int, default=2, help="questions per category (positions 0, 5, 1, 6, ...)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write every candidate's perplexity and text here (JSON)")
    ap.add_argument("--from", dest="saved", default=None, help="summarise a run saved with --out; generate nothing")
    a = ap.parse_args()
    if a.saved:
        with open(a.saved, encoding="utf-8") as f:
            saved = json.load(f)
        print(f"{saved['model']}: {len(saved['rows'])} questions x {saved['n']} candidates, "
              f"T={saved['temperature']}, max_tokens={saved['max_tokens']}, seed={saved['seed']} (saved run)")
        report(saved["rows"], saved["n"])
        return

    from cope.benchmarks.mtbench import CATEGORIES, first_turn, load_mtbench
    from cope.models.base import GenParams
    from cope.models.registry import build_model
    from cope.tasks.open import OpenTask, perplexity

    positions = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9][: a.per_category]
    questions = load_mtbench()
    sample = []
    for cat in CATEGORIES:
        in_cat = [q for q in questions if q.category == cat]
        sample += [in_cat[p] for p in positions if p < len(in_cat)]
    model = build_model(a.model, n_threads=a.threads)
    task = OpenTask()
    params = GenParams(n=a.n, temperature=a.temperature, max_tokens=a.max_tokens, seed=a.seed, logprobs=True)
    rows = []
    t_start = time.perf_counter()
    print(f"{a.model}: {len(sample)} questions x {a.n} candidates, T={a.temperature}, "
          f"max_tokens={a.max_tokens}, seed={a.seed}", flush=True)
    for k, q in enumerate(sample):
        p = first_turn(q)
        t0 = time.perf_counter()
        # one seed per question, so a question's candidates do not depend on the sample
        gen = await model.generate(task.executor_messages(p, []), replace(params, seed=a.seed + k))
        dt = time.perf_counter() - t0
        ppls = [perplexity(c.logprobs) for c in gen.completions]
        cut = sum(c.finish_reason == "length" for c in gen.completions)
        rows.append({
            "question_id": q.id, "category": q.category, "perplexities": ppls,
            "tokens": [c.completion_tokens for c in gen.completions], "truncated": cut, "seconds": dt,
            "texts": [c.text for c in gen.completions],
        })
        print(f"q{q.id} {q.category}: {len(ppls)} candidates, {dt:.0f} s", flush=True)
    print(f"generated in {time.perf_counter() - t_start:.0f} s")
    report(rows, a.n)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump({"model": a.model, "n": a.n, "temperature": a.temperature, "max_tokens": a.max_tokens,
                       "seed": a.seed, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
