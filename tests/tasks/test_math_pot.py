"""Program of thought: programs run in the real sandbox, their printed answers vote; failures are missing answers."""

from __future__ import annotations

import time

import pytest

from cope.models.base import Completion
from cope.tasks import get_task
from cope.tasks.base import Problem
from cope.tasks.math import MathPoTTask
from cope.tasks.math_pot import POT_LIMITS, printed_answer, program_answer

SMOL = "local/smollm2-135m"


def block(code: str) -> str:
    return f"Here is the program:\n```python\n{code}\n```\n```output\n70\n```"  # an invented output, as models write


@pytest.fixture(scope="module")
def pot():
    return MathPoTTask("pot")


def test_printed_answer_reads_the_last_line():
    assert printed_answer("working...\n72\n") == "72"
    assert printed_answer("72.0") == "72"
    assert printed_answer("The answer is 72") == "72"
    assert printed_answer("\\boxed{18}\n") == "18"
    assert printed_answer("3/4") == "3/4"
    assert printed_answer("") is None and printed_answer("\n  \n") is None
    assert printed_answer("x" * 500) is None


def test_a_program_printing_the_right_answer_votes_right(pot):
    ans, how = program_answer(block("a = 48\nb = a // 2\nprint(a + b)"), pot.sandbox)
    assert (ans, how) == ("72", "ran")  # the executed value, not the invented ```output 70
    assert pot.score(Problem("q", reference="72"), ans)


def test_loops_crashes_and_silence_are_missing_answers(pot):
    t0 = time.monotonic()
    ans, how = program_answer(block("while True:\n    pass"), pot.sandbox)
    assert ans is None and how == "timed out"
    assert time.monotonic() - t0 < POT_LIMITS.timeout_s + 10  # the limit holds
    ans, how = program_answer(block("print(1 / 0)"), pot.sandbox)
    assert ans is None and how.startswith("error:") and "ZeroDivisionError" in how
    assert program_answer(block("x = 72"), pot.sandbox) == (None, "printed nothing usable")
    ans, how = program_answer(block("x = bytearray(2 * 1024 ** 3)\nprint(72)"), pot.sandbox)
    assert ans is None  # 2 GiB is past the memory limit
    assert program_answer("The answer is \\boxed{5}.", pot.sandbox) == (None, "no program")
    assert program_answer("It is\n```\n48 + 24\n```\n\\boxed{72}", pot.sandbox) == (None, "no program")
    assert program_answer("```\nx = 6 * 7\nprint(x)\n```", pot.sandbox) == ("42", "ran")  # untagged, but a program


def test_assess_votes_executed_answers(pot):
    outs = [block("print(48 + 24)"), block("print(72.0)"), block("raise SystemExit(1)"), "So \\boxed{70}."]
    a = pot.assess(Problem("q"), [Completion(o, 10) for o in outs])
    assert a.answer == "72" and a.confidence == 0.5 and a.support == [0, 1]
    assert a.extracted[2] is None and a.extracted[3] == "70"  # no program: the written answer
    assert a.info["executed"] == ["ran", "ran", a.info["executed"][2], "no program"]
    assert a.info["executed"][2].startswith("error")


def test_exec_mode_keeps_the_written_answer_when_the_program_fails():
    ex = get_task("math-exec")
    written_and_broken = "48 + 24 = 72, so \\boxed{72}.\n```python\nprint(undefined_name)\n```"
    a = ex.assess(Problem("q"), [Completion(written_and_broken, 10), Completion(block("print(7 * 8)"), 10)])
    assert a.extracted == ["72", "56"]
    assert "do not write code" in ex.executor_messages(Problem("q"), [])[0]["content"]
    assert "```python" in get_task("math-pot").executor_messages(Problem("q"), [])[0]["content"]


def test_real_model_through_the_cascade_records_what_ran():
    import cope

    c = cope.Cope(small=SMOL, large=SMOL, large_price_as="gpt-4o-mini", n=2, tau1=0.0, max_tokens=96)
    r = c.solve("What is 6 times 7?", task="math-pot", seed=3)
    st = r.stages[0]
    assert len(st.info["executed"]) == 2
    assert set(st.info["executed"]) <= {"ran", "no program", "timed out", "printed nothing usable"} | {
        e for e in st.info["executed"] if e.startswith("error:")}
    assert r.stage == 1 and len(st.extracted) == 2
    ran = [e for e, how in zip(st.extracted, st.info["executed"]) if how == "ran"]
    assert all(isinstance(x, str) and x for x in ran)


def test_math_benchmarks_take_the_program_variants():
    from cope.benchmarks.registry import benchmark_task, load_benchmark
    from cope.errors import ConfigError

    assert load_benchmark("arith", limit=1, task="math-pot").task == "math-pot"
    assert load_benchmark("arith", limit=1).task == "math"
    assert benchmark_task("gsm", "math-exec") == "math-exec"
    with pytest.raises(ConfigError, match="does not fit"):
        benchmark_task("gsm", "code")


def test_mixed_vote_reads_each_style_its_own_way():
    from cope.tasks.math_pot import executed_vote

    outs = [block("print(72)"), "I add them.\n```python\nprint(1/0)\n```\nSo \\boxed{72}.",
            block("print(1/0)") + "\nSo \\boxed{70}.", "48 + 24 = 72, so \\boxed{72}."]
    a = executed_vote(outs, ["pot", "cot", "pot", "cot"])
    # cot keeps its written answer when its program fails; a pot sample whose program fails has none
    assert a.extracted == ["72", "72", None, "72"] and a.confidence == 0.75
    assert a.info["styles"] == ["pot", "cot", "pot", "cot"] and a.info["executed"][0] == "ran"


def test_mixed_stage_with_the_real_model(smol):
    """A mot-cascade stage over SmolLM2: half the prompts ask for programs, every sample is assessed."""
    from recording import Recording

    from cope.api import Cope
    from cope.cascade import NEVER
    from cope.methods import method_config
    from dataclasses import replace

    small = Recording(smol, SMOL)
    cfg = method_config("mot-cascade", n=4, max_tokens=96)
    cfg = replace(cfg, stages=(replace(cfg.stages[0], threshold=NEVER, stop="none"), cfg.stages[1]))
    c = Cope(small=small, large=smol, config=cfg)
    r = c.solve(Problem("Tom has 48 apples and buys 24 more. How many apples does he have?", reference="72"),
                task="math", seed=11)
    s1 = r.stages[0]
    assert s1.styles == ["cot", "pot", "cot", "pot"] and s1.drawn == 4
    systems = [chat[0]["content"] for chat in small.chats]
    # one batched call: the chain-of-thought prompt and the program prompt, two samples each
    assert len(systems) == 2 and "do not" in systems[0] and "Python program" in systems[1]
    assert [c.n for c in r.calls if c.stage == 1] == [2, 2]
    assert len(s1.info["executed"]) == 4 and len(s1.extracted) == 4
    assert r.stage == 2  # NEVER escalates; the stand-in large model answers
