"""Human-readable rendering of a Result for the terminal."""

from __future__ import annotations

from .cascade import Result


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
