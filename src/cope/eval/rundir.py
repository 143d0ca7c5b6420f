"""The run directory: what a run is made of, and the one place that reads it.

A run directory holds ``config.json`` (an :class:`EvalConfig` with the
price-table version), ``journal.jsonl`` (every model call and every result,
append-only; ``journal.jsonl.gz`` once archived) and ``summary.json``
(regenerable). The runner writes it; metrics, replay, judging, reports and
the frugal scorer read it through this module, so none of them imports the
runner and the record shapes are written down once (:class:`ResultRecord`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, TypedDict

from ..errors import ConfigError
from .journal import journal_exists, read_journal

if TYPE_CHECKING:
    from ..solver import SolverConfig
    from ..tasks.base import Problem
    from .journal import Journal


class StageRecord(TypedDict, total=False):
    """One stage of one solved problem, as the journal keeps it (what replay needs)."""

    stage: int
    n: int
    drawn: int  # samples actually drawn (early stopping); n when the vote ran in full
    answer: str | None
    confidence: float
    accepted: bool
    cost_usd: float
    latency_s: float
    plan_cost_usd: float
    tokens: dict[str, dict[str, dict[str, int]]]  # who -> role -> prompt/completion
    sample_tokens: list[int]
    window_latency_s: list[float]
    correct: bool | None
    passing: list[bool]  # code: which samples passed every visible test
    clusters: list[int | None]  # vote cluster per sample (None: no answer)
    styles: list[str]
    cluster_correct: dict[str, bool]


class ResultRecord(TypedDict, total=False):
    """One method's outcome on one problem (``"type": "result"`` in the journal)."""

    type: str
    method: str
    problem_id: str
    answer: str | None
    reference: Any
    correct: bool | None  # None: no right answer (open-ended; judged pairwise later)
    stage: int
    n_stages: int
    confidence: float | None
    cost_usd: float
    latency_s: float  # model time, from the original calls (survives resume and caching)
    wall_s: float
    tokens: dict[str, dict[str, dict[str, int]]]
    calls: int
    stages: list[StageRecord]
    plans: list[dict[str, Any]]
    steps: int  # agent episodes
    score: float
    stage_counts: dict[str, int]


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
    # each model's own endpoint (win over base_url); key variables are names, never keys
    small_base_url: str | None = None
    large_base_url: str | None = None
    small_key_env: str | None = None
    large_key_env: str | None = None
    # the models of a cascade file's other tiers: {name: {spec, base_url, key_env}} (--tier NAME=SPEC)
    tiers: dict[str, dict[str, str]] | None = None
    # per-minute caps on each API model's requests and tokens, shared by everything the run sends
    rpm: float | None = None
    tpm: float | None = None
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.large_price_as == "default":
            from ..api import default_large_price_as

            self.large_price_as = default_large_price_as(self.large)

    def solver(self, method: str) -> "SolverConfig":
        """One method of this run as the library's solver configuration (checked the same way)."""
        from ..solver import SolverConfig

        return SolverConfig(method=method, n=self.n, tau1=self.tau1, tau2=self.tau2, max_tokens=self.max_tokens)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def method_cascade(cfg: EvalConfig, name: str):
    """The cascade a run's method name stands for: a cascade or preset file it loaded, or a built-in method."""
    files = cfg.extra.get("cascade_files", {})
    if name in files:
        from ..cascade_file import loads

        return loads(files[name], f"the run's cascade '{name}'")
    presets = cfg.extra.get("presets", {})
    if name in presets:
        from ..methods import PresetFile

        return PresetFile.from_dict(presets[name]).config(cfg.max_tokens)
    from ..benchmarks.registry import benchmark_task
    from ..methods import method_config

    given = cfg.extra.get("taus_given", True)  # runs made before per-family presets: as given
    config = method_config(name, n=cfg.n, tau1=cfg.tau1, tau2=cfg.tau2, max_tokens=cfg.max_tokens,
                           explicit_taus=bool(given))
    return config.for_family(benchmark_task(cfg.benchmark, cfg.task))


def stage_summary(st) -> dict[str, Any]:
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


def latest_results(records: Iterable[dict[str, Any]]) -> list[ResultRecord]:
    """The result records among ``records``, last one winning per (method, problem)."""
    latest: dict[tuple[str, str], Any] = {}
    for rec in records:
        if rec.get("type") == "result":
            latest[(rec["method"], rec["problem_id"])] = rec
    return list(latest.values())


def load_results(out: Path) -> list[ResultRecord]:
    """The result records of a run, last one winning per (method, problem)."""
    return latest_results(journal_records(out))


@dataclass
class RunContext:
    """A run being written, as a method's hook sees it (``Method.prepare``)."""

    cfg: EvalConfig
    out: Path
    resume: bool
    problems: Sequence["Problem"]
    journal: "Journal"
