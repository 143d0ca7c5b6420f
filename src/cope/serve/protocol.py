"""The OpenAI chat-completions wire format, mapped onto a COPE solve.

The cascade answers one problem; a chat request holds a conversation. The last
user message is the problem, earlier user/assistant turns become
``Problem.history`` (planner and executor both see them), and system messages
are dropped or prepended per preset (see ``config.SYSTEM_MODES``). Parameters
that would change what the cascade is (temperature, top_p) are ignored, and
said to be: every response names them (the ``x-cope-ignored`` header and the
extension's ``ignored_params``), since the cascade sets its own per stage; ones
it cannot honour (n > 1, tools, logprobs) are refused with a 400 naming them,
so a client never silently gets something other than it asked for. ``stop``
applies to the returned text, and ``finish_reason`` is the answering sample's
(``length`` when max_tokens cut it).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..errors import CopeError
from ..tasks.base import Problem, Task

Role = Literal["system", "developer", "user", "assistant"]


class RequestError(Exception):
    """A request the server will not run; becomes an OpenAI-style error body."""

    def __init__(self, message: str, status: int = 400, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.kind = kind


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class CopeOptions(BaseModel):
    """The request's ``cope`` extension: what a task family may need beyond text."""

    model_config = ConfigDict(extra="forbid")

    tests: list[str] = Field(default_factory=list, description="visible tests (code tasks)")
    entry_point: str | None = Field(default=None, description="function the tests call (code tasks)")


class ChatRequest(BaseModel):
    """A chat completion request; unknown OpenAI parameters are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = None
    seed: int | None = None
    max_tokens: int | None = Field(default=None, description="caps each executor sample; never raises the preset's cap")
    max_completion_tokens: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    cope: CopeOptions | None = None
    _structured: Any = PrivateAttr(default=None)  # the json family, built once per request

    def check(self) -> None:
        if self.logprobs:
            raise RequestError("logprobs are not returned: the answer is chosen among several samples",
                               param="logprobs")
        stops = self.stops
        if len(stops) > 4 or not all(isinstance(x, str) and x for x in stops):
            raise RequestError("stop must be a non-empty string or a list of at most 4 of them", param="stop")
        if self.n not in (None, 1):
            raise RequestError("n must be 1: the cascade returns one answer per request", param="n")
        if self.tools or self.functions:
            raise RequestError("tools and functions are not supported", param="tools")
        kind = (self.response_format or {}).get("type", "text")
        if kind not in ("text", "json_object", "json_schema"):
            raise RequestError(f"response_format '{kind}' is not supported; text, json_object or json_schema",
                               param="response_format")
        if kind != "text" and self.stop:
            raise RequestError("stop cannot be used with a JSON response_format: a cut value would not parse",
                               param="stop")
        if self.seed is not None and not 0 <= self.seed < 2**53:
            raise RequestError(f"seed must be in [0, 2**53), got {self.seed}", param="seed")
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RequestError(f"{name} must be >= 1, got {value}", param=name)

    @property
    def wants_json(self) -> bool:
        return (self.response_format or {}).get("type", "text") != "text"

    def structured(self) -> Task | None:
        """The structured-output family a JSON ``response_format`` asks for (None for text); its
        schema is checked and compiled once per request."""
        if not self.wants_json:
            return None
        if self._structured is None:
            self._structured = self._build_structured()
        return self._structured

    def _build_structured(self) -> Task:
        fmt = self.response_format or {}
        kind = fmt.get("type")
        schema, name = None, ""
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise RequestError("response_format json_schema needs {\"json_schema\": {\"name\": ..., "
                                   "\"schema\": {...}}}", param="response_format")
            schema, name = spec.get("schema"), str(spec.get("name") or "")
        from ..errors import ConfigError
        from ..tasks.structured import StructuredTask

        try:
            return StructuredTask(schema, name)
        except ConfigError as exc:
            raise RequestError(str(exc), param="response_format") from None

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def ignored(self) -> list[str]:
        """The parameters the client sent that the cascade does not act on (temperature, top_p, ...)."""
        return sorted(k for k, v in (self.model_extra or {}).items() if v is not None)

    @property
    def token_cap(self) -> int | None:
        caps = [c for c in (self.max_tokens, self.max_completion_tokens) if c is not None]
        return min(caps) if caps else None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


def _text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        raise RequestError(f"messages[{index}] has no content (tool calls are not supported)",
                           param=f"messages.{index}.content")
    if isinstance(content, str):
        text = content
    else:
        parts = []
        for j, part in enumerate(content):
            if part.get("type") != "text":
                raise RequestError(f"messages[{index}].content[{j}]: only text parts are supported, got "
                                   f"type '{part.get('type')}'", param=f"messages.{index}.content")
            if not isinstance(part.get("text"), str):
                raise RequestError(f"messages[{index}].content[{j}]: a text part needs a string 'text'",
                                   param=f"messages.{index}.content")
            parts.append(part["text"])
        text = "\n".join(parts)
    try:  # JSON can carry lone surrogates ("\ud800"), which no tokenizer can encode
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"messages[{index}] is not valid Unicode text (a lone surrogate)",
                           param=f"messages.{index}.content") from None
    return text


def to_problem(request: ChatRequest, *, system: str, max_chars: int, max_messages: int,
               task: Task | None = None) -> Problem:
    """The last user message as the problem, earlier turns as its history.

    The preset's task family reads the text as ``cope solve`` does (a code
    stub's docstring examples become its visible tests unless the client sent
    ``cope.tests``); a text the family cannot read is a 400.
    """
    if not request.messages:
        raise RequestError("messages must not be empty", param="messages")
    if len(request.messages) > max_messages:
        raise RequestError(f"the request holds {len(request.messages)} messages; this server accepts at most "
                           f"{max_messages} messages per request", param="messages", code="array_above_max_length")
    texts = [_text(m, i) for i, m in enumerate(request.messages)]
    total = sum(len(t) for t in texts)
    if total > max_chars:
        raise RequestError(f"messages hold {total} characters; this server accepts at most {max_chars}",
                           param="messages", code="context_length_exceeded")
    last = len(request.messages) - 1
    if request.messages[last].role != "user":
        raise RequestError("the last message must come from the user: it is the problem to solve",
                           param=f"messages.{last}.role")
    problem_text = texts[last]
    if not problem_text.strip():
        raise RequestError("the last user message is empty", param=f"messages.{last}.content")
    instructions, history = [], []
    for m, text in zip(request.messages[:last], texts[:last]):
        if m.role in ("system", "developer"):
            instructions.append(text)
        else:
            history.append({"role": m.role, "content": text})
    if system == "prepend" and any(t.strip() for t in instructions):
        problem_text = "\n\n".join([*(t.strip() for t in instructions if t.strip()), problem_text])
    opts = request.cope or CopeOptions()
    if task is None:
        return Problem(text=problem_text, history=tuple(history), tests=tuple(opts.tests),
                       entry_point=opts.entry_point)
    try:
        problem = task.problem_from_text(problem_text, tests=opts.tests, entry_point=opts.entry_point)
    except CopeError as exc:
        raise RequestError(str(exc), param=f"messages.{last}.content") from None
    return replace(problem, history=tuple(history))


def error_body(message: str, kind: str = "invalid_request_error", *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage_of(result: Any) -> dict[str, Any]:
    """Tokens summed over every model call of the solve, small and large."""
    prompt = sum(c.prompt_tokens for c in result.calls)
    completion = sum(c.completion_tokens for c in result.calls)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    # OpenAI's breakdowns, where an upstream reported them (omitted at zero, as most servers do)
    cached = sum(getattr(c, "cached_tokens", 0) for c in result.calls)
    reasoning = sum(getattr(c, "reasoning_tokens", 0) for c in result.calls)
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def content_of(result: Any) -> str:
    """The full text of a sample backing the answer (reasoning included), else the answer."""
    return result.output or (result.answer or "")


def returned(result: Any, stops: list[str]) -> tuple[str, str]:
    """The text sent back and its finish_reason: cut before the first stop sequence ("stop"), else
    the answering sample's own ending ("length" when max_tokens cut it)."""
    text = content_of(result)
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    if cuts:
        return text[:min(cuts)], "stop"
    return text, "length" if (getattr(result, "info", None) or {}).get("finish_reason") == "length" else "stop"


class Reply:
    """Builds the body (or stream chunks) of one completion."""

    def __init__(self, model: str, fingerprint: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.fingerprint = fingerprint

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint}

    def completion(self, result: Any, extension: dict[str, Any], stops: list[str] | None = None) -> dict[str, Any]:
        text, finish = returned(result, stops or [])
        return {
            **self._head("chat.completion"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": usage_of(result),
            "cope": extension,
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}

    def usage_chunk(self, result: Any) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage_of(result)}
