"""The environment protocol the agent task family plays through.

An episode runner needs only a handful of things from a game: start it, send
one action, and know what may be sent next, whether it is over and how well
it went. Keeping that surface small lets TextWorld (or another text game
engine later) plug in without the cascade or the episode loop knowing which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class StepResult:
    """What the game said after a reset or an action.

    ``reward`` is what this action earned (score gained); ``score`` is the
    running total, so a runner can report either without tracking state.
    ``admissible_actions`` empty means the game does not know them (actions
    are then free-form); a runner must not read it as "nothing is allowed".
    """

    observation: str
    reward: float = 0.0
    score: float = 0.0
    done: bool = False
    won: bool = False
    lost: bool = False
    admissible_actions: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class Environment(Protocol):
    """A text game an agent plays one action at a time.

    ``objective`` is the task as the game states it (known after ``reset``);
    ``max_score`` is None where the game does not say.
    """

    name: str

    @property
    def objective(self) -> str: ...

    @property
    def max_score(self) -> float | None: ...

    def reset(self) -> StepResult:
        """Start (or restart) the game; the first observation."""
        ...

    def step(self, action: str) -> StepResult:
        """Send one action; raises once the episode is over."""
        ...

    @property
    def admissible_actions(self) -> tuple[str, ...]: ...

    @property
    def done(self) -> bool: ...

    @property
    def score(self) -> float: ...

    @property
    def won(self) -> bool: ...

    def close(self) -> None: ...
