"""The terminal: live progress on stderr while a solve runs, and the result's screen after it.

A default solve runs minutes on a laptop CPU; silence for that long looks like
a hang. On a terminal this is a rich live line; elsewhere (logs, CI) one plain
line per event.
"""

from __future__ import annotations

import sys
import time

from .cascade import Event, Result


class _Status:
    """The live line's text, rendered at each refresh: its clock ticks between events, so a stage
    whose first batch decodes for minutes never looks hung."""

    def __init__(self, progress: "Progress") -> None:
        self.progress = progress

    def __rich__(self) -> str:
        return self.progress.status()


class Progress:
    def __init__(self, enabled: bool = True, notes: list[str] | None = None, console: object = None) -> None:
        self.enabled = enabled
        self.notes = notes or []
        self.t0 = time.perf_counter()
        self.live = None
        self.line = "starting"
        self.what, self.spent = "starting", 0.0
        self._console = console  # a rich Console (tests); default: stderr when it is a terminal
        # tokens decoded since the last event, and when it came (models.base.on_tokens)
        self.tokens, self.step_t0 = 0, time.perf_counter()
        self._listening = None

    def heard_tokens(self, k: int) -> None:
        self.tokens += k

    def status(self) -> str:
        """The live line now: what runs, tokens decoded in this step and their rate, what it has
        spent, and the seconds since the start."""
        now = time.perf_counter()
        decoding = ""
        if self.tokens:
            rate = self.tokens / max(now - self.step_t0, 1e-6)
            decoding = f" | {self.tokens:,} tokens, {rate:,.0f} tok/s"
        return f"{self.what}{decoding} | spent ${self.spent:.6f} | {now - self.t0:5.1f}s"

    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        from .models.base import on_tokens

        self._listening = on_tokens.set(self.heard_tokens)  # the solve's tasks and threads inherit it
        for note in self.notes:
            sys.stderr.write(f"cope: {note}\n")
        if self._console is not None or sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live
            from rich.spinner import Spinner

            self._spinner = Spinner("dots", text=_Status(self))  # type: ignore[arg-type]
            self.live = Live(self._spinner, console=self._console or Console(stderr=True), refresh_per_second=4,
                             transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
        if self._listening is not None:
            from .models.base import on_tokens

            on_tokens.reset(self._listening)
            self._listening = None

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
        self.what, self.spent = what, e.cost_usd
        self.tokens, self.step_t0 = 0, time.perf_counter()
        self.line = f"{what} | spent ${e.cost_usd:.6f} | {elapsed:5.1f}s"
        if self.live is not None:
            if e.kind == "done":
                self.live.console.print(f"[dim]{self.line}[/dim]")
        else:
            sys.stderr.write(f"cope: {self.line}\n")
            sys.stderr.flush()


# The final screen (stdout): the answer, the deciding stage, each stage's votes and the calls.


def similar_groups(texts: list[str], cutoff: float = 0.85) -> list[tuple[int, int]]:
    """(index of the first, how many) per group of near-identical texts (difflib ratio >= cutoff,
    compared on lower-cased words): eight goals that say the same thing read as one line."""
    from difflib import SequenceMatcher

    norm = [" ".join(t.lower().split()) for t in texts]
    groups: list[list[int]] = []
    for i, t in enumerate(norm):
        for g in groups:
            if SequenceMatcher(None, norm[g[0]], t).ratio() >= cutoff:
                g.append(i)
                break
        else:
            groups.append([i])
    return [(g[0], len(g)) for g in groups]


def large_alone_estimate(r: Result, price: object) -> tuple[float, str] | None:
    """What the large model alone would have cost for this problem, at its price row, and how it was
    estimated: its own unplanned-sized call when the cascade made one, else one sample the size of
    the first stage's average (an estimate either way: the request would differ)."""
    execs = [c for c in r.calls if c.role == "execute"]
    if not execs or price is None:
        return None
    own = [c for c in execs if c.who == "large"]
    if own:
        c = own[0]
        prompt, completion = c.prompt_tokens / max(c.n, 1), c.completion_tokens / max(c.n, 1)
        how = "from the large model's own call here"
    else:
        first = [c for c in execs if c.stage == execs[0].stage]
        n = sum(max(c.n, 1) for c in first)
        prompt = sum(c.prompt_tokens for c in first) / n
        completion = sum(c.completion_tokens for c in first) / n
        how = "from the size of one stage-1 sample"
    return price.cost(round(prompt), round(completion)), how  # type: ignore[attr-defined]


def print_result(r: Result, n_stages: int, *, large_price: object = None, verbose: bool = False) -> None:
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
        groups = [(i, 1) for i in range(len(r.plans))] if verbose else similar_groups([p.text for p in r.plans])
        for i, count in groups:
            p = r.plans[i]
            label = p.name or f"stage {p.stage}"
            more = f" [dim](and {count - 1} near-identical; --verbose lists them)[/dim]" if count > 1 else ""
            con.print(f"  {label} ({p.kind}, {p.model}): {p.text}{more}")
    models = dict.fromkeys(f"{c.who} = {c.model}" for c in r.calls)
    t = Table(title="model calls (" + ", ".join(models) + ")", show_lines=False)
    for col in ("stage", "role", "model", "n", "prompt", "completion", "USD", "s"):
        t.add_column(col, justify="right" if col not in ("role", "model") else "left")
    for c in r.calls:
        t.add_row(str(c.stage), c.role, c.who, str(c.n), str(c.prompt_tokens), str(c.completion_tokens),
                  f"{c.cost_usd:.6f}", f"{c.latency_s:.1f}")
    con.print(t)
    con.print(f"[bold]cost:[/bold] ${r.cost_usd:.6f}   [bold]time:[/bold] {r.latency_s:.1f}s")
    alone = large_alone_estimate(r, large_price)
    if alone is not None:
        con.print(f"[dim]the large model alone: about ${alone[0]:.6f} for this problem at the same price row "
                  f"(an estimate, {alone[1]})[/dim]")
    for note in r.info.get("pricing", []) or []:
        con.print(f"[dim]note: {note}[/dim]")
