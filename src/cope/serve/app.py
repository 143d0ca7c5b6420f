"""The HTTP application: OpenAI-compatible routes over lazily built Cope presets.

Routes: ``POST /v1/chat/completions`` (plain and streamed), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /v1/cope/usage`` (the caller's spend),
``GET /metrics`` (Prometheus) and ``GET /health``. Every failure a client can cause is a 4xx with an OpenAI-style
``{"error": {...}}`` body; the official SDK raises the matching exception.
A solve whose client hangs up is cancelled (local decoding stops at the next
step), and what it had spent is still charged to the key.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import time
import uuid
from dataclasses import replace
from typing import Any, AsyncIterator, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import BackendError, CopeError, ModelFileError
from .config import Preset, ServerConfig
from .ledger import Account, AuthError, BudgetExceeded, Ledger
from .metering import CURRENT, meter
from .metrics import Metrics
from ..tasks.base import Problem
from .protocol import (ChatRequest, Reply, RequestError, StopCut, bill_of, content_of, error_body, pieces_of,
                       returned, to_problem, tool_calls_of)

log = logging.getLogger("cope.server")

# What a client's x-request-id may be (anything else is replaced, so a header cannot forge log lines)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Seconds between SSE comments while a streamed solve runs, so proxies and
# clients with read timeouts see a live connection during a long cascade.
KEEPALIVE_S = 10.0

# Seconds a client has to send its whole request body once its headers are in.
BODY_TIMEOUT_S = 30.0

# Errors that must not be retried by the client: retrying them costs money
# (the upstream already failed after our own retries) or cannot succeed.
_NO_RETRY = {"x-should-retry": "false"}


class Gate:
    """At most ``running`` solves at once and ``waiting`` queued; beyond that, 429 at once."""

    def __init__(self, running: int, waiting: int) -> None:
        self.max_running = running
        self.max_waiting = waiting
        self.running = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None

    def full(self) -> bool:
        return self.running + self.waiting >= self.max_running + self.max_waiting

    def enter(self) -> "_Ticket":
        if self.full():
            raise RequestError("the server is busy; retry shortly", 429, kind="rate_limit_error",
                               code="server_busy")
        self.waiting += 1
        return _Ticket(self)


class _Ticket:
    """A place in the queue, taken when the request is admitted (so a 429 can still be sent)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.used = False

    async def __aenter__(self) -> None:
        g = self.gate
        self.used = True
        if g._sem is None:
            g._sem = asyncio.Semaphore(g.max_running)
        try:
            await g._sem.acquire()
        finally:
            g.waiting -= 1
        g.running += 1

    def __del__(self) -> None:
        # a stream whose client left before it started never enters: give its place back
        if not self.used:
            self.used = True
            self.gate.waiting -= 1

    async def __aexit__(self, *exc: object) -> None:
        self.gate.running -= 1
        assert self.gate._sem is not None
        self.gate._sem.release()


class Presets:
    """One :class:`cope.Cope` per preset, built on first use and then shared."""

    def __init__(self, config: ServerConfig, on_charge: Any = None) -> None:
        self.config = config
        self.on_charge = on_charge  # each charged call, for /metrics
        self._built: dict[str, Any] = {}
        self._tool_copes: dict[str, Any] = {}  # each preset's Cope for requests with tools
        self._tasks: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def get_preset(self, name: str) -> Preset:
        try:
            return self.config.presets[name]
        except KeyError:
            raise RequestError(f"the model '{name}' does not exist; available: "
                               f"{', '.join(self.config.presets)}", 404, param="model",
                               code="model_not_found") from None

    def loaded(self) -> list[str]:
        return list(self._built)

    async def for_tools(self, preset: Preset) -> Any:
        """The preset's Cope (models shared) running its tool policy: the large tier alone, one
        greedy sample; or small samples voting on the call, the large tier on disagreement."""
        key = preset.name
        if key not in self._tool_copes:
            from ..methods.builtin import cascade_noplan, large_alone
            from ..tasks.tools import ToolsTask

            tau = preset.tau1 if preset.tau1 is not None else ToolsTask.default_taus[0]
            cope = copy.copy(await self.cope(preset))
            cope.config = (large_alone(max_tokens=preset.max_tokens) if preset.tools == "large" else
                           cascade_noplan(preset.n, tau, max_tokens=preset.max_tokens))
            self._tool_copes[key] = cope
        return self._tool_copes[key]

    def task(self, preset: Preset, family: str | None = None) -> Any:
        """The preset's task family object (or a routed ``family``), built once: a request reads its
        problem and is solved with it."""
        family = family or preset.task
        if family not in self._tasks:
            from ..tasks import get_task

            self._tasks[family] = get_task(family)
        return self._tasks[family]

    async def cope(self, preset: Preset) -> Any:
        if preset.name in self._built:
            return self._built[preset.name]
        lock = self._locks.setdefault(preset.name, asyncio.Lock())
        async with lock:
            if preset.name not in self._built:
                from ..api import Cope

                kwargs = preset.cope_kwargs(self.config.prices)
                try:
                    # Building resolves (and on first run verifies) model files: off the loop.
                    self._built[preset.name] = meter(await asyncio.to_thread(Cope, **kwargs), self.on_charge)
                except CopeError as exc:  # the server's setup, not the request, is at fault
                    log.error("preset %s cannot be built: %s", preset.name, exc)
                    raise RequestError(f"the model '{preset.name}' is unavailable: {exc}", 503,
                                       kind="server_error", code="model_unavailable") from None
        return self._built[preset.name]


def _capped(cope: Any, cap: int | None, task: Any) -> Any:
    """The same Cope with each executor sample capped at ``cap`` tokens (models shared)."""
    config = cope.config_for(task)
    if cap is None or all(st.max_tokens <= cap for st in config.stages):
        return cope
    capped = copy.copy(cope)
    capped.config = replace(config, stages=tuple(replace(st, max_tokens=min(st.max_tokens, cap))
                                                 for st in config.stages))
    return capped


def _failure(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, OpenAI-style body and headers for an exception."""
    if isinstance(exc, RequestError):
        headers = {"retry-after": "1"} if exc.code == "server_busy" else _NO_RETRY
        return exc.status, error_body(str(exc), exc.kind, param=exc.param, code=exc.code), headers
    if isinstance(exc, AuthError):
        return 401, error_body(str(exc), code="invalid_api_key"), _NO_RETRY
    if isinstance(exc, BudgetExceeded):
        return 429, error_body(str(exc), "insufficient_quota", code="insufficient_quota"), _NO_RETRY
    if isinstance(exc, BackendError):
        return 502, error_body(f"a model backend failed: {exc}", "upstream_error"), _NO_RETRY
    if isinstance(exc, ModelFileError):
        return 503, error_body(str(exc), "server_error", code="model_unavailable"), _NO_RETRY
    if isinstance(exc, CopeError):
        return 400, error_body(str(exc)), _NO_RETRY
    if isinstance(exc, TimeoutError):
        return 504, error_body("the solve ran past this server's time limit", "timeout"), _NO_RETRY
    log.exception("unexpected error", exc_info=exc)
    return 500, error_body("internal server error", "server_error"), {}


def _json_error(exc: BaseException) -> JSONResponse:
    status, body, headers = _failure(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


class Service:
    """Everything a request needs: presets, keys, the gate; one per app."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.gate = Gate(config.limits.max_concurrent, config.limits.max_waiting)
        self.metrics = Metrics(lambda: self.gate.running, lambda: self.gate.waiting)
        self.presets = Presets(config, self.metrics.charged)
        self.ledger = Ledger(config.keys, config.open_ledger())
        self.started = int(time.time())
        from ..pricing import PriceTable

        self.fingerprint = f"cope-{__version__}-{PriceTable.load(config.prices).version}"

    def task_for(self, preset: Preset, request: ChatRequest) -> Any:
        """The family a request is solved with: its tools', a JSON response_format's, the first of the
        preset's declared routes whose pattern the last user message matches, else the preset's."""
        special = request.tool_task() or request.structured()
        if special is not None:
            return special
        route = route_of(preset, request)
        return self.presets.task(preset, route[0] if route else None)

    async def solve(self, preset: Preset, problem: Problem, request: ChatRequest, account: Account) -> Any:
        """Run the cascade; each model call charges the key itself (see cope.serve.metering),
        so a solve that fails, times out or is abandoned by its client is charged all the same."""
        from ..models.base import request_id

        account.in_flight += 1
        token = CURRENT.set((self.ledger, account))
        try:
            # Built outside the time limit: a first build may verify a large model
            # file, and a cancelled build would only be repeated by the next request.
            task = self.task_for(preset, request)
            cope = await (self.presets.for_tools(preset) if task.name == "tools" else self.presets.cope(preset))
            c = _capped(cope, request.token_cap, task)
            async with asyncio.timeout(self.config.timeout_for(preset)):
                result = await c.asolve(problem, task, seed=request.seed)
        finally:
            CURRENT.reset(token)
            account.in_flight -= 1
        self.metrics.solved(preset.name, result)
        if task.name == "tools" and result.answer is None:
            why = result.info.get("first_invalid_reason", "no answer")
            raise RequestError(f"no sample produced a valid tool call or answer ({why}); "
                               f"${result.cost_usd:.6f} was spent", 502, kind="server_error",
                               code="tool_call_failed")
        if task.name == "json" and result.answer is None:
            # a structured response always validates: no sample of the last stage did, so it is an error
            # (the calls were made and are charged)
            why = result.info.get("first_invalid_reason", "no JSON value")
            raise RequestError(f"no sample produced JSON that validates against the schema ({why}); "
                               f"${result.cost_usd:.6f} was spent", 502, kind="server_error",
                               code="structured_output_failed")
        log.info("%s key=%s stage=%s cost=$%.6f latency=%.2fs id=%s", preset.name, account.name, result.stage,
                 result.cost_usd, result.latency_s, request_id.get())
        return result

    def extension(self, preset: Preset, result: Any, account: Account, request: ChatRequest) -> dict[str, Any]:
        from ..models.base import request_id

        acct = self.ledger.usage(account)
        return {**result.to_dict(), "preset": preset.name, "seed": request.seed,
                # which family answered and why: the preset's task, never a guess from the prompt
                "task_from": (f"the request's tools (policy {preset.tools})" if request.tools else
                              "the request's response_format (JSON, validated)" if request.wants_json else
                              route[1] if (route := route_of(preset, request)) else
                              f"preset {preset.name} serves the {preset.task} family"),
                "ignored_params": request.ignored(),
                "request_id": request_id.get(),
                # usage counts the returned sample; this counts every call the answer took
                "bill": bill_of(result),
                "key": {k: acct[k] for k in ("key", "spent_usd", "budget_usd", "remaining_usd")}}

    def admit(self, request: Request, model: str | None = None) -> tuple[Account, Preset | None]:
        account = self.ledger.authenticate(request.headers.get("authorization"))
        preset = self.presets.get_preset(model) if model is not None else None
        return account, preset

    async def completion(self, request: Request, body: ChatRequest, problem: Problem, preset: Preset,
                         account: Account) -> Response:
        ticket = self.gate.enter()
        reply = Reply(preset.name, self.fingerprint)
        async with ticket:
            work = asyncio.ensure_future(self.solve(preset, problem, body, account))
            hangup = asyncio.ensure_future(_until_disconnect(request))
            try:
                await asyncio.wait({work, hangup}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (work, hangup):
                    if not task.done():
                        task.cancel()
            if not work.done() or work.cancelled():
                await asyncio.gather(work, return_exceptions=True)
                log.info("%s key=%s: client disconnected, solve cancelled", preset.name, account.name)
                return Response(status_code=499)
            result = work.result()
        return JSONResponse(reply.completion(result, self.extension(preset, result, account, body), body.stops,
                                             logprobs=bool(body.logprobs)),
                            headers=_ignored_header(body))

    async def stream(self, body: ChatRequest, problem: Problem, preset: Preset,
                     account: Account, ticket: "_Ticket") -> AsyncIterator[str]:
        """SSE chunks: a final single-generation stage's text as it decodes (the large tier's
        tokens), else the chosen answer once its vote ends; keep-alives while nothing is due."""
        from ..models.base import on_answer_text

        reply = Reply(preset.name, self.fingerprint)
        yield _sse(reply.chunk({"role": "assistant", "content": ""}))
        loop = asyncio.get_running_loop()
        heard: asyncio.Queue[str] = asyncio.Queue()
        raw: list[str] = []  # the answer's text as it arrived, before stop was applied
        cut = StopCut(body.stops)

        def piece(text: str) -> None:  # called from whichever thread decodes
            loop.call_soon_threadsafe(heard.put_nowait, text)

        def send(text: str) -> Iterator[str]:
            if text:
                yield _sse(reply.chunk({"content": text}))

        async with ticket:
            listening = on_answer_text.set(piece)
            try:  # the solve's task copies this context: the cascade finds the listener there
                work = asyncio.ensure_future(self.solve(preset, problem, body, account))
            finally:
                on_answer_text.reset(listening)
            try:
                while not work.done():
                    getter = asyncio.ensure_future(heard.get())
                    done, _ = await asyncio.wait({work, getter}, timeout=KEEPALIVE_S,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        raw.append(getter.result())
                        for chunk in send(cut.feed(raw[-1])):
                            yield chunk
                        continue
                    getter.cancel()
                    if not done:
                        yield ": keep-alive\n\n"
                while not heard.empty():  # pieces queued before the solve's end was seen
                    raw.append(heard.get_nowait())
                    for chunk in send(cut.feed(raw[-1])):
                        yield chunk
                result = work.result()
            except Exception as exc:  # after the 200 header: an error event, which the SDK raises
                yield _sse(_failure(exc)[1])
                return
            finally:
                if not work.done():
                    work.cancel()  # the client hung up
        calls = tool_calls_of(result)
        if calls:  # a call exists whole only once it is chosen: one delta, as OpenAI sends short ones
            yield _sse(reply.chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}))
            yield _sse(reply.chunk({}, "tool_calls", cope=self.extension(preset, result, account, body)))
            if body.include_usage:
                yield _sse(reply.usage_chunk(result))
            yield "data: [DONE]\n\n"
            return
        full, streamed = content_of(result), "".join(raw)
        if not full.startswith(streamed):  # never expected: the family said its answer is the text
            log.warning("%s: the streamed text is not the answer's beginning; the rest is sent as it is",
                        preset.name)
        rest = full[len(streamed):] if full.startswith(streamed) else ""
        for part in (pieces_of(rest) if not streamed else [rest]):
            for chunk in send(cut.feed(part)):
                yield chunk
        for chunk in send(cut.flush()):
            yield chunk
        finish = returned(result, body.stops)[1]
        yield _sse(reply.chunk({}, finish, cope=self.extension(preset, result, account, body)))
        if body.include_usage:
            yield _sse(reply.usage_chunk(result))
        yield "data: [DONE]\n\n"


def route_of(preset: Preset, request: ChatRequest) -> tuple[str, str] | None:
    """(family, why) from the preset's declared routes for the request's last user message, or None.

    Matched once per request and preset: the handler, the solve and the reply's extension all ask.
    """
    if not preset.route:
        return None
    cached = request._route
    if cached is not None and cached[0] == preset.name:
        return cached[1]
    found = _match_route(preset, request)
    request._route = (preset.name, found)
    return found


def _match_route(preset: Preset, request: ChatRequest) -> tuple[str, str] | None:
    last = next((m for m in reversed(request.messages) if m.role == "user"), None)
    content = last.content if last is not None else None
    if isinstance(content, list):  # text parts, as the problem reads them
        content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    text = content or ""
    for i, (pattern, family) in enumerate(preset.route, start=1):
        if re.search(pattern, text):
            return family, f"preset {preset.name} route {i}: the message matches /{pattern}/, so the {family} family"
    return None


def _ignored_header(body: ChatRequest) -> dict[str, str]:
    """``x-cope-ignored: temperature, top_p``: the parameters sent that the cascade does not act on."""
    names = body.ignored()
    return {"x-cope-ignored": ", ".join(names)} if names else {}


async def _until_disconnect(request: Request) -> None:
    """Return when the client closes the connection (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class _BodyLimit:
    """Refuse a declared body above the limit before reading it (413)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            declared = dict(scope.get("headers") or []).get(b"content-length")
            try:
                too_big = declared is not None and int(declared) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                body = error_body(f"request body exceeds {self.limit} bytes", param=None)
                await JSONResponse(body, status_code=413, headers=_NO_RETRY)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(config: ServerConfig) -> FastAPI:
    """An ASGI app serving ``config``'s presets."""
    svc = Service(config)
    app = FastAPI(title="cope", version=__version__, docs_url=None, redoc_url=None)
    app.state.service = svc

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(error_body(f"{message}: {request.method} {request.url.path}"),
                            status_code=exc.status_code, headers=_NO_RETRY)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        # Anyone may ask whether the server is up; its load and which presets are built are for
        # key holders (on a server without keys, for anyone).
        try:
            svc.ledger.authenticate(request.headers.get("authorization"))
        except AuthError:
            return {"status": "ok"}
        # "solving" counts cascades still executing, which can briefly outlive
        # their slot ("running") while a cancelled one stops.
        return {"status": "ok", "running": svc.gate.running, "waiting": svc.gate.waiting,
                "solving": sum(a.in_flight for a in svc.ledger.accounts), "loaded": svc.presets.loaded()}

    def model_card(p: Preset) -> dict[str, Any]:
        return {"id": p.name, "object": "model", "created": svc.started, "owned_by": "cope",
                "cope": {"small": p.small, "large": p.large, "task": p.task, "method": p.method, "n": p.n,
                         "tau1": p.tau1, "tau2": p.tau2, "thresholds": p.thresholds(), "max_tokens": p.max_tokens,
                         "tools": p.tools, "route": [{"pattern": pat, "task": t} for pat, t in p.route],
                         "loaded": p.name in svc.presets.loaded()}}

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            svc.admit(request)
        except AuthError as exc:
            return _json_error(exc)
        return JSONResponse({"object": "list", "data": [model_card(p) for p in config.presets.values()]})

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Response:
        try:
            _, preset = svc.admit(request, model_id)
        except (AuthError, RequestError) as exc:
            return _json_error(exc)
        assert preset is not None
        return JSONResponse(model_card(preset))

    @app.get("/v1/cope/usage")
    async def usage(request: Request) -> Response:
        """The caller's spend and budgets, read from the ledger (every process's calls)."""
        try:
            account, _ = svc.admit(request)
        except AuthError as exc:
            return _json_error(exc)
        return JSONResponse(svc.ledger.usage(account))

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text format; with keys configured, a key is needed (labels name keys and spend)."""
        try:
            svc.admit(request)
        except AuthError as exc:
            return _json_error(exc)
        data, kind = svc.metrics.render()
        return Response(data, media_type=kind)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        from ..models.base import request_id

        # the client's x-request-id if it is a plain token, else one minted here: on the response,
        # on every upstream request made for it, in the JSON logs (the request's task owns this context)
        rid = request.headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(rid):
            rid = f"req_{uuid.uuid4().hex}"
        request_id.set(rid)
        response = await _chat(request)
        response.headers["x-request-id"] = rid
        # the preset label only for a model the config names: a client's text never becomes a label
        name = getattr(request.state, "preset", "-")
        svc.metrics.requests.labels(name, str(response.status_code)).inc()
        return response

    async def _chat(request: Request) -> Response:
        try:
            account = svc.ledger.authenticate(request.headers.get("authorization"))
            body = await _parse(request, config.limits.max_body_bytes)
            preset = svc.presets.get_preset(body.model)
            request.state.preset = preset.name
            task = svc.task_for(preset, body)
            if body.logprobs and not task.needs_logprobs:
                raise RequestError(f"logprobs are returned by the chat (open) family, whose samples are scored by "
                                   f"them; this request is solved by the {task.name} family", param="logprobs")
            problem = to_problem(body, system=preset.system, max_chars=config.limits.max_input_chars,
                                 max_messages=config.limits.max_messages, task=task)
            if svc.gate.full():
                svc.gate.enter()  # raises the 429 now, while a status code can still say so
            svc.ledger.admit(account)
            if body.stream:
                # the place is taken here, before the 200 goes out: a stream is never told "busy" in-band
                ticket = svc.gate.enter()
                return StreamingResponse(svc.stream(body, problem, preset, account, ticket),
                                         media_type="text/event-stream",
                                         headers={"cache-control": "no-cache", "x-accel-buffering": "no",
                                                  **_ignored_header(body)})
            return await svc.completion(request, body, problem, preset, account)
        except Exception as exc:
            return _json_error(exc)

    app.add_middleware(_BodyLimit, limit=config.limits.max_body_bytes)
    return app


async def _parse(request: Request, limit: int) -> ChatRequest:
    # _BodyLimit refuses a declared length above the limit; a chunked body
    # declares none, so it is counted here as it arrives and never held whole.
    from starlette.requests import ClientDisconnect

    parts, size = [], 0
    try:
        # a client that sends headers and then trickles (or never sends) its body must not hold
        # a connection for ever
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise RequestError(f"request body exceeds {limit} bytes", 413)
                parts.append(part)
    except ClientDisconnect:
        log.info("a client closed its connection before sending the whole body")
        raise RequestError("the client closed the connection before sending the whole body", 400) from None
    except TimeoutError:
        raise RequestError(f"the request body did not arrive within {BODY_TIMEOUT_S:g} s", 408) from None
    raw = b"".join(parts)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RequestError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("the request body must be a JSON object")
    try:
        body = ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        raise RequestError(f"{param}: {first.get('msg')}" if param else str(first.get("msg")),
                           param=param or None) from None
    body.check()
    return body
