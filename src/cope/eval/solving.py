"""One problem solved into the record a run journals: shared by every engine.

The local runner and the Ray engine (``distributed``) call the same
functions with the same seeds, so a problem's record does not depend on
where it was solved.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..tasks.base import Problem
from .rundir import EvalConfig, method_cascade


@dataclass
class RunState:
    """What an engine needs to solve the rest of a run, and what it reports back.

    The runner fills it (problems left, prepared tasks, the journal, the call
    cache and the budget as resume left them); an engine solves ``todo``,
    writes every record to ``journal``, and fills the outcome fields.
    """

    cfg: EvalConfig
    todo: list[tuple[str, Problem]]
    tasks: dict[str, Any]
    prices: Any
    journal: Any
    cache: Any
    budget: Any
    bar: Any
    persist: bool = True  # calls go to the shared cross-run cache too
    stop: list[BaseException] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    succeeded: int = 0
    counters: dict[str, int] = field(default_factory=lambda: {"real": 0, "cached": 0})
    extra: dict[str, Any] = field(default_factory=dict)  # what an engine adds to the summary

    def failed(self, method: str, problem_id: str, error: str) -> None:
        """A problem ended in an error: journaled (``--resume`` tries it again) and counted."""
        self.journal.write({"type": "error", "method": method, "problem_id": problem_id, "error": error})
        self.failures.append({"method": method, "problem_id": problem_id, "error": error})


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed that does not depend on order or on --limit."""
    return int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()[:8], 16)


def _score(task, problem: Problem, answer: str | None) -> bool | None:
    """Correctness, or None for families without a right answer (open: judged pairwise later)."""
    try:
        return bool(task.score(problem, answer))
    except ConfigError:
        return None


def tokens_by_role(calls) -> dict[str, dict[str, dict[str, int]]]:
    """Prompt and completion tokens of ``calls``, by model tier and call role (the journal's tally)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for c in calls:
        t = out.setdefault(c.who, {}).setdefault(c.role, {"prompt": 0, "completion": 0})
        t["prompt"] += c.prompt_tokens
        t["completion"] += c.completion_tokens
    return out


def stage_outcome(stage, calls) -> dict[str, Any]:
    """One cascade stage in the journal's stage shape, before scoring (see ``cope.eval.rundir.StageRecord``).

    Shared by problems (scored below) and agent steps (which have no right
    answer), so a report reads one shape whichever family wrote it.
    """
    mine = [c for c in calls if c.stage == stage.stage]
    return {
        "stage": stage.stage, "n": stage.n, "drawn": stage.drawn or stage.n, "answer": stage.answer,
        "confidence": stage.confidence, "accepted": stage.accepted, "cost_usd": stage.cost_usd,
        # model time, kept from the original calls, so it survives resume and caching
        "latency_s": sum(c.latency_s for c in mine),
        "plan_cost_usd": sum(c.cost_usd for c in mine if c.role == "plan"),
        "tokens": tokens_by_role(mine),
        # per drawn sample, in draw order: what replaying early stopping counts
        "sample_tokens": list(stage.sample_tokens),
        "window_latency_s": list(stage.window_latency_s),
    }


def _stage_records(task, problem: Problem, result) -> list[dict[str, Any]]:
    """Per-stage outcome, scored, with what replay needs (clusters and their correctness)."""
    out = []
    for s in result.stages:
        rec = stage_outcome(s, result.calls)
        rec["correct"] = _score(task, problem, s.answer)
        if isinstance(s.info.get("passing"), list):  # code: which samples passed every visible test
            rec["passing"] = s.info["passing"]
        clusters = s.info.get("clusters")
        if isinstance(clusters, list):
            reps: dict[int, str] = {}
            for cid, ans in zip(clusters, s.extracted):
                if cid is not None and cid not in reps:
                    reps[cid] = ans
            rec["clusters"] = clusters
            if s.styles:
                rec["styles"] = s.styles
            rec["cluster_correct"] = {str(c): bool(_score(task, problem, a)) for c, a in reps.items()}
        out.append(rec)
    return out


def build_cope(cfg: EvalConfig, method: str, prices: Any, **overrides: Any) -> Any:
    """The Cope a run's method solves with, built as ``cope eval`` builds it (models not yet journaled)."""
    from ..api import Cope
    from ..methods import recording
    from ..models.endpoint import Endpoint

    config = method_cascade(cfg, method)
    if cfg.record:
        config = recording(config)
    return Cope(small=cfg.small, large=cfg.large, small_price_as=cfg.small_price_as,
                large_price_as=cfg.large_price_as, prices=prices, base_url=cfg.base_url, config=config,
                small_base_url=cfg.small_base_url, large_base_url=cfg.large_base_url,
                small_key_env=cfg.small_key_env, large_key_env=cfg.large_key_env,
                timeout=cfg.timeout, tiers={name: Endpoint(**f) for name, f in (cfg.tiers or {}).items()},
                **overrides)


async def solve_record(cfg: EvalConfig, solver: Any, task: Any, method: str, problem: Problem) -> dict[str, Any]:
    """Solve ``problem`` with ``solver`` (a built Cope) into its journal record (type "result")."""
    t0 = time.perf_counter()
    if task.driver is not None:  # an episodic family: the family's driver plays the item (agent: one game)
        from ..plugins import resolve

        rec, calls = await resolve(task.driver)(solver, problem, seed=problem_seed(cfg.seed, problem.id),
                                                max_steps=cfg.max_steps)
        return {"type": "result", "method": method, "problem_id": problem.id, **rec,
                "n_stages": len(solver.config.stages), "wall_s": time.perf_counter() - t0,
                "tokens": tokens_by_role(calls)}
    r = await solver.asolve(problem, task=task, seed=problem_seed(cfg.seed, problem.id))
    d = r.to_dict()
    return {
        "type": "result", "method": method, "problem_id": problem.id, "answer": r.answer,
        "reference": problem.reference, "correct": _score(task, problem, r.answer), "stage": r.stage,
        "n_stages": len(solver.config.stages), "confidence": r.confidence,
        "cost_usd": r.cost_usd, "latency_s": sum(c.latency_s for c in r.calls),
        "wall_s": time.perf_counter() - t0, "tokens": d["tokens"],
        "calls": len(r.calls), "stages": _stage_records(task, problem, r),
        "plans": d["plans"],
    }
