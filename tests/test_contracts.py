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
    from cope.agent.task import AgentTask
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


# --- one solver configuration: built and refused the same way by the library, eval and the server ---

@pytest.mark.parametrize("bad, message", [
    ({"n": 0}, "n must be an integer >= 1, got 0"),
    ({"tau1": 1.5}, "tau1 must be a number in [0, 1], got 1.5"),
    ({"tau2": float("nan")}, "tau2 must be a number in [0, 1], got nan"),
    ({"max_tokens": 0}, "max_tokens must be an integer >= 1, got 0"),
    ({"method": "nosuch"}, "unknown method 'nosuch'"),
])
def test_every_entry_point_refuses_a_bad_setting_with_the_same_words(tmp_path, bad, message):
    from cope.eval.runner import EvalConfig, run_eval
    from cope.serve import load_config
    from cope.solver import SolverConfig

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SolverConfig(**bad).validate()
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Cope(small=PartlyRight("local/a"), large=PartlyRight("local/b"), large_price_as="gpt-4o-mini",
             prices=PriceTable.load(), **bad)
    key, v = next(iter(bad.items()))
    if v == v:  # (a TOML nan is refused earlier, as a non-finite number)
        cfg = tmp_path / "serve.toml"
        cfg.write_text(f"[presets.x]\nsmall = \"local/qwen2.5-coder-0.5b\"\nlarge = \"local/qwen2.5-coder-1.5b\"\n"
                       f"{key} = {repr(v).replace(chr(39), chr(34))}\n")
        with pytest.raises(ConfigError, match="preset 'x': " + message.replace("[", r"\[").replace("]", r"\]")):
            load_config(cfg, environ={})
    if "method" not in bad:  # eval names unknown methods before it reads their options
        ev = {k: v for k, v in bad.items()}
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            run_eval(EvalConfig(benchmark="gsm", methods=["cope"], limit=1, **ev), tmp_path / "run", progress=False)


def test_the_solver_configuration_is_what_each_entry_point_runs(tmp_path):
    from cope.eval.runner import EvalConfig
    from cope.methods import load_preset
    from cope.serve.config import Preset
    from cope.solver import SolverConfig

    code = get_task("code")
    assert [st.threshold for st in SolverConfig().cascade(code).stages] == [1.0, 1.0, None]
    assert [st.threshold for st in SolverConfig(tau1=0.5).cascade(code).stages][0] == 0.5
    preset = tmp_path / "p.toml"
    preset.write_text("[preset]\nname = 'p'\nbase = 'cope'\nstages = [1, 3]\ntau1 = 0.6\nn = 4\n")
    from_file = SolverConfig(preset_file=str(preset)).validate().cascade(get_task("math"))
    assert from_file == load_preset(preset).config().for_family("math") and len(from_file.stages) == 2
    p = Preset(name="x", small="local/a", large="local/b", task="code", n=4, tau1=None)
    assert p.solver == SolverConfig(n=4) and p.thresholds() == [1.0, 1.0, None]
    assert EvalConfig(benchmark="gsm", methods=["cope"], n=4).solver("cope").n == 4


def test_a_capped_copy_of_a_cope_leaves_the_original_running_its_own_cascade():
    """The server caps max_tokens on a shallow copy; the copy's cascade must not leak into the original."""
    import copy
    from dataclasses import replace

    c = Cope(small=PartlyRight("local/a"), large=PartlyRight("local/b"), large_price_as="gpt-4o-mini",
             prices=PriceTable.load(), n=2)
    math_task = get_task("math")
    before = c.config_for(math_task)
    capped = copy.copy(c)
    capped.config = replace(before, stages=tuple(replace(st, max_tokens=7) for st in before.stages))
    assert all(st.max_tokens == 7 for st in capped.config_for(math_task).stages)
    assert c.config_for(math_task) == before and c.config_for(math_task).stages[0].max_tokens == 512
