"""What the HTTP server adds, and whether it runs solves side by side.

Three measurements, all on 127.0.0.1, bounded in count:

1. Overhead: the same "large alone" solve against a scripted upstream that
   answers at once, made directly with ``Cope.asolve`` and through the server
   with the official ``openai`` client. Reports milliseconds added per request.
2. Concurrency: the upstream now takes ``--delay`` seconds per call (a paid
   API's latency). ``--clients`` threads send requests at once to a server with
   ``max_concurrent = --clients``; the speed-up over one client at a time shows
   that the server overlaps solves instead of queueing them.
3. ``--local``: the embedded SmolLM2 model as both models (n = 2): the server's
   share of a real local solve (direct vs through HTTP, same seeds).

    .venv/bin/python bench/bench_server.py [--requests 40] [--clients 8] [--delay 0.2] [--local]
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SMOL = "local/smollm2-135m"
TEXT = "Two and two make \\boxed{4}."


class Upstream:
    """A chat-completions endpoint that answers every request after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                time.sleep(outer.delay)
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

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def config_text(upstream: str, slow_upstream: str, clients: int) -> str:
    return f"""
prices = "prices.toml"

[defaults]
small = "{SMOL}"
large = "openai/bench"
method = "large"
base_url = "{upstream}"

[presets.fast]

[presets.slow]
base_url = "{slow_upstream}"

[presets.local]
large = "{SMOL}"
method = "cope"
n = 2
tau1 = 0.0
max_tokens = 32

[limits]
max_concurrent = {clients}
max_waiting = {4 * clients}
"""


class Server:
    def __init__(self, tmp: Path, config: str) -> None:
        (tmp / "prices.toml").write_text('[models."bench"]\ninput = 0.15\noutput = 0.6\n')
        (tmp / "serve.toml").write_text(config)
        self.err = (tmp / "server.err").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cope.server", "--port", "0", "--config", str(tmp / "serve.toml"),
             "--no-access-log", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=self.err, cwd=tmp)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.err.seek(0)
            for line in self.err.read().splitlines():
                if line.startswith("cope serve: ready on "):
                    self.url = line.split()[4]
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.err.seek(0)
        raise SystemExit(f"server did not start: {self.err.read()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def timed(fn, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--local", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import openai

    from cope import Cope

    fast, slow = Upstream(0.0), Upstream(args.delay)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp), config_text(fast.url, slow.url, args.clients))
        try:
            client = openai.OpenAI(base_url=srv.url, api_key="bench", max_retries=0, timeout=300)

            # 1. overhead per request, direct vs HTTP (warm both first)
            direct = Cope(small=SMOL, large="openai/bench", method="large", base_url=fast.url,
                          prices=str(Path(tmp) / "prices.toml"))
            loop = asyncio.new_event_loop()
            solve = lambda: loop.run_until_complete(direct.asolve(messages[0]["content"]))  # noqa: E731
            http = lambda: client.chat.completions.create(model="fast", messages=messages)  # noqa: E731
            solve(), http()
            t_direct, t_http = timed(solve, args.requests), timed(http, args.requests)
            print(f"overhead  direct median {median(t_direct) * 1e3:7.2f} ms   via server {median(t_http) * 1e3:7.2f} ms"
                  f"   added {(median(t_http) - median(t_direct)) * 1e3:6.2f} ms/request ({args.requests} each)")

            # 2. concurrency against a slow upstream
            slow_call = lambda _=None: client.chat.completions.create(model="slow", messages=messages)  # noqa: E731
            slow_call()
            n = max(args.clients, args.requests // 2)
            t0 = time.perf_counter()
            for _ in range(args.clients):
                slow_call()
            serial = (time.perf_counter() - t0) / args.clients
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(slow_call, range(n)))
            parallel = (time.perf_counter() - t0) / n
            print(f"parallel  {args.clients} clients, upstream {args.delay:.2f} s: {1 / serial:6.2f} req/s one at a time, "
                  f"{1 / parallel:6.2f} req/s together -> speed-up {serial / parallel:4.2f}x (ideal {args.clients}x)")

            # 3. a real local solve
            if args.local:
                local = Cope(small=SMOL, large=SMOL, n=2, tau1=0.0, max_tokens=32)
                prob = "What is 17 + 25?"
                loc_direct = lambda: loop.run_until_complete(local.asolve(prob, seed=1))  # noqa: E731
                loc_http = lambda: client.chat.completions.create(  # noqa: E731
                    model="local", messages=[{"role": "user", "content": prob}], seed=1)
                loc_direct(), loc_http()
                reps, a, b, same = 4, [], [], 0
                for _ in range(reps):  # interleaved, so load from other processes hits both sides alike
                    t0 = time.perf_counter()
                    res = loc_direct()
                    a.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    resp = loc_http()
                    b.append(time.perf_counter() - t0)
                    same += resp.usage.completion_tokens == sum(c.completion_tokens for c in res.calls)
                print(f"local     SmolLM2 n=2 solve: direct {median(a):.2f} s, via server {median(b):.2f} s, "
                      f"ratio {median(b) / median(a):.2f} ({reps} each, interleaved; same tokens in {same}/{reps})")
            loop.close()
        finally:
            srv.stop()
            fast.close()
            slow.close()


if __name__ == "__main__":
    main()
