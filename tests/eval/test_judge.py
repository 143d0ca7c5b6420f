"""Pairwise judge: verdict parsing, both-order combination, win rates, and real
judge runs (SmolLM2 embedded; a scripted OpenAI-compatible peer on 127.0.0.1).
"""

from __future__ import annotations

import asyncio

import pytest
from recording import Recording

from cope.errors import ConfigError, UnknownModelError
from cope.eval.judge import Judge, PairVerdict, combine, parse_verdict, win_rate
from cope.tasks.base import Problem
from fault_server import FaultServer, Reply, completion_body

pytestmark = pytest.mark.timeout(180)

QUESTION = "What is the capital of France? Answer in one sentence."
GOOD = "The capital of France is Paris."
BAD = "France is a country in Europe and it has many cities, I think maybe Lyon."


PARSE_CASES = [
    ("Both are fine but A is more precise.\n[[A]]", "A"),
    ("Assistant B follows the instructions. [[B]]", "B"),
    ("They are equally good. [[C]]", "tie"),
    ("[[ b ]]", "B"),
    ("[[Tie]]", "tie"),
    ("At first [[A]] seemed right, but on reflection [[B]]", "B"),  # the last strict verdict wins
    # an echo of the instructions is not a verdict
    ('Output "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.', None),
    ('"[[A]]" if assistant A is better, "[[B]]" if B is better. My verdict: [[B]]', "B"),
    # looser forms from weak judges
    ("My verdict is [[A]] for the reasons above.", "A"),
    ("[A]", "A"),
    ("Verdict: B", "B"),
    ("Final verdict is **A**", "A"),
    ("Assistant A is better because it is correct.", "A"),
    ("Answer B is clearly better.", "B"),
    ("It's a tie.", "tie"),
    ("Both answers are equally good.", "tie"),
    ("B", "B"),
    (" c. ", "tie"),
    # unreadable
    ("Assistant A is better. Assistant B is better.", None),
    ("I cannot decide.", None),
    ("My verdict is a difficult one to make.", None),
    ("Answer a is shorter, but is it better?", None),
    ("The answer is about France.", None),
    ("", None),
    ("   ", None),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_combine_cancels_position_bias():
    # order 1 shows the candidate as A, order 2 as B
    assert combine("A", "B") == "win"
    assert combine("B", "A") == "loss"
    assert combine("A", "A") == "tie"  # a judge that always picks the first answer
    assert combine("B", "B") == "tie"  # ... or always the second
    for one, two in [("A", "tie"), ("tie", "B"), ("tie", "tie"), ("A", None), (None, "B"), (None, None),
                     ("B", "tie"), (None, "A")]:
        assert combine(one, two) == "tie"


def test_win_rate_counts():
    def v(verdict, picks=("A", "B")):
        return PairVerdict(verdict=verdict, picks=picks, raw=("", ""))

    wr = win_rate([v("win"), v("win"), v("tie", (None, "B")), v("loss", ("B", "A")), v("tie", (None, None))])
    assert (wr.wins, wr.ties, wr.losses, wr.n, wr.unparsed) == (2, 2, 1, 5, 3)
    assert wr.rate == pytest.approx(0.4)
    assert wr.adjusted == pytest.approx(0.6)
    d = wr.to_dict()
    assert d["win_rate"] == pytest.approx(0.4) and d["adjusted_win_rate"] == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="no verdicts"):
        win_rate([])


def test_bad_input_is_refused_before_any_call(smol):
    rec = Recording(smol)
    judge = Judge(rec)
    for args in (("", GOOD, BAD), (QUESTION, "  ", BAD), (QUESTION, GOOD, ""), (QUESTION, None, BAD)):
        with pytest.raises(ConfigError, match="empty"):
            judge.compare(*args)
    assert rec.chats == []
    with pytest.raises(ConfigError, match="max_tokens"):
        Judge(rec, max_tokens=0)
    with pytest.raises(UnknownModelError):
        Judge("nowhere/model")


def test_smollm2_judges_canned_answers_in_both_orders(smol):
    rec = Recording(smol)
    judge = Judge(rec, max_tokens=48)
    v = judge.compare(Problem(QUESTION, id="q1"), GOOD, BAD)
    assert len(rec.chats) == 2
    first, second = rec.chats[0][-1]["content"], rec.chats[1][-1]["content"]
    # order 1 shows the candidate as A, order 2 swaps the answers
    assert first.index(GOOD) < first.index(BAD)
    assert second.index(BAD) < second.index(GOOD)
    assert QUESTION in first and QUESTION in second
    assert all(text for text in v.raw)
    assert v.picks == (parse_verdict(v.raw[0]), parse_verdict(v.raw[1]))
    assert v.verdict == combine(*v.picks)
    assert v.verdict in ("win", "tie", "loss")
    assert v.prompt_tokens > 0 and v.completion_tokens > 0 and v.id == "q1"


def test_identical_answers_can_only_tie(smol):
    # Whatever the weak judge writes, two identical prompts get the same pick in
    # both orders, which is a position preference and must come out as a tie.
    judge = Judge(smol, max_tokens=48)
    v = judge.compare(QUESTION, GOOD, GOOD)
    assert v.raw[0] == v.raw[1]
    assert v.verdict == "tie"


def test_evaluate_gives_a_win_rate(smol):
    judge = Judge(smol, max_tokens=12)
    wr = asyncio.run(judge.aevaluate([(QUESTION, GOOD, BAD), ("Say hi.", "Hi!", "Hi!")]))
    assert wr.n == 2 and wr.per_item[1].verdict == "tie"
    assert 0.0 <= wr.rate <= wr.adjusted <= 1.0


def test_reference_and_multi_turn_prompts(smol):
    judge = Judge(Recording(smol))
    hist = ({"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."})
    p = Problem("Use it in a sentence.", history=hist, reference="The sky is blue.")
    shared = judge.messages(p, "The sea is blue.", "Grass is green.")[-1]["content"]
    assert "[Conversation so far]" in shared and "Assistant: Blue." in shared
    assert "[Reference answer]\nThe sky is blue." in shared
    assert shared.index("Use it in a sentence.") < shared.index("The sea is blue.") < shared.index("Grass is green.")
    # each assistant continued its own conversation (MT-Bench turn 2)
    other = ({"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."})
    split = judge.messages(p, "The sea is blue.", "Roses are red.", hist, other)[-1]["content"]
    assert "Assistant A: Blue." in split and "Assistant B: Red." in split
    assert split.count("User: Use it in a sentence.") == 2
    assert split.index("Assistant A: The sea is blue.") < split.index("Assistant B: Roses are red.")


def test_multi_turn_compare_swaps_whole_conversations(smol):
    rec = Recording(smol)
    judge = Judge(rec, max_tokens=16)
    mine = ({"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."})
    theirs = ({"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."})
    v = judge.compare(Problem("Use it in a sentence.", history=mine), "The sea is blue.", "Roses are red.",
                      baseline_history=theirs)
    one, two = rec.chats[0][-1]["content"], rec.chats[1][-1]["content"]
    assert "Assistant A: Blue." in one and "Assistant B: Red." in one
    assert "Assistant A: Red." in two and "Assistant B: Blue." in two
    assert v.verdict == combine(*v.picks)


def test_api_judge_with_position_bias_only_ties():
    # A scripted OpenAI-compatible peer that always answers "[[A]]": the judge
    # prefers whatever comes first, so the candidate must not be credited a win.
    body = lambda text: {**completion_body({"n": 1}, text=text)}  # noqa: E731
    with FaultServer([Reply(body=body("Assistant A is better. [[A]]"))]) as server:
        judge = Judge("openai/judge-model", base_url=server.base_url, api_key="test")
        v = judge.compare(QUESTION, GOOD, BAD)
        assert v.picks == ("A", "A") and v.verdict == "tie"
        assert len(server.seen) == 2
        users = [s.body["messages"][-1]["content"] for s in server.seen]
        assert {u.index(GOOD) < u.index(BAD) for u in users} == {True, False}  # one request per order
        assert all(s.body.get("temperature") == 0 for s in server.seen)
