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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError, CopeError
from ..models.worker import ModelProcessDied
from ..tasks.base import Problem
from .calls import Budget, BudgetExceeded, CallCache, JournaledModel
from .journal import Journal, archived, journal_exists, read_journal

FORMAT = 1


@dataclass
class EvalConfig:
    benchmark: str
    methods: list[str]
    limit: int | None = None
    seed: int = 1234
    small: str = "local/qwen2.5-coder-0.5b"
    large: str = "local/qwen2.5-coder-1.5b"
    small_price_as: str | None = None
    large_price_as: str | None = "default"  # "default": the library's row for ``large`` (api.default_large_price_as)
    n: int = 8
    tau1: float | None = None  # None: the task family's default (math 0.75/0.5, code 1.0/1.0)
    tau2: float | None = None
    max_tokens: int = 512
    record: bool = False
    concurrency: int = 1
    max_usd: float | None = None
    prices: str | None = None
    base_url: str | None = None
    mapping: dict[str, str] | None = None
    task: str | None = None
    frugal_train: str | None = None  # a run directory the frugal scorer is trained on
    max_steps: int = 50  # agent benchmarks: the step budget of an episode
    timeout: float | None = None  # seconds per API request attempt (None: the backend's 120)
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.large_price_as == "default":
            from ..api import default_large_price_as

            self.large_price_as = default_large_price_as(self.large)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def method_cascade(cfg: EvalConfig, name: str):
    """The cascade a run's method name stands for: a preset file it loaded, or a built-in method."""
    presets = cfg.extra.get("presets", {})
    if name in presets:
        from ..presets import PresetFile

        return PresetFile.from_dict(presets[name]).config(cfg.max_tokens)
    from ..benchmarks.registry import benchmark_task
    from ..methods import method_config

    given = cfg.extra.get("taus_given", True)  # runs made before per-family presets: as given
    config = method_config(name, n=cfg.n, tau1=cfg.tau1, tau2=cfg.tau2, max_tokens=cfg.max_tokens,
                           explicit_taus=bool(given))
    return config.for_family(benchmark_task(cfg.benchmark, cfg.task))


def _stage_summary(st) -> dict[str, Any]:
    """One stage as config.json keeps it: who executes, how many samples, when it accepts, which plans."""
    out: dict[str, Any] = {"executor": st.executor, "n": st.n, "threshold": st.threshold}
    if st.plan:
        out["plan"] = f"{st.plan.count} {st.plan.kind} by {st.plan.planner}"
        if st.plan.windowed and st.window:
            out["plans_in_windows"] = True
    if st.use_plans:
        out["use_plans"] = list(st.use_plans)
    if st.styles:
        out["styles"] = list(st.styles)
    if st.stop != "none":
        out.update(window=st.window, stop=st.stop)
    if st.seed_index:
        out["of_stage"] = st.seed_index
    return out


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed that does not depend on order or on --limit."""
    return int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()[:8], 16)


def load_config(out: Path) -> EvalConfig:
    path = out / "config.json"
    if not path.is_file():
        raise ConfigError(f"{out} is not a run directory (no config.json)")
    try:
        return EvalConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable run config ({exc})") from None


def journal_records(out: Path) -> list[dict[str, Any]]:
    """Every record of a run's journal (or of its archive), read once."""
    if not journal_exists(out / "journal.jsonl"):
        raise ConfigError(f"{out} is not a run directory (no journal.jsonl)")
    return list(read_journal(out / "journal.jsonl"))


def latest_results(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The result records among ``records``, last one winning per (method, problem)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        if rec.get("type") == "result":
            latest[(rec["method"], rec["problem_id"])] = rec
    return list(latest.values())


def load_results(out: Path) -> list[dict[str, Any]]:
    """The result records of a run, last one winning per (method, problem)."""
    return latest_results(journal_records(out))


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


async def _run(cfg: EvalConfig, out: Path, resume: bool, use_cache: bool, progress: bool) -> dict[str, Any]:
    from ..api import Cope
    from ..benchmarks.registry import load_benchmark
    from ..methods import recording
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
            config = method_cascade(cfg, m)
            if cfg.record:
                config = recording(config)
            c = Cope(small=cfg.small, large=cfg.large, small_price_as=cfg.small_price_as,
                     large_price_as=cfg.large_price_as, prices=prices, base_url=cfg.base_url, config=config,
                     timeout=cfg.timeout)
            for role, bound in c.models.items():
                bound.model = JournaledModel(bound.model, bound.price, cache, journal, budget, use_cache=True)
            solvers[m] = c
        # problem-major, so a stopped run has every method on the same problems
        tasks = {m: task for m in cfg.methods}
        if "frugal" in cfg.methods:
            from ..frugal import FrugalScorer, FrugalTask, train_from_run

            scorer_file = out / "frugal_scorer.json"
            if resume and scorer_file.is_file():
                scorer = FrugalScorer.load(scorer_file)  # the same scorer as before the stop
            else:
                scorer = train_from_run(Path(cfg.frugal_train or ""))
                scorer.save(scorer_file)
            overlap = len(set(scorer.trained_on) & {p.id for p in bench.problems})
            if overlap:
                journal.write({"type": "note", "message": f"frugal scorer trained on {overlap} of these problems"})
            tasks["frugal"] = FrugalTask(task, scorer)
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
                    if bench.task == "agent":
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
            """An agent benchmark item is an episode: success is its score, cost is per episode."""
            from ..envs.textworld_env import open_game
            from ..episode import arun_episode

            env = await asyncio.to_thread(open_game, problem.meta["game"], level=problem.meta.get("level"))
            try:
                ep = await arun_episode(env, solvers[method], max_steps=cfg.max_steps,
                                        seed=problem_seed(cfg.seed, problem.id))
            finally:
                env.close()
            counts = ep.stage_counts()
            journal.write({
                "type": "result", "method": method, "problem_id": problem.id, "answer": ep.outcome,
                "reference": None, "correct": ep.success, "stage": max(counts, default=1),
                "n_stages": len(solvers[method].config.stages), "confidence": None,
                "cost_usd": ep.cost_usd, "latency_s": sum(c.latency_s for c in ep.calls),
                "wall_s": time.perf_counter() - t0, "calls": len(ep.calls), "stages": [],
                "tokens": _tokens(ep.calls), "steps": ep.steps, "score": ep.score,
                "stage_counts": {str(k): v for k, v in counts.items()},
            })
            bar.advance(method, (ep.success, ep.cost_usd))
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
        from ..methods import METHODS
        from ..pricing import PriceTable

        from ..benchmarks.registry import benchmark_task
        from ..tasks import get_task

        taus = get_task(benchmark_task(cfg.benchmark, cfg.task)).default_taus
        # recorded so a method calibrated per family (cope-auto) knows these are defaults, not the user's
        cfg.extra["taus_given"] = cfg.tau1 is not None or cfg.tau2 is not None
        cfg.tau1 = taus[0] if cfg.tau1 is None else cfg.tau1
        cfg.tau2 = taus[1] if cfg.tau2 is None else cfg.tau2
        unknown = [m for m in cfg.methods if m not in METHODS and m not in cfg.extra.get("presets", {})]
        if unknown:
            raise ConfigError(f"unknown method '{unknown[0]}'; known: {', '.join(METHODS)}")
        if "frugal" in cfg.methods and not cfg.frugal_train:
            raise ConfigError("--method frugal needs --frugal-train RUN_DIR (a run whose first stage voted, "
                              "e.g. small-vote on other problems)")
        # what each method ran, resolved (a preset file's or a family's calibrated setting), for the record
        cfg.extra["cascades"] = {m: [_stage_summary(st) for st in method_cascade(cfg, m).stages]
                                 for m in cfg.methods}
        record = asdict(cfg)
        record["price_table"] = PriceTable.load(cfg.prices).version
        from .. import __version__

        record["cope_version"] = __version__
        cfg_path.write_text(json.dumps(record, indent=2))
    return asyncio.run(_run(cfg, out, resume, use_cache, progress))
