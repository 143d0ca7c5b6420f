"""Program of thought for math: the answer a program prints, not the one a model writes.

Why: in the 60-problem GSM recording (``results/gsm``), the 0.5B coder model
wrote Python in some of its math samples despite being told not to, then
invented the program's output, which rarely matched what the program really
prints; the programs themselves were right more often than chain-of-thought
on the same problems. Running the
program and voting on what it prints keeps the model's strength (writing
code) and drops its weakness (arithmetic in its head).

Two executors share one reader:
- ``math-pot``: the executor is asked for a program that prints the answer;
  the program runs in the sandbox (time, memory and process limits per
  sample) and its last printed line is the sample's answer.
- ``math-exec``: the usual chain-of-thought prompt, but a sample that wrote a
  program anyway is answered by what the program prints (its written answer
  stands when the program does not run).
In ``math-pot``, a program that fails to run, loops past its limit or prints
nothing is a missing answer (it counts against consensus), never a crash; a
reply with no program at all is read as a written answer.
"""

from __future__ import annotations

import ast
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from ..models.base import Message
from ..sandbox import Limits, Sandbox, default_sandbox
from .base import Assessment, Plan, Problem, chat, plan_lines
from .math_answers import _clean, extract_answer, vote

# A word problem's program needs neither minutes nor gigabytes: a loop or a
# memory bomb is cut short and counts as no answer.
POT_LIMITS = Limits(timeout_s=5.0, step_timeout_s=5.0, cpu_s=5, memory_mb=256, processes=4, output_bytes=8192)
_MAX_ANSWER_CHARS = 80  # a printed "answer" longer than this is a dump, not an answer

_POT_SYSTEM = (
    "You solve math problems by writing a short Python program. Write one ```python block that "
    "computes the answer and prints only the final answer with print(). Do not write the "
    "program's output yourself: the program will be run."
)


def printed_answer(stdout: str) -> str | None:
    """The answer in a program's output: its last non-empty line, read like a written answer."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        return None
    last = lines[-1]
    written = extract_answer(last)  # "The answer is 72" or "\\boxed{72}" printed verbatim
    ans = _clean(written if written is not None else last)
    if not ans or len(ans) > _MAX_ANSWER_CHARS:
        return None
    if ans.endswith(".0") and ans[:-2].lstrip("-").isdigit():
        ans = ans[:-2]  # 72.0 from float arithmetic is the integer 72
    return ans


# A fenced block tagged as Python, or untagged; an unclosed last fence (cut off by the token limit) too.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", ""}


def extract_program(text: str) -> str | None:
    """The last fenced Python block of a reply that parses, as written.

    Not the code family's extractor: that one strips top-level ``print``
    calls (test scaffolding in a function body), which here are the answer.
    Prose is never run, and neither is an ```output block a model invented.
    """
    found = None
    for m in _FENCE.finditer(text or ""):
        tag, body = m.group(1).lower(), m.group(2)
        if tag not in _PYTHON_TAGS or not body.strip():
            continue
        try:
            tree = ast.parse(body)
        except SyntaxError:
            continue
        if not tag and all(isinstance(node, ast.Expr) for node in tree.body) and not _prints(tree):
            continue  # an untagged "72" or "48 + 24" is a written answer in a box, not a program
        found = body
    return found


def _prints(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
               for n in ast.walk(tree))


def program_answer(text: str, sandbox: Sandbox) -> tuple[str | None, str]:
    """Run the program in a reply; (its printed answer or None, what happened) for the record."""
    code = extract_program(text)
    if code is None:
        return None, "no program"
    r = sandbox.run(code)
    if r.timed_out or "SIGXCPU" in (r.load_error or ""):  # the wall clock or the CPU limit cut it short
        return None, "timed out"
    if not r.loaded:
        err = (r.load_error or r.stderr or "failed").strip().splitlines()
        return None, f"error: {err[-1][:120] if err else 'failed'}"
    ans = printed_answer(r.stdout)
    return ans, "ran" if ans is not None else "printed nothing usable"


def pot_sandbox() -> Sandbox:
    """One sandbox for every math program, with the short per-program limits."""
    return default_sandbox(POT_LIMITS)


def pot_messages(problem: Problem, plans: Sequence[Plan]) -> list[Message]:
    """The program-of-thought executor prompt: a program that prints the answer."""
    user = problem.text.strip()
    if plans:
        user += "\n\nFollow this plan (a Goal says what to find, a Guideline says how):\n" + plan_lines(plans)
    return chat(_POT_SYSTEM, problem, user)


# A stage drawn in windows is assessed after each window on every sample so far;
# a program already run is not run again (same text, same answer).
_ran: OrderedDict[tuple[int, str], tuple[str | None, str]] = OrderedDict()
_ran_lock = threading.Lock()
_RAN_KEEP = 512


def _run_once(text: str, sandbox: Sandbox) -> tuple[str | None, str]:
    key = (id(sandbox), text)
    with _ran_lock:
        if key in _ran:
            _ran.move_to_end(key)
            return _ran[key]
    got = program_answer(text, sandbox)
    with _ran_lock:
        _ran[key] = got
        while len(_ran) > _RAN_KEEP:
            _ran.popitem(last=False)
    return got


def executed_vote(outputs: Sequence[str], styles: Sequence[str], sandbox: Sandbox | None = None) -> Assessment:
    """Vote on executed answers: each sample's program is run, and what it prints is its answer.

    A ``pot`` sample whose program fails is a missing answer (it was asked for
    a program; its prose is not an answer). A ``cot`` sample keeps its written
    answer unless it wrote a program anyway and that program ran. A sample
    with no program at all is read as written, in both styles.
    """
    box = sandbox or pot_sandbox()
    with ThreadPoolExecutor(max_workers=2) as pool:
        ran = list(pool.map(lambda o: _run_once(o, box), outputs))
    extracted: list[str | None] = []
    for out, style, (ans, how) in zip(outputs, styles, ran):
        if how == "no program" or (style != "pot" and ans is None):
            ans = extract_answer(out)
        extracted.append(ans)
    a = vote(outputs, extracted)
    a.info["executed"] = [how for _, how in ran]
    a.info["styles"] = list(styles)
    return a
