"""`cope eval`: run methods over a benchmark into a run directory.

A run directory holds ``config.json`` (what was run, with the price-table
version), ``journal.jsonl`` (every model call and every result, append-only)
and ``summary.json`` (metrics, regenerable from the journal). ``--resume``
reads the journal: finished (method, problem) pairs are skipped and every
call already made is answered from the journal, so a killed run continues
without repeating or paying for anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError, CopeError
from ..models.worker import ModelProcessDied
from ..tasks.base import Problem
from .calls import Budget, BudgetExceeded, CallCache, JournaledModel
from .journal import Journal, archived, read_journal
from .rundir import EvalConfig, RunContext, load_config, load_results, method_cascade, stage_summary

def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed that does not depend on order or on --limit."""
    return int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()[:8], 16)


def _score(task, problem: Problem, answer: str | None) -> bool | None:
    """Correctness, or None for families without a right answer (open: judged pairwise later)."""
    try:
        return bool(task.score(problem, answer))
    except ConfigError:
        return None


def _tokens(calls) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for c in calls:
        t = out.setdefault(c.who, {}).setdefault(c.role, {"prompt": 0, "completion": 0})
        t["prompt"] += c.prompt_tokens
        t["completion"] += c.completion_tokens
    return out


def _stage_records(task, problem: Problem, result) -> list[dict[str, Any]]:
    """Per-stage outcome, scored, with what replay needs (clusters and their correctness)."""
    out = []
    for s in result.stages:
        rec = {
            "stage": s.stage, "n": s.n, "drawn": s.drawn or s.n, "answer": s.answer, "confidence": s.confidence,
            "accepted": s.accepted, "cost_usd": s.cost_usd,
            # model time, kept from the original calls, so it survives resume and caching
            "latency_s": sum(c.latency_s for c in result.calls if c.stage == s.stage),
            "plan_cost_usd": sum(c.cost_usd for c in result.calls if c.stage == s.stage and c.role == "plan"),
            "tokens": _tokens([c for c in result.calls if c.stage == s.stage]),
            # per drawn sample, in draw order: what replaying early stopping counts
            "sample_tokens": s.sample_tokens,
            "window_latency_s": s.window_latency_s,
            "correct": _score(task, problem, s.answer),
        }
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


async def _run(cfg: EvalConfig, out: Path, resume: bool, use_cache: bool, progress: bool) -> dict[str, Any]:
    from ..benchmarks.registry import load_benchmark
    from ..models.local_files import cache_dir
    from ..pricing import PriceTable
    from ..tasks import get_task

    bench = load_benchmark(cfg.benchmark, limit=cfg.limit, seed=cfg.seed, mapping=cfg.mapping, task=cfg.task)
    task = get_task(bench.task)
    prices = PriceTable.load(cfg.prices)
    journal_path = out / "journal.jsonl"
    done: set[tuple[str, str]] = set()
    cache = CallCache(cache_dir().parent / "calls.sqlite" if use_cache else None)
    spent = 0.0
    intents: dict[str, float] = {}
    ended: set[str] = set()
    if resume:
        for rec in read_journal(journal_path):
            if rec.get("type") == "intent":
                intents[str(rec.get("intent"))] = float(rec.get("bound") or 0.0)
            elif rec.get("intent"):
                ended.add(str(rec["intent"]))
            if rec.get("type") == "call":
                cache.put(rec["key"], rec["generations"], persist=False)
                spent += rec.get("usd", 0.0)
            elif rec.get("type") == "call_failed":  # partly paid before it failed: spend, not an answer
                spent += rec.get("usd", 0.0)
            elif rec.get("type") == "result":
                done.add((rec["method"], rec["problem_id"]))
    # priced calls that were in flight when an earlier invocation died: the API may have billed
    # them, no answer was kept; counted at their worst case, so the cap still holds
    in_flight = [b for i, b in intents.items() if i not in ended]
    spent += sum(in_flight)
    budget = Budget(cfg.max_usd, spent)
    journal = Journal(journal_path)
    counters = {"real": 0, "cached": 0}
    try:
        solvers = {}
        for m in cfg.methods:
            c = build_cope(cfg, m, prices)
            for role, bound in c.models.items():
                bound.model = JournaledModel(bound.model, bound.price, cache, journal, budget, use_cache=True)
            solvers[m] = c
        # problem-major, so a stopped run has every method on the same problems
        tasks = {m: task for m in cfg.methods}
        from ..methods import METHODS

        context = RunContext(cfg, out, resume, bench.problems, journal)
        for m in cfg.methods:
            if m in METHODS:
                tasks[m] = METHODS[m].prepare(task, context)
        todo = [(m, p) for p in bench.problems for m in cfg.methods if (m, p.id) not in done]
        sem = asyncio.Semaphore(max(1, cfg.concurrency))
        stats = {m: {"done": 0, "correct": 0, "cost": 0.0} for m in cfg.methods}
        for rec in load_results(out) if resume and journal_path.is_file() else []:
            st = stats.get(rec["method"])
            if st is not None:
                st["done"] += 1
                st["correct"] += int(bool(rec["correct"]))
                st["cost"] += rec["cost_usd"]
        bar = _Bar(len(todo), stats, budget, enabled=progress)
        stop: list[BaseException] = []
        failures: list[dict[str, str]] = []
        succeeded = [0]

        async def one(method: str, problem: Problem) -> None:
            async with sem:
                if stop:
                    return
                t0 = time.perf_counter()
                try:
                    if task.driver is not None:
                        await play(method, problem, t0)
                        return
                    r = await solvers[method].asolve(problem, task=tasks[method],
                                                     seed=problem_seed(cfg.seed, problem.id))
                except BudgetExceeded as exc:
                    stop.append(exc)
                    return
                except ModelProcessDied as exc:
                    # a dead local model would fail every problem after it: stop; the calls
                    # it answered before are in the journal, so --resume pays nothing twice
                    journal.write({"type": "error", "method": method, "problem_id": problem.id, "error": str(exc)})
                    failures.append({"method": method, "problem_id": problem.id, "error": str(exc)})
                    stop.append(exc)
                    return
                except CopeError as exc:
                    # one problem failing (server down, prompt too long) must not end the run;
                    # it is journaled, and --resume tries it again
                    journal.write({"type": "error", "method": method, "problem_id": problem.id, "error": str(exc)})
                    failures.append({"method": method, "problem_id": problem.id, "error": str(exc)})
                    bar.advance(method, None)
                    return
                correct = _score(task, problem, r.answer)
                d = r.to_dict()
                journal.write({
                    "type": "result", "method": method, "problem_id": problem.id, "answer": r.answer,
                    "reference": problem.reference, "correct": correct, "stage": r.stage,
                    "n_stages": len(solvers[method].config.stages), "confidence": r.confidence,
                    "cost_usd": r.cost_usd, "latency_s": sum(c.latency_s for c in r.calls),
                    "wall_s": time.perf_counter() - t0, "tokens": d["tokens"],
                    "calls": len(r.calls), "stages": _stage_records(task, problem, r),
                    "plans": d["plans"],
                })
                bar.advance(method, (correct, r.cost_usd))
                succeeded[0] += 1

        async def play(method: str, problem: Problem, t0: float) -> None:
            """An item of an episodic family is played by the family's driver (agent: one game)."""
            from ..plugins import resolve

            rec, calls = await resolve(task.driver)(solvers[method], problem, seed=problem_seed(cfg.seed, problem.id),
                                                    max_steps=cfg.max_steps)
            journal.write({"type": "result", "method": method, "problem_id": problem.id, **rec,
                           "n_stages": len(solvers[method].config.stages), "wall_s": time.perf_counter() - t0,
                           "tokens": _tokens(calls)})
            bar.advance(method, (rec["correct"], rec["cost_usd"]))
            succeeded[0] += 1

        with bar:
            await asyncio.gather(*(one(m, p) for m, p in todo))
        for m in solvers.values():
            for bound in m.models.values():
                counters["real"] += bound.model.real_calls
                counters["cached"] += bound.model.cached_calls
    finally:
        journal.close()
        cache.close()
    from .metrics import summarize_run

    summary = summarize_run(out)
    summary["this_invocation"] = {"real_calls": counters["real"], "cached_calls": counters["cached"],
                                  "spent_usd": budget.spent, "attempted": len(todo), "succeeded": succeeded[0],
                                  "unanswered_in_flight": len(in_flight),
                                  "unanswered_in_flight_usd": sum(in_flight),
                                  "failed": len(failures), "first_error": failures[0] if failures else None}
    if stop:
        summary["stopped"] = str(stop[0])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class _Bar:
    """A rich progress bar with running accuracy and spend per method."""

    def __init__(self, total: int, stats: dict[str, dict[str, float]], budget: Budget, enabled: bool) -> None:
        self.total, self.stats, self.budget, self.enabled = total, stats, budget, enabled
        self.progress = None

    def __enter__(self) -> "_Bar":
        if self.enabled and self.total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True))
            self.progress.start()
            self.task_id = self.progress.add_task(self._text(), total=self.total)
        return self

    def _text(self) -> str:
        parts = []
        for m, s in self.stats.items():
            acc = f"{s['correct'] / s['done']:.0%}" if s["done"] else "-"
            parts.append(f"{m} {acc} ${s['cost']:.4f}")
        return " | ".join(parts) + f" | spent ${self.budget.spent:.4f}"

    def advance(self, method: str, outcome: tuple[bool | None, float] | None) -> None:
        if outcome is not None:
            s = self.stats[method]
            s["done"] += 1
            s["correct"] += int(bool(outcome[0]))
            s["cost"] += outcome[1]
        if self.progress is not None:
            self.progress.update(self.task_id, advance=1, description=self._text())

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_eval(cfg: EvalConfig, out: Path, *, resume: bool = False, use_cache: bool = True,
             progress: bool = True) -> dict[str, Any]:
    """Run (or continue) an evaluation into ``out``; returns the summary."""
    if not cfg.methods:
        raise ConfigError("give at least one --method")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".cope-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write a run there ({exc.strerror or exc})") from None
    cfg_path = out / "config.json"
    if archived(out / "journal.jsonl").is_file():
        raise ConfigError(f"{out} holds an archived run (journal.jsonl.gz); gunzip it to continue the run, "
                          "or use another --out")
    if resume:
        if not cfg_path.is_file():
            raise ConfigError(f"--resume: {out} holds no run to resume (no config.json)")
        limit = cfg.limit
        cfg = load_config(out)
        if limit is not None and limit != cfg.limit:
            # Problem ids do not depend on --limit, so a run can be extended.
            cfg.limit = limit
            stored = json.loads(cfg_path.read_text())
            stored["limit"] = limit
            cfg_path.write_text(json.dumps(stored, indent=2))
    else:
        if (out / "journal.jsonl").is_file() and (out / "journal.jsonl").stat().st_size:
            raise ConfigError(f"{out} already holds a run; use --resume to continue it or another --out")
        from ..methods import METHODS, method_names
        from ..pricing import PriceTable

        from ..benchmarks.registry import benchmark_task
        from ..tasks import get_task

        taus = get_task(benchmark_task(cfg.benchmark, cfg.task)).default_taus
        # recorded so a method calibrated per family (cope-auto) knows these are defaults, not the user's
        cfg.extra["taus_given"] = cfg.tau1 is not None or cfg.tau2 is not None
        cfg.tau1 = taus[0] if cfg.tau1 is None else cfg.tau1
        cfg.tau2 = taus[1] if cfg.tau2 is None else cfg.tau2
        unknown = [m for m in cfg.methods if m not in METHODS and m not in cfg.extra.get("presets", {})
                   and m not in cfg.extra.get("cascade_files", {})]
        if unknown:
            raise ConfigError(f"unknown method '{unknown[0]}'; known: {method_names()}")
        for m in cfg.methods:
            if m in METHODS:
                cfg.solver(m).validate()  # n, thresholds, max_tokens: refused as the library refuses them
            for setting, message in (METHODS[m].needs.items() if m in METHODS else ()):
                if not getattr(cfg, setting):
                    raise ConfigError(message)
        # what each method ran, resolved (a preset file's or a family's calibrated setting), for the record
        cfg.extra["cascades"] = {m: [stage_summary(st) for st in method_cascade(cfg, m).stages]
                                 for m in cfg.methods}
        record = asdict(cfg)
        record["price_table"] = PriceTable.load(cfg.prices).version
        from .. import __version__

        record["cope_version"] = __version__
        cfg_path.write_text(json.dumps(record, indent=2))
    return asyncio.run(_run(cfg, out, resume, use_cache, progress))
