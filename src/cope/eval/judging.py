"""`cope judge`: pairwise verdicts for open-ended runs, written into the run's journal.

Open-ended answers have no reference to score against, so a run of the
``open`` family records answers only; this step compares each method's answer
with a baseline method's answer to the same question (both orders, see
``cope.eval.judge``), journals every verdict, and skips pairs already judged, so
it resumes like ``cope eval``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .journal import Journal, archived, read_journal
from .metrics import judged_win_rates
from .rundir import load_config, load_results


def judge_run(out: Path, judge: str, baseline: str, *, base_url: str | None = None,
              n_threads: int | None = None) -> dict[str, Any]:
    from ..benchmarks.registry import load_benchmark
    from .judge import Judge

    cfg = load_config(out)
    results = load_results(out)
    answers = {(r["method"], r["problem_id"]): r["answer"] for r in results}
    methods = sorted({r["method"] for r in results})
    if baseline not in methods:
        raise ConfigError(f"{out} has no results for the baseline method '{baseline}' (it has: {', '.join(methods)})")
    problems = {p.id: p for p in load_benchmark(cfg.benchmark, limit=cfg.limit, seed=cfg.seed,
                                                mapping=cfg.mapping, task=cfg.task).problems}
    if archived(out / "journal.jsonl").is_file():
        raise ConfigError(f"{out} holds an archived run (journal.jsonl.gz); gunzip it before judging")
    done = {(r["method"], r["problem_id"]) for r in read_journal(out / "journal.jsonl")
            if r.get("type") == "judgement" and r["baseline"] == baseline and r["judge"] == judge}
    todo = [(m, pid) for (m, pid), a in sorted(answers.items())
            if m != baseline and (m, pid) not in done and (baseline, pid) in answers and pid in problems]
    j = Judge(judge, base_url=base_url, n_threads=n_threads)

    async def run() -> None:
        with Journal(out / "journal.jsonl") as journal:
            for m, pid in todo:
                cand, base = answers[(m, pid)] or "", answers[(baseline, pid)] or ""
                if not cand.strip() or not base.strip():
                    verdict = "loss" if not cand.strip() and base.strip() else "tie"  # no answer loses
                    picks, tokens = (None, None), (0, 0)
                else:
                    v = await j.acompare(problems[pid], cand, base)
                    verdict, picks, tokens = v.verdict, v.picks, (v.prompt_tokens, v.completion_tokens)
                journal.write({"type": "judgement", "method": m, "baseline": baseline, "problem_id": pid,
                               "judge": judge, "verdict": verdict, "picks": list(picks),
                               "prompt_tokens": tokens[0], "completion_tokens": tokens[1]})

    asyncio.run(run())
    return {"judged_now": len(todo), "win_rates": judged_win_rates(out)}
