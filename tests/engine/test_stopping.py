"""Early stopping: the exact rule never changes a decision; the engine draws fewer samples.

The rule is checked exhaustively: every sequence of answers over a small
alphabet, every prefix the rule stops at, against every way the remaining
samples could fall. The engine is driven by a scripted model whose answers
depend on the seed it is given, so windows and their seeds are checked too.
"""

from __future__ import annotations

import itertools

import pytest

from cope.cascade import NEVER, CascadeConfig, Stage
from cope.api import Cope
from cope.methods import method_config, recording
from cope.models.base import Completion, Generation
from cope.pricing import PriceTable
from cope.stopping import answer_fixed, leader, replay_vote, vote_settled, windows

KEYS = (0, 1, 2, None)


def decision(keys, n, threshold, strict=False):
    """(accepted, answer) of a full vote: the leader's share of n against the threshold."""
    top, c, _, _ = leader(keys)
    if threshold is None:
        return True, top
    share = c / n
    return (share > threshold if strict else share >= threshold), top


@pytest.mark.parametrize("n,threshold", [(6, 0.5), (6, 0.75), (5, 0.6), (6, None), (6, 1.0), (4, NEVER), (6, 0.0)])
@pytest.mark.parametrize("need_answer", [True, False])
def test_exact_rule_never_changes_a_decision(n, threshold, need_answer):
    stops = 0
    for k in range(1, n):
        for prefix in itertools.product(KEYS, repeat=k):
            if not vote_settled(list(prefix), n, threshold, need_answer=need_answer):
                continue
            stops += 1
            acc0, ans0 = decision(prefix, n, threshold)  # what the stage decides at the stop
            for rest in itertools.product(KEYS, repeat=n - k):
                acc, ans = decision(prefix + rest, n, threshold)
                assert acc == acc0, (prefix, rest)
                if acc or need_answer or threshold is None:
                    assert ans == ans0, (prefix, rest)
    assert stops  # the rule does stop somewhere, or the test proves nothing


def test_exact_rule_stops_as_soon_as_it_can():
    assert vote_settled([1] * 6, 8, 0.75)  # six of eight already agree
    assert not vote_settled([1] * 5, 8, 0.75)
    assert vote_settled([0, 1, 2, None], 8, 0.75, need_answer=False)  # at most 5 of 8 now: escalate
    assert not vote_settled([0, 1, 2, None], 8, 0.75, need_answer=True)  # but the kept plan is open
    assert answer_fixed([1, 1, 1, 0], 6)  # a rival or newcomer can tie at 3 and loses (drawn later)
    assert not answer_fixed([0, 1, 1, 1], 6)  # 0 was drawn first: 0, 0 ties it and wins
    assert vote_settled([1, 1, 1, 1], 8, None) and not vote_settled([1, 1, 1, 0], 8, None)


def test_predictive_rule_stops_earlier_and_counts_its_risk():
    # 4 of 4 agree: 2 more of 4 reach 0.75 with high probability under the Beta-binomial
    assert vote_settled([1, 1, 1, 1], 8, 0.75, rule="predictive")
    assert not vote_settled([1, 1, 1, 1], 8, 0.75, rule="exact")
    # 4 of 8 agree, n = 16: all 8 to come must join them to reach 12; possible, so exact draws on
    split = [0, 0, 0, 0, 1, 2, 3, 5]
    assert vote_settled(split, 16, 0.75, rule="predictive", need_answer=False)
    assert not vote_settled(split, 16, 0.75, rule="exact", need_answer=False)


def test_windows_and_replay():
    assert windows(8, 0) == [(0, 8)] and windows(8, 8) == [(0, 8)]
    assert windows(8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert replay_vote([1, 1, 1, 1, 1, 1, 0, 0], 8, 2, 0.75) == 6
    assert replay_vote([1, 1, 1, 1, 1, 1, 0, 0], 8, 4, 0.75) == 8  # 4 drawn: 1, 1, 1, 1 is not enough
    assert replay_vote([0, 1, 2, None, 1, 1, 1, 1], 8, 4, 0.75, need_answer=False) == 4


class Scripted:
    """A Model whose i-th sample answers what ``answers(seed, i)`` says: control flow only."""

    def __init__(self, spec, answers):
        self.spec, self.answers, self.calls = spec, answers, []

    async def generate(self, messages, params):
        self.calls.append((params.n, params.seed))
        comps = [Completion(f"\\boxed{{{self.answers(params.seed, j)}}}", 5) for j in range(params.n)]
        return Generation(comps, 10, 5 * params.n, 0.01, self.spec)

    async def generate_many(self, prompts, params):
        from dataclasses import replace

        return [await self.generate(p, params if params.seed is None else replace(params, seed=params.seed + i))
                for i, p in enumerate(prompts)]


def solve(config, small, large, problem="What is 6 * 7?", seed=3):
    c = Cope(small=small, large=large, config=config, large_price_as="gpt-4o-mini", prices=PriceTable.load())
    return c.solve(problem, task="math", seed=seed)


def vote_stage(stop, window=2, threshold=0.75, n=8):
    return CascadeConfig(stages=(
        Stage(executor="small", n=n, temperature=0.8, threshold=threshold, window=window, stop=stop),
        Stage(executor="large", n=1),
    ))


@pytest.mark.parametrize("answers,window,drawn", [
    (lambda s, j: 42, 2, 6),  # unanimous: six of eight meet 0.75
    (lambda s, j: j, 2, 6),  # 0, 1, 0, 1, 0, 1: at most 5 of 8 can agree now
    (lambda s, j: j, 4, 4),  # 0, 1, 2, 3: at most 5 of 8 can agree
    (lambda s, j: j % 2, 4, 8),  # 0, 1, 0, 1: 2 + 4 could still reach 6
])
def test_engine_stops_early_with_the_same_decision(answers, window, drawn):
    runs = {}
    for stop in ("none", "exact"):
        small, large = Scripted("local/a", answers), Scripted("local/b", lambda s, j: 1)
        runs[stop] = (solve(vote_stage(stop, window=window), small, large), small)
    if True:  # noqa: SIM108
        (full, s_full), (early, s_early) = runs["none"], runs["exact"]
        assert (early.answer, early.stage) == (full.answer, full.stage)
        assert [s.accepted for s in early.stages] == [s.accepted for s in full.stages]
        assert full.stages[0].drawn == 8 and early.stages[0].drawn == drawn
        assert sum(n for n, _ in s_early.calls) == drawn
        # the early run's calls are the full run's first calls, with the same seeds
        assert s_early.calls == s_full.calls[:len(s_early.calls)]
        assert early.tokens("small")["completion"] == 5 * drawn


def test_one_window_is_seeded_as_before():
    small = Scripted("local/a", lambda s, j: 42)
    solve(vote_stage("exact", window=0), small, Scripted("local/b", lambda s, j: 1))
    assert small.calls == [(8, 3 * 1000 + 100 + 1)]  # one call, the stage seed: old recordings replay


def test_recording_draws_every_window():
    cfg = recording(method_config("mot-cascade"))
    assert all(st.stop == "none" for st in cfg.stages) and cfg.stages[0].window == 4
    small = Scripted("local/a", lambda s, j: 42)
    r = solve(recording(vote_stage("exact")), small, Scripted("local/b", lambda s, j: 1))
    assert r.stages[0].drawn == 8 and r.stage == 2


def test_plan_keeping_stage_waits_for_a_fixed_majority():
    # stage 1 of COPE keeps the majority's goal: an escalating vote still needs its leader settled
    from dataclasses import replace

    cfg = method_config("cope")
    cfg = replace(cfg, stages=(replace(cfg.stages[0], window=4, stop="exact"), *cfg.stages[1:]))
    distinct = lambda s, j: s  # noqa: E731  one sample per goal, each goal's prompt seeded apart
    r = solve(cfg, Scripted("local/a", distinct), Scripted("local/b", lambda s, j: 1))
    assert r.stages[0].drawn == 8 and not r.stages[0].accepted
    # the same answers without a plan to keep: escalation is sure after 4
    r = solve(vote_stage("exact", window=4), Scripted("local/a", lambda s, j: j), Scripted("local/b", lambda s, j: 1))
    assert r.stages[0].drawn == 4


def test_a_family_variant_runs_unless_the_user_gave_thresholds():
    from dataclasses import replace

    base = method_config("cope-auto", explicit_taus=False)
    two = replace(base, stages=base.stages[::2])
    tuned = replace(base, variants=(("math", two),))
    assert tuned.for_family("math") is two and tuned.for_family("math-pot") is two
    assert tuned.for_family("code") is tuned
    small = Scripted("local/a", lambda s, j: j)  # never agrees: escalates from every stage
    r = solve(tuned, small, Scripted("local/b", lambda s, j: 1))
    assert len(r.stages) == 2 and r.stage == 2  # the math variant: stage 2 skipped
    assert method_config("cope-auto").variants == ()  # thresholds given: no family overrides them


def test_skipping_stage_2_charges_its_guideline_only_if_stage_3_reads_it():
    import numpy as np

    from cope.eval.replay import Recorded, sweep

    P = 4
    conf = np.zeros((P, 3))
    correct = np.ones((P, 3), dtype=bool)
    cost = np.column_stack([np.zeros(P), np.full(P, 1e-5), np.full(P, 2e-4)])
    plan = np.column_stack([np.zeros(P), np.full(P, 1e-5), np.zeros(P)])
    for reads, expected in ((True, 2.1e-4), (False, 2e-4)):
        rec = Recorded([f"p{i}" for i in range(P)], conf, correct, cost, plan, 8, last_reads_plan=reads)
        out = sweep(rec, np.array([0.5]), np.array([0.5]), stages=(1, 3))
        assert out["cost"][0, 0] == pytest.approx(expected)


def test_code_stops_at_the_first_sample_that_passes_in_the_real_sandbox():
    from cope.tasks.code import CodeTask, code_problem

    task = CodeTask()
    problem = code_problem("Write add(a, b) returning their sum.", ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
                           entry_point="add")
    wrong = Completion("```python\ndef add(a, b):\n    return a - b\n```", 10)
    right = Completion("```python\ndef add(a, b):\n    return a + b\n```", 10)
    a = task.assess(problem, [wrong, wrong])
    assert not task.settled(a, 2, 8, 1.0)  # nothing passed yet: a later sample might
    a = task.assess(problem, [wrong, right])
    assert a.confidence == 1.0 and a.support == [1]
    assert task.settled(a, 2, 8, 1.0) and not task.settled(a, 2, 8, 1.0, rule="none")
    assert not task.settled(a, 2, 8, NEVER)  # a recording's stage accepts nothing: it draws on


def test_a_stage_subset_is_seeded_as_in_the_full_cascade():
    from cope.methods import subset

    full = CascadeConfig(stages=(Stage(executor="small", n=2, threshold=NEVER), Stage(executor="small", n=2,
                                 threshold=NEVER), Stage(executor="large", n=1)))
    seeds = {}
    for name, cfg in (("full", full), ("skip1", subset(full, (2, 3)))):
        small = Scripted("local/a", lambda s, j: j)
        solve(cfg, small, Scripted("local/b", lambda s, j: 1))
        seeds[name] = small.calls
    assert seeds["skip1"] == seeds["full"][1:]  # stage 2 draws what it drew after stage 1


class ScriptedCoder(Scripted):
    """Writes ``add``: right when its seed is odd, wrong otherwise (plans get the same text: unread)."""

    async def generate(self, messages, params):
        self.calls.append((params.n, params.seed))
        op = "+" if (params.seed or 0) % 2 else "-"
        comps = [Completion(f"```python\ndef add(a, b):\n    return a {op} b\n```", 12) for _ in range(params.n)]
        return Generation(comps, 10, 12 * params.n, 0.01, self.spec)


def test_cope_auto_on_code_is_cope_stopped_at_the_first_passing_program():
    """cope-auto's code setting keeps cope's planned stage 1 and its threshold, then the large model
    alone (no guideline stage), and returns the program cope returns from the same samples, drawing
    only the window that holds the first pass."""
    auto = method_config("cope-auto", explicit_taus=False).for_family("code")
    paper = method_config("cope", tau1=1.0, tau2=1.0)
    def shape(st):  # what the stage runs, apart from when its plans are drawn
        from dataclasses import replace as _r

        return st.executor, st.n, st.threshold, st.plan and _r(st.plan, windowed=False), st.use_plans

    assert [shape(st) for st in auto.stages] == [shape(paper.stages[0]), (*shape(paper.stages[2])[:4], ())]
    assert (auto.stages[0].window, auto.stages[0].stop) == (1, "exact")
    assert [st.seed_index for st in auto.stages] == [1, 3]  # seeded as cope's stages 1 and 3
    assert auto.stages[0].plan.windowed  # one goal drawn with each sample
    stub = 'def add(a, b):\n    """Sum.\n    >>> add(1, 2)\n    3\n    >>> add(2, 2)\n    4\n    """\n'
    runs = {}
    for name, cfg in (("cope", paper), ("cope-auto", auto)):
        c = Cope(small=ScriptedCoder("local/a", None), large=ScriptedCoder("local/b", None), config=cfg,
                 large_price_as="gpt-4o-mini", prices=PriceTable.load())
        runs[name] = c.solve(stub, task="code", seed=3)
    full, early = runs["cope"], runs["cope-auto"]
    assert full.stage == early.stage == 1 and early.answer == full.answer and "a + b" in early.answer
    assert full.stages[0].drawn == 8 and early.stages[0].drawn < 8
    assert early.tokens("small")["completion"] < full.tokens("small")["completion"]


class PlanningCoder(Scripted):
    """Its k-th planning call writes goals naming ``kKxJ``; its programs are right only when the prompt
    holds a goal of planning call ``good`` (control flow only: what the goals say is not read)."""

    def __init__(self, spec, good):
        super().__init__(spec, None)
        self.good, self.plan_calls = good, []

    async def generate(self, messages, params):
        text = " ".join(str(m.get("content", "")) for m in messages)
        if params.max_tokens == 80:  # a goal request (plans.MAX_TOKENS)
            k = len(self.plan_calls)
            self.plan_calls.append((params.n, params.seed))
            comps = [Completion(f"Write it the way k{k}x{j} says.", 3) for j in range(params.n)]
            return Generation(comps, 10, 3 * params.n, 0.01, self.spec)
        self.calls.append((params.n, params.seed))
        op = "+" if f" k{self.good}x" in text else "-"
        comps = [Completion(f"```python\ndef add(a, b):\n    return a {op} b\n```", 12) for _ in range(params.n)]
        return Generation(comps, 10, 12 * params.n, 0.01, self.spec)


@pytest.mark.parametrize("windowed", [False, True])
def test_plans_in_windows_are_drawn_with_the_samples_that_use_them(tmp_path, windowed):
    """With plans_in_windows a stage writes each window's goals just before its samples: a stage
    that stops at its second window paid for 2 + 2 goals, not 8, and keeps the goal that passed."""
    from cope.methods import load_preset

    f = tmp_path / "p.toml"
    f.write_text('[preset]\nname = "w"\nbase = "cope"\ntau1 = 1.0\ntau2 = 1.0\nn = 8\nwindow = 2\n'
                 f'stop = "exact"\nplans_in_windows = {str(windowed).lower()}\n')
    pf = load_preset(f)
    assert pf.plans_in_windows is windowed and ("plans_in_windows = true" in pf.to_toml()) is windowed
    cfg = pf.config()
    assert cfg.stages[0].plan.windowed is windowed and not cfg.stages[1].plan.windowed  # one guideline
    stub = 'def add(a, b):\n    """Sum.\n    >>> add(1, 2)\n    3\n    """\n'
    good = 1 if windowed else 0  # up front, all 8 goals come from planning call 0
    small = PlanningCoder("local/a", good)
    c = Cope(small=small, large=PlanningCoder("local/b", -1), config=cfg,
             large_price_as="gpt-4o-mini", prices=PriceTable.load())
    r = c.solve(stub, task="code", seed=3)
    assert r.stage == 1 and "a + b" in r.answer
    if windowed:
        assert [n for n, _ in small.plan_calls] == [2, 2] and r.stages[0].drawn == 4
        assert [p.text.split()[4] for p in r.plans] == ["k0x0", "k0x1", "k1x0", "k1x1"]
        assert sum(1 for cl in r.calls if cl.role == "plan") == 2
    else:
        assert [n for n, _ in small.plan_calls] == [8] and r.stages[0].drawn == 2 and len(r.plans) == 8
    # a recording draws every window, its plans seeded as the live run's: the live calls are its first
    rec_model = PlanningCoder("local/a", good)
    Cope(small=rec_model, large=PlanningCoder("local/b", -1), config=recording(cfg),
         large_price_as="gpt-4o-mini", prices=PriceTable.load()).solve(stub, task="code", seed=3)
    live = len(small.plan_calls)  # stage 1 goals (stage 2 guideline is large's)
    assert rec_model.plan_calls[:live] == small.plan_calls[:live]
    assert [n for n, _ in rec_model.plan_calls] == ([2, 2, 2, 2] if windowed else [8])
    assert len({seed for _, seed in rec_model.plan_calls}) == len(rec_model.plan_calls)
    assert r.plans[[p.text.split()[4] for p in r.plans].index(f"k{good}x0")].name == "g_S"


def test_predictive_rule_changes_are_counted_on_a_real_recording():
    """On the committed GSM recording: the exact rule keeps every decision of full sampling, the
    predictive rule draws no more than it, and what it changed is counted, not hidden."""
    from pathlib import Path

    from cope.eval.metrics import summarize_run

    s = summarize_run(Path(__file__).parent.parent.parent / "results" / "gsm")
    cope_es = s["early_stopping"]["cope"]
    assert cope_es["problems"] == 60 and "large" not in s["early_stopping"]  # one greedy sample: no vote
    assert cope_es["samples_predictive"] <= cope_es["samples_exact"] < cope_es["samples_full"]
    assert cope_es["accuracy_exact"] == s["methods"]["cope"]["accuracy"]
    for e in s["early_stopping"].values():
        assert e["right_to_wrong"] + e["wrong_to_right"] <= e["decisions_changed"]
        assert e["accuracy_predictive"] == pytest.approx(
            e["accuracy_exact"] + (e["wrong_to_right"] - e["right_to_wrong"]) / e["problems"])
