"""An OpenAI-compatible HTTP endpoint in front of COPE presets.

Point an existing OpenAI client at it: each preset is a "model" name, the
answer comes back as a chat completion whose ``usage`` sums every model call,
with the full account of the solve under the ``cope`` key. Needs FastAPI and
uvicorn (``pip install 'cope[serve]'``); ``import cope`` never loads them.
"""

from __future__ import annotations

from .config import KeyConfig, Limits, Preset, ServerConfig, builtin_presets, load_config

__all__ = ["KeyConfig", "Limits", "Preset", "ServerConfig", "builtin_presets", "load_config", "create_app"]


def create_app(config: ServerConfig):  # noqa: ANN201 - FastAPI is imported lazily
    """The ASGI app for ``config`` (imports FastAPI on call)."""
    from .app import create_app as build

    return build(config)
