"""An eval item played as an episode: the agent family's driver hook (``AgentTask.driver``).

A benchmark item of the agent family is a game, not a problem: the runner
hands it to this driver instead of solving it with one cascade, and journals
the record it returns (success is the episode's, cost is per episode).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..eval.solving import stage_outcome
from ..tasks.base import Problem
from .episode import arun_episode
from .textworld import open_game


async def play_item(solver: Any, problem: Problem, *, seed: int, max_steps: int) -> tuple[dict[str, Any], list]:
    """Play ``problem``'s game with ``solver`` (a Cope); the result record's fields and the calls made."""
    env = await asyncio.to_thread(open_game, problem.meta["game"], level=problem.meta.get("level"))
    try:
        ep = await arun_episode(env, solver, max_steps=max_steps, seed=seed)
    finally:
        env.close()
    counts = ep.stage_counts()
    record = {
        "answer": ep.outcome, "reference": None, "correct": ep.success, "stage": max(counts, default=1),
        "confidence": None, "cost_usd": ep.cost_usd, "latency_s": sum(c.latency_s for c in ep.calls),
        "calls": len(ep.calls), "stages": [], "steps": ep.steps, "score": ep.score,
        "stage_counts": {str(k): v for k, v in counts.items()},
        # per step, what `cope show` prints: the action, the stage that settled it, its votes and cost
        # and, per stage the step ran, what the report needs to count samples drawn and replay
        # early stopping on the step's vote
        "episode": [{"step": r.step, "action": r.action, "stage": r.stage, "confidence": r.confidence,
                     "cost_usd": r.cost_usd, "votes": dict(r.votes), "fallback": r.fallback, "score": r.score,
                     "stages": step_stages(res)}
                    for r, res in zip(ep.records, ep.step_results)],
    }
    return record, ep.calls


def step_stages(result: Any) -> list[dict[str, Any]]:
    """One step's cascade stages in the journal's stage shape (see ``cope.eval.rundir.StageRecord``).

    The vote's keys are the matched actions numbered by first appearance
    (None: no admissible action), which is all an early-stopping rule reads.
    A step has no right answer, so ``correct`` is None.
    """
    out = []
    for s in result.stages:
        ids: dict[str, int] = {}
        rec = stage_outcome(s, result.calls)
        rec["clusters"] = [None if a is None else ids.setdefault(a, len(ids)) for a in s.extracted]
        rec["correct"] = None
        out.append(rec)
    return out
