"""The `cope` command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

SMOL = "local/smollm2-135m"


def cope(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "cope", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line_error(p, *needles):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("cope: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], p.stderr  # progress lines may precede it
    for n in needles:
        assert n in errors[0], errors[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_solve_json_schema_and_progress():
    p = cope("solve", "What is 7 + 5?", "--small", SMOL, "--large", SMOL, "--large-price-as", "gpt-4o-mini",
             "--n", "2", "--tau1", "0", "--seed", "3", "--max-tokens", "48", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for key in ("answer", "stage", "confidence", "cost_usd", "calls", "plans", "stages", "tokens"):
        assert key in d
    assert d["stage"] == 1 and len(d["calls"]) == 3
    assert {c["role"] for c in d["calls"]} == {"plan", "execute"}
    assert d["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in d["calls"]))
    # live progress went to stderr, not into the JSON
    assert "stage 1/3" in p.stderr and "priced as gpt-4o-mini" in p.stderr


def test_solve_quiet_text_output():
    p = cope("solve", "What is 7 + 5?", "--small", SMOL, "--large", SMOL, "--n", "1", "--tau1", "0",
             "--seed", "1", "--max-tokens", "32", "--quiet")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert "answer:" in p.stdout and "stage: 1 of 3" in p.stdout and "cost:" in p.stdout


def test_models_lists_named_models_and_prices():
    p = cope("models", "--json")
    d = json.loads(p.stdout)
    specs = {m["spec"]: m for m in d["local_models"]}
    assert set(specs) == {"local/smollm2-135m", "local/qwen2.5-coder-0.5b", "local/qwen2.5-coder-1.5b"}
    assert all(m["installed"] for m in specs.values())
    assert any(x["model"] == "gpt-4o-mini" for x in d["prices"])
    assert "installed" in cope("models").stdout


@pytest.mark.parametrize("args,needles", [
    (["solve", "1+1", "--small", "nosuch/model"], ["unknown model spec 'nosuch/model'"]),
    (["solve", "1+1", "--small", "local/not-a-model"], ["unknown local model"]),
    (["solve", "1+1", "--large", "openai/my-private-model", "--base-url", "http://127.0.0.1:9/v1"],
     ["no price for 'my-private-model'"]),
    (["solve", "   ", "--small", SMOL, "--large", SMOL], ["empty"]),
    (["solve", "1+1", "--n", "0"], ["--n: must be 1..64"]),
    (["solve", "1+1", "--tau1", "1.5"], ["--tau1: must be a finite number in [0, 1]"]),
    (["solve", "1+1", "--tau2", "-0.2"], ["--tau2: must be a finite number in [0, 1]"]),
    (["solve", "1+1", "--task", "poetry", "--small", SMOL, "--large", SMOL], ["unknown task"]),
    (["solve", "1+1", "--prices", "/nonexistent/prices.toml"], ["price file not found"]),
    (["solve", "@/nonexistent/problem.txt", "--small", SMOL, "--large", SMOL], ["problem file not found"]),
])
def test_bad_input_one_line_errors(args, needles):
    one_line_error(cope(*args), *needles)


def test_bad_argument_type_one_line():
    p = cope("solve", "1+1", "--n", "many")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.slow
def test_unreachable_api_base_url():
    port = free_port()  # nothing listens there
    p = cope("solve", "1+1", "--method", "large", "--large", "openai/gpt-4o-mini",
             "--base-url", f"http://127.0.0.1:{port}/v1", timeout=120)
    one_line_error(p, "openai/gpt-4o-mini", f"127.0.0.1:{port}")


def test_corrupt_gguf_path(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    p = cope("solve", "1+1", "--small", f"local/{bad}", "--large", SMOL, "--n", "1")
    one_line_error(p, "could not load")


def test_import_is_light():
    code = ("import sys, cope; cope.Cope; "
            "heavy = [m for m in ('llama_cpp', 'numpy', 'sympy', 'math_verify', 'openai', 'rich') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_eval_help_names_every_method_and_benchmark():
    from cope.benchmarks.registry import LOADERS
    from cope.methods import METHODS

    p = cope("eval", "--help")
    text = " ".join(p.stdout.split())
    for name in METHODS:
        assert name in text
    for name in [*LOADERS, "textworld", "jsonl:", "mbpp:"]:
        assert name in text
