"""Property-based fuzzing: command lines, config/price/preset/dataset files and server request bodies.

Each generated input must end in a correct result or one clear error (exit 2 with a
``cope: error:`` line, a ConfigError, a 4xx with a JSON error), never a traceback. Inputs
are bounded in count (``max_examples``) and never reach a model: command lines are only
parsed (the option checks are the parser's), files are only loaded and validated, and
request bodies go to a real server whose only key has a zero budget.
"""

from __future__ import annotations

import contextlib
import io
import json
import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from cope.errors import CopeError  # noqa: E402

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TRIED: dict[str, int] = {}


def count(kind: str) -> None:
    TRIED[kind] = TRIED.get(kind, 0) + 1


def run_cli(argv: list[str]) -> tuple[int, str]:
    from cope.cli import _build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            _build_parser().parse_args(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


NUMBERS = st.one_of(st.integers(-10 ** 12, 10 ** 12).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["nan", "inf", "-inf", "1e309", "0x10", "", " ", "1_000", "٣", "--", "-0"]),
                    st.text(max_size=8))
OPTIONS = {
    "solve": ["--n", "--tau1", "--tau2", "--max-tokens", "--threads", "--level", "--max-steps", "--timeout", "--seed"],
    "eval": ["--n", "--tau1", "--tau2", "--max-tokens", "--concurrency", "--limit", "--max-usd", "--max-steps",
             "--timeout", "--seed"],
    "serve": ["--port", "--threads"],
    "calibrate": ["--n", "--target-cost", "--target-cost-ratio", "--target-accuracy"],
}
FIRST = {"solve": ["2+2"], "eval": ["arith"], "serve": [], "calibrate": ["runs/none"]}


@FUZZ
@given(st.sampled_from(sorted(OPTIONS)), st.data())
def test_numeric_options_parse_or_fail_in_one_line(command, data):
    option = data.draw(st.sampled_from(OPTIONS[command]))
    value = data.draw(NUMBERS)
    count("command lines")
    code, err = run_cli([command, *FIRST[command], option, value])
    if code:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("cope: error:"), (option, value, err)
    else:
        assert err == ""


@FUZZ
@given(st.binary(max_size=300))
def test_price_files_load_or_fail_clearly(tmp_path_factory, raw):
    from cope.pricing import PriceTable

    f = tmp_path_factory.mktemp("p") / "prices.toml"
    f.write_bytes(raw)
    count("price files")
    try:
        table = PriceTable.load(f)
    except CopeError as exc:
        assert "\n" not in str(exc).strip() or "TOML" in str(exc)
        return
    for price in table.prices.values():
        assert price.input_per_m >= 0 and price.output_per_m >= 0


TOML_VALUES = st.one_of(st.integers(-5, 10 ** 6).map(str), st.floats(allow_nan=False).map(repr),
                        st.sampled_from(['"x"', "true", "nan", "inf", "[1, 3]", "[]", '"cope"', '"cope-auto"',
                                         "[3]", "[1, 2, 3]", "-0.0", '"none"', '"exact"']))


@FUZZ
@given(st.dictionaries(st.sampled_from(["name", "base", "stages", "tau1", "tau2", "n", "window", "stop",
                                        "max_tokens", "colour"]), TOML_VALUES, max_size=8))
def test_preset_files_load_or_fail_clearly(tmp_path_factory, table):
    from cope.methods import load_preset

    f = tmp_path_factory.mktemp("preset") / "p.toml"
    f.write_text("[preset]\n" + "".join(f"{k} = {v}\n" for k, v in table.items()))
    count("preset files")
    try:
        preset = load_preset(f)
    except CopeError as exc:
        assert str(f) in str(exc)
        return
    preset.config().validate()


@FUZZ
@given(st.lists(st.one_of(st.dictionaries(st.sampled_from(["question", "answer", "id", "problem", "text"]),
                                          st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                    st.lists(st.integers(), max_size=2)), max_size=4),
                          st.just("not json"), st.just("[1, 2]")), min_size=1, max_size=5))
def test_jsonl_datasets_load_or_fail_clearly(tmp_path_factory, rows):
    from cope.benchmarks.registry import load_jsonl

    f = tmp_path_factory.mktemp("data") / "d.jsonl"
    f.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    count("dataset files")
    try:
        bench = load_jsonl(str(f), None)
    except CopeError as exc:
        assert "d.jsonl" in str(exc)
        return
    for p in bench.problems:
        assert isinstance(p.text, str) and p.text.strip()


@FUZZ
@given(st.dictionaries(st.sampled_from(["small", "large", "method", "n", "tau1", "tau2", "task", "max_tokens",
                                        "timeout_s", "price_as", "base_url", "nonsense"]),
                       TOML_VALUES, max_size=6))
def test_server_configs_load_or_fail_clearly(tmp_path_factory, table):
    from cope.serve.config import load_config

    f = tmp_path_factory.mktemp("serve") / "serve.toml"
    f.write_text("[presets.p]\n" + "".join(f"{k} = {v}\n" for k, v in table.items()))
    count("server configs")
    try:
        load_config(f, environ={})
    except CopeError as exc:
        assert str(exc).strip()


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                 st.text(string.printable, max_size=12)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
BODIES = st.one_of(
    st.fixed_dictionaries({"model": st.sampled_from(["cope", "nope", 3, None]),
                           "messages": st.one_of(JSONISH, st.lists(st.fixed_dictionaries(
                               {"role": st.sampled_from(["user", "system", "assistant", "tool", 1]),
                                "content": JSONISH}), max_size=3))},
                          optional={"n": JSONISH, "temperature": JSONISH, "max_tokens": JSONISH, "seed": JSONISH,
                                    "stream": JSONISH, "stop": JSONISH, "tools": JSONISH}),
    JSONISH,
)


def test_server_request_bodies_get_a_json_answer(tmp_path):
    """Fuzzed bodies against the real server process; the model is never reached: every body is
    either refused (4xx, JSON error) or would be solved, and those are sent with a key whose
    budget is zero, so the answer is a 429 before any model call."""
    import urllib.error
    import urllib.request

    from serving import ServerProcess

    srv = ServerProcess(tmp_path, '[keys.zero]\nkey = "sk-zero-0000000000"\nbudget_usd = 0.0\n')
    statuses: dict[int, int] = {}
    try:
        @settings(max_examples=120, deadline=None)
        @given(BODIES)
        def one(body):
            data = json.dumps(body).encode()
            req = urllib.request.Request(srv.url + "/chat/completions", data=data, method="POST")
            req.add_header("Content-Type", "application/json")
            req.add_header("Authorization", "Bearer sk-zero-0000000000")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status, payload = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, payload = e.code, e.read()
            count("request bodies")
            statuses[status] = statuses.get(status, 0) + 1
            assert 400 <= status < 500, (status, body, payload[:300])
            assert "message" in json.loads(payload)["error"]

        one()
    finally:
        assert srv.stop() == 0
    log = srv.log.read_text()
    assert "Traceback" not in log, log[-2000:]
    assert statuses


def test_zz_report_what_was_tried(capsys):
    if not TRIED:
        pytest.skip("run with the fuzz tests above to report their counts")
    with capsys.disabled():
        print("\nfuzz: inputs tried per kind: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())))
    assert sum(TRIED.values()) > 0
