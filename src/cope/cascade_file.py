"""Cascades as data: a TOML file that holds stages exactly as ``cascade.Stage`` / ``PlanStep`` do.

A cascade of one's own (or a built-in method, printed with ``cope cascade show
cope``) is a list of ``[[stage]]`` tables, each with an optional ``[stage.plan]``:

    [cascade]
    strict = false            # accept at >= the threshold (true: only above it)

    [[stage]]
    executor = "small"        # the tier that answers: small or large
    n = 8
    temperature = 0.4
    threshold = 0.75          # omitted on the last stage: it always answers
    max_tokens = 512
    # also: styles = ["cot", "pot"], window = 1, stop = "exact", use_plans = [...],
    # ensemble = ["other"] (more tiers that share the samples, voted together: ABC's
    # ensembles), and seed_index (a stage cut from a longer cascade keeps that stage's seeds)
    [stage.plan]
    planner = "small"
    kind = "goal"             # goal or guideline
    count = 8
    temperature = 0.8
    keep_as = "g_S"           # a later stage's use_plans = ["g_S"] reads it

More tiers than ``small`` and ``large`` (a local model, a cheap API, a strong
API: the FrugalGPT shape) are declared in ``[tiers.NAME]`` tables, each an
endpoint (``spec``, ``base_url``, ``key_env``, ``price_as``, ``timeout``,
``max_concurrency``, ``reasoning``, ``params``: extra request fields such as
``{ top_k = 20 }``); ``small`` and ``large`` stay the caller's
(``--small``, ``--large``)::

    [tiers.medium]
    spec = "openai/gpt-4o-mini"
    key_env = "OPENAI_API_KEY"

An empty ``[tiers.NAME]`` table declares a tier whose model the caller gives
(``Cope(tiers=...)``, ``--tier NAME=SPEC``, a server preset's ``tiers``), so one
file serves several deployments.

Every mistake is one ConfigError naming the file, the stage and the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

from .cascade import CascadeConfig, PlanStep, Stage
from .errors import ConfigError
from .stopping import RULES

TIERS = ("small", "large")  # always there: the caller's two models
PLAN_KINDS = ("goal", "guideline")
_STAGE_KEYS = {f.name for f in fields(Stage)} - {"plan"}
_PLAN_KEYS = {f.name for f in fields(PlanStep)}
_INTS = {"n", "max_tokens", "window", "count", "seed_index"}
_FLOATS = {"temperature", "threshold"}


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, Mapping):  # an inline table (a tier's request params)
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(x)}" for k, x in v.items()) + " }" if v else "{}"
    return repr(v)


def dump(config: CascadeConfig, *, title: str = "") -> str:
    """The cascade as a cascade file (what :func:`load` reads back to the same stages)."""
    lines = [f"# {title}", ""] if title else []
    lines += ["[cascade]", f"strict = {_toml(config.strict)}", ""]
    for name, ep in config.tiers:
        lines.append(f"[tiers.{name}]")
        for f in fields(ep) if ep is not None else ():
            v = getattr(ep, f.name)
            if v is not None:
                lines.append(f"{f.name} = {_toml(v)}")
        lines.append("")
    for st in config.stages:
        lines.append("[[stage]]")
        for f in fields(Stage):
            if f.name == "plan":
                continue
            v = getattr(st, f.name)
            if v is None or v == () or (f.name in ("window", "seed_index") and v == 0) or (f.name == "stop" and v == "none"):
                continue
            lines.append(f"{f.name} = {_toml(v)}")
        if st.plan is not None:
            lines.append("[stage.plan]")
            for f in fields(PlanStep):
                v = getattr(st.plan, f.name)
                if (f.name == "keep_as" and not v) or (f.name == "windowed" and not v):
                    continue
                lines.append(f"{f.name} = {_toml(v)}")
        lines.append("")
    return "\n".join(lines)


def _number(where: str, key: str, v: Any) -> Any:
    if key in _INTS:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: '{key}' must be a whole number, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{where}: '{key}' must be a number, got {v!r}")
    return float(v)


def _plan(where: str, table: Any, tiers: tuple[str, ...] = TIERS) -> PlanStep:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: 'plan' must be a table ([stage.plan])")
    unknown = sorted(set(table) - _PLAN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown plan key '{unknown[0]}'; allowed: {', '.join(sorted(_PLAN_KEYS))}")
    for key in ("planner", "kind"):
        if key not in table:
            raise ConfigError(f"{where}: the plan needs '{key}'")
    if table["planner"] not in tiers:
        raise ConfigError(f"{where}: unknown planner tier '{table['planner']}'; tiers: {', '.join(tiers)}")
    if table["kind"] not in PLAN_KINDS:
        raise ConfigError(f"{where}: plan kind must be one of {', '.join(PLAN_KINDS)}, got {table['kind']!r}")
    kw: dict[str, Any] = {"planner": table["planner"], "kind": table["kind"]}
    for key in ("count", "temperature"):
        if key in table:
            kw[key] = _number(where, key, table[key])
    if "keep_as" in table:
        if not isinstance(table["keep_as"], str):
            raise ConfigError(f"{where}: 'keep_as' must be a name, got {table['keep_as']!r}")
        kw["keep_as"] = table["keep_as"]
    if "windowed" in table:
        if not isinstance(table["windowed"], bool):
            raise ConfigError(f"{where}: 'windowed' must be true or false")
        kw["windowed"] = table["windowed"]
    return PlanStep(**kw)


def _stage(where: str, table: Any, tiers: tuple[str, ...] = TIERS) -> Stage:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([[stage]])")
    unknown = sorted(set(table) - _STAGE_KEYS - {"plan"})
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_STAGE_KEYS | {'plan'}))}")
    if table.get("executor") not in tiers:
        raise ConfigError(f"{where}: unknown executor tier {table.get('executor')!r}; tiers: {', '.join(tiers)}")
    kw: dict[str, Any] = {"executor": table["executor"]}
    for key, v in table.items():
        if key in _INTS or key in _FLOATS:
            kw[key] = _number(where, key, v)
        elif key == "ensemble":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{where}: 'ensemble' must be a list of tier names")
            unknown_tier = [x for x in v if x not in tiers]
            if unknown_tier:
                raise ConfigError(f"{where}: unknown ensemble tier '{unknown_tier[0]}'; tiers: {', '.join(tiers)}")
            kw[key] = tuple(v)
        elif key in ("use_plans", "styles"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{where}: '{key}' must be a list of names")
            kw[key] = tuple(v)
        elif key == "stop":
            if v not in RULES:
                raise ConfigError(f"{where}: 'stop' must be one of {', '.join(RULES)}, got {v!r}")
            kw[key] = v
    if "plan" in table:
        kw["plan"] = _plan(where, table["plan"], tiers)
    return Stage(**kw)


def _tiers(path: str, table: Any) -> dict[str, Any]:
    """``[tiers.NAME]`` tables as Endpoints (small and large are the caller's, not the file's)."""
    from .models.endpoint import from_table

    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'tiers' must hold [tiers.NAME] tables")
    out: dict[str, Any] = {}
    for name, t in table.items():
        where = f"{path}: [tiers.{name}]"
        if name in TIERS:
            raise ConfigError(f"{where}: small and large are the caller's models (--small, --large); "
                              "name another tier")
        if not name.isidentifier():
            raise ConfigError(f"{where}: a tier name is letters, digits and _")
        if isinstance(t, dict) and not t:
            out[name] = None  # declared here, bound by the caller (Cope(tiers=...), --tier, a preset's tiers)
            continue
        out[name] = from_table(where, t, f"tier {name}",
                               spec_hint=" (or leave the table empty: the caller gives the tier's model)")
    return out


def load(path: str | Path) -> CascadeConfig:
    """Read and check a cascade file (tiers, thresholds, n a multiple of the plan count, plans read)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cascade file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None
    return loads(text, str(path))


def loads(text: str, path: str = "cascade") -> CascadeConfig:
    """A cascade file's text, checked as :func:`load` checks a file (``path`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None
    unknown = sorted(set(data) - {"cascade", "stage", "tiers"})
    if unknown:
        raise ConfigError(f"{path}: unknown table '{unknown[0]}'; a cascade file holds [cascade], [tiers.NAME] "
                          "and [[stage]]")
    extra = _tiers(path, data.get("tiers", {}))
    tiers = TIERS + tuple(extra)
    head = data.get("cascade", {})
    if not isinstance(head, dict) or set(head) - {"strict"} or not isinstance(head.get("strict", False), bool):
        raise ConfigError(f"{path}: [cascade] takes one key, strict = true or false")
    stages = data.get("stage")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{path}: no [[stage]] tables")
    built = [_stage(f"{path}: stage {i}", t, tiers) for i, t in enumerate(stages, start=1)]
    if built[-1].threshold is not None:
        raise ConfigError(f"{path}: stage {len(built)} is the last one and always answers: remove its threshold")
    kept: set[str] = set()
    for i, st in enumerate(built, start=1):
        missing = [name for name in st.use_plans if name not in kept]
        if missing:
            raise ConfigError(f"{path}: stage {i} uses plan '{missing[0]}', which no earlier stage keeps")
        if st.plan is not None and st.plan.keep_as:
            kept.add(st.plan.keep_as)
    config = CascadeConfig(stages=tuple(built), strict=head.get("strict", False), tiers=tuple(extra.items()))
    try:
        config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config
