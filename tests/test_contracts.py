"""One rule per concept: each of these was written in several places and the copies drifted.

Every test here failed before its rule had one home: task-default thresholds
applied only by the command lines, the default large model's price row decided
three times, method options swallowed, a benchmark's family declared twice,
the accept rule and the majority tie-break written three times each, and the
server building code problems by hand. Control flow runs on scripted models;
nothing here depends on what a model writes.
"""

from __future__ import annotations

import numpy as np
import pytest

from cope import Cope
from cope.errors import ConfigError
from cope.methods import method_config
from cope.models.base import Completion, Generation
from cope.pricing import PriceTable
from cope.tasks import get_task


class PartlyRight:
    """Writes ``add`` that passes three of a stub's four docstring examples (wrong for 0 + 0)."""

    def __init__(self, spec: str) -> None:
        self.spec, self.calls = spec, 0

    async def generate(self, messages, params):
        self.calls += 1
        text = "```python\ndef add(a, b):\n    return a + b if (a, b) != (0, 0) else 1\n```"
        return Generation([Completion(text, 20) for _ in range(params.n)], 10, 20 * params.n, 0.01, self.spec)

    async def generate_many(self, prompts, params):
        return [await self.generate(p, params) for p in prompts]


STUB = ('def add(a, b):\n    """Sum.\n    >>> add(1, 2)\n    3\n    >>> add(2, 2)\n    4\n    >>> add(5, 1)\n'
        '    6\n    >>> add(0, 0)\n    0\n    """\n')


def test_the_library_accepts_code_only_when_every_visible_test_passes():
    """Cope(...).solve(stub, task="code") used to accept at the paper's 0.75 (three of four tests)."""
    small, large = PartlyRight("local/a"), PartlyRight("local/b")
    c = Cope(small=small, large=large, large_price_as="gpt-4o-mini", prices=PriceTable.load(), n=2)
    assert [st.threshold for st in c.config_for(get_task("code")).stages] == [1.0, 1.0, None]
    assert [st.threshold for st in c.config_for(get_task("math")).stages] == [0.75, 0.5, None]
    r = c.solve(STUB, task="code", seed=1)
    assert r.stages[0].confidence == pytest.approx(0.75) and r.stage == 3  # 3/4 is not enough: escalated
    given = Cope(small=PartlyRight("local/a"), large=PartlyRight("local/b"), tau1=0.75, tau2=0.5, n=2,
                 large_price_as="gpt-4o-mini", prices=PriceTable.load())
    assert given.solve(STUB, task="code", seed=1).stage == 1  # thresholds a caller gives still win


def test_a_served_code_preset_runs_the_code_thresholds():
    from cope.serve import load_config

    cards = {name: p.thresholds() for name, p in load_config(None, environ={}).presets.items()}
    assert cards["cope-code"] == [1.0, 1.0, None] and cards["cope-math"] == [0.75, 0.5, None]


def test_the_default_large_models_price_row_is_decided_once():
    from cope.api import DEFAULT_LARGE, default_large_price_as
    from cope.eval.runner import EvalConfig

    assert default_large_price_as(DEFAULT_LARGE) == "gpt-4o-mini"
    assert EvalConfig("gsm", ["large"]).large_price_as == "gpt-4o-mini"
    # a non-default large model is charged at its own row (it used to be charged as gpt-4o-mini)
    assert EvalConfig("gsm", ["large"], large="openai/gpt-4o").large_price_as is None
    assert EvalConfig("gsm", ["large"], large="openai/gpt-4o", large_price_as="gpt-4o-mini").large_price_as \
        == "gpt-4o-mini"
    assert EvalConfig.from_dict({"benchmark": "gsm", "methods": ["large"], "large_price_as": None}).large_price_as \
        is None  # a stored run keeps what it was charged at


def test_a_misspelt_method_option_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="method 'cope' has no option 'tua1'"):
        method_config("cope", tua1=0.3)
    with pytest.raises(ConfigError, match="has no option 'window'"):
        method_config("large", window=2)
    method_config("large", n=8, tau1=0.5, tau2=0.5, max_tokens=64)  # the common options reach every method


def test_a_benchmarks_family_is_declared_once():
    from cope.benchmarks.registry import LOADERS, benchmark_task, load_benchmark

    for name in ("gsm", "humaneval", "mtbench", "textworld:coin_collector"):
        assert load_benchmark(name, limit=2).task == benchmark_task(name), name
    assert set(LOADERS) <= {"gsm", "arith", "champ", "humaneval", "mtbench"}
    assert benchmark_task("gsm", "math-pot") == load_benchmark("gsm", limit=1, task="math-pot").task == "math-pot"


def test_replay_of_a_strict_cascade_agrees_with_live():
    from cope.cascade import CascadeConfig, Stage
    from cope.eval.metrics import replayed
    from cope.eval.replay import Recorded, sweep

    live = CascadeConfig(stages=(Stage(executor="small", n=4, threshold=0.5), Stage(executor="large", n=1)),
                         strict=True)
    assert not live.accepts(0.5, 0.5) and live.accepts(0.75, 0.5)
    row = {"correct": False, "answer": "9", "stages": [
        {"confidence": 0.5, "correct": False, "answer": "9", "cost_usd": 0.0, "latency_s": 1.0},
        {"confidence": 1.0, "correct": True, "answer": "7", "cost_usd": 1.0, "latency_s": 1.0}]}
    assert replayed(row, 0.5, strict=True)["stage"] == 2 and replayed(row, 0.5)["stage"] == 1
    conf = np.array([[0.5, 0.5, 1.0]])
    rec = Recorded(["p"], conf, np.array([[False, False, True]]), np.array([[0.0, 0.0, 1.0]]), np.zeros((1, 3)), 8,
                   True, strict=True)
    out = sweep(rec, np.array([0.5]), np.array([0.5]))
    assert out["accuracy"][0, 0] == 1.0  # strict: 0.5 does not pass 0.5 at stages 1 and 2; stage 3 answers
    loose = Recorded(rec.ids, conf, rec.correct, rec.cost, rec.plan_cost, 8, True)
    assert sweep(loose, np.array([0.5]), np.array([0.5]))["accuracy"][0, 0] == 0.0


def test_every_vote_breaks_ties_the_same_way():
    from cope.eval.replay import _vote
    from cope.stopping import leader
    from cope.tasks.agent import AgentTask
    from cope.tasks.base import Problem
    from cope.tasks.math import vote

    assert leader(["b", "a", "a", "b"])[0] == "b"  # a tie goes to the key drawn first
    assert _vote([0, 1, 1, 0], {"0": True, "1": False}, 4) == (0.5, True)  # ids follow first appearance
    a = vote(["\\boxed{3}", "\\boxed{2}", "\\boxed{2}", "\\boxed{3}"], ["3", "2", "2", "3"])
    assert a.answer == "3"
    agent = AgentTask()
    problem = Problem(text="room", meta={"admissible_actions": ["go north", "take key"]})
    got = agent.assess(problem, [Completion(t, 3) for t in ("take key", "go north", "go north", "take key")])
    assert got.answer == "take key"


def test_a_stub_posted_to_the_server_gets_its_docstring_tests():
    from cope.serve.protocol import ChatRequest, RequestError, to_problem

    body = ChatRequest.model_validate({"model": "cope-code", "messages": [{"role": "user", "content": STUB}]})
    p = to_problem(body, system="drop", max_chars=10_000, max_messages=8, task=get_task("code"))
    assert len(p.tests) == 4 and p.entry_point == "add"
    given = ChatRequest.model_validate({"model": "cope-code", "messages": [{"role": "user", "content": STUB}],
                                        "cope": {"tests": ["assert add(1, 1) == 2"]}})
    assert to_problem(given, system="drop", max_chars=10_000, max_messages=8, task=get_task("code")).tests == \
        ("assert add(1, 1) == 2",)
    broken = ChatRequest.model_validate({"model": "cope-code", "messages": [{"role": "user", "content": STUB}],
                                         "cope": {"tests": ["assert ("]}})
    with pytest.raises(RequestError, match="not valid Python") as err:  # the CLI's check, as a 400
        to_problem(broken, system="drop", max_chars=10_000, max_messages=8, task=get_task("code"))
    assert err.value.status == 400
