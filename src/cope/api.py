"""The Python entry point: ``cope.Cope(small=..., large=...).solve(problem)``."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Mapping

from .cascade import BoundModel, Cascade, CascadeConfig, EventSink, Result
from .errors import ConfigError
from .models.base import Model
from .models.endpoint import Endpoint
from .pricing import PriceTable
from .solver import SolverConfig
from .tasks.base import Problem, Task

DEFAULT_SMALL = "local/qwen2.5-coder-0.5b"
DEFAULT_LARGE = "local/qwen2.5-coder-1.5b"
# The offline default stands in for a paid model; charge it as one so the
# dollars in its reports mean something (and every report says so).
DEFAULT_LARGE_PRICE_AS = "gpt-4o-mini"


def default_large_price_as(large: "str | Model | Endpoint") -> str | None:
    """The price row a large model is charged at when the caller does not say: the one place this
    is decided (the offline default large model as gpt-4o-mini, every other model at its own)."""
    spec = large.spec if isinstance(large, Endpoint) else large
    return DEFAULT_LARGE_PRICE_AS if isinstance(spec, str) and spec == DEFAULT_LARGE else None

_UNSET: Any = object()


def _task(task: "str | Task") -> "Task":
    """A task family by name, or a configured Task object (e.g. OpenTask(max_perplexity=2.0))."""
    if not isinstance(task, str):
        if not isinstance(task, Task):
            raise ConfigError(f"a task must be a family name or a cope.tasks.Task subclass instance, "
                              f"got {type(task).__name__}")
        return task
    from .tasks import get_task

    return get_task(task)


class Cope:
    """A small and a large model collaborating through plans.

    ``small`` / ``large`` are specs ("local/<name>", "openai/<model>",
    "ollama/<model>", ...), :class:`~cope.models.endpoint.Endpoint` values (a
    spec with its own base URL and key variable) or objects implementing the
    Model protocol; ``small_base_url`` / ``large_base_url`` and
    ``small_key_env`` / ``large_key_env`` give one model its endpoint (``base_url``
    and ``api_key`` are shared by both). ``*_price_as`` charges a model at
    another model's price-table row. ``method`` picks a preset from
    ``cope.methods`` (default: the paper's three-stage COPE); ``method``, ``n``,
    the thresholds and ``max_tokens`` make a :class:`~cope.solver.SolverConfig`
    (or pass ``solver=`` one, e.g. with a preset file); ``config`` sets a
    cascade of one's own instead.
    """

    def __init__(
        self,
        small: str | Model | Endpoint = DEFAULT_SMALL,
        large: str | Model | Endpoint = DEFAULT_LARGE,
        *,
        n: int = 8,
        tau1: float | None = None,
        tau2: float | None = None,
        method: str = "cope",
        max_tokens: int = 512,
        small_price_as: str | None = None,
        large_price_as: str | None = _UNSET,
        prices: str | os.PathLike[str] | PriceTable | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        n_threads: int | None = None,
        config: CascadeConfig | None = None,
        timeout: float | None = None,
        solver: SolverConfig | None = None,
        small_base_url: str | None = None,
        large_base_url: str | None = None,
        small_key_env: str | None = None,
        large_key_env: str | None = None,
        cascade: "str | os.PathLike[str] | CascadeConfig | None" = None,
        tiers: "Mapping[str, str | Model | Endpoint] | None" = None,
    ) -> None:
        if cascade is not None:  # a cascade file (cope.cascade_file) or a CascadeConfig of one's own
            if solver is not None or config is not None:
                raise ConfigError("give cascade=, solver= or config=, not several")
            if isinstance(cascade, CascadeConfig):
                config = cascade
            else:
                solver = SolverConfig(cascade_file=os.fspath(cascade), max_tokens=max_tokens)
        # one validated value for method, n, thresholds and preset file (see cope.solver)
        self.solver = (solver if solver is not None else
                       SolverConfig(method=method, n=n, tau1=tau1, tau2=tau2, max_tokens=max_tokens)).validate()
        if large_price_as is _UNSET:
            large_price_as = default_large_price_as(large)
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable.load(prices)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0 or timeout == float("inf")):
            raise ConfigError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        # each model is its own endpoint: a role's base URL and key variable apply to that model only
        # (base_url / api_key are shared fallbacks, as before)
        per_role = {"small": (small_base_url, small_key_env), "large": (large_base_url, large_key_env)}
        self.models: dict[str, BoundModel] = {}
        for role, spec, price_as in (("small", small, small_price_as), ("large", large, large_price_as)):
            url, key_env = per_role[role]
            if isinstance(spec, str):
                spec = Endpoint(spec, base_url=url, key_env=key_env)
            elif isinstance(spec, Endpoint):
                if url or key_env:
                    raise ConfigError(f"give the {role} model's base URL and key variable in its Endpoint, not twice")
            elif url or key_env:
                raise ConfigError(f"{role}_base_url / {role}_key_env are for a model spec or Endpoint, "
                                  "not a Model object (it is already built)")
            model = (spec.build(role, base_url=base_url, api_key=api_key, n_threads=n_threads, timeout=timeout)
                     if isinstance(spec, Endpoint) else spec)
            if isinstance(spec, Endpoint) and spec.price_as and not price_as:
                price_as = spec.price_as
            self.models[role] = BoundModel(model, self.prices.for_spec(model.spec, price_as))
        self._fixed: CascadeConfig | None = None
        if config is not None:
            config.validate()
        # tiers beyond small and large: the caller's, then those a cascade file declares
        declared = dict((config or (self.solver.default_cascade() if self.solver.cascade_file else None)
                         or CascadeConfig(stages=())).tiers)
        for name, spec in {**declared, **dict(tiers or {})}.items():
            if name in self.models:
                raise ConfigError(f"tier '{name}' is given twice (small and large are the small= and large= models)")
            if spec is None:
                raise ConfigError(f"the cascade's tier '{name}' has no model: give it one (Cope(tiers=...), "
                                  f"--tier {name}=SPEC, or a server preset's tiers)")
            if isinstance(spec, str):
                spec = Endpoint(spec)
            model = (spec.build(f"tier {name}", base_url=base_url, api_key=api_key, n_threads=n_threads,
                                timeout=timeout) if isinstance(spec, Endpoint) else spec)
            self.models[name] = BoundModel(model, self.prices.for_spec(
                model.spec, spec.price_as if isinstance(spec, Endpoint) else None))
        self._default: CascadeConfig | None = None
        self._per_task: dict[tuple[str, tuple[float, float]], CascadeConfig] = {}
        if config is not None:
            self.config = config

    @property
    def config(self) -> CascadeConfig:
        """The cascade as set, or (no config given) the method's at the paper's default thresholds;
        :meth:`config_for` is what a task family actually runs."""
        if self._fixed is not None:
            return self._fixed
        if self._default is None:
            self._default = self.solver.default_cascade()
        return self._default

    @config.setter
    def config(self, value: CascadeConfig) -> None:
        value.validate()
        unbound = sorted({t for st in value.stages for t in (*st.members, st.plan.planner if st.plan else st.executor)}
                         - set(self.models))
        if unbound:
            raise ConfigError(f"the cascade uses tier '{unbound[0]}', which has no model; tiers: {', '.join(self.models)}")
        self._fixed = value
        self._per_task = {}  # a new dict: a shallow copy (the server's capped Cope) must not clear its original's

    def config_for(self, task: Task) -> CascadeConfig:
        """The cascade this Cope runs for ``task``: the one set, or the solver's with the family's thresholds."""
        from dataclasses import replace

        # resolved once per family: the family's setting, without the other families' (a variant's
        # own variants must not be applied a second time)
        key = (task.name, tuple(task.default_taus))
        if key not in self._per_task:
            self._per_task[key] = (replace(self._fixed.for_family(task.name), variants=())
                                   if self._fixed is not None else self.solver.cascade(task))
        return self._per_task[key]

    @property
    def pricing_notes(self) -> list[str]:
        """Lines a report must show: which models are priced as which."""
        return [b.price.note for b in self.models.values() if b.price.note]

    async def asolve(
        self, problem: Problem | str, task: "str | Task" = "math", *, seed: int | None = None, on_event: EventSink | None = None
    ) -> Result:
        """Solve one problem; async so servers and batch runners can run many at once.

        ``problem`` is the text, or a :class:`Problem` carrying earlier turns of a
        conversation, visible tests or a reference answer.
        """
        task_obj = _task(task)
        # A family may read more than text out of a bare prompt (code: the
        # docstring examples of a stub become visible tests).
        if isinstance(problem, str):
            problem = task_obj.problem_from_text(problem)
        cascade = Cascade(self.config_for(task_obj), self.models, task_obj)
        result = await cascade.run(problem, seed=seed, on_event=on_event)
        result.info.setdefault("pricing", self.pricing_notes)
        result.info.setdefault("price_table", self.prices.version)
        return result

    def solve(
        self, problem: Problem | str, task: "str | Task" = "math", *, seed: int | None = None, on_event: EventSink | None = None
    ) -> Result:
        """Blocking wrapper around :meth:`asolve`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.asolve(problem, task, seed=seed, on_event=on_event))
        raise ConfigError("Cope.solve() was called inside a running event loop; use 'await Cope.asolve(...)'")


def read_problem(arg: str) -> str:
    """A problem given on the command line, or '@FILE' / '-' (stdin)."""
    from .textfile import decode, read_text

    if arg == "-":
        import sys

        return decode(sys.stdin.buffer.read(), "stdin")
    if arg.startswith("@"):
        return read_text(arg[1:], "problem file")
    return arg
