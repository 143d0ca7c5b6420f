"""A scripted chat-completions server on 127.0.0.1 for fault tests.

It answers each POST to ``/v1/chat/completions`` with the next reply of a
script (the last reply repeats), and records every request it saw, so a test
can count exactly how many HTTP requests the client made and when.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None  # None: a valid completion built from the request
    delay_s: float = 0.0  # wait this long before answering
    usage: bool = True  # include "usage" in a built completion
    raw: bytes | None = None  # sent as the body as it is (a malformed reply), with the status
    piece_delay_s: float = 0.0  # a streamed reply: the wait between content pieces


@dataclass
class Seen:
    at: float  # time.monotonic() when the request arrived
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def completion_body(
    request: dict[str, Any], *, text: str = "pong", usage: bool = True, max_choices: int | None = None
) -> dict[str, Any]:
    """A well-formed chat.completion answering ``request`` with n identical choices.

    ``max_choices`` caps n the way some compatible servers silently do.
    """
    n = int(request.get("n") or 1)
    if max_choices is not None:
        n = min(n, max_choices)
    body: dict[str, Any] = {
        "id": "chatcmpl-fault-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fault"),
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for i in range(n)
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 7, "completion_tokens": 2 * n, "total_tokens": 7 + 2 * n}
    return body


def choices_body(texts: list[str], *, prompt_tokens: int = 7, completion_tokens: int = 2, cached_tokens: int = 0,
                 reasoning_tokens: int = 0) -> dict[str, Any]:
    """A chat.completion with one choice per text and the usage given (OpenAI's token details included)."""
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return {"id": "chatcmpl-fault-2", "object": "chat.completion", "created": int(time.time()), "model": "fault",
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop",
                         "logprobs": None} for i, t in enumerate(texts)],
            "usage": usage}


def error_body(message: str, kind: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class FaultServer:
    """Serve ``script`` in a background thread; use as a context manager."""

    def __init__(self, script: list[Reply], *, max_choices: int | None = None, reasoning: bool = False) -> None:
        """``reasoning``: refuse max_tokens and a temperature other than 1 with HTTP 400, as OpenAI's
        reasoning models (o-series, gpt-5) do."""
        if not script:
            raise ValueError("script must hold at least one reply")
        self.script = list(script)
        self.max_choices = max_choices
        self.reasoning = reasoning
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    request = json.loads(raw or b"{}")
                except ValueError:
                    request = {}
                with outer._lock:
                    index = len(outer.seen)
                    outer.seen.append(
                        Seen(time.monotonic(), self.path, request, {k.lower(): v for k, v in self.headers.items()})
                    )
                    reply = outer.script[min(index, len(outer.script) - 1)]
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    self._answer(request, reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            def _answer(self, request: dict[str, Any], reply: Reply) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    reply = Reply(404, body=error_body(f"no route {self.path}", "not_found"))
                elif outer.reasoning and ("max_tokens" in request or request.get("temperature", 1) != 1):
                    bad = "max_tokens" if "max_tokens" in request else "temperature"
                    reply = Reply(400, body={"error": {"message": f"Unsupported parameter: '{bad}' is not supported "
                                                                  "with this model.", "type": "invalid_request_error",
                                                       "param": bad, "code": "unsupported_parameter"}})
                body = reply.body
                if body is None:
                    body = completion_body(request, usage=reply.usage, max_choices=outer.max_choices)
                if request.get("stream") and reply.status == 200 and reply.raw is None:
                    self._stream(request, body, reply)
                    return
                data = reply.raw if reply.raw is not None else json.dumps(body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, request: dict[str, Any], body: dict[str, Any], reply: Reply) -> None:
                """The completion as OpenAI streams it: one chunk per word of the first choice, the
                finish, then usage when stream_options asks, then [DONE] (the connection closes)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                choice = body["choices"][0]
                text = choice["message"]["content"] or ""
                head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
                        "model": body["model"]}

                def send(obj: dict[str, Any]) -> None:
                    self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                    self.wfile.flush()

                words = [w for w in text.split(" ")]
                for i, w in enumerate(words):
                    if i and reply.piece_delay_s:
                        time.sleep(reply.piece_delay_s)
                    piece = w if i == len(words) - 1 else w + " "
                    send({**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                send({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
                if (request.get("stream_options") or {}).get("include_usage") and body.get("usage"):
                    send({**head, "choices": [], "usage": body["usage"]})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hangs up mid-request (timeout tests) is expected

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.seen)
