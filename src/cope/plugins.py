"""Plugin references: a "module:function" string a registry entry or a task family holds.

A method's task wrapper (``Method.wraps_task``) and an episodic family's
driver (``Task.driver``) are named, not imported, so the registry and the
task base class import none of their dependants (no import circle), and the
code they name loads only when a run uses it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .errors import ConfigError


def resolve(ref: str) -> Callable[..., Any]:
    """The function ``ref`` ("package.module:function") names."""
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"a plugin reference is 'module:function', got '{ref}'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"plugin '{ref}' cannot be loaded ({exc})") from None
