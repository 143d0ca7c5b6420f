"""Preset files: a calibrated cascade setting, written by ``cope calibrate`` and loaded by solve, eval and serve.

A preset file names a base method (``cope``, ``cope-auto``, ...), which of
its stages run, the thresholds and the sampling options, plus what the
calibration expects of it on new problems (out-of-fold accuracy and cost)
and which recording chose it. Loading it rebuilds exactly the cascade the
calibration replayed, so a replay of the recording with the file's setting
makes the same decisions as a live run with it.

The format is TOML, one ``[preset]`` table and an optional ``[expected]``
table that is read back as information only::

    [preset]
    name = "cope-auto-gsm"
    base = "cope-auto"
    stages = [1, 3]
    tau1 = 0.5
    tau2 = 0.5
    n = 8
    window = 4
    stop = "exact"
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..cascade import CascadeConfig
from ..errors import ConfigError
from ..stopping import RULES
from .registry import METHODS, method_config, method_names

_KEYS = {"name", "base", "stages", "tau1", "tau2", "n", "window", "stop", "max_tokens", "plans_in_windows"}
_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class PresetFile:
    """A cascade setting that a file holds: base method, stage subset, thresholds, sampling."""

    name: str
    base: str
    stages: tuple[int, ...] = (1, 2, 3)
    tau1: float = 0.75
    tau2: float = 0.5
    n: int = 8
    window: int | None = None  # None: the base method's
    stop: str | None = None
    max_tokens: int | None = None
    # a windowed stage's plans drawn with each window, not all up front (see PlanStep.windowed)
    plans_in_windows: bool = False
    expected: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def config(self, max_tokens: int = 512) -> CascadeConfig:
        """The cascade this preset stands for (the base method's stages, kept as the file says)."""
        base = method_config(self.base, n=self.n, tau1=self.tau1, tau2=self.tau2,
                             max_tokens=self.max_tokens or max_tokens)
        sampling = {k: v for k, v in (("window", self.window), ("stop", self.stop)) if v is not None}
        if sampling:  # any base method's voting stages can be drawn in windows and stopped early
            base = replace(base, stages=tuple(replace(st, **sampling) if st.n > 1 else st for st in base.stages))
        if self.plans_in_windows:
            base = replace(base, stages=tuple(replace(st, plan=replace(st.plan, windowed=True))
                                              if st.plan and st.plan.count > 1 else st for st in base.stages))
        return subset(base, self.stages, where=self.source or self.name)

    def to_dict(self) -> dict[str, Any]:
        """What a run's config.json keeps, so resume and reports rebuild the same cascade."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PresetFile":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["stages"] = tuple(known.get("stages", (1, 2, 3)))
        return cls(**known)

    def to_toml(self, comment: str = "") -> str:
        lines = [f"# {ln}" for ln in comment.splitlines()] + ["[preset]"]
        lines.append(f'name = "{self.name}"')
        lines.append(f'base = "{self.base}"')
        lines.append(f"stages = [{', '.join(str(s) for s in self.stages)}]")
        # exact values: a threshold read back must make the decisions the calibration replayed
        lines += [f"tau1 = {self.tau1!r}", f"tau2 = {self.tau2!r}", f"n = {self.n}"]
        if self.window is not None:
            lines.append(f"window = {self.window}")
        if self.stop is not None:
            lines.append(f'stop = "{self.stop}"')
        if self.max_tokens is not None:
            lines.append(f"max_tokens = {self.max_tokens}")
        if self.plans_in_windows:
            lines.append("plans_in_windows = true")
        if self.expected:
            lines += ["", "# what the calibration expects on new problems (information only)", "[expected]"]
            for k, v in self.expected.items():
                lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(round(v, 6)) if isinstance(v, float) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def subset(config: CascadeConfig, stages: tuple[int, ...], *, where: str = "preset") -> CascadeConfig:
    """The cascade with only ``stages`` (1-based, increasing, ending with the last one) kept.

    The last kept stage always answers; earlier ones keep their thresholds.
    A stage that reads a plan kept by a dropped stage runs without it.
    """
    total = len(config.stages)
    if not stages or list(stages) != sorted(set(stages)) or stages[-1] != total or stages[0] < 1:
        raise ConfigError(f"{where}: stages must be an increasing subset of 1..{total} that ends with {total}, "
                          f"got {list(stages)}")
    kept = tuple(replace(config.stages[s - 1], seed_index=config.stages[s - 1].seed_index or s) for s in stages)
    kept = (*kept[:-1], replace(kept[-1], threshold=None))
    # a plan no kept stage writes is not read either (the engine would skip it): said so in the record
    written = {st.plan.keep_as for st in kept if st.plan and st.plan.keep_as}
    kept = tuple(replace(st, use_plans=tuple(u for u in st.use_plans if u in written)) for st in kept)
    return replace(config, stages=kept)


def load_preset(path: str | Path, *, check: bool = True) -> PresetFile:
    """Read a preset file; every mistake is one ConfigError naming the file and the key.

    ``check`` also builds its cascade once, so a bad combination (n not a
    multiple of the plans) fails here; the built-in method that loads its own
    preset files passes False, as building it would load them again.
    """
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"preset file not found: {path}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None
    table = data.get("preset")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: no [preset] table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' in [preset]; allowed: {', '.join(sorted(_KEYS))}")
    for key in ("name", "base"):
        if not isinstance(table.get(key), str):
            raise ConfigError(f"{path}: [preset] needs '{key}' as a string")
    if not _NAME.match(table["name"]):
        raise ConfigError(f"{path}: preset name '{table['name']}' must be letters, digits and . _ : - (at most 64)")
    if table["base"] not in METHODS:
        raise ConfigError(f"{path}: unknown base method '{table['base']}'; known: {method_names()}")
    stages = table.get("stages", [1, 2, 3])
    if not isinstance(stages, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in stages):
        raise ConfigError(f"{path}: 'stages' must be a list of stage numbers, e.g. [1, 3]")
    for key in ("tau1", "tau2"):
        v = table.get(key, 0.5)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
            raise ConfigError(f"{path}: '{key}' must be a number in [0, 1], got {v!r}")
    for key in ("n", "window", "max_tokens"):
        v = table.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "window" else 1)):
            raise ConfigError(f"{path}: '{key}' must be a whole number, got {v!r}")
    if "stop" in table and table["stop"] not in RULES:
        raise ConfigError(f"{path}: 'stop' must be one of {', '.join(RULES)}, got {table['stop']!r}")
    if not isinstance(table.get("plans_in_windows", False), bool):
        raise ConfigError(f"{path}: 'plans_in_windows' must be true or false, got {table['plans_in_windows']!r}")
    expected = data.get("expected", {})
    preset = PresetFile(
        name=table["name"], base=table["base"], stages=tuple(stages),
        tau1=float(table.get("tau1", 0.75)), tau2=float(table.get("tau2", 0.5)), n=table.get("n", 8),
        window=table.get("window"), stop=table.get("stop"), max_tokens=table.get("max_tokens"),
        plans_in_windows=table.get("plans_in_windows", False),
        expected=expected if isinstance(expected, dict) else {}, source=str(path),
    )
    if check:
        preset.config().validate()  # a bad combination fails here, not mid-run
    return preset
