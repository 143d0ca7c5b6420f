"""Reading a run's probe records back: tagged JSON decoded as strictly as the harness encoded it."""

from __future__ import annotations

from .child.plain import _codec
from .limits import RunResult


_plain_decode = _codec()[1]


def _decode(x: object) -> object:
    """A probe's value from its tagged JSON, checked as strictly as the harness encoded it."""
    return _plain_decode(x, 0, False)


def _probe_values(records: list[dict], n: int, result: "RunResult") -> list[tuple[bool, object]]:
    """(True, value) or (False, error) per probe; the first record of each counts."""
    if not result.loaded:
        return [(False, f"not run: the program failed: {result.load_error}")] * n
    missing = next((e for e in result.errors if e.startswith("not run")), None) or (
        "not run: the run exceeded its time limit" if result.timed_out else "not run: the program ended the run early")
    values: list[tuple[bool, object] | None] = [None] * n
    seen = [0] * n
    for rec in records:
        i = rec.get("i")
        if rec.get("k") == "value" and isinstance(i, int) and 0 <= i < n:
            seen[i] += 1
    for rec in records:
        i = rec.get("i")
        if rec.get("k") != "value" or not isinstance(i, int) or not 0 <= i < n or values[i] is not None:
            continue
        if seen[i] > 1:  # the harness writes one record per probe: another one is the program's
            values[i] = (False, "conflicting value records: the program wrote into the harness's channel")
            continue
        if "err" in rec:
            values[i] = (False, str(rec.get("err") or "error"))
            continue
        try:
            values[i] = (True, _decode(rec.get("v")))
        except (ValueError, TypeError, RecursionError) as exc:
            values[i] = (False, f"unreadable value: {exc}")
    return [v if v is not None else (False, missing) for v in values]
