"""The task protocol: what a task family tells the cascade.

A task family owns its executor prompt, how it reads an answer out of a
completion, and its confidence signal (consensus for math, visible tests for
code, ...). The cascade only sees :class:`Assessment`, so adding a family is
one file that implements :class:`Task`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

from ..models.base import Completion, Message

PlanKind = Literal["goal", "guideline"]


@dataclass(frozen=True)
class Problem:
    """One item to solve, with what a task family may need beyond its text.

    ``history`` holds earlier turns of a conversation (oldest first), which
    planner and executor both see. ``tests`` are visible tests a code task may
    run to gain confidence; ``hidden_tests`` are for scoring only.
    """

    text: str
    history: tuple[Message, ...] = ()
    reference: str | None = None
    tests: tuple[str, ...] = ()
    hidden_tests: str | None = None
    entry_point: str | None = None
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def of(cls, problem: "Problem | str") -> "Problem":
        return problem if isinstance(problem, Problem) else cls(text=problem)


def chat(system: str, problem: Problem, user: str) -> list[Message]:
    """System prompt, then the conversation so far, then this turn's request."""
    return [{"role": "system", "content": system}, *problem.history, {"role": "user", "content": user}]


def plan_lines(plans: Sequence["Plan"]) -> str:
    """Plans as labelled lines ("Goal: ...", "Guideline: ..."), one per plan, for executor prompts."""
    return "\n".join(f"{p.kind.capitalize()}: {p.text.strip()}" for p in plans)


@dataclass(frozen=True)
class Plan:
    """A short abstraction of the task written by a planner model."""

    kind: PlanKind
    text: str
    model: str  # spec of the model that wrote it
    stage: int  # stage that produced it (1-based)
    name: str = ""  # e.g. "g_S", "g_L" once kept for later stages


@dataclass
class Assessment:
    """A task family's verdict on one stage's samples.

    ``answer`` is the candidate the stage would return; ``confidence`` in
    [0, 1] is compared with the stage threshold; ``support`` lists the sample
    indices that back the answer (for math, the samples in the majority
    cluster), which is how the cascade picks the plan to keep.
    """

    answer: str | None
    confidence: float
    support: list[int]
    extracted: list[str | None]  # per-sample answer key (None = no answer found)
    output: str = ""  # full text of a supporting sample
    info: dict[str, object] = field(default_factory=dict)


class Task(Protocol):
    """A task family: prompts, answer extraction, confidence and scoring.

    Optional attributes the engine reads when present: ``plan_asks`` (the
    family's wording of the goal / guideline request, see :mod:`cope.plans`),
    ``default_taus`` and ``slow_assess``.
    """

    name: str
    # Whether assess() needs per-token logprobs (perplexity-based confidence).
    needs_logprobs: bool

    def executor_messages(self, problem: Problem, plans: Sequence[Plan]) -> list[Message]:
        """Chat messages asking the executor to solve ``problem`` guided by ``plans``."""
        ...

    def assess(self, problem: Problem, completions: Sequence[Completion]) -> Assessment:
        """Read answers out of the executor outputs and score the stage's confidence."""
        ...

    def score(self, problem: Problem, answer: str | None) -> bool:
        """Whether a final answer is correct (reference answer, hidden tests, ...)."""
        ...
