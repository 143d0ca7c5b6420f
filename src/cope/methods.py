"""Named methods: each one a cascade configuration over the same engine.

COPE is the paper's default (COPE.md): three stages, n = 8, tau1 = 0.75,
tau2 = 0.5. Baselines live here too so that every method is measured by the
same engine, the same seeds and the same price table.
"""

from __future__ import annotations

from dataclasses import replace

from .cascade import NEVER, CascadeConfig, PlanStep, Stage
from .errors import ConfigError
from .tasks.base import Task


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


def cope_s3_noplan(n: int = 8, tau1: float = 0.75, tau2: float = 0.5, *, max_tokens: int = 512,
                   strict: bool = False) -> CascadeConfig:
    """COPE whose stage 3 ignores the guideline: the large model answers unplanned.

    An ablation: a sampled guideline from a weak large model can steer its own
    greedy answer wrong, and this preset measures that (a recorded run with
    ``cope`` and ``large`` replays it for free).
    """
    base = cope(n, tau1, tau2, max_tokens=max_tokens, strict=strict)
    return replace(base, stages=(*base.stages[:-1], replace(base.stages[-1], use_plans=())))


def large_alone(*, max_tokens: int = 512) -> CascadeConfig:
    """The large model solves once, greedily, with no plan."""
    return CascadeConfig(stages=(Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),))


def small_alone(*, max_tokens: int = 512) -> CascadeConfig:
    """The small model solves once, greedily, with no plan."""
    return CascadeConfig(stages=(Stage(executor="small", n=1, temperature=0.0, max_tokens=max_tokens),))


def small_vote(n: int = 8, *, max_tokens: int = 512) -> CascadeConfig:
    """The small model samples n solutions (T=0.8) and the majority answers."""
    return CascadeConfig(stages=(Stage(executor="small", n=n, temperature=0.8, max_tokens=max_tokens),))


def cascade_noplan(n: int = 8, tau1: float = 0.75, *, max_tokens: int = 512) -> CascadeConfig:
    """COPE without plans: small votes; on low consensus the large model solves."""
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=tau1, max_tokens=max_tokens),
        Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),
    ))


def plan_only(n: int = 8, *, max_tokens: int = 512) -> CascadeConfig:
    """One large-model guideline, the small model executes n times; no escalation."""
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, max_tokens=max_tokens,
              plan=PlanStep(planner="large", kind="guideline", count=1, temperature=0.8, keep_as="g_L")),
    ))


def abc(n: int = 8, *, max_tokens: int = 512) -> CascadeConfig:
    """Agreement-based cascading: accept the small tier only when all its samples agree.

    The ABC paper ensembles different models per tier; with one small model
    the tier's ensemble is n samples of it (T=0.8), and the large model is the
    last tier.
    """
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=1.0, max_tokens=max_tokens),
        Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),
    ))


def frugal(n: int = 8, *, max_tokens: int = 512, frugal_threshold: float = 0.5) -> CascadeConfig:
    """FrugalGPT-style: small votes; a trained scorer (see ``cope.frugal``) decides to accept.

    The stage's confidence is the scorer's probability that the vote is right,
    so the threshold is a probability. Needs the task wrapped in FrugalTask.
    """
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=frugal_threshold, max_tokens=max_tokens),
        Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),
    ))


# Mixture of thoughts: half the samples reason in words, half write a program that is run.
MOT = ("cot", "pot")


def mot_cascade(n: int = 8, tau1: float = 0.75, *, max_tokens: int = 512, window: int = 4,
                stop: str = "exact") -> CascadeConfig:
    """Mixture-of-Thoughts cascade (Yue et al., 2024), with no plans: a baseline for cope-auto.

    The small model votes over n samples, half chain-of-thought and half
    program-of-thought (programs run in the sandbox); on low consensus the
    large model answers, unplanned. Families with one executor style vote
    over plain samples, which makes it ``cascade-noplan`` with early stopping.
    """
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=tau1, max_tokens=max_tokens,
              styles=MOT, window=window, stop=stop),  # type: ignore[arg-type]
        Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),
    ))


def _cope_auto_stages(n: int, tau1: float, tau2: float, max_tokens: int, window: int, stop: str,
                      strict: bool) -> CascadeConfig:
    vote = dict(executor="small", n=n, temperature=0.8, max_tokens=max_tokens, styles=MOT, window=window, stop=stop)
    return CascadeConfig(
        stages=(
            Stage(threshold=tau1, **vote),  # type: ignore[arg-type]
            Stage(threshold=tau2, plan=PlanStep(planner="large", kind="guideline", count=1, temperature=0.8,
                                                keep_as="g_L"), **vote),  # type: ignore[arg-type]
            Stage(executor="large", n=1, temperature=0.0, threshold=None, max_tokens=max_tokens),
        ),
        strict=strict,
    )


# cope-auto's own setting per task family: a preset file that `cope calibrate --write-preset`
# chose from a recording of problems other than the reported ones (the file names them).
AUTO_PRESETS = {"math": "cope-auto-math.toml", "code": "cope-auto-code.toml"}


def cope_auto(n: int = 8, tau1: float = 0.75, tau2: float = 0.5, *, max_tokens: int = 512, window: int = 4,
              stop: str = "exact", strict: bool = False) -> CascadeConfig:
    """COPE beyond the paper: mixed votes, early stopping, stages and thresholds from data.

    1. small votes unplanned over n samples, half chain-of-thought, half
       programs that are run (math; other families sample plainly), drawn in
       windows and stopped once the rest cannot change the decision;
    2. large writes one guideline g_L; small votes again with it, the same way;
    3. large solves once, greedily, without the guideline (in the GSM
       recording the weak large model's own sampled guideline misled it).

    A family listed in :data:`AUTO_PRESETS` runs the stages and thresholds
    its preset file holds (``variants``) unless the caller's thresholds are
    explicit (see :func:`method_config`); others run all three stages at
    ``tau1`` / ``tau2``. Code keeps the paper's planned stages (on HumanEval
    the small model's own goals helped, see results/README.md) and stops
    each vote at the first sample that passes the visible tests, which makes
    the decisions ``cope`` would make from the samples drawn.
    """
    from pathlib import Path

    from .presets import load_preset, subset

    base = _cope_auto_stages(n, tau1, tau2, max_tokens, window, stop, strict)
    variants = []
    for family, name in AUTO_PRESETS.items():
        pf = load_preset(Path(__file__).parent / "data" / name, check=False)
        if pf.base == "cope-auto":
            tuned = _cope_auto_stages(n, pf.tau1, pf.tau2, max_tokens, window, stop, strict)
            variants.append((family, subset(tuned, pf.stages, where=name)))
        else:  # another method's stages, drawn in windows and stopped early as the file says
            cfg = replace(pf, n=n, window=pf.window if pf.window is not None else window,
                          stop=pf.stop or stop).config(max_tokens)
            variants.append((family, replace(cfg, strict=strict)))
    return replace(base, variants=tuple(variants))


METHODS = {
    "cope": cope, "cope-s3-noplan": cope_s3_noplan, "large": large_alone, "small": small_alone,
    "small-vote": small_vote, "cascade-noplan": cascade_noplan, "plan-only": plan_only, "abc": abc,
    "frugal": frugal, "mot-cascade": mot_cascade, "cope-auto": cope_auto,
}


# Options a caller may give any method (a method that does not use one ignores it: the large
# model alone has no thresholds); any other option must be one the method declares.
COMMON_OPTIONS = frozenset({"n", "tau1", "tau2", "max_tokens"})


def method_options(name: str) -> frozenset[str]:
    """The keyword options a method's factory declares."""
    import inspect

    return frozenset(inspect.signature(METHODS[name]).parameters)


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
    config = factory(**{k: v for k, v in options.items() if k in accepted})  # type: ignore[operator]
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
