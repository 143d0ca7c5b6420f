"""The solver configuration: which method, how many samples, which thresholds, which preset file.

One frozen value that every entry point builds and checks the same way:
``cope.Cope`` (keyword options), ``cope solve`` (argparse, :meth:`from_args`),
``cope eval`` (one per method of a run, ``EvalConfig.solver``) and the
server's presets (TOML tables, ``Preset.solver``). :meth:`validate` is the
one place a bad value is refused, and :meth:`cascade` the one place a
threshold left unset becomes the task family's own (``methods.task_config``),
so the library, the CLI, eval and the server cannot drift apart again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .cascade import CascadeConfig
    from .tasks.base import Task


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class SolverConfig:
    """What a solve runs, before a task family is known. Thresholds None: the family's own."""

    method: str = "cope"
    n: int = 8
    tau1: float | None = None
    tau2: float | None = None
    max_tokens: int = 512
    # a preset file from ``cope calibrate --write-preset``: its cascade replaces method, n and taus
    preset_file: str | None = None
    # a cascade file (cope.cascade_file): stages of one's own, replacing method, n and taus
    cascade_file: str | None = None

    def validate(self) -> "SolverConfig":
        """Refuse a bad value with one ConfigError naming the option; returns self, so it chains."""
        from .methods import METHODS, method_names

        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}'; known: {method_names()}")
        if not _whole(self.n) or self.n < 1:
            raise ConfigError(f"n must be an integer >= 1, got {self.n!r}")
        for label, tau in (("tau1", self.tau1), ("tau2", self.tau2)):
            if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))
                                    or not math.isfinite(tau) or not 0.0 <= float(tau) <= 1.0):
                raise ConfigError(f"{label} must be a number in [0, 1], got {tau!r}")
        if not _whole(self.max_tokens) or self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.preset_file is not None and self.cascade_file is not None:
            raise ConfigError("give a preset file or a cascade file, not both")
        if self.preset_file is not None:
            from .methods import load_preset

            load_preset(self.preset_file)  # a missing or bad file is its own one-line error
        elif self.cascade_file is not None:
            from .cascade_file import load

            load(self.cascade_file)
        else:
            self.default_cascade().validate()  # a bad combination (n not a multiple of the plans) fails here
        return self

    @property
    def taus_given(self) -> bool:
        """Whether a threshold was set by the caller (a method calibrated per family then uses it)."""
        return self.tau1 is not None or self.tau2 is not None

    def cascade(self, task: "Task") -> "CascadeConfig":
        """The cascade this configuration runs for ``task``: the family's thresholds where none was set."""
        if self.cascade_file is not None:
            from .cascade_file import load

            return load(self.cascade_file)  # its thresholds are the file's, for every family
        if self.preset_file is not None:
            from .methods import load_preset

            config = load_preset(self.preset_file).config(self.max_tokens)
            return replace(config.for_family(task.name), variants=())
        from .methods import task_config

        return replace(task_config(self.method, task, n=self.n, tau1=self.tau1, tau2=self.tau2,
                                   max_tokens=self.max_tokens), variants=())

    def default_cascade(self) -> "CascadeConfig":
        """The cascade before a family is known (the paper's thresholds where none was set)."""
        if self.cascade_file is not None:
            from .cascade_file import load

            return load(self.cascade_file)
        if self.preset_file is not None:
            from .methods import load_preset

            return load_preset(self.preset_file).config(self.max_tokens)
        from .methods import method_config
        from .tasks.base import PAPER_TAUS

        return method_config(self.method, n=self.n, tau1=PAPER_TAUS[0] if self.tau1 is None else self.tau1,
                             tau2=PAPER_TAUS[1] if self.tau2 is None else self.tau2, max_tokens=self.max_tokens,
                             explicit_taus=self.taus_given)

    @classmethod
    def from_args(cls, args: Any) -> "SolverConfig":
        """From parsed command-line arguments (``--method``, ``--n``, ``--tau1``, ``--tau2``,
        ``--max-tokens``, ``--preset``)."""
        return cls(method=args.method, n=args.n, tau1=args.tau1, tau2=args.tau2, max_tokens=args.max_tokens,
                   preset_file=getattr(args, "preset", None) or None,
                   cascade_file=getattr(args, "cascade", None) or None)
