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
from .solving import RunState, build_cope, problem_seed, solve_record

__all__ = ["EvalConfig", "build_cope", "load_results", "method_cascade", "problem_seed", "run_eval"]


async def _run(cfg: EvalConfig, out: Path, resume: bool, use_cache: bool, progress: bool,
               engine: Any = None) -> dict[str, Any]:
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
    state = RunState(cfg=cfg, todo=[], tasks={}, prices=prices, journal=journal, cache=cache, budget=budget,
                     bar=None, persist=use_cache)
    try:
        # problem-major, so a stopped run has every method on the same problems
        tasks = {m: task for m in cfg.methods}
        from ..methods import METHODS

        context = RunContext(cfg, out, resume, bench.problems, journal)
        for m in cfg.methods:
            if m in METHODS:
                tasks[m] = METHODS[m].prepare(task, context)
        state.tasks = tasks
        state.todo = [(m, p) for p in bench.problems for m in cfg.methods if (m, p.id) not in done]
        stats = {m: {"done": 0, "correct": 0, "cost": 0.0} for m in cfg.methods}
        for rec in load_results(out) if resume and journal_path.is_file() else []:
            st = stats.get(rec["method"])
            if st is not None:
                st["done"] += 1
                st["correct"] += int(bool(rec["correct"]))
                st["cost"] += rec["cost_usd"]
        state.bar = _Bar(len(state.todo), stats, budget, enabled=progress)
        if engine is not None:
            from .distributed import run_on_ray

            await run_on_ray(state, engine)
        else:
            await _run_here(state)
    finally:
        journal.close()
        cache.close()
    from .metrics import summarize_run

    summary = summarize_run(out)
    summary["this_invocation"] = {"real_calls": state.counters["real"], "cached_calls": state.counters["cached"],
                                  "spent_usd": budget.spent, "attempted": len(state.todo),
                                  "succeeded": state.succeeded, "unanswered_in_flight": len(in_flight),
                                  "unanswered_in_flight_usd": sum(in_flight), "failed": len(state.failures),
                                  "first_error": state.failures[0] if state.failures else None, **state.extra}
    if state.stop:
        summary["stopped"] = str(state.stop[0])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


async def _run_here(state: RunState) -> None:
    """The local engine: every problem in this process, ``cfg.concurrency`` at a time."""
    from ..models.gate import RateGate, request_gate

    cfg, bar = state.cfg, state.bar
    if cfg.rpm is not None or cfg.tpm is not None:
        request_gate.set(RateGate(cfg.rpm, cfg.tpm))
    solvers = {}
    for m in cfg.methods:
        c = build_cope(cfg, m, state.prices)
        for role, bound in c.models.items():
            bound.model = JournaledModel(bound.model, bound.price, state.cache, state.journal, state.budget,
                                         use_cache=True)
        solvers[m] = c
    sem = asyncio.Semaphore(max(1, cfg.concurrency))

    async def one(method: str, problem: Problem) -> None:
        async with sem:
            if state.stop:
                return
            try:
                rec = await solve_record(cfg, solvers[method], state.tasks[method], method, problem)
            except BudgetExceeded as exc:
                state.stop.append(exc)
                return
            except ModelProcessDied as exc:
                # a dead local model would fail every problem after it: stop; the calls
                # it answered before are in the journal, so --resume pays nothing twice
                state.failed(method, problem.id, str(exc))
                state.stop.append(exc)
                return
            except CopeError as exc:
                # one problem failing (server down, prompt too long) must not end the run;
                # it is journaled, and --resume tries it again
                state.failed(method, problem.id, str(exc))
                bar.advance(method, None)
                return
            state.journal.write(rec)
            bar.advance(method, (rec["correct"], rec["cost_usd"]))
            state.succeeded += 1

    with bar:
        await asyncio.gather(*(one(m, p) for m, p in state.todo))
    for m in solvers.values():
        for bound in m.models.values():
            state.counters["real"] += bound.model.real_calls
            state.counters["cached"] += bound.model.cached_calls


class _Bar:
    """A rich progress bar with running accuracy and spend per method."""

    def __init__(self, total: int, stats: dict[str, dict[str, float]], budget: Budget, enabled: bool) -> None:
        self.total, self.stats, self.budget, self.enabled = total, stats, budget, enabled
        self.progress = None
        self.workers: dict[str, int] | None = None  # problems each worker solved (a Ray run sets it)
        self.started = time.monotonic()
        self.finished = 0

    def __enter__(self) -> "_Bar":
        self.started = time.monotonic()
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
        text = " | ".join(parts) + f" | spent ${self.budget.spent:.4f}"
        if self.workers is not None:
            minutes = max(time.monotonic() - self.started, 1e-9) / 60
            text += f" | {self.finished / minutes:.1f}/min | " + " ".join(f"{w} {k}" for w, k in self.workers.items())
        return text

    def advance(self, method: str, outcome: tuple[bool | None, float] | None) -> None:
        self.finished += 1
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
             progress: bool = True, engine: Any = None) -> dict[str, Any]:
    """Run (or continue) an evaluation into ``out``; returns the summary.

    ``engine``: None solves here; a :class:`cope.eval.distributed.RayEngine`
    spreads the problems over Ray workers (the run directory is the same
    either way, so a run started on one can be resumed on the other).
    """
    if engine is not None:
        from .distributed import import_ray

        import_ray()  # without Ray installed: one line saying how, before anything is written
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
    return asyncio.run(_run(cfg, out, resume, use_cache, progress, engine))
