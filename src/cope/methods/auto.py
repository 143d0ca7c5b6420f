"""``cope-auto``: COPE beyond the paper, its stages and thresholds per task family from data.

Its per-family settings are preset files under ``cope/data`` that ``cope
calibrate --write-preset`` chose from recordings of problems other than the
reported ones (each file names its evidence).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..cascade import CascadeConfig, PlanStep, Stage
from .builtin import MOT
from .files import load_preset, subset
from .registry import register

_DATA = Path(__file__).resolve().parent.parent / "data"


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


@register("cope-auto")
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
    base = _cope_auto_stages(n, tau1, tau2, max_tokens, window, stop, strict)
    variants = []
    for family, name in AUTO_PRESETS.items():
        pf = load_preset(_DATA / name, check=False)
        if pf.base == "cope-auto":
            tuned = _cope_auto_stages(n, pf.tau1, pf.tau2, max_tokens, window, stop, strict)
            variants.append((family, subset(tuned, pf.stages, where=name)))
        else:  # another method's stages, drawn in windows and stopped early as the file says
            cfg = replace(pf, n=n, window=pf.window if pf.window is not None else window,
                          stop=pf.stop or stop).config(max_tokens)
            variants.append((family, replace(cfg, strict=strict)))
    return replace(base, variants=tuple(variants))
