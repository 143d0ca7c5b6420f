"""Early stopping of a stage's vote: stop drawing samples once they cannot matter.

A stage that samples n answers and votes on them (math, agent steps) or
accepts the first sample that passes the visible tests (code) often knows
its decision long before the n-th sample: six agreeing answers of eight
already meet a 0.75 threshold, and two of eight after four drawn can no
longer reach it. The engine draws samples in windows and asks the task
family, after each window, whether the rest could still change anything.

Two rules:

- ``exact``: stop only when no way the remaining samples could fall changes
  the decision (accept or escalate) nor, where it matters, the answer (and
  with it the plan a stage keeps). Decisions are then identical to drawing
  all n, by construction; only the work is less.
- ``predictive``: stop when, under a Beta-binomial model of the remaining
  samples joining the leading answer, the decision would change with
  probability below ``epsilon``. It saves more and may change decisions;
  replaying a recording counts how many.

The functions here are pure (no model, no task), so replaying a recorded run
applies the very rule the live engine applied.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Literal, Sequence

StopRule = Literal["none", "exact", "predictive"]
RULES: tuple[str, ...] = ("none", "exact", "predictive")
EPSILON = 0.05  # the predictive rule's tolerated chance of a changed decision


def accepts(confidence, threshold, strict: bool = False):  # noqa: ANN001, ANN201 - floats or numpy arrays
    """The one accept rule: a stage's confidence reaches its threshold (``strict``: exceeds it).

    The same expression works on floats (the live cascade, replayed rows) and
    on numpy arrays (the vectorised threshold sweep), so live and replay agree.
    """
    return confidence > threshold if strict else confidence >= threshold


def _meets(count: float, n: int, threshold: float, strict: bool) -> bool:
    return bool(accepts(count / n, threshold, strict))


def leader(keys: Sequence[Hashable | None]) -> tuple[Hashable | None, int, dict[Hashable, int], dict[Hashable, int]]:
    """(leading key, its count, counts, first index of each key); ties go to the key drawn first."""
    counts = Counter(k for k in keys if k is not None)
    first: dict[Hashable, int] = {}
    for i, k in enumerate(keys):
        if k is not None:
            first.setdefault(k, i)
    if not counts:
        return None, 0, {}, {}
    top = min(counts, key=lambda k: (-counts[k], first[k]))
    return top, counts[top], dict(counts), first


def answer_fixed(keys: Sequence[Hashable | None], n: int) -> bool:
    """Whether the vote's winner is the same however the remaining n - k samples fall.

    A rival (or an answer not drawn yet, which would count as drawn last)
    overtakes the leader only if it can gain more votes than the gap; at an
    equal count the earlier-drawn key wins, as the live vote breaks ties.
    """
    m = n - len(keys)
    if m <= 0:
        return True
    top, c, counts, first = leader(keys)
    if top is None:
        return False
    if m >= c:  # an answer not drawn yet could take every remaining sample
        if m > c:
            return False
        # m == c: a newcomer would tie and lose (drawn later); fall through to the rivals
    for k, cnt in counts.items():
        if k == top:
            continue
        if cnt + m > c or (cnt + m == c and first[k] < first[top]):
            return False
    return True


def vote_settled(keys: Sequence[Hashable | None], n: int, threshold: float | None, *,
                 strict: bool = False, need_answer: bool = True, rule: StopRule = "exact",
                 epsilon: float = EPSILON) -> bool:
    """Whether a majority vote over ``n`` samples is decided by the ``keys`` drawn so far.

    ``keys`` are the drawn samples' answer keys in draw order (None: no
    answer); confidence is the leader's share of all n samples. ``threshold``
    None is a final stage (it always answers: only the answer can change).
    ``need_answer`` False says the answer matters only if the stage accepts
    (no plan is kept from an escalating stage).
    """
    k = len(keys)
    if rule == "none" or k >= n:
        return k >= n
    _, c, counts, _ = leader(keys)
    m = n - k
    if rule == "predictive":
        return _predictive(c, k, n, threshold, strict, epsilon) and (
            threshold is not None or answer_fixed(keys, n))
    if threshold is None:
        return answer_fixed(keys, n)
    if _meets(c, n, threshold, strict):  # the leader can only gain: accepted whatever follows
        return answer_fixed(keys, n)
    best_possible = max(counts.values(), default=0) + m
    if not _meets(best_possible, n, threshold, strict):  # no answer can reach the threshold any more
        return not need_answer or answer_fixed(keys, n)
    return False


def _predictive(c: int, k: int, n: int, threshold: float | None, strict: bool, epsilon: float) -> bool:
    """The chance that the leader's final share crosses the threshold is below epsilon or above 1 - epsilon."""
    if threshold is None or math.isinf(threshold):
        return True
    m = n - k
    need = next((x for x in range(m + 1) if _meets(c + x, n, threshold, strict)), None)
    if need is None:
        return True  # out of reach
    if need == 0:
        return True  # already met
    p_reach = sum(_beta_binomial(x, m, c + 1, k - c + 1) for x in range(need, m + 1))
    return p_reach < epsilon or p_reach > 1 - epsilon


def _beta_binomial(x: int, m: int, a: float, b: float) -> float:
    """P(X = x) for X ~ BetaBinomial(m, a, b): how many of m more samples join the leader."""
    lg = math.lgamma
    log_choose = lg(m + 1) - lg(x + 1) - lg(m - x + 1)
    log_beta = lambda p, q: lg(p) + lg(q) - lg(p + q)  # noqa: E731
    return math.exp(log_choose + log_beta(x + a, m - x + b) - log_beta(a, b))


def first_pass_settled(confidence: float, k: int, n: int, threshold: float | None, *,
                       strict: bool = False, rule: StopRule = "exact") -> bool:
    """Code: a sample that passes every visible test is the answer and no later one can beat it.

    Short of a full pass, a later sample could pass more tests and become
    the answer, so the stage draws on (both rules: there is no vote to model).
    """
    if rule == "none" or k >= n:
        return k >= n
    return confidence >= 1.0 and (threshold is None or _meets(1.0, 1, threshold, strict))


def windows(n: int, window: int) -> list[tuple[int, int]]:
    """(start, end) of each window of samples; window 0 (or >= n) is one window of all n."""
    if window <= 0 or window >= n:
        return [(0, n)]
    return [(s, min(n, s + window)) for s in range(0, n, window)]


def replay_vote(keys: Sequence[Hashable | None], n: int, window: int, threshold: float | None, *,
                strict: bool = False, need_answer: bool = True, rule: StopRule = "exact",
                epsilon: float = EPSILON) -> int:
    """How many of a recorded vote's ``n`` samples the live rule would have drawn.

    The recording must have drawn its samples in the same windows (the
    engine seeds each window alike in both), so its first k samples are the
    ones a live early-stopped run draws.
    """
    for _, end in windows(n, window):
        if vote_settled(keys[:end], n, threshold, strict=strict, need_answer=need_answer,
                        rule=rule, epsilon=epsilon):
            return end
    return n
