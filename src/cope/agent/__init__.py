"""The agent family in one place: the task (one cascade per step), the episode driver, the environments.

- ``task``: ``AgentTask``, how a step becomes a problem and an action a vote;
- ``episode``: playing a game, one cascade per step, escalating per step;
- ``driver``: an eval item played as an episode (the task's ``driver`` hook);
- ``env`` / ``textworld``: the environment protocol and its TextWorld games.

Importing this package does not import TextWorld; that happens when a game is
generated or started.
"""

from __future__ import annotations

from .env import Environment, StepResult
from .episode import EpisodeResult, StepRecord, arun_episode, run_episode, run_game
from .task import AgentTask
from .textworld import (
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
    "AgentTask", "DEFAULT_KIND", "DEFAULT_LEVEL", "Environment", "EpisodeResult", "GAME_KINDS", "GameSpec",
    "StepRecord", "StepResult", "TextWorldEnv", "arun_episode", "check_game_file", "games_dir", "generate_game",
    "open_game", "parse_game", "run_episode", "run_game",
]
