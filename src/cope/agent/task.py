"""The agent task family: one cascade per step of a text game, voting on the next action.

COPE's confidence for multi-step tasks is per-step consensus (COPE.md, the
"Confidence per task family" table): the executor samples n next actions, the
actions are normalised and mapped onto what the game accepts now, and the
majority action's share of all n samples is the step's confidence. A sample
that maps to no admissible action still counts in the denominator, so a step
where the executor mostly wrote nonsense escalates instead of passing on a
lucky one-vote "majority".

Mapping a sample onto the admissible list is deliberately conservative: an
exact match after normalisation, then a few rewrites players commonly use
("n" for "go north", "get" for "take", articles dropped), then a single
admissible action written inside the sample, then a near-identical spelling.
A loose matcher would manufacture agreement that the samples do not have and
make consensus a worse confidence signal.

When no sample maps (and only then), the answer is a fallback action: "look"
if the game accepts it, otherwise the first admissible action in the game's
order. "look" changes nothing in the world and shows the room again, so a
step the executor could not answer costs one move and no damage. Its
confidence is 0, so the cascade escalates; the fallback is played only if the
last stage cannot answer either.

The episode loop (``cope.agent.episode``) builds each step's :class:`Problem` with
:func:`step_problem`: ``text`` is the objective and the current observation;
``history`` holds the last few steps as chat turns (planners see them too);
``meta`` holds the admissible actions and the full transcript.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Any, Sequence

from ..errors import ConfigError
from ..models.base import Completion, Message
from ..stopping import leader
from ..tasks.base import Assessment, Plan, Problem, Task, chat, plan_lines

__all__ = ["AgentTask", "FALLBACK_ACTION", "fallback_action", "match_action", "normalize_action", "step_problem"]

FALLBACK_ACTION = "look"
# Steps of transcript shown to planner and executor; older ones are dropped so
# the prompt stays inside a small model's context and attention.
DEFAULT_WINDOW = 4
# Characters of one observation kept in the transcript (the current one is whole).
_OBS_CHARS = 600
# difflib ratio a misspelt action needs to count as an admissible one.
_FUZZY_CUTOFF = 0.88

_SYSTEM_PROMPT = (
    "You play a text adventure game. Each turn you choose the next action. "
    "Reply with exactly one action from the list of admissible actions, and nothing else."
)

# ---------------------------------------------------------------------------
# Normalisation and matching
# ---------------------------------------------------------------------------

# Labels a model puts before its action: "Action:", "Next action:", "Command -".
_LABEL_RE = re.compile(
    r"^(?:(?:my|the|next|final|chosen|best)\s+)*(?:action|command|answer|response|move)\s*(?:is\s*)?[:=\-]\s*"
)
_ACTION_IS_RE = re.compile(r"^(?:(?:my|the)\s+)?(?:next\s+)?(?:action|command)\s+is\s+")
_INTENT_RE = re.compile(r"^(?:i\s+will|i'll|i\s+would|i\s+choose\s+to|i\s+choose|let's|let\s+me|you\s+should)\s+")
_BULLET_RE = re.compile(r"^(?:>+|[-*\u2022]+|\d+[.)])\s*")
_WORDS_RE = re.compile(r"[^a-z0-9'\- ]+")
_ARTICLES = {"the", "a", "an", "some"}
_NEGATION = {"not", "no", "never", "cannot", "can't", "don't", "won't", "shouldn't", "isn't"}
# Words a sample may have beyond an admissible action written inside it.
_INSIDE_EXTRA_WORDS = 4
_DIRECTIONS = {
    "n": "north", "s": "south", "e": "east", "w": "west", "u": "up", "d": "down",
    "ne": "northeast", "nw": "northwest", "se": "southeast", "sw": "southwest",
}
_DIRECTION_WORDS = set(_DIRECTIONS.values())
_VERB_ALIASES = {"get": "take", "grab": "take", "pick up": "take", "x": "examine", "inspect": "examine",
                 "check": "examine", "walk": "go", "move": "go", "head": "go"}
_SINGLE_ALIASES = {"l": "look", "i": "inventory", "inv": "inventory", "look around": "look",
                   "check inventory": "inventory"}


def _first_line(text: str) -> str:
    """The first line with words in it; code fences and blank lines are skipped."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("```"):
            continue
        if re.search(r"[A-Za-z]", line):
            return line
    return ""


def normalize_action(text: str | None) -> str:
    """A sampled action reduced to comparable form: one line, lowercase, no labels or punctuation.

    "> Take the coin." and "Action: take the coin" both become "take the coin"
    (articles stay here; :func:`match_action` may drop them).
    """
    if not text:
        return ""
    s = _first_line(text).lower()
    s = s.replace("*", " ").replace("`", " ").replace('"', " ").replace("\u201c", " ").replace("\u201d", " ")
    prev = None
    while s != prev:
        prev = s
        s = s.strip().strip("'").strip()
        s = _BULLET_RE.sub("", s)
        s = _LABEL_RE.sub("", s)
        s = _ACTION_IS_RE.sub("", s)
        s = _INTENT_RE.sub("", s)
    s = _WORDS_RE.sub(" ", s)
    s = " ".join(w.strip("'-") for w in s.split())
    return " ".join(s.split())


def _canonical(action: str) -> str:
    """Spelling-insensitive form of a normalised action: articles dropped, common aliases expanded."""
    s = " ".join(w for w in action.split() if w not in _ARTICLES)
    if s in _SINGLE_ALIASES:
        return _SINGLE_ALIASES[s]
    if s in _DIRECTIONS:
        return f"go {_DIRECTIONS[s]}"
    if s in _DIRECTION_WORDS:
        return f"go {s}"
    for alias, verb in _VERB_ALIASES.items():
        if s == alias:
            return verb
        if s.startswith(alias + " "):
            s = verb + s[len(alias):]
            break
    words = s.split()
    if len(words) == 2 and words[0] == "go" and words[1] in _DIRECTIONS:
        return f"go {_DIRECTIONS[words[1]]}"
    if len(words) == 3 and words[:2] == ["go", "to"] and words[2] in _DIRECTION_WORDS:
        return f"go {words[2]}"
    return s


def match_action(sample: str, admissible: Sequence[str]) -> str | None:
    """The admissible action a sample means, or None if it cannot be told safely.

    Tried in order: exact (normalised), canonical (articles and aliases), a
    single admissible action written inside the sample as whole words
    ("I will go north now" -> "go north"; at most a few extra words and no
    negation; if several appear, one that contains all the others wins, else
    none), then a near-identical spelling with the
    same first word ("tkae coin" is not fixed, "take coni" is).
    """
    norm = normalize_action(sample)
    if not norm:
        return None
    by_norm: dict[str, str] = {}
    by_canon: dict[str, str] = {}
    for a in admissible:
        n = normalize_action(a)
        if n:
            by_norm.setdefault(n, a)
            by_canon.setdefault(_canonical(n), a)
    if norm in by_norm:
        return by_norm[norm]
    canon = _canonical(norm)
    if not canon:  # only articles ("the")
        return None
    if canon in by_canon:
        return by_canon[canon]
    padded = f" {canon} "
    words = canon.split()
    # Only a short sentence around the action, and no negation: "you can't go
    # north" must not vote for "go north".
    inside = [c for c in by_canon if f" {c} " in padded]
    if inside:
        widest = [c for c in inside if all(o == c or f" {o} " in f" {c} " for o in inside)]
        if len(widest) != 1 or _NEGATION & set(words):
            return None
        return by_canon[widest[0]] if len(words) <= len(widest[0].split()) + _INSIDE_EXTRA_WORDS else None
    verb = canon.split()[0]
    close = difflib.get_close_matches(canon, list(by_canon), n=2, cutoff=_FUZZY_CUTOFF)
    close = [c for c in close if c.split()[0] == verb]
    if len(close) == 1:
        return by_canon[close[0]]
    if len(close) == 2:
        r0, r1 = (difflib.SequenceMatcher(None, canon, c).ratio() for c in close)
        if r0 - r1 >= 0.05:
            return by_canon[close[0]]
    return None


def fallback_action(admissible: Sequence[str]) -> str:
    """The action played when no sample names an admissible one (see the module docstring)."""
    if not admissible or FALLBACK_ACTION in admissible:
        return FALLBACK_ACTION
    return admissible[0]


# ---------------------------------------------------------------------------
# Problems for one step
# ---------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def step_problem(
    objective: str,
    observation: str,
    admissible: Sequence[str],
    transcript: Sequence[tuple[str, str]] = (),
    *,
    first_observation: str = "",
    step: int = 1,
    window: int = DEFAULT_WINDOW,
    id: str = "",
) -> Problem:
    """The Problem the cascade solves at one step of an episode.

    ``transcript`` is every (action, observation-after-it) pair so far;
    ``first_observation`` is what the game said before the first action.

    ``text`` carries the objective with the current observation because a
    planner sees only ``text`` and ``history``: a goal written without the
    objective would be a guess. The last ``window`` steps go into ``history``
    as chat turns (the game speaks as the user, the player's actions are the
    assistant's), which planner and executor both see.
    """
    if window < 0:
        raise ConfigError(f"window must be >= 0, got {window}")
    pairs = list(transcript)
    shown = pairs[max(0, len(pairs) - window):] if window else []
    skipped = len(pairs) - len(shown)
    history: list[Message] = []
    if shown:
        before = first_observation if skipped == 0 else pairs[skipped - 1][1]
        opening = _clip(before, _OBS_CHARS) or "(the game printed nothing)"
        if skipped:
            opening = f"({skipped} earlier steps not shown.)\n\n{opening}"
        history.append({"role": "user", "content": opening})
        for k, (action, obs) in enumerate(shown):
            history.append({"role": "assistant", "content": action})
            if k < len(shown) - 1:  # the last observation is this step's text
                history.append({"role": "user", "content": _clip(obs, _OBS_CHARS) or "(nothing happens)"})
    current = observation.strip() or "(the game printed nothing)"
    goal = objective.strip()
    # TextWorld opens with the objective as its first words; saying it twice
    # only spends a small model's attention.
    text = f"Current observation:\n{current}"
    if goal not in current:
        text = f"Objective: {goal}\n\n{text}"
    return Problem(
        text=text,
        history=tuple(history),
        id=id,
        meta={
            "objective": objective,
            "observation": observation,
            "admissible_actions": tuple(admissible),
            "transcript": tuple(pairs),
            "step": step,
        },
    )


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------


class AgentTask(Task):
    """Next-action choice in a text game; confidence is the majority share over n samples."""

    name = "agent"
    needs_logprobs = False
    driver = "cope.agent.driver:play_item"  # an eval item is a game, played one cascade per step
    # Plans for a game turn: the next sub-goal toward the objective, then the
    # order of moves to reach it.
    plan_asks = {
        "goal": (
            "Write the GOAL for the next part of this game: one sentence that names the "
            "next sub-goal on the way to the objective (what to find, open, take or reach), "
            "starting with a verb. Do not list actions. Reply with that one sentence only."
        ),
        "guideline": (
            "Write a GUIDELINE for this game: one or two sentences on the order in which "
            "to do things from here to complete the objective, and what to check in the "
            "observation first. Reply with the guideline only."
        ),
    }

    def executor_messages(self, problem: Problem, plans: Sequence[Plan]) -> list[Message]:
        """Objective and observation (``problem.text``), admissible actions and plans; asks for one action.

        The recent transcript arrives as ``problem.history`` (see :func:`step_problem`).
        """
        admissible = list(problem.meta.get("admissible_actions") or ())
        parts = [problem.text.strip()]
        if admissible:
            parts.append("Admissible actions:\n" + "\n".join(f"- {a}" for a in admissible))
        if plans:
            lines = plan_lines(plans)
            parts.append("Plan (a Goal says what to achieve, a Guideline says how):\n" + lines)
        if admissible:
            parts.append("What is your next action? Reply with one action copied from the admissible actions.")
        else:
            parts.append("What is your next action? Reply with one short command, such as 'go north' or 'take key'.")
        return chat(_SYSTEM_PROMPT, problem, "\n\n".join(parts))

    def assess(self, problem: Problem, completions: Sequence[Completion]) -> Assessment:
        """Majority over the samples' admissible actions; confidence = majority count / n.

        Without an admissible list (a game that cannot tell), the normalised
        actions themselves are voted on.
        """
        admissible = list(problem.meta.get("admissible_actions") or ())
        outputs = [c.text for c in completions]
        normalized = [normalize_action(o) for o in outputs]
        if admissible:
            extracted = [match_action(o, admissible) for o in outputs]
        else:
            extracted = [_canonical(n) if n else None for n in normalized]
        counts = Counter(a for a in extracted if a is not None)
        info: dict[str, Any] = {"normalized": normalized, "n_admissible": len(admissible)}
        if not counts:
            return Assessment(
                answer=fallback_action(admissible),
                confidence=0.0,
                support=[],
                extracted=extracted,
                output="",
                info={**info, "votes": {}, "fallback": True},
            )
        winner, _, _, order = leader(extracted)  # the most votes; a tie goes to the action sampled first
        support = [i for i, a in enumerate(extracted) if a == winner]
        return Assessment(
            answer=winner,
            confidence=len(support) / len(outputs) if outputs else 0.0,
            support=support,
            extracted=extracted,
            output=outputs[support[0]],
            info={**info, "votes": {a: counts[a] for a in sorted(counts, key=order.get)}, "fallback": False},
        )

    def settled(self, assessment: Assessment, drawn: int, n: int, threshold: float | None, **rule: Any) -> bool:
        """Early stopping: whether the step's remaining samples could still change the voted action."""
        from ..stopping import vote_settled

        return vote_settled(list(assessment.extracted), n, threshold, **rule)

    def score(self, problem: Problem, answer: str | None) -> bool:
        """Whether the chosen action is the reference action (an expert's move for this step)."""
        if problem.reference is None:
            raise ConfigError(f"step {problem.id or problem.text[:40]!r} has no reference action")
        if answer is None:
            return False
        return _canonical(normalize_action(answer)) == _canonical(normalize_action(problem.reference))
