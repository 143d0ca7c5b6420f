"""The task contract: what a task family tells the cascade.

A task family owns its executor prompt, how it reads an answer out of a
completion, and its confidence signal (consensus for math, visible tests for
code, ...). The cascade only sees :class:`Assessment`, so adding a family is
one file with a subclass of :class:`Task`: the base class declares every
attribute the engine reads, with the default a family gets by not saying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Sequence

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


# The paper's thresholds: a family that says nothing accepts a stage-1 vote at 0.75, stage 2 at 0.5.
PAPER_TAUS: tuple[float, float] = (0.75, 0.5)


class Task:
    """A task family: prompts, answer extraction, confidence and scoring.

    Subclasses implement :meth:`executor_messages`, :meth:`assess` and
    :meth:`score`; everything else has a default here, so the engine, the
    library and the command lines read attributes directly and a family
    changes a behaviour by overriding one name.
    """

    name: str = ""
    # Whether assess() needs per-token logprobs (perplexity-based confidence).
    needs_logprobs: bool = False
    # Stage thresholds when the caller gives none (code: 1.0, only a sample passing every visible test).
    default_taus: tuple[float, float] = PAPER_TAUS
    # The family's wording of the goal / guideline request (see cope.plans); None: the generic one.
    plan_asks: ClassVar[Mapping[str, str] | None] = None
    # Executor prompt styles a stage may mix in one vote (math: chain of thought and programs).
    executor_styles: tuple[str, ...] = ()
    # Whether assess() is slow (runs programs): the cascade then calls it in a thread.
    slow_assess: bool = False
    # Whether a lone sample's answer text is the sample's text as decoded (open, math), so a
    # final single-sample stage may stream it while it decodes; False where assess() rewrites or
    # may withhold it (code keeps the program only when it runs, json re-serialises the value).
    streams: bool = False
    # An episodic family (agent) plays each item with this driver ("module:function", see
    # cope.plugins) instead of solving it with one cascade; None: items are problems.
    driver: str | None = None

    def native_fields(self) -> dict[str, Any] | None:
        """Request fields a served model that supports them answers this family with natively
        (structured output's ``response_format``, ``tools``); None: the prompt says it all."""
        return None

    def problem_from_text(self, text: str, *, tests: Sequence[str] = (), entry_point: str | None = None) -> Problem:
        """A prompt (and any visible tests a client sent) as a problem; a family may read more out of
        the text (code: a stub's docstring examples become its visible tests when none are given)."""
        return Problem(text=text, tests=tuple(tests), entry_point=entry_point)

    def executor_messages(self, problem: Problem, plans: Sequence[Plan]) -> list[Message]:
        """Chat messages asking the executor to solve ``problem`` guided by ``plans``."""
        raise NotImplementedError

    def assess(self, problem: Problem, completions: Sequence[Completion], **kw: Any) -> Assessment:
        """Read answers out of the executor outputs and score the stage's confidence."""
        raise NotImplementedError

    def score(self, problem: Problem, answer: str | None) -> bool:
        """Whether a final answer is correct (reference answer, hidden tests, ...)."""
        raise NotImplementedError

    def settled(self, assessment: Assessment, drawn: int, n: int, threshold: float | None, **rule: Any) -> bool:
        """Whether the samples not drawn yet can no longer change the stage's decision.

        The default never stops a vote early: a family whose confidence is not a
        count over samples cannot say what the rest would do.
        """
        return False
