"""Prices as data: a shipped table plus a user file, turned into USD per call.

Prices change more often than code, so they live in TOML (``data/prices.toml``),
each row with its source and date. An API model without a price is an error,
never a silent zero: a cost report that quietly counts a paid model as free is
worse than no report. Local models are free by default, or priced *as* an API
model so that offline runs show realistic dollars (and say so).
"""

from __future__ import annotations

import hashlib
import math
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping, Sequence

from .errors import ConfigError, PriceError


@dataclass(frozen=True)
class Price:
    """USD per 1M input and output tokens for one model.

    ``cached_input_per_m`` is the rate of prompt tokens the provider read from its prompt cache
    (OpenAI bills them at a quarter to a half of the input rate; the cascade's repeated system
    prompts and plans hit it). None: the provider bills cached tokens as any input.
    """

    model: str
    input_per_m: float
    output_per_m: float
    source: str = ""
    date: str = ""
    note: str = ""  # e.g. "local/qwen2.5-coder-1.5b priced as gpt-4o-mini"
    cached_input_per_m: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for one call; ``cached_tokens`` are the part of ``prompt_tokens`` served from cache."""
        cached = min(max(cached_tokens, 0), prompt_tokens) if self.cached_input_per_m is not None else 0
        return ((prompt_tokens - cached) * self.input_per_m + cached * (self.cached_input_per_m or 0.0)
                + completion_tokens * self.output_per_m) / 1e6

    def cost_of(self, generation: Any) -> float:
        """USD for one Generation, its cached prompt tokens (``extra["cached_tokens"]``) at the cached rate."""
        extra = getattr(generation, "extra", None) or {}
        return self.cost(generation.prompt_tokens, generation.completion_tokens, int(extra.get("cached_tokens") or 0))


def _parse(text: str, origin: str) -> dict[str, Price]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"price file {origin}: not valid TOML ({exc})") from None
    rows = data.get("models", {})
    if not isinstance(rows, dict):
        raise ConfigError(f"price file {origin}: expected [models.\"NAME\"] tables")
    prices = {}
    for name, row in rows.items():
        if not isinstance(row, dict):
            raise ConfigError(f"price file {origin}: model '{name}' must be a table")
        try:
            inp, out = float(row["input"]), float(row["output"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"price file {origin}: model '{name}' needs numeric 'input' and 'output' (USD per 1M tokens)"
            ) from None
        cached = row.get("cached_input")
        if cached is not None:
            if isinstance(cached, bool) or not isinstance(cached, (int, float)):
                raise ConfigError(f"price file {origin}: model '{name}': 'cached_input' must be a number "
                                  "(USD per 1M cached prompt tokens)")
            cached = float(cached)
        if not all(math.isfinite(v) for v in (inp, out, cached or 0.0)):
            raise ConfigError(f"price file {origin}: model '{name}' has a price that is not a finite number")
        if inp < 0 or out < 0 or (cached or 0.0) < 0:
            raise ConfigError(f"price file {origin}: model '{name}' has a negative price")
        unknown = sorted(set(row) - {"input", "output", "cached_input", "source", "date"})
        if unknown:
            raise ConfigError(f"price file {origin}: model '{name}': unknown key '{unknown[0]}'; allowed: "
                              "input, output, cached_input, source, date")
        prices[name] = Price(name, inp, out, str(row.get("source", origin)), str(row.get("date", "")),
                             cached_input_per_m=cached)
    return prices


# Providers of our specs, by their genai-prices ids.
_PROVIDER_IDS = {"openai": "openai", "gemini": "google", "anthropic": "anthropic"}


def _fallback_version() -> str:
    """The kept source's version ("" when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genai-prices")
    except PackageNotFoundError:
        return ""


def _fallback_price(name: str, provider: str | None) -> Price | None:
    """USD per 1M tokens from genai-prices' bundled snapshot (no network), or None if it has no row.

    Read at a small usage, so a price tier for long prompts (over 200k tokens) is not taken as
    the model's price; the row's source says where it came from.
    """
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    pid = _PROVIDER_IDS.get(provider or "")
    try:
        calc = calc_price(Usage(input_tokens=1000, output_tokens=1000), name, provider_id=pid)
    except (LookupError, ValueError):
        return None
    cached = getattr(calc.model_price, "cache_read_mtok", None)
    return Price(name, float(calc.input_price) * 1000, float(calc.output_price) * 1000,
                 source=f"genai-prices {_fallback_version()} ({calc.provider.name} {calc.model.id})",
                 cached_input_per_m=float(cached) if cached is not None else None)


class PriceTable:
    """The shipped price table, optionally overridden by a user file."""

    def __init__(self, prices: dict[str, Price], version: str) -> None:
        self.prices = prices
        self.version = version  # short hash of the merged table, for run records

    @classmethod
    def load(cls, user_file: str | os.PathLike[str] | None = None) -> "PriceTable":
        """Shipped table, then ``user_file`` (or $COPE_PRICES) on top."""
        shipped = resources.files("cope.data").joinpath("prices.toml").read_text()
        texts = [shipped]
        prices = _parse(shipped, "shipped table")
        user_file = user_file or os.environ.get("COPE_PRICES") or None
        if user_file:
            from .textfile import read_text

            text = read_text(user_file, "price file")
            texts.append(text)
            prices.update(_parse(text, str(user_file)))
        texts.append(f"fallback {_fallback_version()}")  # a price read from the kept source changes with it
        version = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
        return cls(prices, version)

    def get(self, name: str, provider: str | None = None) -> Price:
        """The row for ``name``: the user's file, then the shipped table, then the kept source
        (genai-prices' bundled snapshot, read offline); an unknown model is an error, never $0."""
        if name in self.prices:
            return self.prices[name]
        found = _fallback_price(name, provider)
        if found is not None:
            return found
        known = ", ".join(sorted(self.prices))
        raise PriceError(
            f"no price for '{name}' in the price table ({known}) or in genai-prices {_fallback_version() or ''}. "
            f"Add it to a price file (--prices FILE, [models.\"{name}\"] input/output in USD per 1M tokens; "
            f"0 and 0 declare it free)"
        )

    def for_spec(self, spec: str, price_as: str | None = None) -> Price:
        """The price a call to ``spec`` is charged at.

        ``price_as`` charges the model at another model's row (the offline
        default charges the local 1.5B as gpt-4o-mini). A local model without it
        is free, unless the user's table names it; an API model must have a row.
        """
        provider, _, name = spec.partition("/")
        if price_as:
            base = self.get(price_as)
            return Price(spec, base.input_per_m, base.output_per_m, base.source, base.date,
                         note=f"{spec} priced as {price_as}", cached_input_per_m=base.cached_input_per_m)
        if spec in self.prices:
            return self.prices[spec]
        if provider == "local":
            return Price(spec, 0.0, 0.0, "local model: free", note="")
        from .models.registry import COMPATIBLE

        if provider in COMPATIBLE and COMPATIBLE[provider].self_hosted:
            return Price(spec, 0.0, 0.0, f"served on the user's machine ({provider}): free", note="")
        return self.get(name, provider)


def upper_bound_usd(price: Price, prompts: "Sequence[Sequence[Mapping[str, str]]]", n: int, max_tokens: int) -> float:
    """The most one call can cost: a budget reserves this before the call is sent.

    Tokens never outnumber characters for BPE vocabularies, plus a few
    template tokens per message, so the prompt side is a true upper bound;
    the completion side is n samples of ``max_tokens`` for every prompt.
    Prompt tokens count n times for a priced model (a server may bill the
    prompt once per sample when it tops up n with separate requests).
    """
    prompt_tokens = sum(len(m.get("content", "") or "") + 8 for p in prompts for m in p)
    completion = max_tokens * n * len(prompts)
    return price.cost(prompt_tokens * (n if price.input_per_m else 1), completion)
