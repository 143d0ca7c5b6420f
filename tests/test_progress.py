"""The live line: its clock ticks between events, so a long first batch never looks hung."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from cope.cascade import Event
from cope.progress import Progress


def test_the_live_clock_advances_with_no_event():
    buf = io.StringIO()
    with Progress(console=Console(file=buf, force_terminal=True, width=120)) as p:
        p.on_event(Event("execute", 1, 3, "small", 0, 8, 0.0, "samples"))
        time.sleep(1.4)  # no event: a batch decoding
    shown = buf.getvalue()
    clocks = {float(x) for x in re.findall(r"\| +(\d+\.\d)s", shown)}
    assert "stage 1/3: small model solving, 0/8 samples" in shown
    assert max(clocks) - min(clocks) >= 0.9  # the seconds moved while nothing happened


def test_without_a_terminal_each_event_is_one_plain_line(capsys):
    with Progress() as p:
        p.on_event(Event("stage", 1, 2, "small", 0, 4, 0.0, ""))
    err = capsys.readouterr().err
    assert err.startswith("cope: stage 1/2 started | spent $0.000000 |") and err.count("\n") == 1


def test_near_identical_goals_read_as_one_line():
    from cope.progress import similar_groups

    goals = ["Find the total number of clips sold.", "Find the total number of clips  sold", "Compute 48 / 2 first.",
             "find the total number of clips sold!"]
    assert similar_groups(goals) == [(0, 3), (2, 1)]


def test_the_final_screen_states_what_large_alone_would_have_cost():
    from cope.cascade import CallRecord, Result
    from cope.pricing import PriceTable
    from cope.progress import large_alone_estimate

    price = PriceTable.load().get("gpt-4o-mini")
    calls = [CallRecord(1, "execute", "local/s", "small", 8, 800, 1600, 0.0, 1.0)]
    r = Result(answer="4", stage=1, confidence=1.0, cost_usd=0.0, calls=calls, plans=[], stages=[], output="4",
               task="math", latency_s=1.0)
    usd, how = large_alone_estimate(r, price)
    assert usd == price.cost(100, 200) and "stage-1 sample" in how
    r.calls.append(CallRecord(3, "execute", "openai/l", "large", 1, 150, 90, price.cost(150, 90), 1.0))
    assert large_alone_estimate(r, price)[0] == price.cost(150, 90)


def test_a_token_counter_runs_while_a_batch_decodes(smol):
    """A real SmolLM2 batch: the live line counts tokens and their rate before the samples finish."""
    import asyncio

    from cope.models.base import GenParams

    buf = io.StringIO()
    with Progress(console=Console(file=buf, force_terminal=True, width=160)) as p:
        p.on_event(Event("execute", 1, 1, "small", 0, 4, 0.0, "samples"))
        gen = asyncio.run(smol.generate([{"role": "user", "content": "Tell me a long story about a ship."}],
                                        GenParams(n=4, temperature=0.8, max_tokens=96, seed=1)))
        time.sleep(0.3)  # a refresh after the last report
    shown = buf.getvalue()
    counts = [int(x.replace(",", "")) for x in re.findall(r"\| ([\d,]+) tokens, [\d,]+ tok/s", shown)]
    assert len(set(counts)) >= 2  # it moved while decoding
    assert counts == sorted(counts) and counts[-1] == gen.completion_tokens  # and ends at the tokens generated
    clocks = [float(x) for x in re.findall(r"tok/s \| spent \$[\d.]+ \| +(\d+\.\d)s", shown)]
    assert max(clocks) - min(clocks) >= 0.4  # and the clock ticked through the decode
