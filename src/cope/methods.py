"""Named methods: each one a cascade configuration over the same engine.

COPE is the paper's default (COPE.md): three stages, n = 8, tau1 = 0.75,
tau2 = 0.5. Baselines live here too so that every method is measured by the
same engine, the same seeds and the same price table.
"""

from __future__ import annotations

from .cascade import CascadeConfig, PlanStep, Stage
from .errors import ConfigError


def cope(n: int = 8, tau1: float = 0.75, tau2: float = 0.5, *, max_tokens: int = 512,
         strict: bool = False) -> CascadeConfig:
    """The COPE preset.

    1. small writes n goals (T=0.8); small solves once per goal (T=0.4); vote.
    2. large writes one guideline g_L (T=0.8); small solves n times with the
       kept goal g_S and g_L (T=0.8); vote.
    3. large solves once, greedily, reusing g_L.
    """
    return CascadeConfig(
        stages=(
            Stage(executor="small", n=n, temperature=0.4, threshold=tau1, max_tokens=max_tokens,
                  plan=PlanStep(planner="small", kind="goal", count=n, temperature=0.8, keep_as="g_S")),
            Stage(executor="small", n=n, temperature=0.8, threshold=tau2, max_tokens=max_tokens,
                  use_plans=("g_S",),
                  plan=PlanStep(planner="large", kind="guideline", count=1, temperature=0.8, keep_as="g_L")),
            Stage(executor="large", n=1, temperature=0.0, threshold=None, max_tokens=max_tokens,
                  use_plans=("g_L",)),
        ),
        strict=strict,
    )


def large_alone(*, max_tokens: int = 512, **_: object) -> CascadeConfig:
    """The large model solves once, greedily, with no plan."""
    return CascadeConfig(stages=(Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),))


def small_alone(*, max_tokens: int = 512, **_: object) -> CascadeConfig:
    """The small model solves once, greedily, with no plan."""
    return CascadeConfig(stages=(Stage(executor="small", n=1, temperature=0.0, max_tokens=max_tokens),))


METHODS = {"cope": cope, "large": large_alone, "small": small_alone}


def method_config(name: str, **options: object) -> CascadeConfig:
    try:
        factory = METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}'; known: {', '.join(METHODS)}") from None
    return factory(**options)  # type: ignore[operator]
