"""The OpenAI chat-completions wire format, mapped onto a COPE solve.

The cascade answers one problem; a chat request holds a conversation. The last
user message is the problem, earlier user/assistant turns become
``Problem.history`` (planner and executor both see them), and system messages
are dropped or prepended per preset (see ``config.SYSTEM_MODES``). Parameters
that would change what the cascade is (temperature, top_p) are ignored, and
said to be: every response names them (the ``x-cope-ignored`` header and the
extension's ``ignored_params``), since the cascade sets its own per stage; ones
it cannot honour (n > 1, logprobs outside the chat family) are refused with a 400 naming them,
so a client never silently gets something other than it asked for. ``stop``
applies to the returned text, and ``finish_reason`` is the answering sample's
(``length`` when max_tokens cut it).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..errors import CopeError
from ..tasks.base import Problem, Task

Role = Literal["system", "developer", "user", "assistant", "tool"]


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
    tool_calls: list[dict[str, Any]] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: the call it answers


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
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    cope: CopeOptions | None = None
    _structured: Any = PrivateAttr(default=None)  # the json family, built once per request
    _tools: Any = PrivateAttr(default=None)  # the tools family, built once per request
    _route: Any = PrivateAttr(default=None)  # (preset name, its route for this request), matched once

    def check(self) -> None:
        if self.top_logprobs:
            raise RequestError("top_logprobs are not returned: only the chosen tokens' log-probabilities are kept",
                               param="top_logprobs")
        if self.logprobs and self.stream:
            raise RequestError("logprobs are returned in a reply, not in a stream", param="logprobs")
        stops = self.stops
        if len(stops) > 4 or not all(isinstance(x, str) and x for x in stops):
            raise RequestError("stop must be a non-empty string or a list of at most 4 of them", param="stop")
        if self.n not in (None, 1):
            raise RequestError("n must be 1: the cascade returns one answer per request", param="n")
        if self.functions:
            raise RequestError("functions (the deprecated form) is not supported; send tools", param="functions")
        if self.tool_choice is not None and not self.tools:
            raise RequestError("tool_choice needs tools", param="tool_choice")
        kind = (self.response_format or {}).get("type", "text")
        if kind not in ("text", "json_object", "json_schema"):
            raise RequestError(f"response_format '{kind}' is not supported; text, json_object or json_schema",
                               param="response_format")
        if kind != "text" and self.stop:
            raise RequestError("stop cannot be used with a JSON response_format: a cut value would not parse",
                               param="stop")
        if self.tools and kind != "text":
            raise RequestError("tools cannot be combined with a JSON response_format", param="response_format")
        self.tool_task()  # a malformed tool or tool_choice is a 400 before anything runs
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

    def tool_task(self) -> Task | None:
        """The tools family the request's ``tools`` ask for (None without tools), built once."""
        if not self.tools:
            return None
        if self._tools is None:
            choice = self.tool_choice if self.tool_choice is not None else "auto"
            if isinstance(choice, dict):
                fn = choice.get("function")
                if choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise RequestError('tool_choice must be "auto", "none", "required" or '
                                       '{"type": "function", "function": {"name": ...}}', param="tool_choice")
                choice = fn["name"]
            from ..errors import ConfigError
            from ..tasks.tools import ToolChoiceError, ToolsTask

            try:
                self._tools = ToolsTask(self.tools, choice, parallel=self.parallel_tool_calls is not False)
            except ToolChoiceError as exc:
                raise RequestError(str(exc), param="tool_choice") from None
            except ConfigError as exc:
                raise RequestError(str(exc), param="tools") from None
        return self._tools

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


def _turn_text(message: ChatMessage, index: int) -> str:
    """A message's text; a tool call or result may have none (its calls are checked here)."""
    for j, call in enumerate(message.tool_calls or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", ""), str):
            raise RequestError(f"messages[{index}].tool_calls[{j}] needs function.name and function.arguments "
                               "(a JSON string)", param=f"messages.{index}.tool_calls")
    if message.content is None and (message.role == "tool" or message.tool_calls):
        return ""
    return _text(message, index)


def _text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        raise RequestError(f"messages[{index}] has no content",
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
    texts = [_turn_text(m, i) for i, m in enumerate(request.messages)]
    total = sum(len(t) for t in texts)
    if total > max_chars:
        raise RequestError(f"messages hold {total} characters; this server accepts at most {max_chars}",
                           param="messages", code="context_length_exceeded")
    users = [i for i, m in enumerate(request.messages) if m.role == "user"]
    last = len(request.messages) - 1
    # the problem is the last user message; after it may come only a tool round-trip (the
    # assistant's calls, then their results), which the tools family shows after the question
    if request.messages[last].role == "tool" and users:
        q = users[-1]
        if any(not (m.role == "tool" or (m.role == "assistant" and m.tool_calls)) for m in request.messages[q + 1:]):
            raise RequestError("after the last user message only tool calls and their results may follow",
                               param="messages")
    elif request.messages[last].role != "user":
        raise RequestError("the last message must come from the user (or be a tool result): it is the problem to solve",
                           param=f"messages.{last}.role")
    else:
        q = last
    problem_text = texts[q]
    if not problem_text.strip():
        raise RequestError("the last user message is empty", param=f"messages.{q}.content")
    from ..tasks.tools import render_turns

    # one rendered turn per message: tool calls and results become turns every model reads
    rendered = render_turns([{"role": m.role, "content": t, "tool_calls": m.tool_calls,
                              "tool_call_id": m.tool_call_id} for m, t in zip(request.messages, texts)])
    instructions = [t for m, t in zip(request.messages[:q], texts[:q]) if m.role in ("system", "developer")]
    history = [r for m, r in zip(request.messages[:q], rendered[:q]) if m.role not in ("system", "developer")]
    after = rendered[q + 1:]
    if after and (task is None or task.name != "tools"):
        raise RequestError("the conversation ends with tool results, but the request declares no tools "
                           "(send the same tools again)", param="tools")
    if system == "prepend" and any(t.strip() for t in instructions):
        problem_text = "\n\n".join([*(t.strip() for t in instructions if t.strip()), problem_text])
    opts = request.cope or CopeOptions()
    if task is None:
        return Problem(text=problem_text, history=tuple(history), tests=tuple(opts.tests),
                       entry_point=opts.entry_point)
    try:
        problem = task.problem_from_text(problem_text, tests=opts.tests, entry_point=opts.entry_point)
    except CopeError as exc:
        raise RequestError(str(exc), param=f"messages.{q}.content") from None
    return replace(problem, history=tuple(history), meta={**problem.meta, **({"after": after} if after else {})})


def error_body(message: str, kind: str = "invalid_request_error", *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage_of(result: Any) -> dict[str, Any]:
    """What the client received: the prompt and completion tokens of the sample whose text is
    returned. The cascade's whole bill (every call, per tier, in USD) is the extension's
    ``bill`` (see :func:`bill_of`); a client pays from that, and reads this as OpenAI's usage."""
    got = (getattr(result, "info", None) or {}).get("answer_tokens") or {}
    prompt, completion = int(got.get("prompt", 0)), int(got.get("completion", 0))
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    # OpenAI's breakdowns, where the answering call's upstream reported them (omitted at zero, as most servers do)
    if got.get("cached"):
        usage["prompt_tokens_details"] = {"cached_tokens": int(got["cached"])}
    if got.get("reasoning"):
        usage["completion_tokens_details"] = {"reasoning_tokens": int(got["reasoning"])}
    return usage


def bill_of(result: Any) -> dict[str, Any]:
    """Every model call of the solve, summed per tier: tokens (OpenAI's breakdowns included) and USD."""
    tiers: dict[str, dict[str, Any]] = {}
    for c in result.calls:
        t = tiers.setdefault(c.who, {"model": c.model, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                     "cached_tokens": 0, "reasoning_tokens": 0, "usd": 0.0})
        t["calls"] += 1
        t["prompt_tokens"] += c.prompt_tokens
        t["completion_tokens"] += c.completion_tokens
        t["cached_tokens"] += getattr(c, "cached_tokens", 0)
        t["reasoning_tokens"] += getattr(c, "reasoning_tokens", 0)
        t["usd"] += c.cost_usd
    return {"usd": result.cost_usd, "calls": len(result.calls),
            "prompt_tokens": sum(t["prompt_tokens"] for t in tiers.values()),
            "completion_tokens": sum(t["completion_tokens"] for t in tiers.values()), "tiers": tiers}


def content_of(result: Any) -> str:
    """The full text of a sample backing the answer (reasoning included), else the answer."""
    return result.output or (result.answer or "")


def tool_calls_of(result: Any) -> list[dict[str, Any]] | None:
    """The answer's tool calls in OpenAI's wire form (ids minted here), or None for a text answer."""
    calls = (getattr(result, "info", None) or {}).get("tool_calls") if result.task == "tools" else None
    if not calls or result.answer is None:
        return None
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
            for c in calls]


def logprobs_of(result: Any, text: str) -> dict[str, Any] | None:
    """OpenAI's ``logprobs`` for the returned text: the answering sample's tokens up to its end
    (a stop cut included), each with the log-probability its model gave it; None without them."""
    sample = getattr(result, "answer_sample", None)
    tokens, lps = getattr(sample, "tokens", None), getattr(sample, "logprobs", None)
    if not tokens or lps is None:
        return None
    content, length = [], 0
    for tok, lp in zip(tokens, lps):
        if length >= len(text):
            break
        content.append({"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8")), "top_logprobs": []})
        length += len(tok)
    return {"content": content}


def returned(result: Any, stops: list[str]) -> tuple[str, str]:
    """The text sent back and its finish_reason: cut before the first stop sequence ("stop"), else
    the answering sample's own ending ("length" when max_tokens cut it)."""
    text = content_of(result)
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    if cuts:
        return text[:min(cuts)], "stop"
    return text, "length" if (getattr(result, "info", None) or {}).get("finish_reason") == "length" else "stop"


class StopCut:
    """``stop`` applied to text that arrives in pieces, with the result :func:`returned` gives.

    The last ``longest stop - 1`` characters are held back until the next piece shows they do
    not start a stop sequence; text before them was already searched whole, so the first
    occurrence found is the same first occurrence ``returned`` finds in the full text.
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(x) for x in stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that may be sent now."""
        if self.stopped:
            return ""
        self.pending += piece
        cuts = [i for i in (self.pending.find(x) for x in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            out, self.pending = self.pending[:min(cuts)], ""
            return out
        keep = min(self.hold, len(self.pending))
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        """What is left once the text is complete."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def pieces_of(text: str, size: int = 48) -> list[str]:
    """A finished answer in pieces of about ``size`` characters, cut after whitespace where there
    is any (an answer chosen by a vote exists whole only once the vote ends; it still streams)."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            end = space + 1 if space > start else end
        out.append(text[start:end])
        start = end
    return out


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

    def completion(self, result: Any, extension: dict[str, Any], stops: list[str] | None = None,
                   logprobs: bool = False) -> dict[str, Any]:
        calls = tool_calls_of(result)
        text, finish = returned(result, stops or [])
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message, finish = {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
        lps = logprobs_of(result, text) if logprobs and not calls else None
        return {
            **self._head("chat.completion"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": lps}],
            "usage": usage_of(result),
            "cope": extension,
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}

    def usage_chunk(self, result: Any) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage_of(result)}
