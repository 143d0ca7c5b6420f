"""The terminal: live progress on stderr while a solve runs, and the result's screen after it.

A default solve runs minutes on a laptop CPU; silence for that long looks like
a hang. On a terminal this is a rich live line; elsewhere (logs, CI) one plain
line per event.
"""

from __future__ import annotations

import sys
import time

from .cascade import Event, Result


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


# The final screen (stdout): the answer, the deciding stage, each stage's votes and the calls.


def print_result(r: Result, n_stages: int) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]answer:[/bold] {r.answer if r.answer is not None else '(none found)'}")
    st = r.stages[-1]
    thr = "final stage" if st.threshold is None else f"threshold {st.threshold:g}"
    con.print(f"[bold]stage:[/bold] {r.stage} of {n_stages}  (confidence {r.confidence:.2f}, {thr})")
    for s in r.stages:
        if r.task == "code":  # the samples are programs: show how many tests each passed
            votes = ", ".join(str(p) for p in s.info.get("tests_passed", []))
        else:
            votes = ", ".join("-" if a is None else a for a in s.extracted)
        label = {"open": "perplexities", "code": "visible tests passed"}.get(r.task, "votes")
        shown = s.answer if r.task == "math" or s.answer is None else f"{len(s.answer)} chars"
        drawn = f"x{s.n}" if not s.drawn or s.drawn >= s.n else f"x{s.drawn} of {s.n} (stopped early)"
        con.print(f"  stage {s.stage}: {s.executor} {drawn} -> {shown} "
                  f"(confidence {s.confidence:.2f}{', accepted' if s.accepted else ''}) {label}: {votes}")
    if r.plans:
        con.print("[bold]plans:[/bold]")
        for p in r.plans:
            label = p.name or f"stage {p.stage}"
            con.print(f"  {label} ({p.kind}, {p.model}): {p.text}")
    models = dict.fromkeys(f"{c.who} = {c.model}" for c in r.calls)
    t = Table(title="model calls (" + ", ".join(models) + ")", show_lines=False)
    for col in ("stage", "role", "model", "n", "prompt", "completion", "USD", "s"):
        t.add_column(col, justify="right" if col not in ("role", "model") else "left")
    for c in r.calls:
        t.add_row(str(c.stage), c.role, c.who, str(c.n), str(c.prompt_tokens), str(c.completion_tokens),
                  f"{c.cost_usd:.6f}", f"{c.latency_s:.1f}")
    con.print(t)
    con.print(f"[bold]cost:[/bold] ${r.cost_usd:.6f}   [bold]time:[/bold] {r.latency_s:.1f}s")
    for note in r.info.get("pricing", []) or []:
        con.print(f"[dim]note: {note}[/dim]")
