"""The Python entry point: ``cope.Cope(small=..., large=...).solve(problem)``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from .cascade import BoundModel, Cascade, CascadeConfig, EventSink, Result
from .errors import ConfigError
from .methods import method_config
from .models.base import Model
from .models.registry import build_model
from .pricing import PriceTable
from .tasks.base import Problem, Task

DEFAULT_SMALL = "local/qwen2.5-coder-0.5b"
DEFAULT_LARGE = "local/qwen2.5-coder-1.5b"
# The offline default stands in for a paid model; charge it as one so the
# dollars in its reports mean something (and every report says so).
DEFAULT_LARGE_PRICE_AS = "gpt-4o-mini"

_UNSET: Any = object()


def _task(task: "str | Task") -> "Task":
    """A task family by name, or a configured Task object (e.g. OpenTask(max_perplexity=2.0))."""
    if not isinstance(task, str):
        return task
    from .tasks import get_task

    return get_task(task)


class Cope:
    """A small and a large model collaborating through plans.

    ``small`` / ``large`` are specs ("local/<name>", "openai/<model>") or
    objects implementing the Model protocol. ``*_price_as`` charges a model at
    another model's price-table row. ``method`` picks a preset from
    ``cope.methods`` (default: the paper's three-stage COPE).
    """

    def __init__(
        self,
        small: str | Model = DEFAULT_SMALL,
        large: str | Model = DEFAULT_LARGE,
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
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be an integer >= 1, got {n!r}")
        explicit = tau1 is not None or tau2 is not None
        tau1 = 0.75 if tau1 is None else tau1  # the paper's; a family's own defaults are the CLI's business
        tau2 = 0.5 if tau2 is None else tau2
        for label, tau in (("tau1", tau1), ("tau2", tau2)):
            if not 0.0 <= float(tau) <= 1.0:
                raise ConfigError(f"{label} must be in [0, 1], got {tau}")
        if large_price_as is _UNSET:
            large_price_as = DEFAULT_LARGE_PRICE_AS if large == DEFAULT_LARGE else None
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable.load(prices)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0 or timeout == float("inf")):
            raise ConfigError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        options = {"base_url": base_url, "api_key": api_key, "n_threads": n_threads, "timeout": timeout}
        self.models: dict[str, BoundModel] = {}
        for role, spec, price_as in (("small", small, small_price_as), ("large", large, large_price_as)):
            model = spec if not isinstance(spec, str) else build_model(spec, **options)
            self.models[role] = BoundModel(model, self.prices.for_spec(model.spec, price_as))
        self.config = config or method_config(method, n=n, tau1=tau1, tau2=tau2, max_tokens=max_tokens,
                                              explicit_taus=explicit)
        self.config.validate()

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
        from_text = getattr(task_obj, "problem_from_text", None)
        if isinstance(problem, str) and from_text is not None:
            problem = from_text(problem)
        cascade = Cascade(self.config, self.models, task_obj)
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
