"""`cope eval --engine ray` on a real local Ray instance, with the embedded SmolLM2 as both tiers.

Ray is started by this module (two CPUs: two workers of one CPU each) and
ended with it; a command-line run starts and ends its own. Worker deaths are
real: a worker process is killed by its PID, as the OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cope.errors import ConfigError
from cope.eval.distributed import RayEngine
from cope.eval.journal import read_journal
from cope.eval.runner import EvalConfig, load_results, run_eval
from cope.eval.show import trace
from arith import SMOL, smol_config, write_problems
from fault_server import FaultServer, Reply

PROBLEMS = [("What is 3 + 4?", "7"), ("What is 10 - 6?", "4"), ("What is 2 times 5?", "10"),
            ("What is 9 + 9?", "18"), ("What is 20 divided by 4?", "5"), ("What is 6 + 1?", "7")]


@pytest.fixture(scope="module")
def ray_here():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_problems(tmp_path_factory.mktemp("data") / "arith.jsonl", PROBLEMS)


def config(data: Path, **kw) -> EvalConfig:
    return smol_config(data, dict(methods=["cope", "large"], n=2, max_tokens=32, seed=7), **kw)


def outcome(out: Path) -> dict[tuple[str, str], tuple]:
    """What a problem's record says, less the times: answer, stages, cost, tokens."""
    return {(r["method"], r["problem_id"]): (r["answer"], r["stage"], r["cost_usd"], r["tokens"],
                                             [(s["stage"], s["answer"], s["drawn"]) for s in r["stages"]])
            for r in load_results(out)}


def call_keys(out: Path) -> Counter:
    return Counter(r["key"] for r in read_journal(out / "journal.jsonl") if r["type"] == "call")


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    run_eval(config(data), out, use_cache=False, progress=False)
    return out


def test_two_workers_give_the_local_engines_records(ray_here, data, local_run, tmp_path):
    out = tmp_path / "ray"
    s = run_eval(config(data), out, use_cache=False, progress=False, engine=RayEngine(workers=2))
    assert outcome(out) == outcome(local_run)
    assert len(outcome(out)) == 2 * len(PROBLEMS)
    assert call_keys(out) == call_keys(local_run)  # the same calls, each made once
    workers = [r for r in read_journal(out / "journal.jsonl") if r["type"] == "worker"]
    assert sorted(w["worker"] for w in workers) == [0, 1] and len({w["pid"] for w in workers}) == 2
    assert s["this_invocation"]["engine"]["workers"] == 2
    assert s["this_invocation"]["real_calls"] == sum(call_keys(out).values())
    # the run directory is a local one's: its summary and a replayed trace read it unchanged
    local = json.loads((local_run / "summary.json").read_text())["methods"]
    for m in ("cope", "large"):
        assert s["methods"][m]["accuracy"] == local[m]["accuracy"]
        assert s["methods"][m]["cost_usd_per_1m"] == pytest.approx(local[m]["cost_usd_per_1m"])
    t = trace(out, "q1")
    assert all(t["methods"][m]["same_as_recorded"] for m in ("cope", "large"))


def test_a_killed_worker_is_replaced_and_no_call_is_repeated(ray_here, data, local_run, tmp_path):
    out = tmp_path / "killed-worker"
    journal = out / "journal.jsonl"
    done: dict = {}
    runner = threading.Thread(target=lambda: done.update(s=run_eval(config(data), out, use_cache=False,
                                                                    progress=False, engine=RayEngine(workers=2))))
    runner.start()
    killed = None
    deadline = time.time() + 300
    while time.time() < deadline and runner.is_alive():
        recs = list(read_journal(journal)) if journal.is_file() else []
        pids = {r["worker"]: r["pid"] for r in recs if r["type"] == "worker"}
        results = sum(r["type"] == "result" for r in recs)
        # mid-problem: a call journaled after the last result
        if 0 in pids and results >= 1 and recs[-1]["type"] in ("call", "intent"):
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    runner.join(timeout=600)
    assert killed is not None and not runner.is_alive()
    recs = list(read_journal(journal))
    restarted = [r for r in recs if r["type"] == "worker" and r.get("restarted")]
    assert restarted and restarted[0]["worker"] == 0 and restarted[0]["pid"] != killed
    assert max(call_keys(out).values()) == 1, "a call was made twice"
    assert outcome(out) == outcome(local_run)  # every problem solved, as the local engine solved it
    assert not [r for r in recs if r["type"] == "error"]


def test_a_problem_that_keeps_killing_its_worker_is_an_error_not_a_hang(ray_here, data, tmp_path):
    """One worker, two attempts: the worker is killed (by PID) each time it starts the first problem.
    That problem is journaled as an error after its attempts; with the slot's replacements spent, the
    problems left are errors too (for --resume), and the run returns."""
    out = tmp_path / "doomed"
    journal = out / "journal.jsonl"
    done: dict = {}
    runner = threading.Thread(target=lambda: done.update(s=run_eval(
        config(data, methods=["large"]), out, use_cache=False, progress=False,
        engine=RayEngine(workers=1, attempts=2))))
    runner.start()
    killed: list[int] = []
    deadline = time.time() + 300
    while time.time() < deadline and runner.is_alive():
        recs = list(read_journal(journal)) if journal.is_file() else []
        workers = [r for r in recs if r["type"] == "worker" and "pid" in r]
        # the newest worker has made a call of its first problem: kill it
        if workers and workers[-1]["pid"] not in killed and recs[-1]["type"] in ("call", "intent"):
            killed.append(workers[-1]["pid"])
            os.kill(killed[-1], signal.SIGKILL)
        time.sleep(0.02)
    runner.join(timeout=120)
    assert not runner.is_alive() and len(killed) >= 2
    recs = list(read_journal(journal))
    errors = {r["problem_id"]: r["error"] for r in recs if r["type"] == "error"}
    assert "2 attempts" in errors["q0"] and "died" in errors["q0"]
    assert set(errors) | {r["problem_id"] for r in load_results(out)} == {f"q{i}" for i in range(len(PROBLEMS))}
    assert any(r.get("lost") for r in recs if r["type"] == "worker")
    assert done["s"]["this_invocation"]["failed"] == len(errors)


def test_the_budget_holds_across_workers(ray_here, data, tmp_path):
    out = tmp_path / "capped"
    cap = 0.00012
    s = run_eval(config(data, methods=["large"], max_usd=cap), out, use_cache=False, progress=False,
                 engine=RayEngine(workers=2))
    spent = sum(r["usd"] for r in read_journal(out / "journal.jsonl") if r["type"] == "call")
    assert "stopped" in s and "--max-usd" in s["stopped"]
    assert 0 < spent <= cap
    assert 1 <= len(load_results(out)) < len(PROBLEMS)


def test_a_429_pauses_every_worker_for_its_retry_after(ray_here, data, tmp_path):
    """The paid API is a loopback server: its second request is refused with Retry-After 1.5 s;
    no request from either worker may reach it before that time is up."""
    script = [Reply(), Reply(429, headers={"Retry-After": "1.5"}), Reply()]
    with FaultServer(script) as srv:
        cfg = config(data, methods=["large"], large="openai/fault-model", large_price_as="gpt-4o",
                     large_base_url=srv.base_url)
        s = run_eval(cfg, tmp_path / "limited", use_cache=False, progress=False, engine=RayEngine(workers=2))
        seen = list(srv.seen)
    assert s["this_invocation"]["succeeded"] == len(PROBLEMS)
    assert len(seen) == len(PROBLEMS) + 1
    refused_at = seen[1].at
    # the other worker's request may be on its way when the 429 comes back; every later one waits
    sent_after = [round(r.at - refused_at, 2) for r in seen[2:] if r.at - refused_at > 0.04]
    assert len(sent_after) >= len(PROBLEMS) - 2 and min(sent_after) >= 1.45, sent_after
    assert s["this_invocation"]["engine"]["rate_pauses"] == 1


def test_more_workers_than_the_cluster_holds_is_one_clear_error(ray_here, data, tmp_path):
    with pytest.raises(ConfigError, match="needs 5 CPUs"):
        run_eval(config(data, methods=["large"]), tmp_path / "wide", use_cache=False, progress=False,
                 engine=RayEngine(workers=5))


def _cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cope", "eval", f"jsonl:{data}", "--map", "id=uid", "--method", "cope", "large",
            "--small", SMOL, "--large", SMOL, "--large-price-as", "gpt-4o-mini", "--n", "2", "--max-tokens", "32",
            "--seed", "7", "--out", str(out), "--no-cache", "--quiet", "--engine", "ray", *extra]


@pytest.mark.parametrize("address, needle", [("127.0.0.1:1", "no Ray cluster answers there"),
                                             ("not an address", "give auto, HOST:PORT")])
def test_an_unreachable_address_is_one_line(data, tmp_path, address, needle):
    t0 = time.monotonic()
    p = subprocess.run(_cli(data, tmp_path / "x", "--address", address), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_a_killed_ray_driver_resumes_without_repeating_a_call(data, local_run, tmp_path):
    """The driver (with the Ray instance it started) is killed mid-run; --resume on Ray finishes it."""
    out = tmp_path / "killed-driver"
    cmd = _cli(data, out, "--workers", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = out / "journal.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            kinds = Counter(r.get("type") for r in read_journal(journal)) if journal.exists() else Counter()
            if kinds["result"] >= 3:
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every process of the Ray it started
        proc.wait(timeout=30)
    done_before = sum(1 for r in read_journal(journal) if r["type"] == "result")
    assert 3 <= done_before < 2 * len(PROBLEMS)
    calls_before = sum(call_keys(out).values())
    p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "engine ray: 2 workers on 1 node(s)" in p.stdout
    assert max(call_keys(out).values()) == 1, "a call was repeated after resume"
    assert sum(call_keys(out).values()) > calls_before
    assert outcome(out) == outcome(local_run)


def test_without_ray_installed_the_engine_says_how_to_install_it(data, tmp_path):
    """Ray hidden from the interpreter (as on a default install): one line naming the extra."""
    code = ("import sys; sys.modules['ray'] = None; from cope.cli import main; "
            f"sys.exit(main({_cli(data, tmp_path / 'r')[3:]!r}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ['cope: error: the Ray engine needs Ray: pip install -e ".[ray]" '
                                             '(or ./install.sh --ray)']
    assert not (tmp_path / "r").exists()  # refused before anything was written
