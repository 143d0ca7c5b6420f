"""Turn a "provider/model" spec into a backend.

Adding a provider is one entry in ``PROVIDERS``; backends import their heavy
libraries lazily, so resolving a spec is cheap until the first call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, UnknownModelError
from .base import Model


def _local(name: str, **options: Any) -> Model:
    from .llamacpp import LlamaCppModel

    kwargs = {k: options[k] for k in ("n_ctx", "n_threads") if options.get(k)}
    return LlamaCppModel(name, **kwargs)


def _openai(name: str, **options: Any) -> Model:
    from .openai_compat import OpenAIModel

    kwargs = {k: options[k] for k in ("base_url", "api_key", "timeout", "max_retries", "max_concurrency", "reasoning",
                                     "params", "native")
              if options.get(k) is not None}
    return OpenAIModel(name, **kwargs)


@dataclass(frozen=True)
class Compatible:
    """A provider reached through its OpenAI-compatible endpoint: it only presets a URL and a key variable."""

    base_url: str
    key_env: str | None  # None: a server on the user's own machine, which takes any key
    self_hosted: bool  # free unless the price table names it (as local/ models are)


# Each goes through the one OpenAI-compatible backend; a base URL given by the user wins.
COMPATIBLE: dict[str, Compatible] = {
    "ollama": Compatible("http://127.0.0.1:11434/v1", None, True),
    "vllm": Compatible("http://127.0.0.1:8000/v1", None, True),
    "llamacpp": Compatible("http://127.0.0.1:8080/v1", None, True),  # llama.cpp's llama-server
    "gemini": Compatible("https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY", False),
    "anthropic": Compatible("https://api.anthropic.com/v1/", "ANTHROPIC_API_KEY", False),
}


def _compatible(provider: str) -> Callable[..., Model]:
    preset = COMPATIBLE[provider]

    def build(name: str, **options: Any) -> Model:
        from .openai_compat import OpenAIModel

        kwargs = {k: options[k] for k in ("timeout", "max_retries", "max_concurrency", "reasoning", "params", "native")
                  if options.get(k) is not None}
        key = options.get("api_key") or (os.environ.get(preset.key_env) if preset.key_env else None)
        if preset.key_env and not key:
            raise ConfigError(f"{provider}/{name}: no API key; set {preset.key_env} (or name another "
                              "variable with --small-key-env / --large-key-env)")
        return OpenAIModel(name, base_url=options.get("base_url") or preset.base_url, api_key=key,
                           provider=provider, **kwargs)

    return build


PROVIDERS: dict[str, Callable[..., Model]] = {"local": _local, "openai": _openai,
                                              **{p: _compatible(p) for p in COMPATIBLE}}


def parse_spec(spec: str) -> tuple[str, str]:
    provider, sep, name = spec.partition("/")
    if not sep or not name or provider not in PROVIDERS:
        raise UnknownModelError(
            f"unknown model spec '{spec}'; use provider/model with provider one of: "
            f"{', '.join(PROVIDERS)} (e.g. local/qwen2.5-coder-0.5b, openai/gpt-4o-mini, ollama/qwen2.5:0.5b)"
        )
    return provider, name


def build_model(spec: str, **options: Any) -> Model:
    """A backend for ``spec``; options are passed to the provider that takes them."""
    provider, name = parse_spec(spec)
    return PROVIDERS[provider](name, **options)
