"""A model as a named endpoint: its spec, where it is served, and which variable holds its key.

The usual deployment has the small model on the user's own machine (Ollama,
vLLM or llama.cpp's server) and the large one at a paid API: each needs its
own base URL and key. An :class:`Endpoint` carries them per model, so the
small model's URL can never be used for the large one's calls. The key is
named by its environment variable, never written into a file or a log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import ConfigError
from .base import Model
from .registry import COMPATIBLE, build_model, parse_spec

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Request fields the backend sets from the cascade's stage (or that change the reply's shape it reads).
RESERVED_PARAMS = frozenset({"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "n",
                             "seed", "stop", "logprobs", "top_logprobs", "stream", "stream_options"})


# The keys of an endpoint table in TOML: a cascade file's [tiers.NAME], a server config's [models.NAME].
TABLE_KEYS = frozenset({"spec", "base_url", "key_env", "price_as", "timeout", "max_concurrency", "reasoning",
                        "params", "native"})


def from_table(where: str, row: Any, role: str, *, spec_hint: str = "") -> "Endpoint":
    """An endpoint table read and checked: one ConfigError naming ``where`` for any mistake."""
    if not isinstance(row, dict) or not isinstance(row.get("spec"), str):
        raise ConfigError(f"{where} needs spec = \"provider/model\"{spec_hint}")
    unknown = sorted(set(row) - TABLE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(TABLE_KEYS))}")
    try:
        return Endpoint(**row).validate(role)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Endpoint:
    """One model's endpoint. ``key_env`` is the *name* of the variable holding the key."""

    spec: str
    base_url: str | None = None
    key_env: str | None = None
    timeout: float | None = None  # seconds per request attempt (None: the backend's 120)
    max_concurrency: int | None = None  # requests in flight at once (None: the backend's 16)
    # a reasoning model (max_completion_tokens, default temperature); None: known by its name (o3, gpt-5, ...)
    reasoning: bool | None = None
    price_as: str | None = None  # charge it at another model's price row (None: its own)
    # extra JSON fields sent with every request (e.g. {"top_k": 20} for vLLM, {"reasoning_effort": "low"});
    # the fields cope sets itself (model, messages, temperature, token caps, n, seed, stop, logprobs) are refused
    params: Mapping[str, Any] | None = None
    # asked natively for structured output (response_format) and tool calls (tools) where a family
    # has them; None: only OpenAI's own API (a compatible server may not support either)
    native: bool | None = None

    def __post_init__(self) -> None:
        if self.params is not None and isinstance(self.params, Mapping):
            object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __hash__(self) -> int:  # params is a mapping: hash what identifies the endpoint
        return hash((self.spec, self.base_url, self.key_env, self.timeout, self.max_concurrency,
                     self.reasoning, self.price_as, tuple(sorted(self.params)) if self.params else (), self.native))

    def validate(self, role: str = "model") -> "Endpoint":
        """Refuse a bad endpoint with one ConfigError naming the role and the option."""
        provider, _ = parse_spec(self.spec)
        if provider == "local" and (self.base_url or self.key_env):
            raise ConfigError(f"{role} model {self.spec} runs in this process: a base URL or key variable is for "
                              f"a served model (openai/, {', '.join(p + '/' for p in COMPATIBLE)})")
        if self.base_url is not None and not re.match(r"^https?://[^\s/]+", self.base_url):
            raise ConfigError(f"{role} base URL must start with http:// or https://, got {self.base_url!r}")
        if self.key_env is not None and not _ENV_NAME.match(self.key_env):
            raise ConfigError(f"{role} key variable must be the name of an environment variable "
                              f"(e.g. OPENAI_API_KEY), not the key itself")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not self.timeout > 0
                                         or self.timeout == float("inf")):
            raise ConfigError(f"{role} timeout must be a finite number of seconds > 0, got {self.timeout!r}")
        if self.max_concurrency is not None and (isinstance(self.max_concurrency, bool)
                                                 or not isinstance(self.max_concurrency, int)
                                                 or self.max_concurrency < 1):
            raise ConfigError(f"{role} max_concurrency must be an integer >= 1, got {self.max_concurrency!r}")
        if self.reasoning is not None and not isinstance(self.reasoning, bool):
            raise ConfigError(f"{role} reasoning must be true or false, got {self.reasoning!r}")
        if self.native is not None and not isinstance(self.native, bool):
            raise ConfigError(f"{role} native must be true or false, got {self.native!r}")
        if self.native and provider == "local":
            raise ConfigError(f"{role} model {self.spec} runs in this process: native is for a served model")
        if self.price_as is not None and (not isinstance(self.price_as, str) or not self.price_as):
            raise ConfigError(f"{role} price_as must be a model name from the price table, got {self.price_as!r}")
        if self.params is not None:
            if not isinstance(self.params, Mapping) or not all(isinstance(k, str) for k in self.params):
                raise ConfigError(f"{role} params must be a table of request fields, got {self.params!r}")
            if provider == "local":
                raise ConfigError(f"{role} model {self.spec} runs in this process: params are request fields "
                                  "for a served model")
            taken = sorted(set(self.params) & RESERVED_PARAMS)
            if taken:
                raise ConfigError(f"{role} params: '{taken[0]}' is set by the cascade itself; "
                                  f"params may not hold {', '.join(sorted(RESERVED_PARAMS))}")
        return self

    def api_key(self, role: str = "model") -> str | None:
        """The key from ``key_env`` (None when no variable is named); a named variable must be set."""
        if self.key_env is None:
            return None
        key = os.environ.get(self.key_env)
        if not key:
            raise ConfigError(f"environment variable {self.key_env} (the key of the {role} model {self.spec}) "
                              "is not set")
        return key

    def build(self, role: str = "model", *, base_url: str | None = None, api_key: str | None = None,
              **options: Any) -> Model:
        """The backend; this endpoint's URL and key win over the shared ``base_url`` / ``api_key``."""
        self.validate(role)
        opts = dict(options)
        if self.timeout is not None:
            opts["timeout"] = self.timeout
        if self.max_concurrency is not None:
            opts["max_concurrency"] = self.max_concurrency
        if self.reasoning is not None:
            opts["reasoning"] = self.reasoning
        if self.params:
            opts["params"] = dict(self.params)
        if self.native is not None:
            opts["native"] = self.native
        return build_model(self.spec, base_url=self.base_url or base_url,
                           api_key=self.api_key(role) or api_key, **opts)
