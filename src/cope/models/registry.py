"""Turn a "provider/model" spec into a backend.

Adding a provider is one entry in ``PROVIDERS``; backends import their heavy
libraries lazily, so resolving a spec is cheap until the first call.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UnknownModelError
from .base import Model


def _local(name: str, **options: Any) -> Model:
    from .llamacpp import LlamaCppModel

    kwargs = {k: options[k] for k in ("n_ctx", "n_threads") if options.get(k)}
    return LlamaCppModel(name, **kwargs)


def _openai(name: str, **options: Any) -> Model:
    from .openai_compat import OpenAIModel

    kwargs = {k: options[k] for k in ("base_url", "api_key", "timeout", "max_retries") if options.get(k) is not None}
    return OpenAIModel(name, **kwargs)


PROVIDERS: dict[str, Callable[..., Model]] = {"local": _local, "openai": _openai}


def parse_spec(spec: str) -> tuple[str, str]:
    provider, sep, name = spec.partition("/")
    if not sep or not name or provider not in PROVIDERS:
        raise UnknownModelError(
            f"unknown model spec '{spec}'; use provider/model with provider one of: "
            f"{', '.join(PROVIDERS)} (e.g. local/qwen2.5-coder-0.5b, openai/gpt-4o-mini)"
        )
    return provider, name


def build_model(spec: str, **options: Any) -> Model:
    """A backend for ``spec``; options are passed to the provider that takes them."""
    provider, name = parse_spec(spec)
    return PROVIDERS[provider](name, **options)
