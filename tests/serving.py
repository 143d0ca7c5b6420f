"""Shared by the server tests: a real ``cope serve`` process on 127.0.0.1, raw HTTP, polling.

Kept at the top of tests/ (on the test path, beside fault_server.py) so any
test module can start a server, whichever folder it sits in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai

SMOL = "local/smollm2-135m"
BOB = "sk-bob-0000000002"  # no budget
ALICE = "sk-alice-00000001"  # budget below the cost of one "remote" request
# Price rows for the scripted upstreams: USD per 1M tokens. A scripted reply
# bills 7 prompt and 2 completion tokens, so one "remote" call costs 1.1e-5.
REMOTE_COST = (7 * 1.0 + 2 * 2.0) / 1e6
REMOTE_TEXT = "Four legs less than a spider: \\boxed{6}."


class ServerProcess:
    """``python -m cope.serve`` with a config file; stdout and stderr go to a file we poll.

    ``keys`` sets COPE_API_KEYS for the server alone (it is removed otherwise,
    so a developer's own variable cannot change what the tests see). ``state``
    is its state directory (the SQLite ledger): by default one of its own.
    """

    def __init__(self, tmp: Path, config: str | None, extra: tuple[str, ...] = ("--no-access-log",),
                 keys: str | None = None, state: Path | None = None) -> None:
        self.tmp = tmp
        self.log = tmp / "server.err"
        args = [sys.executable, "-m", "cope.serve", "--port", "0", "--threads", "2", *extra]
        if config is not None:
            cfg = tmp / "serve.toml"
            cfg.write_text(config)
            args += ["--config", str(cfg)]
        env = {k: v for k, v in os.environ.items() if k != "COPE_API_KEYS"}
        env["COPE_STATE_DIR"] = str(state or tmp / "state")  # each server its own ledger unless told
        if keys is not None:
            env["COPE_API_KEYS"] = keys
        self._err = self.log.open("w")
        self.proc = subprocess.Popen(args, stdout=self._err, stderr=self._err, cwd=tmp, env=env)
        self.base = self._wait_ready()
        self.url = self.base + "/v1"

    def _wait_ready(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()
            for line in text.splitlines():
                if line.startswith("cope serve: ready on "):
                    return line.split()[4].removesuffix("/v1")
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {text}")
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server not ready in {timeout}s: {self.log.read_text()}")

    def client(self, key: str = BOB, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=kw.pop("max_retries", 0), **kw)

    def health(self, key: str | None = BOB) -> dict:
        req = urllib.request.Request(self.base + "/health")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()
        return self.proc.returncode


def http(url: str, body: bytes | dict | None = None, *, key: str | None = BOB, method: str | None = None,
         headers: dict | None = None) -> tuple[int, dict, dict]:
    """Raw HTTP: status, headers, parsed JSON body (4xx included)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, dict(e.headers), json.loads(raw)


def wait_for(cond, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``cond()`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(step)
    return time.monotonic() - t0
