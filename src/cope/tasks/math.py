"""Math word problems: the task family (prompts, vote, scoring) and its program-running variant.

Answers are read in :mod:`cope.tasks.math_answers` (extraction, symbolic
equality through math-verify, the majority vote); programs are written and
run in :mod:`cope.tasks.math_pot`. This module states what the engine asks
of the family.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ConfigError
from ..models.base import Completion, Message
from ..sandbox import Sandbox
from .base import Assessment, Plan, Problem, Task, chat, plan_lines
from .math_answers import answers_equal, cluster_answers, extract_answer, vote
from .math_pot import executed_vote, pot_messages, pot_sandbox

__all__ = ["MathTask", "MathPoTTask", "answers_equal", "cluster_answers", "extract_answer", "vote"]


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------

# "No code": coder models, handed a list-like plan, switch to writing Python
# and then invent its printed output, since nothing runs it. On 15 GSM
# problems a guideline made the 1.5B coder answer with code 6 times in 14,
# unplanned 0 in 12, and those answers were wrong.
_SYSTEM_PROMPT = (
    "You solve math problems. Reason step by step in words and arithmetic; do not "
    "write code, since nothing will run it. Then write the final answer as \\boxed{answer}."
)


class MathTask(Task):
    """Math word problems (GSM8K, MATH): confidence is the majority vote share.

    Two executor styles can be mixed in one stage (``Stage.styles``, the
    Mixture-of-Thoughts idea): ``cot`` reasons in words, ``pot`` writes a
    program that the sandbox runs (see :mod:`cope.tasks.math_pot`). In a
    mixed stage every sample's program, if it wrote one, is run, and what it
    prints is its answer; outside mixed stages answers are read as written.
    """

    name = "math"
    streams = True
    needs_logprobs = False
    default_taus = (0.75, 0.5)  # the paper's defaults
    executor_styles = ("cot", "pot")

    def executor_messages(self, problem: Problem, plans: Sequence[Plan], style: str = "cot") -> list[Message]:
        """A short prompt: small executors follow short prompts better."""
        if style == "pot":
            return pot_messages(problem, plans)
        user = problem.text.strip()
        if plans:
            lines = plan_lines(plans)
            user += (
                "\n\nFollow this plan (a Goal says what to find, a Guideline says how):\n"
                + lines
            )
        return chat(_SYSTEM_PROMPT, problem, user)

    def assess(self, problem: Problem, completions: Sequence[Completion],
               styles: Sequence[str] | None = None) -> Assessment:
        """Majority vote over the samples' answers (see :func:`vote`); with styles, programs are run."""
        outputs = [c.text for c in completions]
        if styles:
            return executed_vote(outputs, styles)
        return vote(outputs, [extract_answer(o) for o in outputs])

    def settled(self, assessment: Assessment, drawn: int, n: int, threshold: float | None, **rule: Any) -> bool:
        """Early stopping: whether the n - drawn samples still to come could change the vote's decision."""
        from ..stopping import vote_settled

        clusters = assessment.info.get("clusters")
        return vote_settled(list(clusters) if isinstance(clusters, list) else [], n, threshold, **rule)

    def is_correct(self, answer: str | None, reference: str) -> bool:
        """Equality with the reference; a worked reference ("... #### 72") is reduced to its answer first."""
        if answer is None:
            return False
        ref: str | None = reference
        if "####" in reference or "\\boxed" in reference:
            ref = extract_answer(reference)
        return answers_equal(answer, ref)

    def score(self, problem: Problem, answer: str | None) -> bool:
        if problem.reference is None:
            raise ConfigError(f"problem {problem.id or problem.text[:40]!r} has no reference answer")
        return self.is_correct(answer, problem.reference)


class MathPoTTask(MathTask):
    """Math where programs are run: ``mode="pot"`` asks for them, ``mode="exec"`` runs those written anyway."""

    slow_assess = True  # running programs: the cascade calls assess in a thread

    def __init__(self, mode: str = "pot", sandbox: Sandbox | None = None) -> None:
        if mode not in ("pot", "exec"):
            raise ConfigError(f"unknown math executor mode '{mode}'; use pot or exec")
        self.mode = mode
        self.name = "math-pot" if mode == "pot" else "math-exec"
        self._sandbox = sandbox

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox or pot_sandbox()

    def executor_messages(self, problem: Problem, plans: Sequence[Plan], style: str | None = None) -> list[Message]:
        style = style or ("pot" if self.mode == "pot" else "cot")
        return super().executor_messages(problem, plans, style=style)

    def assess(self, problem: Problem, completions: Sequence[Completion],
               styles: Sequence[str] | None = None) -> Assessment:
        """Vote on executed answers; a sample without a program falls back to its written answer."""
        outputs = [c.text for c in completions]
        own = "pot" if self.mode == "pot" else "cot"
        return executed_vote(outputs, list(styles) if styles else [own] * len(outputs), self.sandbox)
