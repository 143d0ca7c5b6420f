"""Visible tests read out of a code problem: a docstring's examples as assertions, and who the tests call.

The code task turns a bare stub's docstring examples into visible tests (the
CLI and the server read a posted stub this way), and the HumanEval loader does
the same for its prompts; both read them here, so the task family does not
import a benchmark loader.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from typing import Iterator, Sequence


_OPERATORS = re.compile(
    r"^\s*#?\s*(=+>|-+>|➞|→|==|=|should\s+return|should\s+be|returns?|gives|is)\s*", re.IGNORECASE
)
_INPUT = re.compile(r"^\s*Input\s*:\s*(.+?)\s*$", re.IGNORECASE)
_INPUT_ALONE = re.compile(r"^\s*Input\s*:\s*$", re.IGNORECASE)
_OUTPUT = re.compile(r"^\s*Output\s*:\s*(.+?)\s*$", re.IGNORECASE)
_FOR_SHOULD = re.compile(r"\bfor\s+(.+?)\s*,?\s+the\s+(?:output|result)\s+should\s+be\s+(.+?)\s*$", re.IGNORECASE)
_BAD_REST = tuple("+-*/%=<>&|^[0123456789")
_GOOD_NEXT = tuple(" \t.,;:#)")
_WORDS = {"true": True, "false": False, "none": None}


def _literal(src: str) -> ast.expr | None:
    """``src`` as a literal expression node (numbers, strings, containers, True/None), else None.

    Prose spellings ``true`` / ``false`` / ``none`` count as the constants.
    """
    src = src.strip()
    if src.lower() in _WORDS:
        return ast.Constant(_WORDS[src.lower()])
    try:
        node = ast.parse(src, mode="eval").body
        ast.literal_eval(node)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    return node


def _leading_literal(text: str) -> tuple[ast.expr, str] | None:
    """The longest literal at the start of ``text`` and what follows it.

    What follows must not continue an expression ("1 + (2 / 2)" is a
    derivation, not the value 1), so a literal followed by an operator is
    refused; a comment, punctuation or prose after it is fine.
    """
    text = text.strip()
    for end in range(len(text), 0, -1):
        if text[end - 1].isspace():
            continue
        node = _literal(text[:end])
        if node is None:
            continue
        rest = text[end:].strip()
        # '""aaa"' is a typo, not the empty string followed by prose
        if rest.startswith(_BAD_REST) or (rest and not text[end:].startswith(_GOOD_NEXT)):
            return None
        return node, rest
    return None


def _close_paren(line: str, open_at: int) -> int | None:
    """Index of the bracket closing the one at ``open_at``, skipping string literals."""
    depth = 0
    quote = None
    i = open_at
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


class _Context:
    """What an example may refer to: the function, its parameters, names the prompt defines."""

    def __init__(self, tree: ast.Module, fn: ast.FunctionDef) -> None:
        self.name = fn.name
        self.params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        self.n_required = len(self.params) - len(fn.args.defaults)
        self.known = set(dir(builtins))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.known.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.known.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.Assign):
                self.known.update(t.id for t in node.targets if isinstance(t, ast.Name))

    def self_contained(self, node: ast.AST) -> bool:
        return all(n.id in self.known for n in ast.walk(node) if isinstance(n, ast.Name))

    def is_call(self, node: ast.AST) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == self.name
                and self.self_contained(node))

    def calls_function(self, node: ast.AST) -> bool:
        return any(self.is_call(n) for n in ast.walk(node)) and self.self_contained(node)

    def call_from_args(self, args_src: str) -> ast.Call | None:
        """A call built from "a = 1, b = [2]" or "1, [2]" (named arguments mapped onto the signature)."""
        pieces = [args_src]
        # "N = 1000, the sum of digits will be 1": keep the longest clean prefix.
        cut = args_src
        while "," in cut:
            cut = cut[: cut.rfind(",")]
            pieces.append(cut)
        for src in pieces:
            try:
                call = ast.parse(f"_f({src.strip()})", mode="eval").body
            except SyntaxError:
                continue
            assert isinstance(call, ast.Call)
            if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
                continue
            values = list(call.args)
            if call.keywords:
                names = [k.arg for k in call.keywords]
                if set(names) <= set(self.params) and not call.args:
                    # named like the signature: the leading parameters, in its order
                    by_name = {k.arg: k.value for k in call.keywords}
                    if set(self.params[: len(by_name)]) != set(by_name):
                        continue
                    values = [by_name[p] for p in self.params[: len(by_name)]]
                elif len(call.keywords) + len(call.args) == len(self.params):
                    values = list(call.args) + [k.value for k in call.keywords]
                else:
                    continue
            if not self.n_required <= len(values) <= len(self.params):
                continue
            if not all(_literal(ast.unparse(v)) is not None for v in values):
                continue
            return ast.Call(func=ast.Name(self.name, ast.Load()), args=values, keywords=[])
        return None


def _assertion(call: ast.expr, expected: ast.expr | None) -> str:
    lhs = ast.unparse(call)
    if expected is None:
        return f"assert {lhs} is None"
    value = ast.literal_eval(expected)
    if value is None:
        return f"assert {lhs} is None"
    if isinstance(value, float):
        return f"assert abs({lhs} - {ast.unparse(expected)}) < 1e-06"
    return f"assert {lhs} == {ast.unparse(expected)}"


def _doctest_examples(lines: list[str], ctx: _Context) -> Iterator[tuple[int, str]]:
    """Doctest blocks: ``>>> call`` then its expected output (nothing printed = None)."""
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped.startswith(">>>"):
            i += 1
            continue
        start = i
        src = stripped[3:].strip()
        i += 1
        while i < len(lines) and lines[i].strip().startswith("..."):
            src += "\n" + lines[i].strip()[3:].strip()
            i += 1
        want = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(">>>"):
            want.append(lines[i].strip())
            i += 1
        try:
            node = ast.parse(src, mode="eval").body
        except SyntaxError:
            continue
        expected_src = " ".join(want)
        if isinstance(node, ast.Compare) and ctx.calls_function(node):
            if not want or expected_src == "True":
                yield start, f"assert {ast.unparse(node)}"
            continue
        if not ctx.calls_function(node):
            continue
        if not want:
            if ctx.is_call(node):
                yield start, _assertion(node, None)
            continue
        expected = _literal(expected_src)
        if expected is None and len(want) > 1:
            expected = _literal(want[0])  # output, then prose or another example
        if expected is not None:
            yield start, _assertion(node, expected)


def _inline_examples(lines: list[str], ctx: _Context, skip: set[int], alias: str | None = None
                     ) -> Iterator[tuple[int, str]]:
    """``f(x) == y`` / ``==>`` / ``->`` / ``➞`` / ``should return`` examples on one line (value may wrap).

    ``alias`` is another name the docstring uses for the function.
    """
    call_re = re.compile(rf"(?<![\w.]){re.escape(alias or ctx.name)}\s*\(")
    for i, line in enumerate(lines):
        if i in skip or line.strip().startswith((">>>", "...")):
            continue
        for m in call_re.finditer(line):
            end = _close_paren(line, m.end() - 1)
            if end is None:
                continue
            try:
                call = ast.parse(line[m.start(): end + 1], mode="eval").body
            except SyntaxError:
                continue
            if alias and isinstance(call, ast.Call):
                call.func = ast.Name(ctx.name, ast.Load())
            if not ctx.is_call(call):
                continue
            op = _OPERATORS.match(line[end + 1:])
            if not op:
                continue
            rest = line[end + 1 + op.end():]
            found = _leading_literal(rest)
            if found is None and op.group(1) != "=" and re.search(r"[^=<>!]=[^=]", rest):
                # "f(x) == 1 + 9 + 0 = 10", "f(x) -> 19 - 5 - 6 = 8": the value ends
                # the derivation. (Not after a bare "=": "tri(2) = 1 + (2 / 2) = 2"
                # is the recurrence, not the function.)
                node = _literal(rest[rest.rfind("=") + 1:])
                found = (node, "") if node is not None else None
            for extra in range(1, 4):  # a value whose brackets wrap onto the next lines
                if found is not None or i + extra >= len(lines):
                    break
                if sum(rest.count(c) for c in "([{") <= sum(rest.count(c) for c in ")]}"):
                    break
                rest += " " + lines[i + extra].strip()
                found = _leading_literal(rest)
            if found is not None:
                yield i, _assertion(call, found[0])
                break


def _io_examples(lines: list[str], ctx: _Context) -> Iterator[tuple[int, str]]:
    """``Input: arr = [...], k = 3`` / ``Output: [...]`` and ``For x = ... the output should be ...``."""
    for i, line in enumerate(lines):
        m = _INPUT_ALONE.match(line) or _INPUT.match(line)
        if m:
            args = m.group(1) if m.re is _INPUT else ""
            for j in range(i + 1, min(i + 6, len(lines))):
                out = _OUTPUT.match(lines[j])
                if out:
                    call = ctx.call_from_args(args)
                    found = _leading_literal(out.group(1))
                    if call is not None and found is not None:
                        yield i, _assertion(call, found[0])
                    break
                if m.re is _INPUT_ALONE:
                    # "Input:" alone, then one "name : value" line per argument
                    pair = re.match(r"^\s*(\w+)\s*[:=]\s*(.+?)\s*$", lines[j])
                    if not pair:
                        break
                    args += (", " if args else "") + f"{pair.group(1)}={pair.group(2)}"
            continue
        m = _FOR_SHOULD.search(line)
        if m:
            call = ctx.call_from_args(m.group(1))
            found = _leading_literal(m.group(2).rstrip("."))
            if call is not None and found is not None:
                yield i, _assertion(call, found[0])


def docstring_examples(prompt: str, entry_point: str | None = None) -> list[str]:
    """Assertions built from the input/output examples in the docstring of ``entry_point``.

    Understands doctest blocks, one-line ``call <op> value`` examples (``==``,
    ``==>``, ``=>``, ``->``, ``➞``, ``=``, "should return", "returns"),
    ``Input:``/``Output:`` pairs and "For x = ... the output should be ...".
    An example is kept only when both sides are literals (so the assertion
    cannot depend on anything but the function); float values compare within
    1e-6. Returns [] for a prompt that does not parse or shows no examples.
    ``entry_point`` defaults to the last function the prompt defines.
    """
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return []
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if entry_point:
        fns = [n for n in fns if n.name == entry_point]
    if not fns:
        return []
    fn = fns[-1]
    doc = ast.get_docstring(fn, clean=True)
    if doc is None:
        # a docstring after an import in the body is still the documentation
        first = next((n for n in fn.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                      and isinstance(n.value.value, str)), None)
        doc = inspect.cleandoc(first.value.value) if first else ""
    if not doc.strip():
        return []
    ctx = _Context(tree, fn)
    lines = doc.splitlines()
    found = list(_doctest_examples(lines, ctx))
    doctest_lines = {i for i, _ in found}
    found += _inline_examples(lines, ctx, doctest_lines)
    found += _io_examples(lines, ctx)
    if not found:
        # Examples written for a misnamed function ("grade_equation(...)" in
        # the docstring of numerical_letter_grade): one unknown name only.
        unknown = {m.group(1) for m in re.finditer(r"(?<![\w.])([A-Za-z_]\w*)\s*\(", doc)} - ctx.known
        if len(unknown) == 1:
            found += _inline_examples(lines, ctx, doctest_lines, alias=unknown.pop())
    found.sort(key=lambda item: item[0])
    return list(dict.fromkeys(test for _, test in found))


def defined_functions(source: str) -> list[str]:
    """Names of the top-level functions ``source`` defines ([] if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def called_functions(tests: Sequence[str]) -> list[str]:
    """Names of the non-builtin functions ``tests`` call, in order of first call."""
    names: list[str] = []
    for t in tests:
        try:
            tree = ast.parse(t)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id not in names and not hasattr(builtins, node.func.id):
                    names.append(node.func.id)
    return names
