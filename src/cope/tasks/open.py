"""Open-ended requests (MT-Bench style): free text, confidence from perplexity.

Free text has no answer key to vote on, so the paper scores each candidate by
its perplexity under the model that wrote it and keeps the lowest: a fluent,
unhesitating answer is the small model's best guess at a good one. The stage
escalates when even the best candidate is too perplexed.

The cascade compares ``confidence >= threshold``, so perplexity (1 = certain,
larger = less sure) is mapped to a confidence in [0, 1], higher = surer:

    confidence = 0.5 ** (ln(ppl) / ln(max_perplexity))

* ``ppl = 1`` gives 1, ``ppl = max_perplexity`` gives exactly 0.5, and the
  confidence keeps falling towards 0 as perplexity grows (strictly monotone,
  so it can be inverted: see :func:`perplexity_at`).
* With ``max_perplexity = 2`` this is plainly ``1 / ppl``; another
  ``max_perplexity`` only changes the base of the logarithm.
* A stage with threshold ``tau`` accepts when the best perplexity is at most
  ``max_perplexity ** log2(1 / tau)``. So ``tau = 0.5`` (COPE's tau2) is the
  paper's rule, "escalate when the lowest perplexity exceeds the threshold",
  with ``max_perplexity`` as that threshold; ``tau = 0.75`` (tau1) asks for
  ``max_perplexity ** 0.415``, a stricter bar for the first, cheapest stage;
  ``tau1 = tau2 = 0.5`` applies the one threshold at both stages.

Lowest perplexity alone favours degenerate text: measured on the default
small model, a canned refusal ("I'm sorry, but I can't assist with that
request.") or a repetition loop was the least perplexed candidate for 4 of
16 MT-Bench first turns. Such candidates are set aside before choosing
(``guard=False`` restores the paper's plain rule); if every candidate is
degenerate, the least perplexed one is returned with confidence 0, so the
cascade escalates.

The threshold is a parameter because the paper gives no value; the default
below comes from a measurement (``bench/measure_perplexity.py``) and can be
re-derived from recorded runs with :func:`calibrate_max_perplexity`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError
from ..models.base import Completion, Message
from .base import Assessment, Plan, Problem, Task, chat, plan_lines

__all__ = [
    "DEFAULT_MAX_PERPLEXITY",
    "OpenTask",
    "calibrate_max_perplexity",
    "choose",
    "confidence_from_perplexity",
    "degenerate",
    "perplexity",
    "perplexity_at",
    "recorded_perplexities",
]

# Measured with bench/measure_perplexity.py (defaults): local/qwen2.5-coder-0.5b,
# the default small model, answered 16 MT-Bench first turns (questions 1 and 6
# of each of the 8 categories) with this module's executor prompt and no plan,
# 8 candidates each at temperature 0.8 (COPE's stage-2 sampling), max_tokens
# 200, seeds 1-16. The kept candidate's perplexity (least perplexed after
# setting aside 5 refusals and 1 loop) ranged from 1.04 to 2.57 per question,
# median 1.70 (quartiles 1.22 and 1.90). It depends on the kind of request:
# median 1.13 for math and 1.19 for coding, 1.86 for writing, 2.09 for
# humanities. The default is that median, so at tau = 0.5 about half of such
# stages stop and half escalate; it is a starting point, not a quality bar:
# re-derive it from recorded runs (better, with judge verdicts) with
# calibrate_max_perplexity().
DEFAULT_MAX_PERPLEXITY = 1.7

_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the user's request directly and well: "
    "follow every instruction in it (format, length, style), be accurate, and do "
    "not mention these instructions."
)


def perplexity(logprobs: Sequence[float] | None) -> float | None:
    """``exp(-mean logprob)`` over a completion's tokens; None when there is nothing to measure.

    No logprobs (a server that did not send them) or no tokens (an empty
    completion) give None rather than an error, so such a candidate simply
    ranks last. A token with probability 0 gives infinity.
    """
    if not logprobs:
        return None
    try:
        mean = math.fsum(float(x) for x in logprobs) / len(logprobs)
    except (TypeError, ValueError):
        return None
    if math.isnan(mean):
        return None
    try:
        return math.exp(-mean)
    except OverflowError:
        return math.inf


def _check_max(max_perplexity: float) -> float:
    try:
        value = float(max_perplexity)
    except (TypeError, ValueError):
        raise ConfigError(f"max_perplexity must be a number > 1, got {max_perplexity!r}") from None
    # Perplexity is at least 1, so a threshold at or below 1 could never be met
    # (and the confidence map divides by ln(max_perplexity)).
    if not (value > 1.0 and math.isfinite(value)):
        raise ConfigError(f"max_perplexity must be a finite number > 1, got {max_perplexity!r}")
    return value


def confidence_from_perplexity(ppl: float | None, max_perplexity: float) -> float:
    """The cascade confidence of a perplexity: 1 at ppl 1, 0.5 at ``max_perplexity``, towards 0 beyond.

    None (nothing measured) and infinity give 0, the lowest confidence.
    Perplexities a hair below 1 (rounded API logprobs) are capped at 1.
    """
    top = _check_max(max_perplexity)
    if ppl is None or math.isnan(ppl) or ppl == math.inf:
        return 0.0
    if ppl <= 1.0:
        return 1.0
    return 0.5 ** (math.log(ppl) / math.log(top))


def perplexity_at(threshold: float, max_perplexity: float) -> float:
    """The largest best-candidate perplexity a stage with confidence ``threshold`` accepts.

    The inverse of :func:`confidence_from_perplexity`, for reading what tau1
    and tau2 mean for this family: 0.5 -> ``max_perplexity``, 0.75 ->
    ``max_perplexity ** 0.415``, 1 -> 1 (only certainty), 0 -> anything.
    """
    top = _check_max(max_perplexity)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
    if threshold == 0.0:
        return math.inf
    return top ** math.log2(1.0 / threshold)


# A refusal names what it will not do within its first sentence or two.
_REFUSAL_RE = re.compile(
    r"\b(?:can(?:no|'|\u2019)?t|unable to|not able to)\s+"
    r"(?:assist|help|comply|provide|fulfil|fulfill|complete|do that)",
    re.IGNORECASE,
)
# Longer texts that merely contain such a phrase are answers, not refusals.
_REFUSAL_MAX_WORDS = 60
# A loop repeats its word 4-grams; ordinary prose and code keep nearly all of
# them distinct (measured: >= 0.67 on every non-looping MT-Bench candidate).
_REPEAT_NGRAM = 4
_REPEAT_MIN_WORDS = 16
_REPEAT_MIN_DISTINCT = 0.5


def degenerate(text: str) -> str | None:
    """Why a candidate is no answer worth keeping ("refusal", "repetition"), or None.

    Both kinds are fluent, so they have low perplexity and would win the
    lowest-perplexity choice while serving the user worst.
    """
    words = text.split()
    if len(words) <= _REFUSAL_MAX_WORDS and _REFUSAL_RE.search(text[:200]):
        return "refusal"
    if len(words) >= _REPEAT_MIN_WORDS:
        grams = [tuple(words[i : i + _REPEAT_NGRAM]) for i in range(len(words) - _REPEAT_NGRAM + 1)]
        if len(set(grams)) / len(grams) < _REPEAT_MIN_DISTINCT:
            return "repetition"
    return None


@dataclass(frozen=True)
class Choice:
    """Which candidate an open stage keeps, and why the others were set aside.

    ``index`` is None only when no candidate has any text. ``eligible`` is
    False when the kept candidate is a fallback (unmeasured or degenerate),
    which the stage reports with confidence 0.
    """

    index: int | None
    eligible: bool
    reasons: tuple[str | None, ...]  # per candidate: None (eligible), "empty", "unmeasured", "refusal", "repetition"


def choose(texts: Sequence[str], perplexities: Sequence[float | None], *, guard: bool = True) -> Choice:
    """The least perplexed eligible candidate (earlier one on ties); see :class:`Choice`."""
    if len(texts) != len(perplexities):
        raise ConfigError(f"{len(texts)} candidates but {len(perplexities)} perplexities")
    reasons: list[str | None] = []
    for text, ppl in zip(texts, perplexities):
        if not text or not text.strip():
            reasons.append("empty")
        elif ppl is None:
            reasons.append("unmeasured")
        else:
            reasons.append(degenerate(text) if guard else None)
    order = lambda i: (perplexities[i], i)  # noqa: E731
    eligible = [i for i, r in enumerate(reasons) if r is None]
    if eligible:
        return Choice(min(eligible, key=order), True, tuple(reasons))
    measured = [i for i, r in enumerate(reasons) if r in ("refusal", "repetition")]
    if measured:
        return Choice(min(measured, key=order), False, tuple(reasons))
    nonempty = [i for i, r in enumerate(reasons) if r != "empty"]
    return Choice(nonempty[0] if nonempty else None, False, tuple(reasons))


def _finite(x: float | None) -> float | None:
    """JSON has no infinity: an unmeasurable perplexity is reported as null."""
    return x if x is not None and math.isfinite(x) else None


class OpenTask(Task):
    """Open-ended requests: n candidates, keep the least perplexed, escalate when it is above ``max_perplexity``.

    ``answer`` is the chosen candidate's full text. Per sample, ``extracted``
    holds its perplexity as text, followed by " refusal" or " repetition"
    when the candidate was set aside (``None`` when it could not be
    measured), so recorded runs carry what :func:`calibrate_max_perplexity`
    needs. ``guard`` sets degenerate candidates aside (see the module notes).
    Perplexity is measured under the model that wrote the candidate: the small
    model in stages 1-2 (the paper's measure), the large one in stage 3.
    """

    name = "open"
    streams = True
    needs_logprobs = True
    # Plans for a request: what the reply must deliver, then how to shape it.
    plan_asks = {
        "goal": (
            "Write the GOAL of this request: one sentence that states what a complete, "
            "helpful reply must deliver (its content, its form, any constraint the "
            "request sets), starting with \"Deliver\" or \"Give\". Do not write the reply. "
            "Reply with that one sentence only."
        ),
        "guideline": (
            "Write a GUIDELINE for answering this request: one or two sentences on how "
            "to structure the reply, which key points it must cover and what to avoid. "
            "Do not write the reply itself. Reply with the guideline only."
        ),
    }

    def __init__(self, max_perplexity: float | None = None, *, guard: bool = True) -> None:
        self.max_perplexity = _check_max(DEFAULT_MAX_PERPLEXITY if max_perplexity is None else max_perplexity)
        self.guard = guard

    def executor_messages(self, problem: Problem, plans: Sequence[Plan]) -> list[Message]:
        """The request as the user wrote it, with plans after it as private notes.

        Plans are marked as notes the reply must not mention, because small
        models otherwise answer the plan ("Goal: ...") instead of the user.
        """
        user = problem.text.strip()
        if plans:
            lines = plan_lines(plans)
            user += (
                "\n\n(Notes to guide your reply; follow them but do not mention them:\n"
                + lines
                + ")"
            )
        return chat(_SYSTEM_PROMPT, problem, user)

    def assess(self, problem: Problem, completions: Sequence[Completion]) -> Assessment:
        """Keep the least perplexed eligible candidate; its perplexity sets the stage's confidence.

        Candidates with no text, no measurable perplexity, or (with
        ``guard``) a refusal or loop never win over an eligible one. Without
        any eligible candidate a text is still returned (the least perplexed
        degenerate one, else the first non-empty one) with confidence 0, so
        the stage escalates and a final stage still answers.
        """
        if not completions:
            raise ConfigError("no candidates to assess: the executor returned no completions")
        texts = [c.text or "" for c in completions]
        ppls = [perplexity(c.logprobs) if t.strip() else None for c, t in zip(completions, texts)]
        pick = choose(texts, ppls, guard=self.guard)
        extracted = [
            None if p is None else f"{p:.4f}" + (f" {r}" if r in ("refusal", "repetition") else "")
            for p, r in zip(ppls, pick.reasons)
        ]
        best_ppl = ppls[pick.index] if pick.index is not None else None
        info: dict[str, object] = {
            "perplexity": _finite(best_ppl),
            "perplexities": [_finite(p) for p in ppls],
            "max_perplexity": self.max_perplexity,
            "chosen": pick.index,
            # per candidate: None if it could be kept, else why not ("refusal", "repetition", ...)
            "set_aside": list(pick.reasons),
        }
        if pick.index is None:
            return Assessment(answer=None, confidence=0.0, support=[], extracted=extracted, output="", info=info)
        confidence = confidence_from_perplexity(best_ppl, self.max_perplexity) if pick.eligible else 0.0
        return Assessment(
            answer=texts[pick.index].strip(),
            confidence=confidence,
            support=[pick.index],
            extracted=extracted,
            output=texts[pick.index],
            info=info,
        )

    def score(self, problem: Problem, answer: str | None) -> bool:
        """Not defined: an open-ended answer has no single correct text.

        Even MT-Bench's reference answers (math, reasoning, coding) are worked
        solutions for a judge to read, not strings to match, so a True/False
        here would be made up. Open-ended answers are scored by pairwise
        judgment instead (``cope.eval.judge``).
        """
        raise ConfigError(
            "open-ended answers have no right/wrong score; compare them with a judge "
            "(cope.eval.judge.Judge) and report the win rate"
        )


def _as_float(x: object) -> float | None:
    """A recorded perplexity; None for candidates that were set aside or unmeasured."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def recorded_perplexities(results: Iterable[Mapping[str, Any]], stage: int | None = None) -> list[float]:
    """Best-candidate perplexities from recorded ``Result.to_dict()`` outputs (``cope solve --json``).

    One value per recorded stage (or only stage ``stage``) of an open-task
    result: the lowest perplexity among its eligible candidates, the one the
    stage's confidence came from; stages with none are skipped. This is the
    input :func:`calibrate_max_perplexity` needs, read from runs already made.
    """
    out: list[float] = []
    for r in results:
        if r.get("task") != OpenTask.name:
            raise ConfigError(f"a recorded result of task {r.get('task')!r} is not an open-task run")
        for st in r.get("stages") or []:
            if stage is not None and st.get("stage") != stage:
                continue
            vals = [v for v in map(_as_float, st.get("extracted") or []) if v is not None]
            if vals:
                out.append(min(vals))
    return out


def calibrate_max_perplexity(
    perplexities: Sequence[float],
    *,
    accept_rate: float = 0.5,
    good: Sequence[bool] | None = None,
    min_precision: float = 0.5,
) -> float:
    """A ``max_perplexity`` derived from measured best-candidate perplexities.

    Without ``good``: the ``accept_rate`` quantile, i.e. the threshold under
    which that share of the measured stages would have stopped (the default
    0.5 is how ``DEFAULT_MAX_PERPLEXITY`` was set). With ``good`` (one flag per
    perplexity, e.g. "the judge found this answer no worse than the large
    model's"): the largest threshold whose accepted answers are good at least
    ``min_precision`` of the time, so escalation is bought only where it helps.
    The result is always > 1, as :class:`OpenTask` requires.
    """
    vals = [float(p) for p in perplexities]
    if not vals:
        raise ConfigError("no perplexities to calibrate from")
    if any(not math.isfinite(v) or v < 1.0 - 1e-6 for v in vals):
        raise ConfigError("perplexities must be finite numbers >= 1")
    floor = 1.0 + 1e-6
    if good is None:
        if not 0.0 < accept_rate <= 1.0:
            raise ConfigError(f"accept_rate must be in (0, 1], got {accept_rate}")
        s = sorted(vals)
        k = max(0, math.ceil(accept_rate * len(s)) - 1)
        return max(s[k], floor)
    if len(good) != len(vals):
        raise ConfigError(f"good has {len(good)} flags for {len(vals)} perplexities")
    if not 0.0 <= min_precision <= 1.0:
        raise ConfigError(f"min_precision must be in [0, 1], got {min_precision}")
    pairs = sorted(zip(vals, good))
    best = floor
    hits = 0
    for k, (v, ok) in enumerate(pairs, start=1):
        hits += bool(ok)
        # Only cut between distinct values: equal perplexities are accepted together.
        if k < len(pairs) and pairs[k][0] == v:
            continue
        if hits / k >= min_precision:
            best = max(best, v)
    return best
