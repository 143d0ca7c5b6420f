"""What the HTTP server adds to a solve, and how many requests it answers at once.

All traffic stays on 127.0.0.1 and is bounded in count. A scripted upstream
(a separate process, so it does not share this process's interpreter lock)
stands in for a paid API; the preset under test is "large alone" against it,
so a solve is one upstream call and what is left is the server's own work.

1. Latency overhead, side by side: the same requests made directly with
   ``Cope.asolve`` and through ``cope serve`` with the official ``openai``
   client, interleaved one by one (so load from other processes hits both
   alike). Prints p50 of each, their difference and the p50 of the paired
   differences; the target is under 5 ms per request.
2. Throughput at ``--clients`` concurrent clients (default 16) against the
   instant upstream: requests per second through the server (one thread per
   client) beside the library alone running as many solves at once.
3. Overlap: the upstream now takes ``--delay`` seconds per call (a paid API's
   latency); requests per second with one client vs ``--clients`` clients.
4. ``--local``: the embedded SmolLM2 model as both models (n = 2): a real
   local solve direct vs through HTTP, same seeds.
5. Time to first token of a streamed answer: a streaming upstream that pauses
   ``--word-delay`` s between words, read directly with the ``openai`` client
   beside the same answer streamed through ``cope serve`` (the large tier
   alone: its tokens are relayed as they arrive); then the embedded SmolLM2 as
   the large tier, first token vs the whole answer, streamed and not.

The server runs as ``cope serve`` does by default (access log on, log level
info), writing its log to a temporary file; ``--quiet-server`` turns the
per-request log lines off.

    .venv/bin/python bench/bench_server.py [--requests 200] [--clients 16] [--per-client 20] [--delay 0.2]
                                           [--local] [--quiet-server]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

SMOL = "local/smollm2-135m"
TEXT = "Two and two make \\boxed{4}."
STREAM_TEXT = " ".join(f"word{i}" for i in range(20))
TARGET_MS = 5.0


def serve_upstream(delay: float) -> None:
    """Run a chat-completions endpoint answering after ``delay`` s; print its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes; with Nagle's algorithm the
        # second waits for the client's delayed ACK (about 40 ms on Linux).
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if request.get("stream"):
                self._stream(request)
                return
            if delay:
                time.sleep(delay)
            n = int(request.get("n") or 1)
            body = json.dumps({
                "id": "bench", "object": "chat.completion", "created": 0, "model": request.get("model"),
                "choices": [{"index": i, "message": {"role": "assistant", "content": TEXT},
                             "finish_reason": "stop"} for i in range(n)],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, request: dict) -> None:
            """STREAM_TEXT word by word, ``delay`` s apart (a paid API decoding), then usage."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            head = {"id": "bench", "object": "chat.completion.chunk", "created": 0, "model": request.get("model")}
            words = STREAM_TEXT.split(" ")
            for i, w in enumerate(words):
                time.sleep(delay)
                delta = {"content": w if i == len(words) - 1 else w + " "}
                self.wfile.write(f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode())
                self.wfile.flush()
            end = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = {**head, "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": len(words),
                                                      "total_tokens": 50 + len(words)}}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    httpd = Server(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{httpd.server_address[1]}/v1", flush=True)
    httpd.serve_forever()


class Process:
    """A child process that prints one ready line; stopped with SIGTERM."""

    def __init__(self, args: list[str], cwd: Path, log: Path | None = None, ready: str = "") -> None:
        self.log = log
        self._out = log.open("w+") if log else None
        self.proc = subprocess.Popen(args, cwd=cwd, text=True,
                                     stdout=self._out or subprocess.PIPE, stderr=self._out or subprocess.DEVNULL)
        self.line = self._wait(ready)

    def _wait(self, ready: str, timeout: float = 120) -> str:
        if self._out is None:  # the line is the first thing on stdout
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
            if not line:
                raise SystemExit(f"{self.proc.args} did not start")
            return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._out.seek(0)
            for line in self._out.read().splitlines():
                if line.startswith(ready):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self._out.seek(0)
        raise SystemExit(f"server did not start: {self._out.read()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._out:
            self._out.close()
        return self.proc.returncode


def config_text(fast: str, slow: str, clients: int, streaming: str = "") -> str:
    return f"""
prices = "prices.toml"

[defaults]
small = "{SMOL}"
large = "openai/bench"
method = "large"
base_url = "{fast}"

[presets.fast]

[presets.slow]
base_url = "{slow}"

[presets.local]
large = "{SMOL}"
method = "cope"
n = 2
tau1 = 0.0
max_tokens = 32

[presets.streaming]            # chat (the open family), the large tier alone
task = "open"
base_url = "{streaming or fast}"

[presets.chat-local]
task = "open"
large = "{SMOL}"
max_tokens = 96

[limits]
max_concurrent = {clients}
max_waiting = {4 * clients}
"""


def timed_streams(reps: int, first: "Callable[[], Any]", second: "Callable[[], Any] | None"
                  ) -> tuple[list[float], list[float], list[float], list[float]]:
    """Seconds to the first and the last content piece of each stream, the two kinds interleaved."""
    out: list[list[float]] = [[], [], [], []]

    def one(make: "Callable[[], Any]", a: list[float], b: list[float]) -> None:
        t0 = time.perf_counter()
        got, last = None, float("nan")
        for chunk in make():
            if chunk.choices and chunk.choices[0].delta.content:
                got = got or time.perf_counter() - t0
                last = time.perf_counter() - t0
        a.append(got if got is not None else float("nan"))
        b.append(last)

    for _ in range(reps):
        one(first, out[0], out[1])
        if second is not None:
            one(second, out[2], out[3])
    return out[0], out[1], out[2], out[3]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def ms(x: float) -> str:
    return f"{x * 1e3:7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="requests each way for the latency overhead")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--per-client", type=int, default=20, help="requests per client for throughput")
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the slow upstream takes per call")
    ap.add_argument("--local", action="store_true", help="also time a real local SmolLM2 solve")
    ap.add_argument("--word-delay", type=float, default=0.05, help="seconds between streamed words upstream")
    ap.add_argument("--streams", type=int, default=10, help="streamed requests each way for time to first token")
    ap.add_argument("--quiet-server", action="store_true", help="run the server with --no-access-log --log-level warning")
    ap.add_argument("--serve-upstream", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream is not None:
        serve_upstream(args.serve_upstream)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import openai

    from cope import Cope

    me = [sys.executable, os.path.abspath(__file__), "--serve-upstream"]
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    procs: list[Process] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            fast = Process([*me, "0"], tmp)
            procs.append(fast)
            slow = Process([*me, str(args.delay)], tmp)
            procs.append(slow)
            streaming = Process([*me, str(args.word_delay)], tmp)
            procs.append(streaming)
            (tmp / "prices.toml").write_text('[models."bench"]\ninput = 0.15\noutput = 0.6\n')
            (tmp / "serve.toml").write_text(config_text(fast.line, slow.line, args.clients, streaming.line))
            quiet = ["--no-access-log", "--log-level", "warning"] if args.quiet_server else []
            srv = Process([sys.executable, "-m", "cope.serve", "--port", "0", "--config", "serve.toml", *quiet], tmp,
                          log=tmp / "server.log", ready="cope serve: ready on ")
            procs.append(srv)
            url = srv.line.split()[4]
            logs = "no access log, log level warning" if quiet else "access log on, log level info"
            print(f"server: cope serve ({logs}), {args.clients} concurrent solves; "
                  f"upstream: a separate process on 127.0.0.1")

            client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=300)
            direct = Cope(small=SMOL, large="openai/bench", method="large", base_url=fast.line,
                          prices=str(tmp / "prices.toml"))
            loop = asyncio.new_event_loop()

            def via_library() -> None:
                loop.run_until_complete(direct.asolve(messages[0]["content"]))

            def via_server(model: str = "fast") -> None:
                r = client.chat.completions.create(model=model, messages=messages)
                assert r.choices[0].message.content == TEXT

            # 1. latency overhead, interleaved
            for _ in range(10):  # warm both paths (connections, first build)
                via_library(), via_server()
            t_lib, t_srv = [], []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                via_library()
                t1 = time.perf_counter()
                via_server()
                t2 = time.perf_counter()
                t_lib.append(t1 - t0)
                t_srv.append(t2 - t1)
            p_lib, p_srv = pct(t_lib, 0.5), pct(t_srv, 0.5)
            paired = pct([b - a for a, b in zip(t_lib, t_srv)], 0.5)
            verdict = "under" if p_srv - p_lib < TARGET_MS / 1e3 else "OVER"
            print(f"\n1. latency, {args.requests} requests each way, interleaved (instant upstream)")
            print(f"   library direct  p50 {ms(p_lib)}   p90 {ms(pct(t_lib, 0.9))}")
            print(f"   through server  p50 {ms(p_srv)}   p90 {ms(pct(t_srv, 0.9))}")
            print(f"   overhead        p50 {ms(p_srv - p_lib)}   (p50 of paired differences {ms(paired).strip()}; "
                  f"{verdict} the {TARGET_MS:.0f} ms target)")

            # 2. throughput at N clients, instant upstream
            total = args.clients * args.per_client

            def one_client(_: int) -> None:
                for _ in range(args.per_client):
                    via_server()

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(one_client, range(args.clients)))
            srv_rps = total / (time.perf_counter() - t0)

            async def library_clients() -> None:
                async def worker() -> None:
                    for _ in range(args.per_client):
                        await direct.asolve(messages[0]["content"])

                await asyncio.gather(*(worker() for _ in range(args.clients)))

            t0 = time.perf_counter()
            loop.run_until_complete(library_clients())
            lib_rps = total / (time.perf_counter() - t0)
            print(f"\n2. throughput, {args.clients} concurrent clients x {args.per_client} requests (instant upstream)")
            print(f"   through server  {srv_rps:7.1f} req/s   ({args.clients} client threads, openai client)")
            print(f"   library direct  {lib_rps:7.1f} req/s   ({args.clients} concurrent asolve calls, one event loop)")

            # 3. overlap against a slow upstream
            via_server("slow")
            t0 = time.perf_counter()
            for _ in range(args.clients):
                via_server("slow")
            serial = args.clients / (time.perf_counter() - t0)
            n = 4 * args.clients
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(lambda _: via_server("slow"), range(n)))
            parallel = n / (time.perf_counter() - t0)
            print(f"\n3. overlap, upstream {args.delay:.2f} s per call")
            print(f"   1 client        {serial:7.1f} req/s")
            print(f"   {args.clients:<2d} clients      {parallel:7.1f} req/s   -> {parallel / serial:.1f}x "
                  f"(ideal {args.clients}x)")

            # 4. a real local solve
            if args.local:
                local = Cope(small=SMOL, large=SMOL, n=2, tau1=0.0, max_tokens=32)
                prob = "What is 17 + 25?"

                def loc_direct():
                    return loop.run_until_complete(local.asolve(prob, seed=1))

                def loc_http():
                    return client.chat.completions.create(model="local", messages=[{"role": "user", "content": prob}],
                                                          seed=1)

                loc_direct(), loc_http()
                reps, a, b, same = 4, [], [], 0
                for _ in range(reps):
                    t0 = time.perf_counter()
                    res = loc_direct()
                    a.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    resp = loc_http()
                    b.append(time.perf_counter() - t0)
                    bill = resp.to_dict()["cope"]["bill"]
                    same += bill["completion_tokens"] == sum(c.completion_tokens for c in res.calls)
                print(f"\n4. local SmolLM2 n=2 solve: direct p50 {pct(a, 0.5):.2f} s, via server {pct(b, 0.5):.2f} s, "
                      f"ratio {pct(b, 0.5) / pct(a, 0.5):.2f} ({reps} each, interleaved; same tokens in {same}/{reps})")
            # 5. time to first token
            upstream = openai.OpenAI(base_url=streaming.line, api_key="bench", max_retries=0, timeout=60)
            ask = {"model": "streaming", "messages": [{"role": "user", "content": "Say twenty words."}]}
            print(f"\n5. time to first token, {args.streams} streamed answers each way, interleaved "
                  f"(upstream: {len(STREAM_TEXT.split())} words, {args.word_delay:.2f} s apart)")
            up_first, up_last, srv_first, srv_last = timed_streams(
                args.streams, lambda: upstream.chat.completions.create(**ask, stream=True),
                lambda: client.chat.completions.create(**ask, stream=True))
            print(f"   upstream direct first token p50 {ms(pct(up_first, 0.5))}   last {ms(pct(up_last, 0.5))}")
            print(f"   through server  first token p50 {ms(pct(srv_first, 0.5))}   last {ms(pct(srv_last, 0.5))}")
            print(f"   first token: server / direct {pct(srv_first, 0.5) / pct(up_first, 0.5):.2f}x; "
                  f"server's first token at {pct(srv_first, 0.5) / pct(srv_last, 0.5):.0%} of its last "
                  f"(1 piece at the end would be 100%)")
            topics = iter(["the sea", "a forest", "the moon", "a city", "rain", "a desert", "snow"])

            def local_ask() -> dict:  # a new prompt each time: no request reuses another's cached prompt
                return {"model": "chat-local", "seed": 1,
                        "messages": [{"role": "user", "content": f"Write a short paragraph about {next(topics)}."}]}

            client.chat.completions.create(**local_ask())  # loads the model
            reps = 3
            loc_first, loc_last, _, _ = timed_streams(
                reps, lambda: client.chat.completions.create(**local_ask(), stream=True), None)
            whole = []
            for _ in range(reps):
                t0 = time.perf_counter()
                client.chat.completions.create(**local_ask())
                whole.append(time.perf_counter() - t0)
            print(f"   local SmolLM2 large tier ({reps} each): first token p50 {pct(loc_first, 0.5):.2f} s, "
                  f"streamed answer complete {pct(loc_last, 0.5):.2f} s, unstreamed reply {pct(whole, 0.5):.2f} s "
                  f"-> first token at {pct(loc_first, 0.5) / pct(whole, 0.5):.0%} of the reply's time")
            loop.close()
        finally:
            for p in reversed(procs):
                p.stop()


if __name__ == "__main__":
    main()
