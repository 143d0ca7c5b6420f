"""Judging a program's tests outside its reach.

A test run inside the program's own interpreter can be faked by the program:
it can return an object whose ``__eq__`` is always True, or replace ``exec``
with a no-op, or forge the harness's result records. For a system that
accepts a sample because it passed its visible tests and reports pass@1 on
hidden ones, that is a hole, not a detail.

So a test of the usual shape, ``assert f(args) == expected`` (and
comparisons, ``abs(f(x) - y) < tol``, membership, ``not f(x)``, ...), is
split in two: the calls of the function under test (the *probes*) run in the
sandbox, and only their values come back, as plain data checked by exact
type (an object that is not a plain value fails); the rest of the assertion,
with the expected values, is evaluated here, in a process the program never
ran in, by a small evaluator that knows literals, arithmetic, comparisons and
a few pure builtins. The program never sees the expected values, so a forged
record can only claim a value it could as well have returned.

A test of any other shape (loops, local variables, imports other than
``math``, helper functions) runs in the sandbox's judge process, which calls
the program's functions in the program's own process with plain data (see
cope.sandbox.core): out of the program's reach too, but inside the sandbox.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["Check", "split_test", "judge"]

_PROBE = "_cope_probe_"

_FUNCS: dict[str, Any] = {
    "abs": abs, "round": round, "len": len, "sorted": sorted, "set": set, "list": list, "tuple": tuple,
    "sum": sum, "min": min, "max": max, "float": float, "int": int, "str": str, "bool": bool,
    "all": all, "any": any, "frozenset": frozenset, "dict": dict, "reversed": reversed,
}
# Builtins whose single argument may be the function's result, run with it in the sandbox: they
# turn an iterator or a view into a value (what they return is plain data or it fails there).
_CONVERSIONS = frozenset(("list", "tuple", "sorted", "set", "frozenset", "len", "str", "dict", "sum", "int",
                          "float", "bool", "abs", "round", "min", "max"))
_MATH_FUNCS = {"isclose": math.isclose, "fabs": math.fabs, "sqrt": math.sqrt, "floor": math.floor,
               "ceil": math.ceil, "isnan": math.isnan, "isinf": math.isinf}
_MATH_CONSTS = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan, "tau": math.tau}
_BIN = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
        ast.Pow: lambda a, b: a ** b}
_CMP = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
        ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
        ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
        ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b}
_BIG = 10 ** 6


@dataclass(frozen=True)
class Check:
    """One assertion: the calls to run in the sandbox and the rest, to evaluate here."""

    probes: tuple[str, ...]  # expressions, in the program's namespace
    test: ast.expr  # the assertion with probe k as the name _cope_probe_k
    message: str  # the test's source, for error lines


def split_test(source: str, entry_point: str | None) -> list[Check] | None:
    """The checks of a test that can be judged outside the program, or None to run it inside.

    Two shapes qualify: top-level ``assert`` statements about ``entry_point``
    (visible tests), and HumanEval's ``def check(candidate): assert ...``
    followed by ``check(entry_point)`` (hidden tests). Every statement must
    qualify, or the whole test runs inside the sandbox.
    """
    if not entry_point:
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    body = tree.body
    callee = entry_point
    fn = [st for st in body if isinstance(st, ast.FunctionDef)]
    if fn:
        shape = _humaneval_check(body, entry_point)
        if shape is None:
            return None
        body, callee = shape
    checks: list[Check] = []
    for st in body:
        if _inert(st):
            continue
        if not isinstance(st, ast.Assert):
            return None
        check = _split_assert(st, callee, entry_point)
        if check is None:
            return None
        if check.probes:
            checks.append(check)
        elif not _constant_true(st.test):
            return None  # an assertion about nothing the program computes: leave it as it is
    return checks or None


def _humaneval_check(body: list[ast.stmt], entry_point: str) -> tuple[list[ast.stmt], str] | None:
    """(check's statements, its parameter) for ``[METADATA = ...] def check(c): ...; check(ep)``."""
    fn = None
    called = False
    for st in body:
        if isinstance(st, ast.FunctionDef) and fn is None and st.name == "check":
            fn = st
        elif (isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and isinstance(st.value.func, ast.Name)
              and st.value.func.id == "check" and len(st.value.args) == 1 and not st.value.keywords
              and isinstance(st.value.args[0], ast.Name) and st.value.args[0].id == entry_point):
            called = True
        elif isinstance(st, ast.Assign) and _literal(st.value):
            continue  # METADATA = {...}
        elif not _inert(st):
            return None
    if fn is None or not called:
        return None
    args = fn.args
    if (len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs
            or args.defaults or fn.decorator_list):
        return None
    return fn.body, args.args[0].arg


def _inert(st: ast.stmt) -> bool:
    """A statement that checks nothing: a docstring, ``pass``, ``import math``."""
    if isinstance(st, ast.Pass):
        return True
    if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
        return True
    if isinstance(st, ast.Import) and all(a.name == "math" and a.asname is None for a in st.names):
        return True
    return False


def _constant_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and bool(node.value)


def _literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(self.new, node.ctx), node) if node.id == self.old else node


def _split_assert(st: ast.Assert, callee: str, entry_point: str) -> Check | None:
    probes: list[str] = []

    def probed(node: ast.AST) -> bool:
        """A call of the function, or a conversion of one (``list(f(x))``: a generator becomes a value)."""
        if not isinstance(node, ast.Call):
            return False
        f = node.func
        if isinstance(f, ast.Name) and f.id == callee:
            return True
        return (isinstance(f, ast.Name) and f.id in _CONVERSIONS and len(node.args) == 1 and not node.keywords
                and probed(node.args[0]))

    class Cut(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            if probed(node) or _mentions(node.func, callee):
                if not probed(node):
                    raise _NotJudged  # candidate.attr(...) or a call built from it
                call = _Rename(callee, entry_point).visit(ast.fix_missing_locations(node))
                probes.append(ast.unparse(call))
                return ast.copy_location(ast.Name(f"{_PROBE}{len(probes) - 1}", ast.Load()), node)
            return self.generic_visit(node)

    try:
        test = Cut().visit(ast.parse(ast.unparse(st.test), mode="eval").body)
    except _NotJudged:
        return None
    if _mentions(test, callee) or not _judgeable(test):
        return None
    return Check(tuple(probes), test, ast.unparse(st)[:200])


class _NotJudged(Exception):
    pass


def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _judgeable(node: ast.AST) -> bool:
    """Whether the evaluator below knows every node (checked before any probe runs)."""
    for n in ast.walk(node):
        if isinstance(n, ast.BinOp) and type(n.op) not in _BIN:
            return False
        if isinstance(n, (ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp,
                          ast.BoolOp, ast.Compare, ast.IfExp, ast.Subscript, ast.Slice, ast.Load,
                          ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.keyword, ast.Starred)):
            continue
        if isinstance(n, ast.Name):
            if n.id.startswith(_PROBE) or n.id in _FUNCS or n.id == "math":
                continue
            return False
        if isinstance(n, ast.Attribute):
            if isinstance(n.value, ast.Name) and n.value.id == "math" and (
                    n.attr in _MATH_FUNCS or n.attr in _MATH_CONSTS):
                continue
            return False
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name) and f.id in _FUNCS:
                continue
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math" \
                    and f.attr in _MATH_FUNCS:
                continue
            return False
        return False
    return True


def judge(check: Check, values: Sequence[tuple[bool, object]]) -> tuple[bool, str]:
    """(passed, error) of one check given its probes' (ok, value or error) from the sandbox."""
    env: dict[str, object] = {}
    for k, (ok, v) in enumerate(values):
        if not ok:
            return False, str(v)
        env[f"{_PROBE}{k}"] = v
    try:
        passed = bool(_eval(check.test, env))
    except _TooBig as exc:
        return False, f"the test cannot be judged: {exc}"
    except Exception as exc:  # noqa: BLE001 - a test that raises on these values fails, as it would inline
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"
    return (True, "") if passed else (False, f"AssertionError: {check.message}")


class _TooBig(Exception):
    pass


def _eval(node: ast.AST, env: dict[str, object]) -> Any:
    """Evaluate a checked expression over plain values (see :func:`_judgeable`)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise _TooBig(f"unknown name {node.id}")
    if isinstance(node, ast.List):
        return [x for e in node.elts for x in _elts(e, env)]
    if isinstance(node, ast.Tuple):
        return tuple(x for e in node.elts for x in _elts(e, env))
    if isinstance(node, ast.Set):
        return {x for e in node.elts for x in _elts(e, env)}
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _TooBig("dict unpacking")
        return {_eval(k, env): _eval(v, env) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not v
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return +v
        return ~v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        _bounded(node.op, a, b)
        return _BIN[type(node.op)](a, b)
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            v: Any = True
            for e in node.values:
                v = _eval(e, env)
                if not v:
                    return v
            return v
        v = False
        for e in node.values:
            v = _eval(e, env)
            if v:
                return v
        return v
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, env)[_eval(node.slice, env)]  # type: ignore[index]
    if isinstance(node, ast.Slice):
        return slice(*(None if p is None else _eval(p, env) for p in (node.lower, node.upper, node.step)))
    if isinstance(node, ast.Attribute):
        return _MATH_CONSTS[node.attr]
    if isinstance(node, ast.Call):
        f = node.func
        fn = _FUNCS[f.id] if isinstance(f, ast.Name) else _MATH_FUNCS[f.attr]  # type: ignore[attr-defined]
        args = [x for a in node.args for x in _elts(a, env)]
        kwargs = {k.arg: _eval(k.value, env) for k in node.keywords if k.arg}
        for a in args:
            if isinstance(a, int) and not isinstance(a, bool) and fn in (list, tuple, set, str) and a > _BIG:
                raise _TooBig("a result too large")
        out = fn(*args, **kwargs)
        return list(out) if fn is reversed else out
    raise _TooBig(f"{type(node).__name__} is not evaluated here")


def _elts(node: ast.AST, env: dict[str, object]) -> list[Any]:
    if isinstance(node, ast.Starred):
        return list(_eval(node.value, env))  # type: ignore[call-overload]
    return [_eval(node, env)]


def _bounded(op: ast.operator, a: Any, b: Any) -> None:
    """Refuse arithmetic whose result would be huge (an exponent tower, a string times a billion)."""
    if isinstance(op, ast.Pow) and isinstance(b, (int, float)) and not isinstance(b, bool):
        if abs(b) > 10_000 or (isinstance(a, int) and abs(a) > 2 and abs(b) * math.log2(abs(a)) > 100_000):
            raise _TooBig("an exponent too large")
    if isinstance(op, ast.Mult):
        for seq, k in ((a, b), (b, a)):
            if isinstance(seq, (str, list, tuple)) and isinstance(k, int) and k * max(1, len(seq)) > _BIG:
                raise _TooBig("a sequence too long")
    if isinstance(op, ast.LShift):
        raise _TooBig("shifts are not evaluated here")
