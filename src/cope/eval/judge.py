"""Pairwise judging of open-ended answers: which of two answers is better?

Open-ended answers have no reference to match, so a method is scored by
having a judge model compare its answers with those of a reference method
(e.g. the large model alone) and reporting the win rate, as the paper does
on MT-Bench.

LLM judges prefer whichever answer they read first (or second), so every
pair is judged twice, once in each order, and a verdict counts only when both
orders agree: the candidate wins if it is preferred in both, loses if the
baseline is preferred in both, and anything else (disagreement, a tie, an
unreadable verdict) is a tie. A judge with pure position bias therefore
yields ties, never wins.

Verdicts are read with a forgiving parser because weak judges rarely follow
the output format exactly. A verdict that still cannot be read counts as a
tie for that order: it is no evidence either way, so it must neither help
nor hurt the candidate; how many were unreadable is reported with the win
rate so a judge that is too weak shows up.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from ..errors import ConfigError
from ..models.base import GenParams, Message, Model
from ..tasks.base import Problem

__all__ = ["Judge", "PairVerdict", "WinRate", "combine", "parse_verdict", "win_rate"]

Pick = Literal["A", "B", "tie"]
Verdict = Literal["win", "tie", "loss"]

_SYSTEM = (
    "You are an impartial judge of AI assistants. You read a user's request and two "
    "assistants' answers to it, and decide which answer serves the user better: it follows "
    "the user's instructions, and is helpful, relevant, accurate and complete. When a "
    "reference answer is given, check both answers against it and count errors heavily. "
    "Do not let the order of the answers, their length or the assistants' names sway you. "
    "Explain your decision in at most three sentences, then write your verdict on the last "
    "line: [[A]] if assistant A is better, [[B]] if assistant B is better, [[C]] for a tie."
)

# "[[A]]", "[[ b ]]", "[[Tie]]"; the strict form the prompt asks for.
_STRICT_RE = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
# A strict token that is part of an echo of the instructions ("[[A]] if assistant A is better").
_ECHO_AFTER_RE = re.compile(
    r"\s*[\"']?\s*(?:if\s+(?:assistant|answer|response|[ab]\b)|for\s+a\s+tie)", re.IGNORECASE
)
# Looser forms weak models write instead.
_LOOSE_RES: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"\[\s*(A|B|C)\s*\]"), None),
    # The letters stay upper case: "the verdict is a hard one" names no assistant.
    (re.compile(r"\bverdict\s*(?:is|:)?\s*[*\"'\[]*\s*(?:assistant\s+)?((?-i:A|B|C))\b", re.IGNORECASE), None),
    (re.compile(
        r"\b(?:assistant|answer|response)\s+((?-i:A|B))(?:'s\s+(?:answer|response))?\s+(?:is|was)\s+"
        r"(?:clearly\s+|slightly\s+|much\s+)?(?:better|superior|the\s+better|the\s+winner|preferred)",
        re.IGNORECASE), None),
    (re.compile(r"\b(?:it(?:'s|\s+is)\s+a\s+tie\b|both\s+(?:answers|assistants|responses)\s+are\s+"
                r"(?:equally\s+good|equal|equivalent))", re.IGNORECASE), "tie"),
)
_BARE_RE = re.compile(r"^\W*(A|B|C)\W*$", re.IGNORECASE)


def _pick(token: str) -> Pick:
    t = token.strip().upper()
    return "tie" if t in ("C", "TIE") else t  # type: ignore[return-value]


def parse_verdict(text: str) -> Pick | None:
    """The judge's pick ("A", "B" or "tie") in one reply, or None if it cannot be read.

    The last strict ``[[X]]`` wins (judges explain first and decide last);
    tokens that are an echo of the instructions ("[[A]] if assistant A is
    better") are ignored. Without a strict token, looser forms are accepted
    ("[A]", "Verdict: B", "Assistant A is better", "it's a tie", a bare
    letter) only when they all point the same way; contradicting loose
    forms give None.
    """
    if not text or not text.strip():
        return None
    strict = [m for m in _STRICT_RE.finditer(text) if not _ECHO_AFTER_RE.match(text, m.end())]
    if strict:
        return _pick(strict[-1].group(1))
    bare = _BARE_RE.match(text.strip())
    if bare:
        return _pick(bare.group(1))
    found: set[Pick] = set()
    for pattern, fixed in _LOOSE_RES:
        for m in pattern.finditer(text):
            found.add(_pick(fixed or m.group(1)))
    if len(found) == 1:
        return found.pop()
    return None


def combine(first: Pick | None, second: Pick | None) -> Verdict:
    """The candidate's verdict from both orders: A = candidate in ``first``, B = candidate in ``second``.

    Win only when both orders prefer the candidate, loss only when both
    prefer the baseline; disagreement, ties and unreadable verdicts (None)
    are ties.
    """
    if first == "A" and second == "B":
        return "win"
    if first == "B" and second == "A":
        return "loss"
    return "tie"


@dataclass
class PairVerdict:
    """One judged pair, seen from the candidate's side.

    ``picks`` are the parsed picks of the two orders (order 1 shows the
    candidate as A, order 2 as B; None = unreadable); ``raw`` the judge's
    replies; tokens are summed over both calls.
    """

    verdict: Verdict
    picks: tuple[Pick | None, Pick | None]
    raw: tuple[str, str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    id: str = ""

    @property
    def unparsed(self) -> int:
        """How many of the two replies had no readable verdict."""
        return sum(p is None for p in self.picks)


@dataclass
class WinRate:
    """Win/tie/loss counts of a candidate against a baseline.

    ``rate`` is wins / n; ``adjusted`` counts a tie as half a win, so two
    equally good methods score 0.5 however often the judge calls ties.
    """

    wins: int
    ties: int
    losses: int
    unparsed: int = 0  # replies (two per pair) whose verdict could not be read
    per_item: list[PairVerdict] = field(default_factory=list, repr=False)

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float:
        return self.wins / self.n

    @property
    def adjusted(self) -> float:
        return (self.wins + 0.5 * self.ties) / self.n

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "wins": self.wins, "ties": self.ties, "losses": self.losses,
                "win_rate": self.rate, "adjusted_win_rate": self.adjusted, "unparsed": self.unparsed}


def win_rate(verdicts: Iterable[PairVerdict]) -> WinRate:
    """Aggregate judged pairs into win/tie/loss counts and rates."""
    items = list(verdicts)
    if not items:
        raise ConfigError("no verdicts to compute a win rate from")
    counts = {"win": 0, "tie": 0, "loss": 0}
    for v in items:
        counts[v.verdict] += 1
    return WinRate(counts["win"], counts["tie"], counts["loss"], sum(v.unparsed for v in items), items)


def _transcript(history: Sequence[Message], who: str, last_user: str | None = None, answer: str | None = None) -> str:
    """A conversation as plain "User: ..." / "<who>: ..." paragraphs (system messages left out)."""
    lines = []
    for m in history:
        role = {"user": "User", "assistant": who}.get(m.get("role", ""))
        if role:
            lines.append(f"{role}: {m.get('content', '').strip()}")
    if last_user is not None:
        lines.append(f"User: {last_user.strip()}")
    if answer is not None:
        lines.append(f"{who}: {answer.strip()}")
    return "\n\n".join(lines)


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} is empty; a judge needs two non-empty answers and a question")
    return value


class Judge:
    """A judge model (``local/...`` or ``openai/...``, or any Model object) that compares two answers.

    Decoding is greedy so a verdict is reproducible. ``max_tokens`` bounds
    the short explanation plus the verdict; a reply cut before its verdict
    is unreadable and counts as a tie.
    """

    def __init__(
        self,
        model: str | Model,
        *,
        max_tokens: int = 384,
        base_url: str | None = None,
        api_key: str | None = None,
        n_threads: int | None = None,
    ) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        if isinstance(model, str):
            from ..models.registry import build_model

            model = build_model(model, base_url=base_url, api_key=api_key, n_threads=n_threads)
        self.model = model
        self.max_tokens = max_tokens

    @property
    def spec(self) -> str:
        return self.model.spec

    def messages(
        self, problem: Problem, first: str, second: str,
        first_history: Sequence[Message] | None = None, second_history: Sequence[Message] | None = None,
    ) -> list[Message]:
        """The judge prompt with ``first`` shown as assistant A and ``second`` as B.

        With a shared conversation the earlier turns are shown once; when the
        two assistants had different earlier answers (each continued its own
        conversation, as in MT-Bench turn 2) each conversation is shown whole.
        """
        parts = []
        shared = first_history is None and second_history is None
        if shared:
            if problem.history:
                parts.append("[Conversation so far]\n" + _transcript(problem.history, "Assistant"))
            parts.append(f"[User request]\n{problem.text.strip()}")
            if problem.reference:
                parts.append(f"[Reference answer]\n{problem.reference.strip()}")
            parts.append(f"[Assistant A's answer]\n{first.strip()}\n[End of assistant A's answer]")
            parts.append(f"[Assistant B's answer]\n{second.strip()}\n[End of assistant B's answer]")
            ask = "Which answer to the user request is better?"
        else:
            if problem.reference:
                parts.append(f"[Reference answer to the last request]\n{problem.reference.strip()}")
            for label, hist, ans in (("A", first_history, first), ("B", second_history, second)):
                body = _transcript(hist if hist is not None else problem.history, f"Assistant {label}",
                                   problem.text, ans)
                parts.append(f"[Assistant {label}'s conversation with the user]\n{body}\n"
                             f"[End of assistant {label}'s conversation]")
            ask = "Judge only the answers to the user's last request. Which is better?"
        parts.append(f"{ask} Explain briefly, then end with [[A]], [[B]] or [[C]].")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]

    async def acompare(
        self,
        problem: Problem | str,
        candidate: str,
        baseline: str,
        *,
        baseline_history: Sequence[Message] | None = None,
    ) -> PairVerdict:
        """Judge ``candidate`` against ``baseline`` in both orders; the verdict is the candidate's.

        ``problem.history`` is the candidate's conversation so far; pass
        ``baseline_history`` when the baseline answered after different
        earlier turns (its own turn-1 answer).
        """
        problem = Problem.of(problem)
        _check_text(problem.text, "the question")
        _check_text(candidate, "the candidate answer")
        _check_text(baseline, "the baseline answer")
        if baseline_history is None:
            one = self.messages(problem, candidate, baseline)
            two = self.messages(problem, baseline, candidate)
        else:
            mine = tuple(problem.history)
            one = self.messages(problem, candidate, baseline, mine, baseline_history)
            two = self.messages(problem, baseline, candidate, baseline_history, mine)
        params = GenParams(n=1, temperature=0.0, max_tokens=self.max_tokens)
        gens = await self.model.generate_many([one, two], params)
        raw = (gens[0].completions[0].text, gens[1].completions[0].text)
        picks = (parse_verdict(raw[0]), parse_verdict(raw[1]))
        return PairVerdict(
            verdict=combine(*picks),
            picks=picks,
            raw=raw,
            prompt_tokens=sum(g.prompt_tokens for g in gens),
            completion_tokens=sum(g.completion_tokens for g in gens),
            id=problem.id,
        )

    def compare(
        self, problem: Problem | str, candidate: str, baseline: str,
        *, baseline_history: Sequence[Message] | None = None,
    ) -> PairVerdict:
        """Blocking wrapper around :meth:`acompare`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.acompare(problem, candidate, baseline, baseline_history=baseline_history))
        raise ConfigError("Judge.compare() was called inside a running event loop; use 'await Judge.acompare(...)'")

    async def aevaluate(self, items: Iterable[tuple[Problem | str, str, str]]) -> WinRate:
        """Win rate of candidates over baselines: ``items`` are (problem, candidate, baseline).

        Pairs are judged one after another: a local judge decodes each
        pair's two orders as one batch already, and an API judge is spared
        bursts.
        """
        verdicts = [await self.acompare(p, c, b) for p, c, b in items]
        return win_rate(verdicts)
