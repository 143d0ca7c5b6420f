"""Planner prompts: goals (what to find) and guidelines (how to find it).

The default asks are written for problems with an answer to find (math). A
task family can word its own through a ``plan_asks`` attribute (a goal for a
function is what it must return; for a request, what the reply must deliver),
so the plan speaks the task's language; the system prompt and the cleanup are
shared.

A plan must stay a plan. Small models asked for a "plan" tend to solve the
problem and leak a (often wrong) number, which then anchors every executor
sample on the same mistake. So the prompts forbid computing, ask for one short
sentence, and :func:`clean_plan` cuts what still runs past that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .models.base import Message
from .tasks.base import PlanKind, Problem, chat

_SYSTEM = (
    "You write short plans that help someone else solve a problem. "
    "You never solve the problem yourself and never state a final answer."
)

_ASK = {
    "goal": (
        "Write the GOAL of this problem: one sentence that states what must be found, "
        "starting with \"Find\" or \"Determine\". Do not compute anything and do not "
        "give any result. Reply with that one sentence only."
    ),
    "guideline": (
        "Write a GUIDELINE for solving this problem: one or two sentences on the "
        "strategy and the key ideas (which quantities to relate, which method or "
        "formula to use, what to watch out for). Do not carry out the calculation "
        "and do not state the answer. Reply with the guideline only."
    ),
}

# Token caps: a goal is one sentence, a guideline two (FINDINGS: 64 / 100 were
# hit often by leaking plans; a cap plus cleanup keeps the prompt short).
MAX_TOKENS = {"goal": 80, "guideline": 160}


def planner_messages(
    problem: Problem, kind: PlanKind, asks: Mapping[PlanKind, str] | None = None
) -> list[Message]:
    """Chat messages asking a planner for one plan of ``kind`` (after any earlier turns).

    ``asks`` is a task family's own wording per plan kind; a kind it does not
    word falls back to the default.
    """
    ask = (asks or {}).get(kind) or _ASK[kind]
    return chat(_SYSTEM, problem, f"Problem:\n{problem.text.strip()}\n\n{ask}")


_LABEL = re.compile(r"^\s*(\*\*)?\s*(goal|guideline|plan)\s*(\*\*)?\s*[:\-]\s*(\*\*)?\s*", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_LIST_MARK = re.compile(r"^(\s*)(?:\d+[.)]|[-*\u2022+])\s+")
# A list becomes one sentence of at most this many steps.
MAX_STEPS = 4


def clean_plan(text: str, kind: PlanKind) -> str:
    """Strip labels and anything past the allowed number of sentences.

    The answer-leak guard is structural: we keep only the first sentence(s)
    and drop ``\\boxed{}``, where small models put their premature answers.

    Planners often answer with a numbered list despite the ask. Cutting such
    a reply at its second "sentence" used to keep "follow these steps: 1."
    plus the first step, a partial plan that steered the executor to solve
    only that step. So a list is read as a list: its top-level steps (at most
    :data:`MAX_STEPS`, without their sub-items, which is where the numbers get
    worked out) become one sentence, and a lead-in ending with a colon is dropped.
    """
    # Code is never part of a plan: a planner that starts writing it has
    # stopped planning, so everything from the first fence on is dropped.
    text = text.strip().split("```", 1)[0]
    text = re.sub(r"\\boxed\{[^{}]*\}", "", text).replace("**", "")
    lead: list[str] = []
    steps: list[str] = []
    step_indent: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        mark = _LIST_MARK.match(raw)
        if mark:
            indent = len(mark.group(1).expandtabs())
            if step_indent is None:
                step_indent = indent
            if indent <= step_indent:
                steps.append(raw[mark.end():].strip().rstrip(":;.").strip())
            continue
        if step_indent is not None:
            if raw[:1].isspace():
                continue  # a step's continuation or sub-note
            break  # prose after the list: a summary or, worse, the solution
        lead.append(line)
    sentences = _SENTENCE_END.split(_LABEL.sub("", " ".join(lead)).strip())
    sentences = [x for x in sentences if x.strip()]
    if steps:
        if sentences and sentences[-1].rstrip().endswith(":"):
            sentences.pop()  # "Follow these steps:" says nothing once the steps are inline
        steps = [x for x in steps if x][:MAX_STEPS]
        if steps:
            sentences.append("; ".join(steps) + ".")
    limit = 1 if kind == "goal" else 2
    text = " ".join(sentences[:limit]).strip()
    return text.strip(" *\"'")
