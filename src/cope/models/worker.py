"""Each embedded model decodes in a worker process of its own.

Why a process and not a thread: llama.cpp is native code. A build that uses an
instruction the CPU advertises but does not run (AVX-512 or AMX on some
virtual machines), a memory fault or the kernel's out-of-memory killer ends
the process it runs in, with no Python exception and no message. In a worker,
such a death becomes a :class:`ModelProcessDied` in the caller: one line that
names the signal and the fix, while the caller (a CLI run with its journal, a
server with other requests) lives on.

The protocol is private to this module: length-prefixed pickles over two
pipes, one request at a time (the caller holds the model's lock), with
progress and cancel messages while a decode runs. The child imports the
engine; the parent never loads llama.cpp.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import BackendError, ConfigError, CopeError
from .base import Cancelled, GenParams, Message, report_samples, report_text, report_tokens

_HEADER = struct.Struct("<Q")
_POLL_S = 0.1  # how often a waiting caller looks at its cancel flag
_TOKENS_EVERY_S = 0.25  # how often the child reports tokens decoded (a live display's counter)


class ModelProcessDied(BackendError):
    """The worker process of a local model ended without answering (a signal, a crash)."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def child_env(first: str | None = None) -> dict[str, str]:
    """This process's environment for a Python child that imports cope (and ``first`` before all else)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds the cope package
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(([first] if first else []) + [root] + rest)
    return env


def describe_death(spec: str, returncode: int | None) -> str:
    """One line naming what killed a model process and what to do about it."""
    head = f"the local model process for {spec}"
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = signal_name(sig)
        if sig == signal.SIGILL:
            return (f"{head} died of SIGILL (illegal instruction): this llama.cpp build uses CPU "
                    "instructions this machine does not execute; run 'cope doctor', then "
                    "'./install.sh' to rebuild llama-cpp-python portably")
        if sig == signal.SIGKILL:
            return (f"{head} was killed (SIGKILL), most often by the kernel for lack of memory; "
                    "use a smaller model or fewer samples, or run 'cope doctor'")
        return (f"{head} died of {name}; run 'cope doctor' and include its output in a bug report")
    if returncode is None:
        return f"{head} stopped answering; run 'cope doctor'"
    return f"{head} exited with code {returncode} before answering; run 'cope doctor'"


def _write(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        b = os.read(fd, left)
        if not b:
            return None  # the other side is gone
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _read(fd: int) -> Any | None:
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _readable(fd: int, timeout_s: float) -> bool:
    """poll(), not select(): a server holding a thousand sockets has pipe fds above select's 1024."""
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(p.poll(int(timeout_s * 1000)))


# Errors the child may raise on purpose, re-raised as the same type in the caller.
_KNOWN_ERRORS: dict[str, type[CopeError]] = {"ConfigError": ConfigError, "BackendError": BackendError}


class EngineClient:
    """The caller's side of one worker: the engine's methods, answered by the child.

    ``lock`` serialises callers (the child runs one request at a time);
    ``tokens_evaluated`` and ``tokens_generated`` mirror the child's counters
    after each request.
    """

    def __init__(self, path: Path, n_ctx: int, n_threads: int, max_seqs: int, spec: str) -> None:
        self.spec = spec
        self.lock = threading.Lock()
        self.tokens_evaluated = 0
        self.tokens_generated = 0
        self._job = 0
        self.dead: ModelProcessDied | None = None
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        env = child_env()
        try:
            out = sys.stderr.fileno()  # anything native code prints must not mix into --json on stdout
        except (AttributeError, OSError, ValueError):
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cope.models.worker", str(req_r), str(resp_w)],
            pass_fds=(req_r, resp_w), stdin=subprocess.DEVNULL, stdout=out, env=env, close_fds=True,
        )
        os.close(req_r)
        os.close(resp_w)
        self._req, self._resp = req_w, resp_r
        atexit.register(self.close)
        ready = self._request(("init", str(path), n_ctx, n_threads, max_seqs), None)
        self.n_ctx: int = ready["n_ctx"]

    @property
    def alive(self) -> bool:
        """False once the worker died or was closed: the next caller needs a new one."""
        return self.dead is None and self._req >= 0

    # --- the engine's surface ---------------------------------------------
    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        return self._request(("chat_tokens", [dict(m) for m in messages]), None)

    def run(self, prompts: list[list[int]], n_each: list[int], params: GenParams,
            cancel: threading.Event | None = None, stream: bool = False) -> list:
        """Decode in the child; a set ``cancel`` stops it at its next step (raises ``Cancelled``).
        With ``stream``, a lone sample's text comes back piece by piece (``report_text``)."""
        return self._request(("run", prompts, n_each, params, stream), cancel)

    # --- plumbing -----------------------------------------------------------
    def _request(self, msg: tuple, cancel: threading.Event | None) -> Any:
        if self.dead is not None:
            raise self.dead
        self._job += 1
        job = self._job
        try:
            _write(self._req, (msg[0], job) + msg[1:])
        except OSError:  # a broken pipe: the worker is gone
            self._died()
        cancel_sent = False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                try:
                    _write(self._req, ("cancel", job))
                except OSError:
                    pass
                cancel_sent = True
            if not _readable(self._resp, _POLL_S):
                if self.proc.poll() is not None:
                    self._died()
                continue
            reply = _read(self._resp)
            if reply is None:
                self._died()
            kind, rjob = reply[0], reply[1]
            if rjob != job:
                continue
            if kind == "progress":
                report_samples(reply[2])
                continue
            if kind == "text":
                report_text(reply[2])
                continue
            if kind == "tokens":
                report_tokens(reply[2])
                continue
            # a final reply: (kind, job, payload, the engine's counters)
            stats = reply[3] or {}
            self.tokens_evaluated = stats.get("evaluated", self.tokens_evaluated)
            self.tokens_generated = stats.get("generated", self.tokens_generated)
            if kind == "ok":
                return reply[2]
            if kind == "cancelled":
                raise Cancelled()
            if kind == "err":
                type_name, message = reply[2]
                raise _KNOWN_ERRORS.get(type_name, BackendError)(message)
            raise BackendError(f"local model worker for {self.spec}: unexpected reply {kind!r}")

    def _died(self) -> None:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.dead = ModelProcessDied(describe_death(self.spec, rc), rc)
        self._close_fds()
        raise self.dead

    def _close_fds(self) -> None:
        for fd in (self._req, self._resp):
            try:
                os.close(fd)
            except OSError:
                pass
        self._req = self._resp = -1

    def close(self) -> None:
        """Ask the child to exit (it also exits when the pipes close) and reap it."""
        if self._req < 0:
            return
        try:
            _write(self._req, ("exit", 0))
        except OSError:
            pass
        self._close_fds()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the child ----------------------------------------------------------------
class _PipeFlag:
    """The cancel flag the engine polls: set once a cancel for the current job arrives."""

    def __init__(self, fd: int) -> None:
        self.fd, self.job, self.set_ = fd, 0, False

    def is_set(self) -> bool:
        while not self.set_ and _readable(self.fd, 0):
            msg = _read(self.fd)
            if msg is None or msg[0] == "exit":
                os._exit(0)  # the caller is gone: nobody wants these samples
            if msg[0] == "cancel" and msg[1] == self.job:
                self.set_ = True
        return self.set_


def _tell(fd: int, msg: tuple) -> None:
    """A reply to the caller; a caller that is gone (a closed pipe) ends the child quietly:
    nobody wants these samples, and a traceback on its terminal would only alarm."""
    try:
        _write(fd, msg)
    except OSError:
        os._exit(0)


def _child(req: int, resp: int) -> None:
    from .base import on_samples_done, on_tokens
    from .llamacpp_engine import _Engine

    # Ctrl-C reaches the whole process group; the caller decides what to cancel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    flag = _PipeFlag(req)
    on_samples_done.set(lambda k: _tell(resp, ("progress", flag.job, k)))
    decoded = [0, time.monotonic()]  # tokens not yet reported, when they last were

    def tokens(k: int) -> None:  # a few messages a second, not one per decode step
        decoded[0] += k
        if time.monotonic() - decoded[1] >= _TOKENS_EVERY_S:
            _tell(resp, ("tokens", flag.job, decoded[0]))
            decoded[0], decoded[1] = 0, time.monotonic()

    on_tokens.set(tokens)
    engine = None
    while True:
        msg = _read(req)
        if msg is None or msg[0] == "exit":
            return
        kind, job = msg[0], msg[1]
        if kind == "cancel":
            continue  # arrived after its job finished
        flag.job, flag.set_ = job, False
        decoded[0], decoded[1] = 0, time.monotonic()  # a job's counts are its own
        try:
            if kind == "init":
                engine = _Engine(Path(msg[2]), msg[3], msg[4], msg[5])
                result: Any = {"n_ctx": engine.n_ctx}
            elif engine is None:
                raise BackendError("the model is not loaded")
            elif kind == "chat_tokens":
                result = engine.chat_tokens(msg[2])
            elif kind == "run":
                stream = (lambda piece, job=job: _tell(resp, ("text", job, piece))) if msg[5] else None
                result = engine.run(msg[2], msg[3], msg[4], flag, stream)
                if decoded[0]:  # the rest, before the answer: a listener's count ends exact
                    _tell(resp, ("tokens", job, decoded[0]))
            else:
                raise BackendError(f"unknown request {kind!r}")
        except Cancelled:
            _tell(resp, ("cancelled", job, None, _stats(engine)))
            continue
        except Exception as exc:  # every failure goes back to the caller as a typed error
            _tell(resp, ("err", job, (type(exc).__name__, str(exc)), _stats(engine)))
            if kind == "init":
                return
            continue
        _tell(resp, ("ok", job, result, _stats(engine)))


def _stats(engine: Any) -> dict[str, int]:
    if engine is None:
        return {}
    return {"evaluated": engine.tokens_evaluated, "generated": engine.tokens_generated}


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
