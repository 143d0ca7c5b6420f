"""Live progress on stderr: stage, samples, spend so far, elapsed time.

A default solve runs minutes on a laptop CPU; silence for that long looks like
a hang. On a terminal this is a rich live line; elsewhere (logs, CI) one plain
line per event.
"""

from __future__ import annotations

import sys
import time

from .cascade import Event


class Progress:
    def __init__(self, enabled: bool = True, notes: list[str] | None = None) -> None:
        self.enabled = enabled
        self.notes = notes or []
        self.t0 = time.perf_counter()
        self.live = None
        self.line = "starting"

    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        for note in self.notes:
            sys.stderr.write(f"cope: {note}\n")
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live
            from rich.spinner import Spinner

            self._spinner = Spinner("dots", text=self.line)
            self.live = Live(self._spinner, console=Console(stderr=True), refresh_per_second=4, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def on_event(self, e: Event) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        what = {
            "stage": f"stage {e.stage}/{e.n_stages} started",
            "plan": f"stage {e.stage}/{e.n_stages}: {e.who} model planning, {e.done}/{e.total} {e.message}",
            "execute": f"stage {e.stage}/{e.n_stages}: {e.who} model solving, {e.done}/{e.total} {e.message}",
            "done": f"stage {e.stage}/{e.n_stages}: {e.message}",
        }[e.kind]
        self.line = f"{what} | spent ${e.cost_usd:.6f} | {elapsed:5.1f}s"
        if self.live is not None:
            self._spinner.update(text=self.line)
            if e.kind == "done":
                self.live.console.print(f"[dim]{self.line}[/dim]")
        else:
            sys.stderr.write(f"cope: {self.line}\n")
            sys.stderr.flush()
