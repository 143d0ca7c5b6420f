"""Named methods: each one a cascade configuration over the same engine.

- ``registry``: the entries (factory, summary, what a run needs), option
  checking, and the one rule for a task family's default thresholds;
- ``builtin``: the paper's COPE and the baselines it is measured against;
- ``auto``: ``cope-auto``, its per-family settings read from preset files;
- ``files``: preset files (``cope calibrate --write-preset``), loaded by
  solve, eval and serve;
- ``frugal``: the FrugalGPT scorer (imported only by the runs that use it;
  it needs numpy).
"""

from __future__ import annotations

from .auto import AUTO_PRESETS, cope_auto
from .builtin import (
    MOT,
    abc,
    cascade_noplan,
    cope,
    cope_s3_noplan,
    frugal,
    large_alone,
    mot_cascade,
    plan_only,
    small_alone,
    small_vote,
)
from .files import PresetFile, load_preset, subset
from .registry import (
    COMMON_OPTIONS,
    METHODS,
    REPLAYS,
    Method,
    Replay,
    method_config,
    method_names,
    method_options,
    recording,
    register,
    register_replay,
    task_config,
)

__all__ = [
    "AUTO_PRESETS", "COMMON_OPTIONS", "METHODS", "MOT", "Method", "PresetFile", "REPLAYS", "Replay", "abc", "cascade_noplan", "cope",
    "cope_auto", "cope_s3_noplan", "frugal", "large_alone", "load_preset", "method_config", "method_names",
    "method_options", "mot_cascade", "plan_only", "recording", "register", "register_replay", "small_alone", "small_vote",
    "subset", "task_config",
]
