"""Reading a run's probe records back: tagged JSON decoded as strictly as the harness encoded it."""

from __future__ import annotations

from .limits import RunResult


class _Bad(ValueError):
    pass


def _decode(x: object, depth: int = 0) -> object:
    """A probe's value from its tagged JSON, checked as strictly as it was encoded."""
    if depth > 70 or not isinstance(x, list) or len(x) != 2 or not isinstance(x[0], str):
        raise _Bad("malformed value record")
    tag, v = x
    if tag == "n":
        return None
    if tag == "b" and v in (0, 1):
        return bool(v)
    if tag == "i" and isinstance(v, str):
        return int(v)
    if tag == "f" and isinstance(v, str):
        return float(v)
    if tag == "s" and isinstance(v, str):
        return v
    if tag in ("l", "t", "S", "F") and isinstance(v, list):
        items = [_decode(e, depth + 1) for e in v]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "d" and isinstance(v, list):
        out = {}
        for pair in v:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Bad("malformed value record")
            out[_decode(pair[0], depth + 1)] = _decode(pair[1], depth + 1)
        return out
    raise _Bad("malformed value record")


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
        except (_Bad, ValueError, TypeError, RecursionError) as exc:
            values[i] = (False, f"unreadable value: {exc}")
    return [v if v is not None else (False, missing) for v in values]
