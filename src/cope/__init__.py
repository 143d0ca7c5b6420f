"""cope: a small local LLM and a large paid LLM collaborating through plans (COPE).

Importing ``cope`` is cheap: models, llama.cpp and the math verifier load on
first use, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BackendError,
    ConfigError,
    CopeError,
    ModelFileError,
    PriceError,
    UnknownModelError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import Cope
    from .cascade import CallRecord, Result
    from .models.endpoint import Endpoint
    from .solver import SolverConfig


def __getattr__(name: str) -> Any:
    if name == "Cope":
        from .api import Cope

        return Cope
    if name == "Endpoint":
        from .models.endpoint import Endpoint

        return Endpoint
    if name == "SolverConfig":
        from .solver import SolverConfig

        return SolverConfig
    if name in ("Result", "CallRecord", "Cascade", "CascadeConfig", "Stage", "PlanStep"):
        from . import cascade

        return getattr(cascade, name)
    raise AttributeError(name)


__all__ = [
    "Cope", "Endpoint", "SolverConfig", "Result", "CallRecord", "CopeError", "ConfigError", "UnknownModelError",
    "PriceError", "ModelFileError", "BackendError", "__version__",
]
