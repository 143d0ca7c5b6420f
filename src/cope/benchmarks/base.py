"""What a benchmark loader returns (its own module, so loaders and the registry both import it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks.base import Problem


@dataclass
class Benchmark:
    name: str
    task: str  # the task family that solves and scores it (stamped by registry.load_benchmark)
    problems: list[Problem]
    source: str  # where the data came from (package and version, or a file)
