"""The paper's method and the baselines, each one a cascade configuration over the same engine.

COPE is the paper's default (COPE.md): three stages, n = 8, tau1 = 0.75,
tau2 = 0.5. Baselines live here too so that every method is measured by the
same engine, the same seeds and the same price table.
"""

from __future__ import annotations

from dataclasses import replace

from ..cascade import CascadeConfig, PlanStep, Stage
from .registry import register, register_replay


@register("cope", reliability=True)
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


@register("cope-s3-noplan")
def cope_s3_noplan(n: int = 8, tau1: float = 0.75, tau2: float = 0.5, *, max_tokens: int = 512,
                   strict: bool = False) -> CascadeConfig:
    """COPE whose stage 3 ignores the guideline: the large model answers unplanned.

    An ablation: a sampled guideline from a weak large model can steer its own
    greedy answer wrong, and this preset measures that (a recorded run with
    ``cope`` and ``large`` replays it for free).
    """
    base = cope(n, tau1, tau2, max_tokens=max_tokens, strict=strict)
    return replace(base, stages=(*base.stages[:-1], replace(base.stages[-1], use_plans=())))


@register("large")
def large_alone(*, max_tokens: int = 512) -> CascadeConfig:
    """The large model solves once, greedily, with no plan."""
    return CascadeConfig(stages=(Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),))


@register("small")
def small_alone(*, max_tokens: int = 512) -> CascadeConfig:
    """The small model solves once, greedily, with no plan."""
    return CascadeConfig(stages=(Stage(executor="small", n=1, temperature=0.0, max_tokens=max_tokens),))


@register("small-vote")
def small_vote(n: int = 8, *, max_tokens: int = 512) -> CascadeConfig:
    """The small model samples n solutions (T=0.8) and the majority answers."""
    return CascadeConfig(stages=(Stage(executor="small", n=n, temperature=0.8, max_tokens=max_tokens),))


@register("cascade-noplan", reliability=True)
def cascade_noplan(n: int = 8, tau1: float = 0.75, *, max_tokens: int = 512) -> CascadeConfig:
    """COPE without plans: small votes; on low consensus the large model solves."""
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=tau1, max_tokens=max_tokens),
        Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),
    ))


@register("plan-only")
def plan_only(n: int = 8, *, max_tokens: int = 512) -> CascadeConfig:
    """One large-model guideline, the small model executes n times; no escalation."""
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, max_tokens=max_tokens,
              plan=PlanStep(planner="large", kind="guideline", count=1, temperature=0.8, keep_as="g_L")),
    ))


@register("abc")
def abc(n: int = 8, *, max_tokens: int = 512) -> CascadeConfig:
    """Agreement-based cascading: accept the small tier only when all its samples agree.

    The ABC paper ensembles different models per tier; with one small model
    the tier's ensemble is n samples of it (T=0.8), and the large model is the
    last tier. Distinct models per tier, as in the paper, are a cascade file
    whose first stage names them: ``ensemble = ["other"]`` beside
    ``executor = "small"`` shares the n samples between the two, voted together
    (``cope cascade show abc`` prints the file to start from).
    """
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=1.0, max_tokens=max_tokens),
        Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),
    ))


@register("frugal", needs={"frugal_train": "--method frugal needs --frugal-train RUN_DIR (a run whose "
                             "first stage voted, e.g. small-vote on other problems)"},
          wraps_task="cope.methods.frugal:task_for_run")
def frugal(n: int = 8, *, max_tokens: int = 512, frugal_threshold: float = 0.5) -> CascadeConfig:
    """FrugalGPT-style: small votes; a trained scorer (see :mod:`cope.methods.frugal`) decides to accept.

    The stage's confidence is the scorer's probability that the vote is right,
    so the threshold is a probability. Needs the task wrapped in FrugalTask.
    """
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=frugal_threshold, max_tokens=max_tokens),
        Stage(executor="large", n=1, temperature=0.0, max_tokens=max_tokens),
    ))


# Mixture of thoughts: half the samples reason in words, half write a program that is run.
MOT = ("cot", "pot")


@register("mot-cascade")
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


# Methods a recorded run answers for free, from the rows of the methods above.
register_replay(
    "frugal-cv", sources=("cascade-noplan",), build="cope.methods.frugal:cross_fitted_replay",
    note="frugal-cv: cascade-noplan's recording with a logistic-regression scorer "
         "cross-fitted over 5 folds of these problems instead of the consensus threshold")
register_replay(
    "cope-s3-noplan", sources=("cope", "large"), build="cope.eval.metrics:stage3_replay",
    note="cope-s3-noplan: ablation replayed from the recording, COPE's stages 1-2 with the "
         "large model's unplanned greedy answer (the large method's) as stage 3")
