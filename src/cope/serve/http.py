"""The server's HTTP protocol: uvicorn's h11 with a deadline for a new connection's headers.

A module of its own so that uvicorn can import it by name in each worker
process (``cope serve --workers K`` spawns them, and a class defined inside a
function cannot travel there).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds a new connection has to send a request's headers; then the server closes it, so idle
# or half-open connections (a slowloris) cannot pile up. Keep-alive idling is uvicorn's own timeout.
HEADER_TIMEOUT_S = 10.0


class HeaderTimedH11(H11Protocol):
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._cope_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._cope_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self._cope_deadline is not None:
            self._cope_deadline.cancel()  # a request has started: its body has its own limit
            self._cope_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._cope_deadline is not None:
            self._cope_deadline.cancel()
            self._cope_deadline = None
        super().connection_lost(exc)

    def _cope_too_slow(self) -> None:
        self._cope_deadline = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()
