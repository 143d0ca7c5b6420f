"""The model protocol every backend implements, and the records it returns.

One async call covers what the cascade needs: n completions of one chat, with
token usage and (on request) per-token logprobs. ``generate_many`` exists so a
backend that can decode several prompts as one batch (the embedded llama.cpp
one) gets the chance; the default runs the prompts concurrently.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}

# Live progress without widening the protocol: a caller that wants to hear
# about each finished sample sets this; backends call ``report_samples``.
# Context variables follow ``asyncio.to_thread``, so worker threads see it.
on_samples_done: ContextVar[Callable[[int], None] | None] = ContextVar("cope_on_samples_done", default=None)


# Tokens as they are decoded, for a live display (tokens so far, tokens per second): the
# embedded backend reports them a few times a second while a batch decodes, an API backend
# when a reply arrives. Like ``on_samples_done``, it follows asyncio.to_thread.
on_tokens: ContextVar[Callable[[int], None] | None] = ContextVar("cope_on_tokens", default=None)


def report_tokens(k: int) -> None:
    """Tell the current listener (if any) that ``k`` more tokens were generated."""
    hook = on_tokens.get()
    if hook is not None and k:
        hook(k)


def report_samples(k: int) -> None:
    """Tell the current listener (if any) that ``k`` more samples are finished."""
    hook = on_samples_done.get()
    if hook is not None:
        hook(k)


# Streaming one generation as it is decoded: a caller that wants a call's text piece by piece
# sets this around that call (the cascade does, for a final stage's single sample, when
# ``on_answer_text`` is set); a backend that can stream calls ``report_text`` with each new
# piece, in order, from whatever thread decodes. The pieces join to the completion's text.
on_text: ContextVar[Callable[[str], None] | None] = ContextVar("cope_on_text", default=None)

# Set by a consumer that streams answers (the server): "when the answer is one generation, send
# me its text as it is decoded". Only the cascade reads it; it never reaches a non-final call.
on_answer_text: ContextVar[Callable[[str], None] | None] = ContextVar("cope_on_answer_text", default=None)


# An id a caller attaches to every upstream request made on its behalf (the server's
# ``x-request-id``): OpenAI-compatible backends send it on, so one id traces a request
# through every tier's logs.
request_id: ContextVar[str | None] = ContextVar("cope_request_id", default=None)


# Request fields a task family would have a served model answer natively (a JSON schema as
# ``response_format``, ``tools`` with ``tool_choice``): set by the cascade around each executor
# call; a backend that was told its endpoint supports them (``native``) sends them, the others
# rely on the prompt, which says the same in words.
native_fields: ContextVar[dict[str, object] | None] = ContextVar("cope_native_fields", default=None)


def report_text(piece: str) -> None:
    """Pass newly decoded text to the current listener (if any)."""
    hook = on_text.get()
    if hook is not None and piece:
        hook(piece)


class Cancelled(Exception):
    """A decode its caller gave up on (a timeout, a client that hung up); its samples are dropped."""


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters shared by every backend."""

    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class Completion:
    """One sampled continuation."""

    text: str
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" | "length"
    # Log-probability of each generated token under the model (natural log),
    # present only when GenParams.logprobs was set.
    logprobs: list[float] | None = None
    tokens: list[str] | None = None


@dataclass
class Generation:
    """The result of one backend call: n completions and what they cost in tokens.

    ``prompt_tokens`` counts prompt tokens as a provider would bill them: once
    when the n samples came from one request, once per request otherwise.
    """

    completions: list[Completion]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]


@runtime_checkable
class Model(Protocol):
    """What the cascade needs from a model. ``spec`` is "provider/name"."""

    spec: str

    async def generate(self, messages: Sequence[Message], params: GenParams) -> Generation: ...

    async def generate_many(
        self, prompts: Sequence[Sequence[Message]], params: GenParams
    ) -> list[Generation]: ...


async def gather_generate(
    model: Model, prompts: Sequence[Sequence[Message]], params: GenParams
) -> list[Generation]:
    """Default ``generate_many``: one concurrent ``generate`` per prompt.

    Prompt i is sampled with seed + i so that distinct prompts do not share a
    random stream (the same rule the batched local backend follows).
    """
    calls = [
        model.generate(p, params if params.seed is None else replace(params, seed=params.seed + i))
        for i, p in enumerate(prompts)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return list(results)  # type: ignore[arg-type]
    from ..errors import BackendError

    first = errors[0]
    if not isinstance(first, BackendError):
        raise first
    # the prompts that were answered were paid for: they travel with the error, so no spend is lost
    spent = [r for r in results if isinstance(r, Generation)]
    for e in errors:
        spent += list(getattr(e, "spent", []) or [])
    raise BackendError(str(first), spent=spent) from first
