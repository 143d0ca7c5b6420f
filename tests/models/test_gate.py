"""Per-minute rate limits and shared 429 pauses (cope.models.gate), and the local engine honouring them."""

from __future__ import annotations

import json

import pytest

from cope.errors import ConfigError
from cope.models.gate import RateGate
from fault_server import FaultServer, Reply


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_requests_per_minute_slide_with_the_window():
    clock = Clock()
    g = RateGate(rpm=3, clock=clock)
    assert [g.wait_s("m", 10) for _ in range(3)] == [0, 0, 0]
    assert g.wait_s("m", 10) == pytest.approx(60)  # the 4th waits for the 1st to leave the minute
    assert g.wait_s("m", 10) == pytest.approx(60)  # booked beside it: the window holds 3 again at t+60
    assert g.wait_s("other", 10) == 0  # limits are per model
    clock.t += 61
    assert g.wait_s("m", 10) == 0  # the minute now holds the two booked at t+60: room for one
    assert g.wait_s("m", 10) == pytest.approx(59)  # full until those two leave it, at t+120


def test_tokens_per_minute_and_a_request_larger_than_the_allowance():
    clock = Clock()
    g = RateGate(tpm=1000, clock=clock)
    assert g.wait_s("m", 600) == 0
    assert g.wait_s("m", 600) == pytest.approx(60)  # 1200 > 1000 within one minute
    clock.t += 200
    assert g.wait_s("m", 5000) == 0  # alone in an empty minute, it goes
    assert g.wait_s("m", 1) == pytest.approx(60)


def test_a_pause_holds_everyone_until_it_ends():
    clock = Clock()
    g = RateGate(clock=clock)  # no caps: only pauses
    g.pause("m", 2.5)
    assert g.wait_s("m", 1) == pytest.approx(2.5)
    assert g.wait_s("m", 1) == pytest.approx(2.5)
    assert g.wait_s("n", 1) == 0
    clock.t += 3
    assert g.wait_s("m", 1) == 0
    assert g.pauses == 1 and g.waited_s == pytest.approx(5.0)


@pytest.mark.parametrize("kw", [{"rpm": 0}, {"tpm": -5}])
def test_a_cap_must_be_positive(kw):
    with pytest.raises(ConfigError, match="must be a positive number"):
        RateGate(**kw)


def test_the_local_engine_pauses_its_other_requests_on_a_429(tmp_path):
    """Two problems in flight at once against a loopback API; the second request gets a 429 with
    Retry-After 1.2 s, and no request, from either problem, reaches the server before it is up."""
    from cope.eval.runner import EvalConfig, run_eval

    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1), "uid": f"q{i}"})
                              for i in range(6)) + "\n")
    script = [Reply(delay_s=0.05), Reply(429, headers={"Retry-After": "1.2"}), Reply(delay_s=0.05)]
    with FaultServer(script) as srv:
        cfg = EvalConfig(benchmark=f"jsonl:{data}", methods=["large"], small="local/smollm2-135m",
                         large="openai/fault-model", large_price_as="gpt-4o", large_base_url=srv.base_url,
                         mapping={"id": "uid"}, n=1, max_tokens=16, concurrency=3, rpm=1000, seed=1)
        s = run_eval(cfg, tmp_path / "run", use_cache=False, progress=False)
        seen = list(srv.seen)
    assert s["this_invocation"]["succeeded"] == 6 and len(seen) == 7
    refused = seen[1].at
    # requests already on their way when the 429 came back cannot be recalled (at most the other two
    # in flight); every later one waits out the Retry-After, where without the gate they follow at once
    sent_after = [round(r.at - refused, 2) for r in seen[2:] if r.at - refused > 0.04]
    assert len(sent_after) >= 3 and min(sent_after) >= 1.15, sent_after
