"""The cascade engine over real SmolLM2 generations.

Thresholds force each path: 0 always accepts, NEVER never does. A recording
wrapper keeps the prompts each model received (generations are real), so the
g_S / g_L flow into later prompts is checked on the actual messages.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest

from cope.tasks import get_task
from recording import Recording

from cope.api import Cope
from cope.cascade import NEVER, Cascade
from cope.errors import ConfigError
from cope.methods import cope as cope_preset
from cope.pricing import PriceTable

PROBLEM = "A baker makes 12 muffins and sells 5 of them. How many muffins are left?"
N = 2


def run(smol, tau1, tau2, seed=5):
    small = Recording(smol, "local/smollm2-135m")
    large = Recording(smol, "local/smollm2-135m-as-large")
    prices = PriceTable.load()
    c = Cope(small=small, large=large, n=N, max_tokens=48, large_price_as="gpt-4o-mini", prices=prices)
    stages = cope_preset(n=N, max_tokens=48).stages
    stages = (replace(stages[0], threshold=tau1), replace(stages[1], threshold=tau2), stages[2])
    c.config = replace(c.config, stages=stages)
    return c, c.solve(PROBLEM, seed=seed), small, large


def counts(result):
    return Counter((c.stage, c.role, c.who) for c in result.calls)


def test_stage1_accepts(smol):
    c, r, small, large = run(smol, tau1=0.0, tau2=0.0)
    assert r.stage == 1
    assert counts(r) == {(1, "plan", "small"): 1, (1, "execute", "small"): N}
    assert [c.n for c in r.calls] == [N] + [1] * N  # n goals, one execution per goal
    assert large.prompts == []
    assert r.cost_usd == 0.0  # only the free small model ran
    goals = [p for p in r.plans if p.kind == "goal"]
    assert len(goals) == N
    # each execution prompt carries exactly one of the goals
    exec_prompts = small.prompts[1:]
    for g, prompt in zip(goals, exec_prompts):
        assert g.text in prompt


@pytest.mark.slow
def test_stage2_flow_keeps_goal_from_majority(smol):
    c, r, small, large = run(smol, tau1=NEVER, tau2=0.0)
    assert r.stage == 2
    assert counts(r) == {
        (1, "plan", "small"): 1, (1, "execute", "small"): N,
        (2, "plan", "large"): 1, (2, "execute", "small"): 1,
    }
    names = {p.name: p for p in r.plans if p.name}
    g_s, g_l = names["g_S"], names["g_L"]
    assert g_s.kind == "goal" and g_s.stage == 1 and g_s.model == "local/smollm2-135m"
    assert g_l.kind == "guideline" and g_l.stage == 2 and g_l.model == "local/smollm2-135m-as-large"
    # g_S is a goal whose execution voted with stage 1's majority
    s1 = r.stages[0]
    goals = [p for p in r.plans if p.kind == "goal"]
    idx = [p.text for p in goals].index(g_s.text)
    from cope.tasks.math import answers_equal
    if s1.answer is not None:
        assert answers_equal(s1.extracted[idx], s1.answer)
    # stage 2's executor saw both plans; the large planner saw only the problem
    stage2_exec = small.prompts[-1]
    assert g_s.text in stage2_exec and g_l.text in stage2_exec
    assert "Goal:" in stage2_exec and "Guideline:" in stage2_exec
    assert len(large.prompts) == 1 and PROBLEM in large.prompts[0]
    # the large model's planning call is priced as gpt-4o-mini
    plan_call = next(x for x in r.calls if x.who == "large")
    price = PriceTable.load().get("gpt-4o-mini")
    assert plan_call.cost_usd == pytest.approx(price.cost(plan_call.prompt_tokens, plan_call.completion_tokens))
    assert plan_call.cost_usd > 0
    assert r.cost_usd == pytest.approx(sum(x.cost_usd for x in r.calls))


@pytest.mark.slow
def test_stage3_reuses_guideline_only(smol):
    c, r, small, large = run(smol, tau1=NEVER, tau2=NEVER)
    assert r.stage == 3
    assert counts(r) == {
        (1, "plan", "small"): 1, (1, "execute", "small"): N,
        (2, "plan", "large"): 1, (2, "execute", "small"): 1,
        (3, "execute", "large"): 1,
    }
    final = r.calls[-1]
    assert final.n == 1 and final.who == "large"
    names = {p.name: p for p in r.plans if p.name}
    stage3_prompt = large.prompts[-1]
    assert names["g_L"].text in stage3_prompt
    assert names["g_S"].text not in stage3_prompt
    # one sample agrees with itself, when it gave an answer (an unboxed one must end its text)
    assert r.confidence == (1.0 if r.answer is not None else 0.0)
    # cost: totals equal the per-call records, per stage and overall
    assert r.cost_usd == pytest.approx(sum(x.cost_usd for x in r.calls))
    assert sum(s.cost_usd for s in r.stages) == pytest.approx(r.cost_usd)
    large_cost = sum(x.cost_usd for x in r.calls if x.who == "large")
    assert large_cost == pytest.approx(r.cost_usd) and large_cost > 0
    d = r.to_dict()
    assert d["tokens"]["large"]["plan"]["prompt"] == sum(
        x.prompt_tokens for x in r.calls if x.who == "large" and x.role == "plan")
    assert [s["accepted"] for s in d["stages"]] == [False, False, True]


@pytest.mark.slow
def test_same_seed_same_result(smol):
    _, a, _, _ = run(smol, tau1=NEVER, tau2=0.0, seed=9)
    _, b, _, _ = run(smol, tau1=NEVER, tau2=0.0, seed=9)
    assert a.answer == b.answer
    assert [p.text for p in a.plans] == [p.text for p in b.plans]
    assert [(x.prompt_tokens, x.completion_tokens) for x in a.calls] == [
        (x.prompt_tokens, x.completion_tokens) for x in b.calls]


def test_strict_comparison_is_configurable(smol):
    # with ">" a stage at tau1 = 0 still accepts any positive consensus, and
    # with tau1 = 1.0 it can never accept
    cfg = cope_preset(n=N, tau1=1.0, tau2=0.0, max_tokens=32, strict=True)
    assert not cfg.accepts(1.0, 1.0) and cfg.accepts(1.0, 0.5)
    assert cope_preset().accepts(0.75, 0.75)


def test_invalid_configs(smol):
    with pytest.raises(ConfigError):
        Cope(small=Recording(smol, "local/a"), large=Recording(smol, "local/b"), n=0)
    with pytest.raises(ConfigError):
        Cope(small=Recording(smol, "local/a"), large=Recording(smol, "local/b"), tau1=1.5)
    with pytest.raises(ConfigError):
        Cope(small=Recording(smol, "local/a"), large=Recording(smol, "local/b"), tau2=-0.1)
    c = Cope(small=Recording(smol, "local/a"), large=Recording(smol, "local/b"))
    with pytest.raises(ConfigError):
        c.solve("   ")
    with pytest.raises(ConfigError):
        c.solve("1+1?", task="poetry")
    bad = replace(c.config, stages=(replace(c.config.stages[0], n=3),))  # 3 samples over 8 goals
    with pytest.raises(ConfigError):
        Cascade(bad, c.models, get_task("math"))
    with pytest.raises(ConfigError, match="cope.tasks.Task subclass"):
        c.solve("1+1?", task=object())  # a task must be a Task: the engine reads its attributes directly


def test_async_variant(smol):
    c = Cope(small=Recording(smol, "local/a"), large=Recording(smol, "local/b"), n=1, tau1=0.0,
             max_tokens=16)
    r = asyncio.run(c.asolve("What is 2 + 2?", seed=1))
    assert r.stage == 1 and len(r.calls) == 2
    with pytest.raises(ConfigError):
        async def inside():
            return c.solve("What is 2 + 2?")
        asyncio.run(inside())


def test_planners_get_the_task_familys_wording(smol):
    """A code cascade's planner is asked about a function, a math one about a quantity."""
    from cope.tasks.code import CodeTask

    small = Recording(smol, "local/smollm2-135m")
    c = Cope(small=small, large=Recording(smol), n=N, max_tokens=24, tau1=0.0, tau2=0.0)
    stub = 'def add(a, b):\n    """Return a + b.\n    >>> add(1, 2)\n    3\n    """\n'
    c.solve(stub, task="code", seed=2)
    plan_prompt = small.prompts[0]
    assert CodeTask.plan_asks["goal"] in plan_prompt and "def add(a, b)" in plan_prompt
    assert "Find" not in plan_prompt

    small.chats.clear()
    c.solve(PROBLEM, seed=2)
    assert 'starting with "Find" or "Determine"' in small.prompts[0]


def test_clean_plan_drops_code_and_leaked_answers():
    from cope.plans import clean_plan

    text = "Goal: Return the sum of the list.\n```python\ndef f(x):\n    return sum(x)\n```"
    assert clean_plan(text, "goal") == "Return the sum of the list."
    assert clean_plan("**Guideline:** Add the parts. Then divide. Then \\boxed{7}.", "guideline") == (
        "Add the parts. Then divide."
    )


def test_clean_plan_reads_a_list_as_steps():
    """A listed plan keeps its top-level steps, not a lead-in plus a fragment of step 1."""
    from cope.plans import MAX_STEPS, clean_plan

    text = (
        "To solve this problem, you can follow these steps:\n"
        "1. **Identify the daily consumption**:\n   - Grandfather: 2 pizzas/day\n   - Wife: 1 pizza/day\n"
        "2. **Scale to a month**: multiply by 30.\n3. Add them up.\n\nSo the answer is 90."
    )
    assert clean_plan(text, "guideline") == (
        "Identify the daily consumption; Scale to a month: multiply by 30; Add them up."
    )
    many = "Use a set first.\n" + "\n".join(f"{i}. Step {i}" for i in range(1, 9))
    out = clean_plan(many, "guideline")
    assert out.startswith("Use a set first. Step 1; ") and out.count("Step") == MAX_STEPS
    # a goal stays one sentence even when the planner lists
    assert clean_plan("- Find the time.\n- Find the cost.", "goal") == "Find the time; Find the cost."


@pytest.mark.slow
def test_cope_s3_noplan_differs_from_cope_only_in_stage3_plans(smol):
    from cope.methods import method_config

    a, b = method_config("cope", n=N), method_config("cope-s3-noplan", n=N)
    assert a.stages[:2] == b.stages[:2]
    assert a.stages[2].use_plans == ("g_L",) and b.stages[2].use_plans == ()
    assert replace(a.stages[2], use_plans=()) == b.stages[2]
    # live: the large model's stage-3 prompt carries no guideline
    large = Recording(smol, "local/smollm2-135m-as-large")
    c = Cope(small=smol, large=large, n=N, max_tokens=24, method="cope-s3-noplan")
    s1, s2, s3 = c.config.stages
    c.config = replace(c.config, stages=(replace(s1, threshold=NEVER), replace(s2, threshold=NEVER), s3))
    r = c.solve(PROBLEM, seed=4)
    assert r.stage == 3
    g_l = next(p for p in r.plans if p.name == "g_L")
    assert len(large.prompts) == 2 and g_l.text not in large.prompts[1] and "Guideline" not in large.prompts[1]


class _HalfAnswered:
    """Answers one prompt of a ``generate_many`` and fails the other, as an API that billed the first."""

    spec = "local/half"

    async def generate(self, messages, params):
        from cope.models.base import Completion, Generation

        return Generation([Completion("\\boxed{4}", 5) for _ in range(params.n)], 10, 5 * params.n, 0.01, self.spec)

    async def generate_many(self, prompts, params):
        from cope.errors import BackendError

        first = await self.generate(prompts[0], params)
        raise BackendError("second prompt failed", spent=[first])


def test_a_partly_answered_call_keeps_its_cost_in_the_error():
    """The cascade's error carries the answered part of a failed call as a call record, priced,
    not only the calls that fully succeeded (before, the engine overwrote it with those)."""
    from cope.cascade import CascadeConfig, Stage
    from cope.errors import BackendError

    cfg = CascadeConfig(stages=(Stage(executor="small", n=2, threshold=None, styles=("cot", "pot")),))
    half = _HalfAnswered()
    c = Cope(small=half, large=half, config=cfg, small_price_as="gpt-4o-mini", prices=PriceTable.load())
    with pytest.raises(BackendError) as info:
        c.solve("What is 2 + 2?", task="math")
    paid = info.value.spent
    assert len(paid) == 1 and paid[0].role == "execute" and paid[0].stage == 1
    assert paid[0].completion_tokens == 5 and paid[0].cost_usd > 0
