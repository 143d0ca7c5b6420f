"""Typed exceptions.

Every error a user can cause derives from :class:`CopeError`, so the CLI and
the server can turn it into one clear line (or a 4xx) instead of a traceback.
Errors raised mid-solve carry what was already spent, so no cost is lost.
"""

from __future__ import annotations

from typing import Any


class CopeError(Exception):
    """Base class: a problem the user can fix (bad input, config, environment)."""


class ConfigError(CopeError, ValueError):
    """An invalid option: n < 1, a threshold outside [0, 1], an empty problem."""


class UnknownModelError(CopeError, KeyError):
    """A model spec that names no provider or no known local model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PriceError(CopeError, KeyError):
    """A priced model with no row in the price table and no user-declared price."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelFileError(CopeError):
    """A local model file that is missing, truncated or fails its sha256 check."""


class BackendError(CopeError):
    """A model backend failed after retries (unreachable server, bad key, ...).

    ``spent`` holds the call records made before the failure, so a caller can
    still account for what was paid.
    """

    def __init__(self, message: str, spent: list[Any] | None = None) -> None:
        super().__init__(message)
        self.spent: list[Any] = list(spent or [])
        self.tier: str | None = None  # the cascade's tier whose model failed (the message names it)


class GameError(CopeError):
    """A game that cannot be generated, loaded or played: a bad seed, kind or level,
    a file that is not a game, or a step after the episode ended."""
