"""``/metrics``: what an operator scrapes (Prometheus text format), one registry per app.

Counted where the facts are: requests and their HTTP status at the route, the
stage that answered and the solve's seconds when a solve ends, dollars when a
model call is charged (so a failed or abandoned solve's spend is counted like
the ledger counts it). Labels are preset names, key *names* (never secrets)
and tier names: all from the server's config, none from a client's text, so a
client cannot grow the label set. With ``--workers K`` each worker process
counts its own requests (scrape with ``--workers 1``, or sum what you scrape).
"""

from __future__ import annotations

from typing import Any, Callable


class Metrics:
    """The server's counters, histograms and gauges in a registry of its own (not the global one)."""

    def __init__(self, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("cope_requests", "Chat completion requests, by preset and HTTP status",
                                ["preset", "status"], registry=r)
        self.solve_seconds = Histogram("cope_solve_seconds", "Seconds per finished solve, by preset", ["preset"],
                                       buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600), registry=r)
        self.stage = Counter("cope_stage_reached", "Finished solves by the stage that answered",
                             ["preset", "stage"], registry=r)
        self.escalations = Counter("cope_escalations", "Finished solves answered after stage 1", ["preset"],
                                   registry=r)
        self.spend = Counter("cope_spend_usd", "USD charged to client keys, by key and tier", ["key", "tier"],
                             registry=r)
        Gauge("cope_running", "Solves holding a slot", registry=r).set_function(running)
        Gauge("cope_waiting", "Admitted requests waiting for a slot (the queue depth)",
              registry=r).set_function(waiting)

    def solved(self, preset: str, result: Any) -> None:
        self.solve_seconds.labels(preset).observe(float(result.latency_s))
        self.stage.labels(preset, str(result.stage)).inc()
        if result.stage > 1:
            self.escalations.labels(preset).inc()
        else:
            self.escalations.labels(preset)  # the series exists at 0: a rate over it is defined

    def charged(self, key: str, tier: str, usd: float) -> None:
        if usd > 0:
            self.spend.labels(key, tier).inc(usd)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
