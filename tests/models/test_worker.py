"""Local models decode in worker processes: a worker that dies of a signal is one clear error, not a dead caller."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cope.models.base import GenParams
from cope.models.llamacpp import LlamaCppModel
from cope.models.worker import ModelProcessDied, describe_death

SMOL = "local/smollm2-135m"
MSGS = [{"role": "user", "content": "Count from one to ten in words."}]

# A llama_cpp that dies the way a build using unsupported instructions does.
FAKE_LLAMA = "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n"


def gen(model, **kw):
    return asyncio.run(model.generate(MSGS, GenParams(**kw)))


@pytest.fixture
def fresh():
    """A model with its own worker (a context size no other test uses)."""
    m = LlamaCppModel("smollm2-135m", n_ctx=4096)
    yield m
    m.engine.close()


def test_describe_death_names_signal_and_fix():
    line = describe_death("local/x", -signal.SIGILL)
    assert "SIGILL" in line and "illegal instruction" in line and "cope doctor" in line and "\n" not in line
    assert "memory" in describe_death("local/x", -signal.SIGKILL)
    assert "code 3" in describe_death("local/x", 3)


def test_worker_killed_between_calls_is_a_clear_error_then_replaced(fresh):
    assert gen(fresh, max_tokens=4).completions[0].completion_tokens > 0
    eng = fresh.engine
    os.kill(eng.proc.pid, signal.SIGILL)
    eng.proc.wait(timeout=10)
    with pytest.raises(ModelProcessDied) as e:
        eng.chat_tokens(MSGS)
    assert "SIGILL" in str(e.value) and e.value.returncode == -signal.SIGILL
    assert fresh.engine is not eng  # the next call gets a new worker
    assert gen(fresh, max_tokens=4).completions[0].completion_tokens > 0


def test_worker_killed_mid_decode_fails_the_call_without_hanging(fresh):
    gen(fresh, max_tokens=2)  # loaded
    pid = fresh.engine.proc.pid
    threading.Timer(1.0, os.kill, (pid, signal.SIGSEGV)).start()
    t0 = time.monotonic()
    long = [{"role": "user", "content": "Summarize: " + "the river runs past the mill and on to the sea. " * 200}]
    with pytest.raises(ModelProcessDied, match="SIGSEGV"):  # a ~2,400-token prompt: seconds inside llama_decode
        asyncio.run(fresh.generate(long, GenParams(n=4, temperature=0.9, max_tokens=200, seed=1)))
    assert time.monotonic() - t0 < 60


def test_parent_gone_means_worker_gone(tmp_path):
    code = ("import asyncio, sys; from cope.models.llamacpp import LlamaCppModel; from cope.models.base import GenParams\n"
            "m = LlamaCppModel('smollm2-135m', n_ctx=1024)\n"
            "asyncio.run(m.generate([{'role': 'user', 'content': 'hi'}], GenParams(max_tokens=2)))\n"
            "print(m.engine.proc.pid, flush=True)\n"
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    pid = int(p.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the worker outlived its caller")


def test_a_worker_whose_caller_is_gone_ends_quietly_at_its_next_report():
    """The worker reports tokens while it decodes; when the caller died between two of its
    cancel checks, the report meets a closed pipe: the worker ends at once, with no traceback
    on the terminal it shares with the caller (every reply to the caller goes through _tell)."""
    code = ("import os; from cope.models.worker import _tell\n"
            "r, w = os.pipe(); os.close(r)\n"
            "_tell(w, ('tokens', 1, 5))\n"
            "print('still running')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


@pytest.fixture
def sigill_env(tmp_path):
    fake = tmp_path / "fake"
    (fake / "llama_cpp").mkdir(parents=True)
    (fake / "llama_cpp" / "__init__.py").write_text(FAKE_LLAMA)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))


def test_cli_solve_with_a_faulting_build_prints_one_line(sigill_env):
    p = subprocess.run([sys.executable, "-m", "cope", "solve", "What is 2 + 2?", "--small", SMOL, "--large", SMOL,
                        "--large-price-as", "gpt-4o-mini", "--n", "2", "--quiet"],
                       capture_output=True, text=True, timeout=120, env=sigill_env)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("cope: error:") and "SIGILL" in lines[0] and "cope doctor" in lines[0]


def test_eval_stops_on_a_dead_model_and_keeps_what_it_paid_for(tmp_path, sigill_env):
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "answer": a, "uid": f"q{i}"}) for i, (q, a) in
                              enumerate([("What is 3 + 4?", "7"), ("What is 1 + 1?", "2"), ("What is 5 - 2?", "3")])))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cope", "eval", f"jsonl:{data}", "--map", "id=uid", "--method", "large",
           "--small", SMOL, "--large", SMOL, "--large-price-as", "gpt-4o-mini", "--max-tokens", "24",
           "--out", str(out), "--no-cache", "--quiet"]
    first = subprocess.run(cmd + ["--limit", "1"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    journal = out / "journal.jsonl"
    before = journal.read_text().splitlines()
    p = subprocess.run(cmd + ["--resume", "--limit", "3"], capture_output=True, text=True, timeout=300, env=sigill_env)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and "SIGILL" in p.stderr and "--resume" in p.stderr
    after = journal.read_text().splitlines()
    assert after[: len(before)] == before  # nothing already recorded was lost
    recs = [json.loads(x) for x in after]
    assert sum(r["type"] == "result" for r in recs) == 1
    assert sum(r["type"] == "error" and "SIGILL" in r["error"] for r in recs) == 1  # stopped at the first
    assert "SIGILL" in json.loads((out / "summary.json").read_text())["stopped"]


def test_worker_pipes_above_fd_1024_work():
    """A server holding many sockets gets pipe fds past select()'s limit; the protocol uses poll()."""
    code = ("import asyncio, os, resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "if hard != resource.RLIM_INFINITY and hard < 1200: print('skip'); raise SystemExit\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))\n"
            "held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]\n"
            "from cope.models.llamacpp import LlamaCppModel; from cope.models.base import GenParams\n"
            "m = LlamaCppModel('smollm2-135m', n_ctx=1024)\n"
            "g = asyncio.run(m.generate([{'role': 'user', 'content': 'hi'}], GenParams(max_tokens=3)))\n"
            "print(m.engine._resp > 1024, g.completions[0].completion_tokens > 0)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if p.stdout.strip() == "skip":
        pytest.skip("the hard limit on open files is below 1200 here")
    assert p.stdout.split() == ["True", "True"], p.stderr
