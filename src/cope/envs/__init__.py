"""Environments the agent task family plays: the protocol and its TextWorld implementation.

Importing this package does not import TextWorld; that happens when a game is
generated or started.
"""

from __future__ import annotations

from .base import Environment, StepResult
from .textworld_env import (
    DEFAULT_KIND,
    DEFAULT_LEVEL,
    GAME_KINDS,
    GameSpec,
    TextWorldEnv,
    check_game_file,
    games_dir,
    generate_game,
    open_game,
    parse_game,
)

__all__ = [
    "DEFAULT_KIND", "DEFAULT_LEVEL", "Environment", "GAME_KINDS", "GameSpec", "StepResult",
    "TextWorldEnv", "check_game_file", "games_dir", "generate_game", "open_game", "parse_game",
]
