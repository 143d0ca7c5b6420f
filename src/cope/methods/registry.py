"""The method registry: each named method is an entry that carries what it is and what it needs.

A method is a factory of a :class:`~cope.cascade.CascadeConfig` (its stages
as data) registered under a name with :func:`register`, next to its
definition (``builtin``, ``auto``). An entry says, besides the factory, what
a run of it needs that other methods do not (``needs``: the frugal scorer's
training run) and how a runner prepares the task for it (``wraps_task``), so
the runner and the CLI read the registry instead of naming methods; the CLI's
help lists are generated from it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..cascade import NEVER, CascadeConfig
from ..errors import ConfigError
from ..tasks.base import Task


@dataclass(frozen=True)
class Method:
    """One registered method: its factory and its metadata."""

    name: str
    factory: Callable[..., CascadeConfig]
    summary: str
    # run settings (EvalConfig fields) a run of this method must set, with the message if one is missing
    needs: dict[str, str] = field(default_factory=dict)
    # "module:function" taking (task, run) and returning the task the method solves with
    # (a plugin reference, resolved when a run starts, so the registry imports no method's helpers)
    wraps_task: str | None = None
    # a recorded run reports the calibration of this method's first-stage consensus
    reliability: bool = False

    @property
    def options(self) -> frozenset[str]:
        """The keyword options the factory declares."""
        return frozenset(inspect.signature(self.factory).parameters)

    def prepare(self, task: Task, run: Any) -> Task:
        """The task this method solves with in ``run`` (an eval run's context); most keep it."""
        if self.wraps_task is None:
            return task
        from ..plugins import resolve

        return resolve(self.wraps_task)(task, run)


@dataclass(frozen=True)
class Replay:
    """A method a recording answers with no model call, built from other methods' recorded rows."""

    name: str
    sources: tuple[str, ...]  # the methods whose rows it is built from (all must be in the run)
    # "module:function" taking ({source: rows}, run config) and returning rows (None: too few to build)
    build: str
    note: str  # the line the run's summary shows


METHODS: dict[str, Method] = {}
REPLAYS: dict[str, Replay] = {}


def register(name: str, *, needs: dict[str, str] | None = None, wraps_task: str | None = None,
             reliability: bool = False) -> Callable[[Callable[..., CascadeConfig]], Callable[..., CascadeConfig]]:
    """Register a method factory under ``name`` (its docstring's first line is its summary)."""

    def deco(factory: Callable[..., CascadeConfig]) -> Callable[..., CascadeConfig]:
        if name in METHODS:
            raise ValueError(f"method '{name}' is registered twice")
        summary = (inspect.getdoc(factory) or name).splitlines()[0].rstrip(".")
        METHODS[name] = Method(name, factory, summary, dict(needs or {}), wraps_task, reliability)
        return factory

    return deco


def register_replay(name: str, *, sources: tuple[str, ...], build: str, note: str) -> None:
    """Register a method that a recorded run's summary replays from other methods' rows."""
    if name in REPLAYS:
        raise ValueError(f"replay '{name}' is registered twice")
    REPLAYS[name] = Replay(name, tuple(sources), build, note)


def method_names() -> str:
    """The registered names, comma-separated, in registration order (for help and errors)."""
    return ", ".join(METHODS)


# Options a caller may give any method (a method that does not use one ignores it: the large
# model alone has no thresholds); any other option must be one the method declares.
COMMON_OPTIONS = frozenset({"n", "tau1", "tau2", "max_tokens"})


def method_options(name: str) -> frozenset[str]:
    """The keyword options a method's factory declares."""
    return METHODS[name].options


def method_config(name: str, *, explicit_taus: bool = True, **options: object) -> CascadeConfig:
    """A named method's cascade.

    ``explicit_taus`` False says the thresholds in ``options`` are defaults,
    not the user's: a method calibrated per task family (cope-auto) then keeps
    its families' own settings. Thresholds a user gave always win.
    """
    try:
        factory = METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}'; known: {', '.join(METHODS)}") from None
    accepted = method_options(name)
    unknown = sorted(set(options) - COMMON_OPTIONS - accepted)
    if unknown:
        raise ConfigError(f"method '{name}' has no option '{unknown[0]}'; it takes: {', '.join(sorted(accepted))}")
    # the options every method is offered (n, thresholds, max_tokens) reach only the methods that use them
    config = factory.factory(**{k: v for k, v in options.items() if k in accepted})
    return replace(config, variants=()) if explicit_taus else config


def task_config(name: str, task: "Task", *, tau1: float | None = None, tau2: float | None = None,
                **options: object) -> CascadeConfig:
    """The cascade a method runs for a task family: the one place thresholds get their defaults.

    A threshold not given is the family's own (``Task.default_taus``: code
    accepts only a sample that passes every visible test), and a method
    calibrated per family (cope-auto) keeps its families' settings unless the
    caller gave a threshold.
    """
    d1, d2 = task.default_taus
    config = method_config(name, tau1=d1 if tau1 is None else tau1, tau2=d2 if tau2 is None else tau2,
                           explicit_taus=tau1 is not None or tau2 is not None, **options)
    return config.for_family(task.name)


def recording(config: CascadeConfig) -> CascadeConfig:
    """The same cascade with every stage run for every problem.

    Non-final thresholds become NEVER, so the journal holds all stages'
    outputs and any thresholds can be replayed later without model calls.
    Plans still flow as live (g_S is chosen by stage 1's majority, which does
    not depend on thresholds). Every window of every stage is drawn (``stop="none"``), seeded as live,
    so early stopping replays exactly from the first samples of each vote.
    """
    last = len(config.stages) - 1
    return replace(config, stages=tuple(
        replace(st, stop="none") if i == last else replace(st, threshold=NEVER, stop="none")
        for i, st in enumerate(config.stages)
    ), variants=tuple((fam, recording(cfg)) for fam, cfg in config.variants))
