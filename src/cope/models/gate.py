"""Rate limits an API model's requests share: per-minute caps and a server's Retry-After.

An API allows so many requests and tokens per minute per model, for the
account, however many processes send them. A gate is where every request to
an API model asks to go: :class:`RateGate` answers how long it must wait
(a sliding minute of what was admitted, and any pause a 429 asked for), and
books it. One process holds one gate in ``request_gate``; a run spread over
machines holds one on its driver, and its workers ask it remotely
(``cope.eval.distributed``), so a 429 seen by one worker pauses them all.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextvars import ContextVar
from typing import Callable, Protocol

from ..errors import ConfigError

WINDOW_S = 60.0


class Gate(Protocol):
    async def admit(self, spec: str, tokens: int) -> None: ...
    def rate_limited(self, spec: str, seconds: float) -> None: ...


# the gate requests to API models go through (None: no shared limit, each request on its own)
request_gate: ContextVar[Gate | None] = ContextVar("cope_request_gate", default=None)


class RateGate:
    """Requests and tokens per minute, per API model, and pauses a server asked for.

    ``wait_s`` books a request at the earliest moment it fits and says how far
    away that is, so callers sleep outside any lock and concurrent callers get
    distinct slots instead of all waking at once.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, v in (("rpm", rpm), ("tpm", tpm)):
            if v is not None and not v > 0:
                raise ConfigError(f"--{name} must be a positive number, got {v}")
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self._admitted: dict[str, deque[tuple[float, int]]] = {}
        self._paused_until: dict[str, float] = {}
        self.waited_s = 0.0  # total time callers were asked to wait (a run's summary shows it)
        self.pauses = 0  # 429s that paused the gate

    def wait_s(self, spec: str, tokens: int) -> float:
        now = self.clock()
        q = self._admitted.setdefault(spec, deque())
        while q and q[0][0] <= now - WINDOW_S:
            q.popleft()
        t = max(now, self._paused_until.get(spec, now))
        # a request larger than the whole per-minute allowance goes alone, into an empty minute
        tokens_cap = max(self.tpm, tokens) if self.tpm is not None else None
        for start, _ in list(q):
            inside = [(s, k) for s, k in q if s > t - WINDOW_S]
            fits_rpm = self.rpm is None or len(inside) < self.rpm
            fits_tpm = tokens_cap is None or sum(k for _, k in inside) + tokens <= tokens_cap
            if fits_rpm and fits_tpm:
                break
            t = max(t, start + WINDOW_S)  # wait until the oldest booking leaves the minute
        q.append((t, tokens))
        # bookings in the future can be out of order after a pause; keep the window sorted
        if len(q) > 1 and q[-2][0] > t:
            items = sorted(q)
            q.clear()
            q.extend(items)
        wait = t - now
        self.waited_s += wait
        return wait

    def pause(self, spec: str, seconds: float) -> None:
        self.pauses += 1
        until = self.clock() + max(0.0, seconds)
        self._paused_until[spec] = max(self._paused_until.get(spec, 0.0), until)

    # Gate, in this process
    async def admit(self, spec: str, tokens: int) -> None:
        wait = self.wait_s(spec, tokens)
        if wait > 0:
            await asyncio.sleep(wait)

    def rate_limited(self, spec: str, seconds: float) -> None:
        self.pause(spec, seconds)
