"""A backend for any server that speaks OpenAI's chat-completions protocol.

The same class serves the paid provider and local servers (llama.cpp's,
vLLM, ...), because the cascade only needs n completions, token usage and,
optionally, per-token logprobs. Two things make it more than a thin wrapper:

* Retries are ours, not the SDK's (the client runs with ``max_retries=0``):
  we must know how many HTTP requests were made, because each one may be
  billed, and we want one clear error line when a server stays unreachable.
* ``n`` is topped up: several compatible servers silently return fewer
  choices than asked (llama.cpp's returns one), which would quietly shrink
  the sample the cascade votes over.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import re
import time
import weakref
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import BackendError, ConfigError
from .base import (Completion, GenParams, Generation, Message, gather_generate, native_fields, on_text, report_samples,
                   report_tokens, request_id)
from .gate import request_gate

if TYPE_CHECKING:  # the SDK is imported lazily so that `import cope` stays light
    import openai

# Sent when a base URL is set but no key is: local servers ignore the key, yet
# the SDK refuses to build a client without one.
PLACEHOLDER_API_KEY = "no-key-needed"

# Statuses worth retrying: rate limiting, a server-side timeout, server errors.
_RETRY_STATUSES = frozenset({408, 429})
# OpenAI's reasoning models (o1, o3, o4-mini, the gpt-5 family) take max_completion_tokens, not
# max_tokens, and refuse a temperature other than the default (1); their hidden reasoning tokens are
# part of completion_tokens, so they are billed with the answer.
_REASONING_MODEL = re.compile(r"^(?:o\d+(?:-[a-z0-9.-]+)?|gpt-5(?:[.-][a-z0-9.-]+)?)$")


def is_reasoning_model(name: str) -> bool:
    """Whether ``name`` is one of OpenAI's reasoning models by its family name."""
    return bool(_REASONING_MODEL.match(name))


@dataclass
class _Reply:
    """What one successful HTTP request brought back."""

    completions: list[Completion]
    prompt_tokens: int
    completion_tokens: int
    usage_missing: bool
    tokens_estimated: bool
    logprobs_missing: bool
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the provider served from its cache (billed at its cached rate)


@dataclass
class _LoopState:
    loop: "weakref.ref[asyncio.AbstractEventLoop]"
    client: Any  # openai.AsyncOpenAI
    semaphore: asyncio.Semaphore


@dataclass
class _Tally:
    """HTTP requests sent for one ``generate`` call, retried ones included."""

    attempts: int = 0


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",;]+")


class _RequestFailed(Exception):
    """Internal: one request failed for good (wraps the error the user sees)."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


class OpenAIModel:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``spec`` is ``"openai/<model>"``. ``base_url`` and ``api_key`` fall back to
    ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``. A prebuilt ``client`` may be
    passed instead (its URL, key and timeout are then used as they are; only
    its SDK retries are switched off, so that the retry count stays ours).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        client: "openai.AsyncOpenAI | None" = None,
        max_concurrency: int = 16,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        retry_after_cap: float = 60.0,
        provider: str = "openai",
        reasoning: bool | None = None,
        params: "Mapping[str, Any] | None" = None,
        native: bool | None = None,
    ) -> None:
        if not model:
            raise ConfigError("model name must not be empty")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0, got {timeout}")
        if backoff_base < 0 or backoff_max < 0 or retry_after_cap < 0:
            raise ConfigError("backoff_base, backoff_max and retry_after_cap must be >= 0")

        self.model = model
        # a reasoning model's request takes max_completion_tokens and no temperature (None: by its name)
        self.reasoning = is_reasoning_model(model) if reasoning is None else reasoning
        # the endpoint's own request fields (top_k, reasoning_effort, ...), sent in every request's body
        self.params: dict[str, Any] = dict(params or {})
        # another provider's OpenAI-compatible endpoint (ollama/, gemini/, ...): its own spec, and
        # never OPENAI_BASE_URL or OPENAI_API_KEY (an OpenAI key must not be sent to another host)
        self.spec = f"{provider}/{model}"
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_cap = retry_after_cap
        self._timeout_s: float | None = None if client is not None else timeout
        # Per event loop: a client and a semaphore. Both hold loop-bound state
        # (pooled connections, waiters), and a second asyncio.run() in the
        # same process must not touch what the first loop left behind.
        self._loops: dict[int, _LoopState] = {}

        import openai

        self._openai = openai
        self._client_kwargs: dict[str, Any] | None = None  # None: the client is the user's
        # A client not yet claimed by an event loop (the user's stays here).
        self._spare: Any | None
        if client is not None:
            self._spare = client.with_options(max_retries=0)
        else:
            env = provider == "openai"
            base_url = base_url or (os.environ.get("OPENAI_BASE_URL") if env else None) or None
            api_key = api_key or (os.environ.get("OPENAI_API_KEY") if env else None) or None
            if api_key is None:
                if base_url is None:
                    raise ConfigError(f"{self.spec}: no API key; set OPENAI_API_KEY or pass a base URL")
                api_key = PLACEHOLDER_API_KEY
            kwargs: dict[str, Any] = {"api_key": api_key, "timeout": timeout, "max_retries": 0}
            if base_url is not None:
                kwargs["base_url"] = base_url
            self._client_kwargs = kwargs
            self._spare = openai.AsyncOpenAI(**kwargs)  # built now so bad options fail early
        self.base_url = str(self._spare.base_url).rstrip("/")
        # a family's response_format / tools sent as request fields (None: OpenAI's own API only)
        self.native = native if native is not None else self.base_url.startswith("https://api.openai.com/")
        key = str(getattr(self._spare, "api_key", "") or "")
        self._secret = key if key and key != PLACEHOLDER_API_KEY else ""

    def _scrub(self, text: str) -> str:
        """``text`` with this model's API key (and any bearer token) replaced by [redacted]."""
        if self._secret and len(self._secret) >= 4:
            text = text.replace(self._secret, "[redacted]")
        return _BEARER.sub(lambda m: m.group(1) + "[redacted]", text)

    def __repr__(self) -> str:
        return f"OpenAIModel({self.model!r}, base_url={self.base_url!r})"

    # -- public API ---------------------------------------------------------

    async def generate(self, messages: Sequence[Message], params: GenParams) -> Generation:
        """n completions of one chat.

        The first request asks for all n. When fewer come back, the rest are
        requested concurrently in chunks the size the server proved it serves,
        each with its own seed offset so that seeded samples still differ.
        Prompt tokens are summed over requests because each request is billed.
        """
        start = time.perf_counter()
        replies: list[_Reply] = []
        tally = _Tally()
        first_choices: int | None = None
        try:
            reply = await self._request(messages, params, n=params.n, seed=params.seed, tally=tally)
            replies.append(reply)
            first_choices = len(reply.completions)
            chunk = max(1, first_choices)
            next_offset = 1
            while (have := sum(len(r.completions) for r in replies)) < params.n:
                missing = params.n - have
                calls = []
                for i in range(0, missing, chunk):
                    seed = None if params.seed is None else params.seed + next_offset
                    next_offset += 1
                    size = min(chunk, missing - i)
                    calls.append(self._request(messages, params, n=size, seed=seed, tally=tally))
                results = await asyncio.gather(*calls, return_exceptions=True)
                replies.extend(r for r in results if isinstance(r, _Reply))
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    raise errors[0]
                if sum(len(r.completions) for r in replies) == have:
                    raise _RequestFailed(
                        BackendError(
                            f"{self.spec}: {self.base_url} returned no choices "
                            f"({have} of {params.n} collected)"
                        )
                    )
                chunk = 1  # the server under-delivered twice: stop guessing
        except _RequestFailed as failed:
            spent = []
            if replies:  # what was already paid for stays accountable
                elapsed = time.perf_counter() - start
                spent.append(self._assemble(replies, elapsed, tally, first_choices, params.n))
            # an upstream that echoes the key in its error text must not pass it on to journals,
            # logs or a server's clients
            raise BackendError(self._scrub(str(failed.error)), spent=spent) from failed.__cause__
        return self._assemble(replies, time.perf_counter() - start, tally, first_choices, params.n)

    async def generate_many(
        self, prompts: Sequence[Sequence[Message]], params: GenParams
    ) -> list[Generation]:
        """One concurrent ``generate`` per prompt (an HTTP server batches for us)."""
        return await gather_generate(self, prompts, params)

    # -- internals ------------------------------------------------------------

    def _assemble(
        self,
        replies: list[_Reply],
        latency_s: float,
        tally: _Tally,
        first_choices: int | None,
        n: int,
    ) -> Generation:
        completions = [c for r in replies for c in r.completions][:n]
        extra: dict[str, object] = {
            "requests": len(replies),
            "attempts": tally.attempts,
            "server_choices_first_request": first_choices,
        }
        if any(r.usage_missing for r in replies):
            extra["usage_missing"] = True  # priced from estimate_tokens: marked, never $0
            extra["usage_estimated"] = True
        if any(r.tokens_estimated for r in replies):
            extra["completion_tokens_estimated"] = True
        if any(r.logprobs_missing for r in replies):
            extra["logprobs_missing"] = True  # asked for, but the server sent none
        reasoning = sum(r.reasoning_tokens for r in replies)
        if reasoning:
            extra["reasoning_tokens"] = reasoning  # inside completion_tokens: billed as output
        cached = sum(r.cached_tokens for r in replies)
        if cached:
            extra["cached_tokens"] = cached  # inside prompt_tokens: billed at the cached-input rate
        if self.reasoning:
            extra["temperature_ignored"] = True  # a reasoning model samples at its default temperature
        return Generation(
            completions=completions,
            prompt_tokens=sum(r.prompt_tokens for r in replies),
            completion_tokens=sum(r.completion_tokens for r in replies),
            latency_s=latency_s,
            model=self.spec,
            extra=extra,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections this model opened (not a client passed in).

        Optional: the model stays usable and reconnects on the next call.
        """
        states, self._loops = list(self._loops.values()), {}
        for st in states:
            await self._close_client(st.client)

    async def _close_client(self, client: Any) -> None:
        if self._client_kwargs is None:
            return  # the caller's client: theirs to close
        try:
            await client.close()
        except Exception:
            # Connections of a loop that has ended cannot be closed from this
            # one; the client is marked closed anyway, which is what counts:
            # the SDK then no longer tries to close it from some later loop.
            pass

    async def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._loops.get(id(loop))
        if st is not None and st.loop() is loop:
            return st
        if self._client_kwargs is None:
            client = self._spare
        elif self._spare is not None:
            client, self._spare = self._spare, None
        else:
            client = self._openai.AsyncOpenAI(**self._client_kwargs)
        st = _LoopState(weakref.ref(loop), client, asyncio.Semaphore(self.max_concurrency))
        # Register before awaiting anything, so concurrent first calls share it.
        stale = [k for k, v in self._loops.items() if _ended(v.loop())]
        old = [self._loops.pop(k) for k in stale]
        self._loops[id(loop)] = st
        for o in old:
            await self._close_client(o.client)
        return st

    async def _request(
        self,
        messages: Sequence[Message],
        params: GenParams,
        *,
        n: int,
        seed: int | None,
        tally: _Tally,
    ) -> _Reply:
        """One logical request, retried on transient failures.

        The semaphore is held only while a request is in flight, not while
        backing off, so a waiting retry does not starve other calls.
        """
        openai = self._openai
        kwargs: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        if self.reasoning:
            # the API refuses max_tokens and any temperature but its default: samples are drawn at
            # the default, and the cap covers reasoning and answer together
            kwargs["max_completion_tokens"] = params.max_tokens
        else:
            kwargs["temperature"] = params.temperature
            kwargs["max_tokens"] = params.max_tokens
        if n != 1:
            kwargs["n"] = n
        if seed is not None:
            kwargs["seed"] = seed
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.logprobs:
            kwargs["logprobs"] = True
            # The chosen token's logprob is all we need. top_logprobs=0 is valid
            # for OpenAI, and llama.cpp's server returns no logprobs at all
            # unless top_logprobs is set.
            kwargs["top_logprobs"] = 0
        if self.params:
            kwargs["extra_body"] = dict(self.params)
        if (rid := request_id.get()) is not None:
            kwargs["extra_headers"] = {"x-request-id": rid}
        if self.native and (fields := native_fields.get()):
            kwargs.update(fields)
        # a listener for this call's text (a final answer a server is streaming): ask for a stream
        hook = on_text.get() if n == 1 else None
        emitted = [0]  # characters already passed on: a stream that broke after some is not retried

        gate = request_gate.get()
        # what a per-minute token limit counts: the prompt and the most the reply may take
        booked = 0 if gate is None else params.max_tokens * n + sum(
            estimate_tokens(str(m.get("content", ""))) + _TEMPLATE_TOKENS for m in messages)
        attempts = 0
        while True:
            attempts += 1
            tally.attempts += 1
            if gate is not None:
                await gate.admit(self.spec, booked)
            try:
                state = await self._loop_state()
                async with state.semaphore:
                    if hook is None:
                        response = await state.client.chat.completions.create(**kwargs)
                    else:
                        response = await self._streamed(state.client, kwargs, hook, emitted)
            except openai.APIStatusError as err:
                status = err.status_code
                retryable = status in _RETRY_STATUSES or status >= 500
                if not retryable:
                    raise _RequestFailed(
                        BackendError(
                            f"{self.spec}: HTTP {status} from {self.base_url}: {_server_message(err)}"
                        )
                    ) from err
                if attempts > self.max_retries:
                    what = "rate limited (HTTP 429)" if status == 429 else f"HTTP {status}"
                    raise _RequestFailed(
                        BackendError(
                            f"{self.spec}: {what} from {self.base_url} after {attempts} attempts: "
                            f"{_server_message(err)}"
                        )
                    ) from err
                wait = self._delay(attempts, _retry_after(err.response.headers))
                if gate is not None and status == 429:
                    gate.rate_limited(self.spec, wait)  # every sender to this model waits, not only this one
                await asyncio.sleep(wait)
                continue
            except openai.APIConnectionError as err:  # includes APITimeoutError
                if attempts > self.max_retries:
                    raise _RequestFailed(
                        BackendError(
                            f"{self.spec}: cannot reach {self.base_url} "
                            f"({_connection_reason(err, self._timeout_s)}) after {attempts} attempts"
                        )
                    ) from err
                await asyncio.sleep(self._delay(attempts, None))
                continue
            except (openai.APIResponseValidationError, ValueError) as err:
                # a reply cut or garbled on the way (a proxy's HTML page, truncated JSON): like a
                # dropped connection, worth another attempt; ValueError covers json's decode errors
                if attempts > self.max_retries:
                    raise _RequestFailed(
                        BackendError(f"{self.spec}: malformed reply from {self.base_url} (not a JSON chat "
                                     f"completion: {_one_line(str(err))[:120]}) after {attempts} attempts")
                    ) from err
                await asyncio.sleep(self._delay(attempts, None))
                continue
            except openai.OpenAIError as err:
                raise _RequestFailed(
                    BackendError(f"{self.spec}: bad reply from {self.base_url}: {_one_line(str(err))}")
                ) from err
            if not isinstance(getattr(response, "choices", None), list) and attempts <= self.max_retries:
                await asyncio.sleep(self._delay(attempts, None))  # a body that parsed but is not a completion
                continue
            reply = self._parse(response, params.logprobs)
            if reply.usage_missing:
                _estimate_usage(reply, messages)
            report_tokens(reply.completion_tokens)
            report_samples(len(reply.completions))
            return reply

    async def _streamed(self, client: Any, kwargs: dict[str, Any], hook: Any, emitted: list[int]) -> Any:
        """One streamed request, each content piece passed to ``hook`` as it arrives, gathered into
        what a plain request returns (one choice, its logprobs, the usage the last chunk reports).

        A failure before any text arrived is retried like a plain request's; after, it is final:
        the listener already holds the first part, and a retry would sample a different one."""
        stream = await client.chat.completions.create(**kwargs, stream=True,
                                                      stream_options={"include_usage": True})
        parts: list[str] = []
        tokens: list[Any] = []
        finish, usage = None, None
        try:
            async for chunk in stream:
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or []:
                    piece = getattr(choice.delta, "content", None) if choice.delta else None
                    if piece:
                        parts.append(piece)
                        emitted[0] += len(piece)
                        hook(piece)
                    lp = getattr(choice, "logprobs", None)
                    if lp is not None and lp.content:
                        tokens.extend(lp.content)
                    finish = choice.finish_reason or finish
        except Exception as err:
            if emitted[0] == 0 and isinstance(err, self._openai.OpenAIError):
                raise
            raise _RequestFailed(BackendError(
                f"{self.spec}: the stream from {self.base_url} broke after {emitted[0]} characters: "
                f"{_one_line(str(err) or type(err).__name__, 160)}")) from err
        message = SimpleNamespace(content="".join(parts))
        choice = SimpleNamespace(index=0, message=message, finish_reason=finish,
                                 logprobs=SimpleNamespace(content=tokens) if tokens else None)
        return SimpleNamespace(choices=[choice], usage=usage)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt``.

        A server's Retry-After wins (it knows when capacity returns), capped so
        a hostile or buggy header cannot stall a run; otherwise exponential
        backoff with jitter, so concurrent callers do not retry in step.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _parse(self, response: Any, want_logprobs: bool) -> _Reply:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise _RequestFailed(
                BackendError(
                    f"{self.spec}: {self.base_url} did not answer with a chat completion "
                    f"(got {type(response).__name__})"
                )
            )
        choices = sorted(choices, key=lambda c: c.index)
        usage = getattr(response, "usage", None)
        usage_missing = usage is None
        prompt_tokens = int(usage.prompt_tokens or 0) if usage else 0
        completion_tokens = int(usage.completion_tokens or 0) if usage else 0
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        reasoning_tokens = int(getattr(details, "reasoning_tokens", 0) or 0) if details else 0
        prompt_details = getattr(usage, "prompt_tokens_details", None) if usage else None
        cached_tokens = int(getattr(prompt_details, "cached_tokens", 0) or 0) if prompt_details else 0

        completions: list[Completion] = []
        for choice in choices:
            text = (choice.message.content if choice.message else None) or ""
            calls = getattr(choice.message, "tool_calls", None) if choice.message else None
            if calls:  # a native tool call, as the text the tools family reads (cope.tasks.tools)
                text = _calls_as_text(calls, text)
            logprobs: list[float] | None = None
            tokens: list[str] | None = None
            content = choice.logprobs.content if choice.logprobs is not None else None
            if want_logprobs and content is not None:
                logprobs = [float(t.logprob) for t in content]
                tokens = [t.token for t in content]
            completions.append(
                Completion(
                    text=text,
                    completion_tokens=0,
                    finish_reason=choice.finish_reason or "stop",
                    logprobs=logprobs,
                    tokens=tokens,
                )
            )

        # Usage is per request, not per choice. Use it exactly when there is a
        # single choice; else prefer per-choice token lists, and only as a last
        # resort split the total in proportion to text length.
        estimated = False
        if len(completions) == 1:
            completions[0].completion_tokens = completion_tokens
        elif completions:
            if all(c.tokens is not None for c in completions):
                for c in completions:
                    c.completion_tokens = len(c.tokens or [])
            else:
                estimated = True
                _split_tokens(completions, completion_tokens)
        logprobs_missing = want_logprobs and any(c.logprobs is None for c in completions)
        return _Reply(
            completions, prompt_tokens, completion_tokens, usage_missing, estimated, logprobs_missing,
            reasoning_tokens, min(max(cached_tokens, 0), prompt_tokens),
        )


# Characters per token assumed when a server reports no usage. BPE vocabularies average about 4
# characters per token on English; 3 overestimates, so a budget counting the estimate stays a cap.
CHARS_PER_TOKEN_ESTIMATE = 3
_TEMPLATE_TOKENS = 4  # role markers around each message


def estimate_tokens(text: str) -> int:
    """A declared, deliberately high token count for ``text`` (no tokenizer of the API's model here)."""
    return -(-len(text) // CHARS_PER_TOKEN_ESTIMATE) if text else 0


def _estimate_usage(reply: _Reply, messages: Sequence[Message]) -> None:
    """Fill in tokens a reply without ``usage`` was billed for, so it is never priced $0."""
    reply.prompt_tokens = sum(estimate_tokens(str(m.get("content", ""))) + _TEMPLATE_TOKENS for m in messages)
    for c in reply.completions:
        c.completion_tokens = estimate_tokens(c.text) or 1
    reply.completion_tokens = sum(c.completion_tokens for c in reply.completions)
    reply.tokens_estimated = True


def _calls_as_text(calls: Any, content: str) -> str:
    """Native ``tool_calls`` written as ``{"tool_calls": [{"name", "arguments"}]}`` (arguments parsed
    where they are JSON, kept as the string where not: the family then finds them invalid)."""
    out = []
    for c in calls:
        fn = getattr(c, "function", None)
        raw = getattr(fn, "arguments", "") or ""
        try:
            args: Any = json.loads(raw) if raw else {}
        except ValueError:
            args = raw
        out.append({"name": getattr(fn, "name", None), "arguments": args})
    text = json.dumps({"tool_calls": out}, ensure_ascii=False)
    return f"{content}\n{text}" if content else text


def _ended(loop: asyncio.AbstractEventLoop | None) -> bool:
    return loop is None or loop.is_closed()


def _split_tokens(completions: list[Completion], total: int) -> None:
    """Share ``total`` among completions by text length; the shares sum to total."""
    weights = [max(1, len(c.text)) for c in completions]
    scale = sum(weights)
    shares = [total * w // scale for w in weights]
    for i in range(total - sum(shares)):
        shares[i % len(shares)] += 1
    for c, s in zip(completions, shares):
        c.completion_tokens = s


def _retry_after(headers: Any) -> float | None:
    """Seconds a server asked us to wait (Retry-After[-ms]), or None."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(err: Any) -> str:
    """The server's own error message, without the SDK's "Error code: N - " prefix."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        if message:
            return _one_line(str(message))
    if isinstance(body, str) and body.strip():
        return _one_line(body)
    return _one_line(str(getattr(err, "message", "") or err)) or "no message"


def _connection_reason(err: BaseException, timeout_s: float | None) -> str:
    """A short cause for a failed connection, e.g. "connection refused"."""
    if type(err).__name__ == "APITimeoutError":
        return f"timed out after {timeout_s:g} s" if timeout_s else "timed out"
    chain: list[BaseException] = []
    cause: BaseException | None = err.__cause__ or err.__context__
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for e in chain:  # an OS error number says it best ("connection refused")
        if isinstance(e, OSError) and e.errno:
            return os.strerror(e.errno).lower()
    text = _one_line(str(chain[-1]) if chain else "", 120) or "connection error"
    return text[0].lower() + text[1:]
