"""Task families. ``get_task(name)`` returns one; each family is one module."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Assessment, Plan, Task

TASKS = ("math", "code", "open", "agent")
# Variants of a family with another executor (same answers, same scoring): math whose programs are run.
VARIANTS = ("math-pot", "math-exec")


def get_task(name: str) -> Task:
    if name == "math":
        from .math import MathTask

        return MathTask()
    if name in VARIANTS:
        from .math import MathPoTTask

        return MathPoTTask(mode=name.split("-", 1)[1])
    if name == "code":
        from .code import CodeTask

        return CodeTask()
    if name == "open":
        from .open import OpenTask

        return OpenTask()
    if name == "agent":
        from ..agent.task import AgentTask

        return AgentTask()
    raise ConfigError(f"unknown task '{name}'; available: {', '.join(TASKS + VARIANTS)}")


__all__ = ["Assessment", "Plan", "Task", "get_task", "TASKS", "VARIANTS"]
