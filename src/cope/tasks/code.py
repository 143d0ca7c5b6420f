"""Code generation: the executor writes a Python function; visible tests give the confidence.

COPE's rule for code (COPE.md): run every sample against the task's *visible*
tests in a sandbox; if at least one sample passes all of them, answer with a
passing sample, otherwise escalate. The final score runs the *hidden* tests.

How that maps onto :class:`~cope.tasks.base.Assessment`:

* ``confidence`` is 1.0 when some sample passes every visible test, else the
  best sample's fraction of visible tests passed (always < 1). So a stage
  threshold of 1.0 means exactly "a sample passed"; use 1.0 for both COPE
  thresholds on this task (a lower one accepts partially passing programs).
* ``answer`` is the chosen program's code; the chosen sample is the *first*
  passing one. ``assess`` has no seed of its own, but the samples are drawn
  with the stage's seed, so the same seed gives the same choice.
* ``support`` lists the passing samples (when none passes: the samples with
  the best pass fraction, so the cascade keeps the most promising plan).
* ``extracted`` holds each sample's extracted code; ``info`` the per-sample
  tests passed, the first failure of each, and the sandbox isolation level.

A problem without visible tests follows ``untested``: ``"smoke"`` (default)
counts a sample as passing when its program loads without error and defines
the entry point (a weak signal, but it keeps a runnable program from going to
the large model for nothing); ``"escalate"`` gives confidence 0, so only the
final stage answers.

Programs run as ``context + code``: for HumanEval the context is the prompt
(imports, supporting functions and the stub), exactly as HumanEval's own
evaluation runs prompt + completion; the model's complete function replaces
the stub. A reply that is only a function body is put back into the stub.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from ..models.base import Completion, Message
from ..sandbox import RunResult, Sandbox, default_sandbox
from .base import Assessment, Plan, Problem, Task, chat, plan_lines

__all__ = ["CodeTask", "TestSpec", "code_problem", "extract_code", "program_for", "read_tests"]

UNTESTED = ("smoke", "escalate")

_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Write a correct, complete and self-contained Python "
    "solution: the whole function, signature included, with the imports and other functions it "
    "needs. Reply with the code in one ```python block."
)

# ---------------------------------------------------------------------------
# Extracting code from a reply
# ---------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.M | re.S)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3", "pycon"}
_CODE_START = re.compile(r"^(?:async\s+def|def|class|import|from\s+[\w.]+\s+import|@)\b", re.M)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _compiles(code: str) -> bool:
    """Stricter than parsing: ``return`` outside a function is caught here."""
    try:
        compile(code, "<solution>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def _is_body(code: str) -> bool:
    """Whether ``code`` is a function body: it does not compile alone but does inside a ``def``."""
    return not _compiles(code) and _compiles("def _f():\n" + textwrap.indent(textwrap.dedent(code), "    "))


_TRIPLE_QUOTED = re.compile(r'("""|\'\'\')[\s\S]*?(\1|$)')


def _strip_repl(code: str) -> str:
    """A ``>>>`` transcript becomes its input lines.

    Doctest lines inside a docstring are not a transcript: a function that
    keeps its docstring examples must come back whole.
    """
    outside = _TRIPLE_QUOTED.sub("", code)
    if not any(line.lstrip().startswith(">>>") for line in outside.splitlines()):
        return code
    lines = code.splitlines()
    keep = [re.sub(r"^\s*(>>>|\.\.\.) ?", "", ln) for ln in lines if re.match(r"^\s*(>>>|\.\.\.)", ln)]
    return "\n".join(keep)


def _trim_to_parse(code: str) -> str | None:
    """The longest prefix (in whole lines) of ``code`` that parses: drops trailing prose or a cut-off tail."""
    lines = code.rstrip().splitlines()
    while lines:
        candidate = "\n".join(lines)
        if candidate.strip() and _parses(candidate):
            return candidate
        lines.pop()
    return None


def _bare_code(text: str) -> str | None:
    """Code written without fences: from the first line that starts code, trimmed to what parses."""
    m = _CODE_START.search(text)
    if not m:
        body = textwrap.dedent(text).strip("\n")
        return body + "\n" if "return" in body and _is_body(body) else None
    return _trim_to_parse(textwrap.dedent(text[m.start():]))


def _top_names(tree: ast.Module) -> set[str]:
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _defines(code: str, name: str) -> bool:
    try:
        return name in _top_names(ast.parse(code))
    except (SyntaxError, ValueError):
        return False


def _segment(lines: list[str], node: ast.stmt) -> str:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[first - 1: node.end_lineno])


def _sanitize(code: str) -> str:
    """Keep what defines the solution: imports, functions, classes, constants.

    Top-level demo code (prints, calls, ``input()``, loops, asserts, an
    ``if __name__ == "__main__"`` block) is dropped: it would run when the
    program loads and can only fail or hang there.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    if _is_body(code):
        return code  # a function body: program_for puts it back into the stub
    lines = code.splitlines()
    defined = _top_names(tree)
    known = set(dir(builtins)) | defined
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            known.update((a.asname or a.name).split(".")[0] for a in node.names)
    demo = defined | {"input", "print", "open", "exit", "quit", "breakpoint"}
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            keep.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            # A constant stays; "result = solve(3)" or "x = undefined_name" is demo code.
            calls = {c.func.id for c in ast.walk(node.value)
                     if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            names = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
            if not calls & demo and names <= known:
                keep.append(node)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                known.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Try):
            keep.append(node)  # "try: import x / except ImportError: ..."
        elif isinstance(node, ast.If) and "__name__" not in ast.unparse(node.test):
            if any(isinstance(n, (ast.FunctionDef, ast.Import, ast.ImportFrom)) for n in ast.walk(node)):
                keep.append(node)
    if not keep:
        return code
    return "\n\n".join(_segment(lines, n) for n in keep) + "\n"


def extract_code(text: str, entry_point: str | None = None) -> str | None:
    """The program in a model reply, or None when it contains no code.

    Fenced blocks (```python, ```, ~~~, an unclosed last fence cut off by
    the token limit) are preferred; otherwise the code is found bare, from
    its first ``def``/``import``/``class`` line, with trailing prose dropped.
    Among several blocks the last one that defines ``entry_point`` wins (a
    model that corrects itself puts the fix last); imports, and functions it
    uses, are carried over from the other blocks. The result is sanitized
    (see :func:`_sanitize`).
    """
    if not text or not text.strip():
        return None
    blocks = [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]
    python = [_strip_repl(textwrap.dedent(b)) for tag, b in blocks if tag in _PYTHON_TAGS and b.strip()]
    candidates = python or [textwrap.dedent(b) for _, b in blocks if b.strip()]
    if not candidates:
        bare = _bare_code(_strip_repl(text))
        return _sanitize(bare) if bare else None
    parsed: list[tuple[str, ast.Module]] = []
    for block in candidates:
        fixed = block if _parses(block) else _trim_to_parse(block)
        if fixed:
            parsed.append((fixed, ast.parse(fixed)))
    if not parsed:
        return max(candidates, key=len).strip() + "\n"

    def defines(tree: ast.Module, name: str) -> bool:
        return name in _top_names(tree)

    chosen = None
    if entry_point:
        chosen = next((p for p in reversed(parsed) if defines(p[1], entry_point)), None)
    if chosen is None:
        chosen = next((p for p in reversed(parsed)
                       if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in p[1].body)), parsed[0])
    code, tree = chosen
    # Imports and functions it uses that live in the other blocks.
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    have = _top_names(tree)
    imports: list[str] = []
    support: list[str] = []
    for other, otree in parsed:
        if other is code:
            continue
        olines = other.splitlines()
        for node in otree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                seg = _segment(olines, node)
                if seg not in code and seg not in imports:
                    imports.append(seg)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name in used and node.name not in have:
                    support.append(_segment(olines, node))
                    have.add(node.name)
    if imports or support:
        code = "\n".join(imports) + ("\n\n" if imports else "") + "\n\n".join(support + [code])
    return _sanitize(code)


def program_for(problem: Problem, code: str) -> str:
    """The program that runs: the problem's context (HumanEval's prompt) followed by the code.

    A reply that is only the body of the entry point (it does not parse on its
    own, but does inside a function) is indented back into the context's stub.
    """
    context = str(problem.meta.get("context") or "")
    if not context:
        return code
    if problem.entry_point and _is_body(code):
        return context.rstrip() + "\n" + textwrap.indent(textwrap.dedent(code), "    ") + "\n"
    return context.rstrip() + "\n\n\n" + code


# ---------------------------------------------------------------------------
# Problems and visible-test files
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TestSpec:
    """Visible tests read from a file: one statement per test, plus shared setup code."""

    __test__ = False  # a data record, not a pytest class

    tests: tuple[str, ...]
    setup: str = ""


def _check_tests(tests: Sequence[object], where: str) -> tuple[str, ...]:
    out = []
    for i, t in enumerate(tests, start=1):
        if not isinstance(t, str) or not t.strip():
            raise ConfigError(f"{where}: test {i} must be a non-empty string of Python")
        try:
            ast.parse(t)
        except SyntaxError as exc:
            raise ConfigError(f"{where}: test {i} is not valid Python ({exc.msg}): {t.strip()[:60]!r}") from None
        out.append(t.strip())
    return tuple(out)


def read_tests(path: str | os.PathLike[str]) -> TestSpec:
    """Visible tests from a file.

    Two formats:

    * JSON (``.json``): a list of strings, each a Python statement such as
      ``"assert add(1, 2) == 3"``, or ``{"tests": [...], "setup": "..."}``.
    * Python (any other name): every top-level ``assert`` is one test; the
      other top-level statements (imports, function definitions, constants) are
      setup that runs before the tests.

    A missing, empty or malformed file raises :class:`ConfigError` with one line.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"tests file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"tests file {p} cannot be read: {exc}") from None
    if not text.strip():
        raise ConfigError(f"tests file {p} is empty")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"tests file {p} is not valid JSON: {exc}") from None
        setup = ""
        if isinstance(data, dict):
            setup = data.get("setup", "")
            data = data.get("tests")
            if not isinstance(setup, str):
                raise ConfigError(f"tests file {p}: 'setup' must be a string")
        if not isinstance(data, list) or not data:
            raise ConfigError(f"tests file {p} must hold a non-empty JSON list of test strings "
                              "(or an object with a \"tests\" list)")
        return TestSpec(_check_tests(data, f"tests file {p}"), setup)
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ConfigError(f"tests file {p}:{exc.lineno}: not valid Python ({exc.msg})") from None
    lines = text.splitlines()
    tests, setup = [], []
    for node in tree.body:
        (tests if isinstance(node, ast.Assert) else setup).append(_segment(lines, node))
    if not tests:
        raise ConfigError(f"tests file {p} has no top-level assert statements")
    return TestSpec(tuple(tests), "\n".join(setup))


def _is_stub(tree: ast.Module) -> bool:
    """Whether a prompt is code to complete: only imports, definitions, constants and docstrings."""
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
               ast.AnnAssign)
    has_def = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            has_def = True
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        elif not isinstance(node, allowed):
            return False
    return has_def


def code_problem(
    text: str,
    tests: Sequence[str] | None = None,
    *,
    tests_file: str | os.PathLike[str] | None = None,
    setup: str = "",
    entry_point: str | None = None,
    hidden_tests: str | None = None,
    id: str = "",
) -> Problem:
    """A code problem from a prompt and visible tests (what ``cope solve --task code`` builds).

    ``text`` is a description or a Python stub (signature + docstring). The
    visible tests come from ``tests``, else from ``tests_file`` (see
    :func:`read_tests`), else, for a stub, from the examples in its docstring.
    ``entry_point`` defaults to the stub's last function, else the first
    function the tests call.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the problem is empty")
    if tests is not None and tests_file is not None:
        raise ConfigError("give visible tests either inline or as a file, not both")
    source = "given"
    if tests_file is not None:
        spec = read_tests(tests_file)
        tests, setup = spec.tests, "\n".join(s for s in (setup, spec.setup) if s)
        source = "file"
    elif tests is not None:
        tests = _check_tests(list(tests), "visible tests")
    if setup:
        try:
            ast.parse(setup)
        except SyntaxError as exc:
            raise ConfigError(f"test setup is not valid Python ({exc.msg})") from None
    context = ""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        tree = None
    if tree is not None and _is_stub(tree):
        context = text
        if entry_point is None:
            entry_point = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))][-1]
    if tests is None:
        tests = ()
        if context:
            from .code_examples import docstring_examples

            tests = tuple(docstring_examples(context, entry_point))
            source = "docstring"
    if entry_point is None:
        from .code_examples import called_functions

        called = called_functions(list(tests))
        entry_point = called[0] if called else None
    if entry_point is not None and not entry_point.isidentifier():
        raise ConfigError(f"entry point {entry_point!r} is not a Python name")
    meta: dict[str, object] = {"test_setup": setup, "tests_from": source, "tests_in_prompt": source == "docstring"}
    if context:
        meta["context"] = context
    return Problem(text=text, tests=tuple(tests), hidden_tests=hidden_tests, entry_point=entry_point, id=id,
                   meta=meta)


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------


class CodeTask(Task):
    """Python function synthesis: confidence is "some sample passes every visible test".

    ``sandbox`` runs the programs (default: one process-wide
    :class:`~cope.sandbox.Sandbox`); ``workers`` samples run at once (default
    min(4, CPUs)); ``untested`` is the rule for problems without visible tests.
    """

    name = "code"
    needs_logprobs = False
    # Confidence is 1.0 only when a sample passes every visible test; a lower
    # threshold would accept programs that pass some tests.
    default_taus = (1.0, 1.0)
    # Running tests takes seconds: the cascade runs assess off the event loop.
    slow_assess = True
    # Plans for a function: what it must return, then how (no code: a
    # planner's code would anchor every executor sample on its bugs).
    plan_asks = {
        "goal": (
            "Write the GOAL of this programming task: one sentence that states what the "
            "function must return or do for its inputs, including any edge case the "
            "description implies, starting with \"Return\" or \"Implement\". Do not write "
            "any code. Reply with that one sentence only."
        ),
        "guideline": (
            "Write a GUIDELINE for this programming task: one or two sentences on the "
            "approach (which algorithm or data structure to use, which edge cases to "
            "handle, what in the description is easy to misread). Do not write any code. "
            "Reply with the guideline only."
        ),
    }

    def __init__(self, sandbox: Sandbox | None = None, *, untested: str = "smoke", workers: int | None = None,
                 max_prompt_tests: int = 5) -> None:
        if untested not in UNTESTED:
            raise ConfigError(f"untested must be one of {', '.join(UNTESTED)}, got {untested!r}")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self._sandbox = sandbox
        self.untested = untested
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.max_prompt_tests = max_prompt_tests

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = default_sandbox()
        return self._sandbox

    @staticmethod
    def problem_from_text(text: str, *, tests: Sequence[str] = (), entry_point: str | None = None) -> Problem:
        """A prompt as a code problem: the tests given, else a stub's docstring examples."""
        return code_problem(text, list(tests) if tests else None, entry_point=entry_point)

    def executor_messages(self, problem: Problem, plans: Sequence[Plan]) -> list[Message]:
        """The task, its visible tests (unless the prompt already shows them) and the plans."""
        ep = problem.entry_point
        if problem.meta.get("context"):
            user = f"Complete this Python function:\n```python\n{problem.text.strip()}\n```"
            if ep:
                user += f"\nWrite the whole function `{ep}`, signature included."
        else:
            user = problem.text.strip()
            if ep:
                user += f"\n\nThe function must be named `{ep}`."
        shown = list(problem.tests)[: self.max_prompt_tests]
        if shown and not problem.meta.get("tests_in_prompt"):
            user += "\n\nYour code should pass these tests:\n" + "\n".join(shown)
        if plans:
            lines = plan_lines(plans)
            user += (
                "\n\nFollow this plan (a Goal says what to achieve, a Guideline says how):\n" + lines
            )
        return chat(_SYSTEM_PROMPT, problem, user)

    def _checks(self, problem: Problem) -> tuple[list[str], str]:
        """The tests a sample must pass, and what they are ("visible tests", "smoke" or "none")."""
        if problem.tests:
            return list(problem.tests), "visible tests"
        if self.untested == "smoke":
            ep = problem.entry_point
            return ([f"assert callable({ep})"] if ep else []), "smoke"
        return [], "none"

    def run(self, problem: Problem, code: str, tests: Sequence[str]) -> RunResult:
        """Run ``code`` (in its problem's context) against ``tests``, judged out of its reach where possible.

        A test of the ``assert f(x) == y`` shape is judged here on the plain
        values of its calls (see :mod:`cope.tasks.assertions`): the program
        cannot fake it with an always-equal object or a patched ``exec``.
        Other tests run in the sandbox's judge process, calling the program's
        functions in the program's own process with plain data.
        """
        from .assertions import judge, split_test

        setup = str(problem.meta.get("test_setup") or "")
        tests = list(tests)
        plans = [split_test(t, problem.entry_point) for t in tests]
        inside = [t for t, plan in zip(tests, plans) if plan is None]
        probes: list[str] = []
        spans: list[list[tuple[object, int, int]]] = []
        for plan in plans:
            spans.append([])
            for check in plan or ():
                spans[-1].append((check, len(probes), len(probes) + len(check.probes)))
                probes += check.probes
        r = self.sandbox.run(program_for(problem, code), inside, setup, probes=probes,
                             entry_point=problem.entry_point)
        if not probes:
            return r
        inner = iter(zip(r.passed, r.errors))
        passed: list[bool] = []
        errors: list[str] = []
        for plan, span in zip(plans, spans):
            if plan is None:
                ok, err = next(inner)
            else:
                ok, err = True, ""
                for check, lo, hi in span:
                    ok, err = judge(check, r.values[lo:hi])  # type: ignore[arg-type]
                    if not ok:
                        break
                if not r.loaded:
                    ok, err = False, f"not run: the program failed: {r.load_error}"
            passed.append(ok)
            errors.append(err)
        r.passed, r.errors = passed, errors
        r.info["judged_outside"] = sum(plan is not None for plan in plans)
        return r

    def assess(self, problem: Problem, completions: Sequence[Completion]) -> Assessment:
        """Run each sample's code against the visible tests; answer with the first that passes them all."""
        ep = problem.entry_point
        outputs = [c.text for c in completions]
        codes = [extract_code(o, ep) for o in outputs]
        tests, check = self._checks(problem)
        todo = [i for i, c in enumerate(codes) if c is not None]
        if check == "smoke" and ep:
            # the context's stub defines the name too: the sample itself must
            todo = [i for i in todo if _defines(codes[i], ep) or _is_body(codes[i])]
        results: dict[int, RunResult] = {}
        if check != "none" and todo:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(todo)), thread_name_prefix="cope-code") as pool:
                futures = {i: pool.submit(self.run, problem, codes[i], tests) for i in todo}
                results = {i: f.result() for i, f in futures.items()}
        n_tests = len(tests)
        passed = [results[i].n_passed if i in results else 0 for i in range(len(codes))]
        passing = [i for i in sorted(results) if results[i].all_passed]
        if passing:
            support, confidence = passing, 1.0
        elif n_tests and results:
            best = max(passed)
            support = [i for i in sorted(results) if passed[i] == best] if best else []
            confidence = best / n_tests
        else:
            support, confidence = [], 0.0
        chosen = support[0] if support else (todo[0] if todo else None)
        errors = []
        for i in range(len(codes)):
            r = results.get(i)
            if codes[i] is None:
                errors.append("no code found")
            elif r is None:
                errors.append(f"does not define {ep}" if check == "smoke" else "")
            elif not r.loaded:
                errors.append(r.load_error)
            else:
                errors.append(next((e for e in r.errors if e), ""))
        info: dict[str, object] = {
            "check": check,
            "tests": n_tests,
            "tests_passed": passed,
            "passing": passing,
            "errors": errors,
            "isolation": self.sandbox.isolation if results else None,
        }
        return Assessment(
            answer=None if chosen is None else codes[chosen],
            confidence=confidence,
            support=support,
            extracted=codes,
            output="" if chosen is None else outputs[chosen],
            info=info,
        )

    def settled(self, assessment: Assessment, drawn: int, n: int, threshold: float | None, *,
                strict: bool = False, rule: str = "exact", **_: Any) -> bool:
        """Early stopping: the first sample that passes every visible test is the answer; stop there."""
        from ..stopping import first_pass_settled

        return first_pass_settled(assessment.confidence, drawn, n, threshold, strict=strict, rule=rule)  # type: ignore[arg-type]

    def score(self, problem: Problem, answer: str | None) -> bool:
        """Whether ``answer`` passes the hidden tests (or, without any, all visible tests)."""
        if problem.hidden_tests:
            tests = [problem.hidden_tests]
        elif problem.tests:
            tests = list(problem.tests)
        else:
            raise ConfigError(f"problem {problem.id or problem.text[:40]!r} has no hidden or visible tests to score")
        if answer is None or not answer.strip():
            return False
        return self.run(problem, answer, tests).all_passed
