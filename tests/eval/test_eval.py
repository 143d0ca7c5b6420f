"""The evaluation harness on real SmolLM2 runs: record, replay, resume, budget, report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cope.errors import ConfigError
from cope.eval.journal import read_journal
from cope.eval.metrics import aiq, bootstrap_ci, frontier, replayed, summarize_run
from cope.eval.replay import Recorded, calibrate, load_recorded, sweep
from cope.eval.rundir import StageRecord
from cope.eval.runner import EvalConfig, load_results, run_eval
from arith import smol_config, write_problems

SMOL = "local/smollm2-135m"
PROBLEMS = [
    ("What is 3 + 4?", "7"), ("What is 10 - 6?", "4"), ("What is 2 times 5?", "10"),
    ("What is 9 + 9?", "18"), ("What is 20 divided by 4?", "5"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_problems(tmp_path_factory.mktemp("data") / "arith.jsonl", PROBLEMS)


def config(data: Path, **kw) -> EvalConfig:
    return smol_config(data, dict(methods=["cope"], n=2, max_tokens=40, seed=7), **kw)


@pytest.fixture(scope="module")
def recorded(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rec")
    run_eval(config(data, record=True, limit=4), out, use_cache=False, progress=False)
    return out


@pytest.mark.slow
def test_record_holds_every_stage(recorded):
    rows = load_results(recorded)
    assert len(rows) == 4
    for r in rows:
        assert [s["stage"] for s in r["stages"]] == [1, 2, 3]
        assert r["stage"] == 3  # a recording never stops early
        assert all("clusters" in s and "cluster_correct" in s for s in r["stages"])


@pytest.mark.slow
def test_replay_equals_live(data, recorded, tmp_path):
    tau1, tau2 = 0.5, 1.0
    live_dir = tmp_path / "live"
    run_eval(config(data, tau1=tau1, tau2=tau2, limit=4), live_dir, use_cache=False, progress=False)
    live = {r["problem_id"]: r for r in load_results(live_dir)}
    rec = {r["problem_id"]: replayed(r, tau1, tau2) for r in load_results(recorded)}
    assert live.keys() == rec.keys()
    for pid, r in rec.items():
        assert live[pid]["stage"] == r["stage"], pid
        assert live[pid]["answer"] == r["answer"], pid
        assert live[pid]["correct"] == r["correct"], pid
        assert live[pid]["cost_usd"] == pytest.approx(r["cost_usd"]), pid
        assert live[pid]["tokens"] == r["tokens"], pid
    # the vectorized sweep agrees with the per-problem replay
    s = sweep(load_recorded(recorded), np.array([tau1]), np.array([tau2]))
    assert s["accuracy"][0, 0] == pytest.approx(np.mean([r["correct"] for r in rec.values()]))
    assert s["cost"][0, 0] == pytest.approx(np.mean([r["cost_usd"] for r in rec.values()]))


def test_replay_subsets_and_smaller_n(recorded):
    full = load_recorded(recorded)
    one = load_recorded(recorded, n=1)
    assert one.n == 1 and full.n == 2
    assert set(np.unique(one.conf[:, :2])) <= {0.0, 1.0}  # one vote is unanimous or absent
    only_large = sweep(full, np.array([0.0]), np.array([0.0]), stages=(3,))
    assert only_large["accuracy"][0, 0] == pytest.approx(full.correct[:, 2].mean())
    with pytest.raises(ConfigError):
        sweep(full, np.array([0.5]), np.array([0.5]), stages=(1, 2))
    with pytest.raises(ConfigError):
        load_recorded(recorded, n=3)


def test_calibrate_respects_target(recorded):
    free = calibrate(recorded, target_cost=0.0, boot=100)
    assert free["cost_usd_per_1m"] == 0.0  # only settings that never pay the large model
    best = calibrate(recorded, target_accuracy=0.0, boot=100)
    assert best["cost_usd_per_1m"] <= free["cost_usd_per_1m"] + 1e-9
    assert best["accuracy_ci95"][0] <= best["accuracy"] <= best["accuracy_ci95"][1]
    costs = [p["cost_usd_per_1m"] for p in best["frontier"]]
    accs = [p["accuracy"] for p in best["frontier"]]
    assert costs == sorted(costs) and accs == sorted(accs)


@pytest.mark.slow
def test_resume_after_kill_repeats_no_call(data, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cope", "eval", f"jsonl:{data}", "--map", "id=uid", "--method", "cope", "large",
           "--small", SMOL, "--large", SMOL, "--large-price-as", "gpt-4o-mini", "--n", "2", "--max-tokens", "40",
           "--seed", "7", "--out", str(out), "--no-cache", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            kinds = Counter(r.get("type") for r in read_journal(journal)) if journal.exists() else Counter()
            if kinds["result"] >= 2:
                break
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = [r for r in read_journal(journal) if r["type"] == "call"]
    done_before = sum(1 for r in read_journal(journal) if r["type"] == "result")
    assert 2 <= done_before < 2 * len(PROBLEMS)
    p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    calls = [r for r in read_journal(journal) if r["type"] == "call"]
    keys = Counter(r["key"] for r in calls)
    assert max(keys.values()) == 1, "a call was repeated after resume"
    assert len(calls) > len(before)
    results = load_results(out)
    assert Counter(r["method"] for r in results) == {"cope": len(PROBLEMS), "large": len(PROBLEMS)}


def test_answers_from_the_shared_cache_are_journaled_in_the_run(data, tmp_path):
    # the first run leaves its answers in the cache shared across runs; the second is answered from it
    # and must still hold every answer itself, so it resumes and replays where that cache is not
    cfg = dict(methods=["cope", "large"], limit=2, large_price_as="gpt-4o-mini")
    run_eval(config(data, **cfg), tmp_path / "first", progress=False)
    second = tmp_path / "second"
    s = run_eval(config(data, **cfg), second, progress=False)
    assert s["this_invocation"]["real_calls"] == 0 and s["this_invocation"]["cached_calls"] > 0
    shared = [r for r in read_journal(second / "journal.jsonl") if r.get("from") == "shared cache"]
    assert len(shared) == s["this_invocation"]["cached_calls"] and all(r["usd"] == 0.0 for r in shared)
    moved = tmp_path / "moved"  # the run dir alone: results dropped, no shared cache
    moved.mkdir()
    shutil.copy(second / "config.json", moved)
    (moved / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in read_journal(second / "journal.jsonl")
                                                 if r["type"] != "result"))
    again = run_eval(config(data, **cfg), moved, resume=True, use_cache=False, progress=False)
    assert again["this_invocation"]["real_calls"] == 0 and again["this_invocation"]["spent_usd"] == 0.0
    strip = lambda rows: sorted((r["method"], r["problem_id"], r["answer"], r["cost_usd"]) for r in rows)  # noqa: E731
    assert strip(load_results(moved)) == strip(load_results(second))


def test_budget_cap_stops_before_exceeding(data, tmp_path):
    out = tmp_path / "capped"
    cap = 0.0001
    s = run_eval(config(data, methods=["large"], max_usd=cap), out, use_cache=False, progress=False)
    assert "stopped" in s and "--max-usd" in s["stopped"]
    spent = sum(r["usd"] for r in read_journal(out / "journal.jsonl") if r["type"] == "call")
    assert 0 < spent <= cap
    assert len(load_results(out)) < len(PROBLEMS)


def test_bootstrap_interval_on_known_distribution():
    rng = np.random.default_rng(1)
    x = rng.random(1000) < 0.3
    lo, hi = bootstrap_ci(x.astype(float))
    assert lo < 0.3 < hi
    assert 0.04 < hi - lo < 0.075  # ~ 2 * 1.96 * sqrt(0.21 / 1000)
    assert bootstrap_ci([1.0] * 50) == (1.0, 1.0)


def test_frontier_and_aiq():
    pts = [(0, 0.5), (10, 0.7), (5, 0.4), (20, 0.7), (30, 0.9)]
    assert frontier(pts) == [(0, 0.5), (10, 0.7), (30, 0.9)]
    # upper hull of (0,.5),(10,.7),(30,.9) is the whole frontier: trapezoids / 30
    assert aiq(pts) == pytest.approx(((0.5 + 0.7) / 2 * 10 + (0.7 + 0.9) / 2 * 20) / 30)
    assert aiq([(0, 0.5), (10, 0.5)]) == pytest.approx(0.5)


def test_report_renders(data, recorded, tmp_path):
    plain = tmp_path / "plain"
    run_eval(config(data, methods=["large", "small"], limit=4), plain, use_cache=False, progress=False)
    out = tmp_path / "report"
    p = subprocess.run([sys.executable, "-m", "cope", "report", str(recorded), str(plain), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    md = (out / "summary.md").read_text()
    assert "| cope | 4 |" in md and f"cope report {recorded} {plain}" in md
    assert "| USD total |" in md
    assert "Confidence against accuracy" in md and "\n| cope | 1 | " in md  # the recorded run's reliability table
    # local compute is shown though it is free: the small model's generated tokens per problem
    s = summarize_run(plain)["methods"]
    small_rows = [r for r in load_results(plain) if r["method"] == "small"]
    generated = sum(r["tokens"]["small"]["execute"]["completion"] for r in small_rows) / 4
    assert s["large"]["small_generated_tokens_per_problem"] == 0
    assert s["small"]["small_generated_tokens_per_problem"] == generated > 0
    assert "| small tokens generated per problem |" in md
    # the plain run has the large model: the small one is compared with it pair by pair
    assert "Against `large` on the same problems" in md and "\n| small | 4 | " in md
    page = (out / "report.html").read_text()
    assert page.count("class=\"plotly-graph-div") >= 4  # accuracy, funnel, latency, reliability (recorded run)
    assert "<table>" in page and "<th>accuracy [95% CI]</th>" in page and "<code>" in page
    assert (out / "accuracy_vs_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reliability_tables_of_a_recorded_cascade(recorded):
    from cope.eval.metrics import reliability

    def row(c1, ok1, c2, ok2):
        return {"stages": [{"confidence": c1, "correct": ok1}, {"confidence": c2, "correct": ok2},
                           {"confidence": 1.0, "correct": True}]}

    rows = [row(1.0, True, 0.5, True), row(1.0, False, 0.5, False), row(0.25, False, 0.5, True),
            row(0.25, False, 0.75, True)]
    st1, st2 = reliability(rows)  # the last stage decides nothing: no table
    assert st1["bins"] == [{"confidence": 0.25, "problems": 2, "right": 0}, {"confidence": 1.0, "problems": 2, "right": 1}]
    assert st1["ece"] == pytest.approx((2 * 0.25 + 2 * 0.5) / 4)
    assert st2["bins"][0] == {"confidence": 0.5, "problems": 3, "right": 2}
    # perplexity-like confidences, all distinct, are binned by tenths
    fine = [row(0.31 + i / 100, i % 2 == 0, 0.5, True) for i in range(12)]
    assert [b["confidence"] for b in reliability(fine)[0]["bins"]] == [0.3, 0.4]
    # ... and their gap uses the confidences themselves, not the bin's label
    exact = sum(abs(sum(i % 2 == 0 for i in b) - sum(0.31 + i / 100 for i in b)) for b in (range(9), range(9, 12)))
    assert reliability(fine)[0]["ece"] == pytest.approx(exact / 12)
    # the real recording: one table per deciding stage, over every recorded problem
    cal = summarize_run(recorded)["calibration"]["cope"]
    assert [t["stage"] for t in cal] == [1, 2]
    assert all(sum(b["problems"] for b in t["bins"]) == 4 for t in cal)


def test_paired_comparison_with_the_large_model():
    from cope.eval.metrics import paired_vs

    def rows(method, right, cost):
        return [{"method": method, "problem_id": f"p{i}", "correct": bool(r), "cost_usd": cost}
                for i, r in enumerate(right)]

    large = rows("large", [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 2e-4)
    cope = rows("cope", [1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 1e-4)
    worse = rows("worse", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.0)[:6]  # answered only 6 problems
    p = paired_vs({"large": large, "cope": cope, "worse": worse}, "large")
    assert set(p) == {"cope", "worse"}
    assert p["cope"]["accuracy_diff"] == pytest.approx(0.4)
    assert p["cope"]["only_method_right"] == 4 and p["cope"]["only_baseline_right"] == 0
    lo, hi = p["cope"]["accuracy_diff_ci95"]
    assert 0.0 < lo <= 0.4 <= hi  # never worse on a pair, better on four: the interval excludes 0
    assert p["cope"]["cost_ratio"] == pytest.approx(0.5) and p["cope"]["cost_ratio_ci95"] == pytest.approx((0.5, 0.5))
    assert p["worse"]["problems"] == 6 and p["worse"]["accuracy_diff"] == pytest.approx(-5 / 6)
    assert p["worse"]["cost_ratio"] == 0.0


@pytest.mark.parametrize("args,needle", [
    (["report", "/nonexistent/run"], "not a run directory"),
    (["calibrate", "/nonexistent/run", "--target-cost", "1"], "not a run directory"),
    (["eval", "nosuch-bench"], "unknown benchmark"),
    (["eval", "gsm", "--method", "nosuch"], "unknown method"),
    (["eval", "jsonl:/nonexistent.jsonl"], "not found"),
    (["eval", "gsm", "--limit", "0"], "--limit"),
])
def test_bad_input_one_line(args, needle, tmp_path):
    p = subprocess.run([sys.executable, "-m", "cope", *args, *(["--out", str(tmp_path / "o")] if args[0] == "eval" else [])],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert needle in p.stderr.strip().splitlines()[-1]


def test_existing_run_needs_resume_and_calibrate_needs_record(data, recorded, tmp_path):
    with pytest.raises(ConfigError, match="--resume"):
        run_eval(config(data), recorded, progress=False)
    out = tmp_path / "plain"
    run_eval(config(data, methods=["small"], limit=1), out, use_cache=False, progress=False)
    with pytest.raises(ConfigError, match="--record"):
        calibrate(out, target_cost=1.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "answer": "2"}\nnot json\n')
    with pytest.raises(ConfigError, match="bad.jsonl:2"):
        run_eval(config(bad, methods=["small"]), tmp_path / "b", progress=False)


def test_an_archived_run_reports_and_replays_but_does_not_grow(data, recorded, tmp_path):
    import gzip

    arch = tmp_path / "archived"
    arch.mkdir()
    shutil.copy(recorded / "config.json", arch / "config.json")
    with gzip.open(arch / "journal.jsonl.gz", "wb") as f:
        f.write((recorded / "journal.jsonl").read_bytes())
    assert summarize_run(arch)["methods"] == summarize_run(recorded)["methods"]
    assert calibrate(arch, target_accuracy=0.0, boot=10)["tau1"] == calibrate(recorded, target_accuracy=0.0,
                                                                               boot=10)["tau1"]
    with pytest.raises(ConfigError, match="archived run"):
        run_eval(config(data, record=True, limit=4), arch, resume=True, progress=False)
    assert not (arch / "journal.jsonl").exists()
    (arch / "journal.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match="unreadable archive"):
        summarize_run(arch)


def test_corrupted_journal_is_a_clear_error(recorded, tmp_path):
    bad = tmp_path / "bad-run"
    shutil.copytree(recorded, bad)
    lines = (bad / "journal.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # damage a line in the middle
    (bad / "journal.jsonl").write_text("\n".join(lines) + "\n")
    p = subprocess.run([sys.executable, "-m", "cope", "report", str(bad)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "corrupted journal line" in p.stderr


def test_textworld_benchmark_plays_episodes(tmp_path):
    out = tmp_path / "tw"
    s = run_eval(EvalConfig(benchmark="textworld", methods=["small"], limit=1, small=SMOL, large=SMOL,
                            n=2, max_tokens=24, max_steps=2, seed=5), out, progress=False)
    (r,) = load_results(out)
    assert r["problem_id"] == "cooking-L1-s5" and r["answer"] in ("won", "lost", "max_steps")
    assert 1 <= r["steps"] <= 2 and isinstance(r["correct"], bool)
    assert sum(r["stage_counts"].values()) == r["steps"]
    assert s["methods"]["small"]["steps_mean"] == r["steps"]
    # cope show prints the episode's steps from the record: each action, the stage that settled it, its votes
    assert [x["step"] for x in r["episode"]] == list(range(1, r["steps"] + 1))
    shown = subprocess.run([sys.executable, "-m", "cope", "show", str(out), r["problem_id"]],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"step   1: {r['episode'][0]['action']!r} (stage {r['episode'][0]['stage']}" in shown.stdout
    with pytest.raises(ConfigError, match="level"):
        run_eval(EvalConfig(benchmark="textworld:cooking:x", methods=["small"]), tmp_path / "bad", progress=False)


def test_episode_steps_count_samples_drawn_and_replay_early_stopping(tmp_path):
    out = tmp_path / "tw"
    s = run_eval(EvalConfig(benchmark="textworld", methods=["cope", "cope-auto"], limit=1, small=SMOL, large=SMOL,
                            n=8, max_tokens=24, max_steps=2, seed=5), out, progress=False)
    rows = {r["method"]: r for r in load_results(out)}
    for m, r in rows.items():
        for step in r["episode"]:  # every stage the step ran, in the journal's stage shape
            assert [st["stage"] for st in step["stages"]] == list(range(1, step["stage"] + 1))
            assert all(len(st["clusters"]) == st["drawn"] <= st["n"] for st in step["stages"])
            # the same stage shape problems journal (one builder), less what only a scored problem has
            unscored = set(StageRecord.__annotations__) - {"passing", "styles", "cluster_correct"}
            assert all(set(st) == unscored for st in step["stages"])
            if m == "cope":  # no early stopping: every vote in full
                assert all(st["drawn"] == st["n"] for st in step["stages"])
    for m in rows:  # samples drawn per stage are counted over the steps (the report's table had nothing)
        draws = s["methods"][m]["stage_draws"]
        assert draws and all(d["per"] == "step" for d in draws)
        ran = [st for step in rows[m]["episode"] for st in step["stages"] if st["stage"] == 1]
        assert draws[0]["problems"] == len(ran) == rows[m]["steps"]
        assert draws[0]["drawn_mean"] == pytest.approx(sum(st["drawn"] for st in ran) / len(ran))
    e = s["episode_early_stopping"]
    assert set(e) == {"cope"}  # cope-auto stopped early live: nothing to replay
    full = sum(st["n"] for step in rows["cope"]["episode"] for st in step["stages"])
    assert e["cope"]["steps"] == rows["cope"]["steps"] and e["cope"]["samples_full"] == full
    assert e["cope"]["samples_predictive"] <= e["cope"]["samples_exact"] <= full
    from cope.eval.report import write_report

    md = write_report([out])["markdown"].read_text()
    assert "over the steps of every episode" in md and "Early stopping replayed on every step's full votes" in md


def _step(stage, *votes):
    """An episode step as the agent driver journals it: each ran stage's vote keys, n = len(keys)."""
    stages = []
    for i, keys in enumerate(votes, 1):
        top = Counter(k for k in keys if k is not None).most_common(1)
        conf = top[0][1] / len(keys) if top else 0.0
        stages.append({"stage": i, "n": len(keys), "drawn": len(keys), "clusters": list(keys), "confidence": conf,
                       "accepted": i == stage, "answer": None, "correct": None, "cost_usd": 0.0, "latency_s": 0.0,
                       "sample_tokens": [3] * len(keys),
                       "tokens": {"small": {"execute": {"prompt": 100, "completion": 3 * len(keys)}}}})
    return {"step": 1, "stage": stage, "stages": stages}


def test_early_stopping_replayed_on_episode_steps():
    from cope.eval.replay import episode_early_stop
    from cope.methods import method_config

    stages = method_config("cope", n=8, tau1=0.75, tau2=0.5, max_tokens=64, explicit_taus=True).for_family("agent").stages
    rows = [{"episode": [
        # stage 1 keeps its majority's goal: four different actions in the first window settle neither the
        # decision's answer nor the goal, so it draws all 8; stage 2 has 4 of 8 for one action after one
        # window, which meets 0.5 whatever follows and no rival can pass it: 4 drawn
        _step(2, [0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 0, 0, 0, 0, 0, 1]),
        # accepted at stage 1 with 7 of 8, but after one window only 4 of 8: still open, all 8 drawn
        _step(1, [0, 0, 0, 0, 0, 0, 0, 1]),
        # a step that stopped early already (a live early-stopping run): not replayed
        {"step": 3, "stage": 1, "stages": [{**_step(1, [0] * 8)["stages"][0], "drawn": 4}]},
    ]}]
    e = episode_early_stop(rows, stages)
    assert e["steps"] == 2 and e["samples_full"] == 24 and e["samples_exact"] == 8 + 4 + 8
    assert e["small_tokens_full"] == 72 and e["small_tokens_exact"] == 60
    assert e["samples_predictive"] <= e["samples_exact"]
    assert episode_early_stop(rows, method_config("large", n=8, max_tokens=64).for_family("agent").stages) is None


@pytest.mark.slow
def test_mtbench_run_is_judged_pairwise(tmp_path):
    out = tmp_path / "mt"
    s = run_eval(EvalConfig(benchmark="mtbench", methods=["small", "large"], limit=1, small=SMOL, large=SMOL,
                            n=2, max_tokens=24, seed=5), out, progress=False)
    assert s["methods"]["small"]["accuracy"] is None  # no reference answer to score against
    p = subprocess.run([sys.executable, "-m", "cope", "judge", str(out), "--judge", SMOL, "--baseline", "large"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    verdicts = [r for r in read_journal(out / "journal.jsonl") if r["type"] == "judgement"]
    assert len(verdicts) == 1 and verdicts[0]["verdict"] in ("win", "tie", "loss")
    again = subprocess.run([sys.executable, "-m", "cope", "judge", str(out), "--judge", SMOL, "--baseline", "large"],
                           capture_output=True, text=True, timeout=300)
    assert "0 pair(s) judged now" in again.stdout  # judged pairs are not judged again
    p = subprocess.run([sys.executable, "-m", "cope", "report", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Judged: small vs large" in (out / "summary.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "cope", "judge", str(out), "--judge", SMOL, "--baseline", "nosuch"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no results for the baseline" in bad.stderr


def test_thresholds_default_to_the_task_family(data, tmp_path):
    run_eval(config(data, methods=["small"], limit=1), tmp_path / "m", progress=False)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["tau1"] == 0.75
    from cope.benchmarks.registry import benchmark_task

    assert benchmark_task("humaneval") == "code" and benchmark_task("mbpp:x.jsonl") == "code"
    assert benchmark_task("mtbench") == "open" and benchmark_task("textworld:coin_collector") == "agent"
    code = tmp_path / "code.jsonl"
    code.write_text(json.dumps({"text": "Write add(a, b).", "test_list": ["assert add(1, 2) == 3"]}) + "\n")
    run_eval(EvalConfig(benchmark=f"mbpp:{code}", methods=["small"], small=SMOL, large=SMOL, max_tokens=24),
             tmp_path / "c", progress=False)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert (cfg["tau1"], cfg["tau2"]) == (1.0, 1.0)  # code accepts only a sample that passes every test


def _synthetic_recording(stage1_right: np.ndarray, conf1: np.ndarray) -> Recorded:
    P = len(conf1)
    conf = np.column_stack([conf1, np.full(P, 0.25), np.ones(P)])
    correct = np.column_stack([stage1_right, np.zeros(P, dtype=bool), np.ones(P, dtype=bool)])
    cost = np.column_stack([np.zeros(P), np.full(P, 1e-5), np.full(P, 2e-4)])
    return Recorded([f"p{i}" for i in range(P)], conf, correct, cost, np.zeros((P, 3)), 8)


def test_cross_validated_calibration_is_out_of_fold():
    from cope.eval.replay import _cross_validated

    grid = np.linspace(0, 1, 21)
    # Consensus tells right from wrong: every fold finds the threshold, nothing is lost.
    conf1 = np.tile([0.25, 0.5, 0.875, 1.0], 10)
    clean = _synthetic_recording(conf1 >= 0.8, conf1)
    cv = _cross_validated(clean, grid, [(1, 2, 3)], None, 1.0)
    assert cv["folds"] == 5 and len(cv["chosen"]) == 5
    assert cv["accuracy"] == 1.0 and cv["cost_usd_per_1m"] == pytest.approx(1e6 * 2.1e-4 / 2)
    assert all(0.55 <= c["tau1"] <= 0.875 for c in cv["chosen"])
    # A fold's thresholds are chosen without its problems: relabelling them
    # changes what is scored, never what was chosen for them.
    from cope.eval.metrics import fold_ids

    rng = np.random.default_rng(4)
    right, c1 = rng.random(60) < 0.5, rng.choice(grid, 60)
    budget = 1e6 * 2.1e-4 * 0.5
    base = _cross_validated(_synthetic_recording(right, c1), grid, [(1, 2, 3)], budget, None)
    fold = fold_ids(60, 5)
    flipped = right.copy()
    flipped[fold == 2] = ~flipped[fold == 2]
    again = _cross_validated(_synthetic_recording(flipped, c1), grid, [(1, 2, 3)], budget, None)
    assert again["chosen"][2] == base["chosen"][2]
    assert again["chosen"] != base["chosen"] and again["accuracy"] != base["accuracy"]
    assert _cross_validated(_synthetic_recording(conf1[:9] > 0.8, conf1[:9]), grid, [(1, 2, 3)], None, 1.0) is None


def test_stage3_without_plan_splices_the_large_answer():
    from cope.eval.metrics import stage3_without_plan

    def stage(k, conf, right, cost):
        return {"stage": k, "n": 8, "confidence": conf, "correct": right, "answer": str(right), "cost_usd": cost,
                "latency_s": 1.0, "tokens": {}}

    cope = [{"method": "cope", "problem_id": "a", "stages": [stage(1, 0.9, True, 0.0), stage(2, 0.1, False, 1e-5),
                                                              stage(3, 1.0, False, 2e-4)]},
            {"method": "cope", "problem_id": "b", "stages": [stage(1, 0.1, False, 0.0), stage(2, 0.1, False, 1e-5),
                                                              stage(3, 1.0, False, 2e-4)]},
            {"method": "cope", "problem_id": "c", "stages": [stage(1, 0.1, False, 0.0), stage(2, 0.1, False, 1e-5),
                                                              stage(3, 1.0, True, 2e-4)]}]
    large = [{"method": "large", "problem_id": p, "stages": [stage(1, 1.0, right, 1.5e-4)]}
             for p, right in (("a", False), ("b", True))]
    out = {r["problem_id"]: r for r in stage3_without_plan(cope, large, 0.75, 0.5)}
    assert set(out) == {"a", "b"}  # c has no large answer to splice in
    assert out["a"]["stage"] == 1 and out["a"]["correct"] and out["a"]["cost_usd"] == 0.0
    assert out["b"]["stage"] == 3 and out["b"]["correct"]  # the unplanned large answer, not COPE's stage 3
    assert out["b"]["cost_usd"] == pytest.approx(1e-5 + 1.5e-4)  # stage 2 (its guideline included) + large
    assert out["b"]["method"] == "cope-s3-noplan"


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parent.parent.parent / "results").iterdir()
                                        if (p / "config.json").is_file()))
def test_committed_results_regenerate_from_their_journals(name, tmp_path):
    """Every committed table is what `cope report` makes of the committed journal today."""
    root = Path(__file__).parent.parent.parent
    p = subprocess.run([sys.executable, "-m", "cope", "report", f"results/{name}", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=root)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "summary.md").read_text() == (root / "results" / name / "summary.md").read_text()


def test_calibration_rule_on_both_targets():
    from cope.eval.replay import _choose

    # (tau1, tau2, accuracy, USD per 1M)
    pairs = [(0.0, 0.0, 0.2, 0.0), (0.5, 0.0, 0.5, 50.0), (0.5, 0.5, 0.5, 40.0), (1.0, 1.0, 0.7, 200.0)]
    assert _choose(pairs, 60.0, None, strict=True) == (0.5, 0.5, 0.5, 40.0)  # best within $60, then cheaper
    assert _choose(pairs, None, 0.5, strict=True) == (0.5, 0.5, 0.5, 40.0)  # cheapest reaching 50%
    assert _choose(pairs, None, 0.1, strict=True) == (0.0, 0.0, 0.2, 0.0)
    with pytest.raises(ConfigError, match=r"no thresholds reach a cost of \$-1 .* cheapest costs \$0.00"):
        _choose(pairs, -1.0, None, strict=True)
    with pytest.raises(ConfigError, match="no thresholds reach accuracy 0.9; the best is 0.700"):
        _choose(pairs, None, 0.9, strict=True)
    # a cross-validation fold still picks the nearest setting
    assert _choose(pairs, -1.0, None, strict=False) == (0.0, 0.0, 0.2, 0.0)
    assert _choose(pairs, None, 0.9, strict=False) == (1.0, 1.0, 0.7, 200.0)


FOUR_STAGES = """
[tiers.medium]
spec = "local/smollm2-135m"

[[stage]]
executor = "small"
n = 2
temperature = 0.8
threshold = {t1}

[[stage]]
executor = "medium"
n = 2
temperature = 0.8
threshold = {t2}

[[stage]]
executor = "large"
n = 2
temperature = 0.8
threshold = {t3}

[[stage]]
executor = "large"
n = 1
"""


def _four(t1, t2, t3):
    from cope.cascade_file import dump, loads

    return dump(loads(FOUR_STAGES.format(t1=t1, t2=t2, t3=t3)))


@pytest.mark.slow
def test_a_four_stage_cascade_replays_and_calibrates_like_its_live_run(data, tmp_path):
    """Replay and calibration are not tied to COPE's three stages: a cascade file of four is recorded
    once, replayed at thresholds equal to a live run's, and calibrated to a cascade file that loads."""
    from cope.cascade_file import loads
    from cope.eval.replay import cascade_from_calibration, sweep_n

    rec_dir, live_dir = tmp_path / "rec", tmp_path / "live"
    run_eval(config(data, methods=["four"], record=True, limit=4, extra={"cascade_files": {"four": _four(0.5, 0.5, 0.5)}}),
             rec_dir, use_cache=False, progress=False)
    taus = (1.0, 0.5, 1.0)
    run_eval(config(data, methods=["four"], limit=4, extra={"cascade_files": {"four": _four(*taus)}}),
             live_dir, use_cache=False, progress=False)
    rows = load_results(rec_dir)
    assert all(len(r["stages"]) == 4 and r["stage"] == 4 for r in rows)
    live = {r["problem_id"]: r for r in load_results(live_dir)}
    replays = {r["problem_id"]: replayed(r, *taus) for r in rows}
    for pid, r in replays.items():
        assert (live[pid]["stage"], live[pid]["answer"], live[pid]["correct"]) == (r["stage"], r["answer"], r["correct"])
        assert live[pid]["cost_usd"] == pytest.approx(r["cost_usd"]), pid
    rec = load_recorded(rec_dir, method="four")
    assert rec.stages == 4
    s = sweep_n(rec, [np.array([t]) for t in taus])
    assert s["accuracy"][0, 0, 0] == pytest.approx(np.mean([r["correct"] for r in replays.values()]))
    assert s["cost"][0, 0, 0] == pytest.approx(np.mean([r["cost_usd"] for r in replays.values()]))
    # a threshold of 0 at stage 1 answers everything there, for free (small is a local model)
    free = calibrate(rec_dir, method="four", target_cost=0.0, boot=20)
    assert free["cost_usd_per_1m"] == 0.0 and len(free["thresholds"]) == 3 and free["stages"] == [1, 2, 3, 4]
    best = calibrate(rec_dir, method="four", target_accuracy=0.0, stages="auto", boot=20)
    assert len(best["policies"]) == 8 and best["cost_usd_per_1m"] == 0.0
    written = loads(cascade_from_calibration(free))
    assert [st.threshold for st in written.stages] == [*free["thresholds"], None]
    assert [st.executor for st in written.stages] == ["small", "medium", "large", "large"]
    out = tmp_path / "cal.toml"
    p = subprocess.run([sys.executable, "-m", "cope", "calibrate", str(rec_dir), "--method", "four", "--target-cost",
                        "0", "--write-cascade", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "thresholds" in p.stdout and loads(out.read_text()).stages[0].threshold == free["thresholds"][0]
    p = subprocess.run([sys.executable, "-m", "cope", "calibrate", str(rec_dir), "--method", "four", "--target-cost",
                        "0", "--write-preset", str(tmp_path / "p.toml")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "use --write-cascade" in p.stderr and "Traceback" not in p.stderr


def test_calibrate_says_where_large_alone_sits(recorded):
    """On results/gsm no threshold setting reaches the large model's accuracy, and calibrate says so."""
    root = Path(__file__).parent.parent.parent
    r = calibrate(root / "results" / "gsm", target_cost=150, boot=20)
    lg = r["large"]
    assert lg["accuracy"] == pytest.approx(0.55) and lg["settings_that_beat_it"] == 0
    assert lg["best_accuracy"] == pytest.approx(max(p["accuracy"] for p in r["frontier"]))
    assert lg["best_accuracy"] < 0.55
    p = subprocess.run([sys.executable, "-m", "cope", "calibrate", "results/gsm", "--target-cost", "150"],
                       capture_output=True, text=True, timeout=300, cwd=root)
    assert p.returncode == 0 and "the large model alone beats every threshold setting" in p.stdout
    assert calibrate(recorded, target_accuracy=0.0, boot=20)["large"] is None  # a run without `large`


def test_report_prices_a_run_as_another_model_from_its_tokens(tmp_path):
    """`cope report --price-as`: the same recorded tokens, every tier above small at another row."""
    from cope.pricing import PriceTable

    root = Path(__file__).parent.parent.parent
    base = summarize_run(root / "results" / "gsm")["methods"]
    what_if = summarize_run(root / "results" / "gsm", price_as="gpt-4o")["methods"]
    t = PriceTable.load()
    mini, big = t.get("gpt-4o-mini"), t.get("gpt-4o")
    assert big.input_per_m / mini.input_per_m == pytest.approx(big.output_per_m / mini.output_per_m)
    ratio = big.input_per_m / mini.input_per_m  # the large model was priced as gpt-4o-mini
    for m in ("large", "cope", "cascade-noplan"):
        assert what_if[m]["cost_usd_total"] == pytest.approx(base[m]["cost_usd_total"] * ratio, rel=1e-6), m
        assert what_if[m]["accuracy"] == base[m]["accuracy"]
    assert what_if["small"]["cost_usd_total"] == 0.0
    p = subprocess.run([sys.executable, "-m", "cope", "report", "results/gsm", "--out", str(tmp_path),
                        "--price-as", "gpt-4o"], capture_output=True, text=True, timeout=300, cwd=root)
    assert p.returncode == 0, p.stderr
    assert "what-if: every tier above small priced as gpt-4o" in (tmp_path / "summary.md").read_text()
    p = subprocess.run([sys.executable, "-m", "cope", "report", "results/gsm", "--out", str(tmp_path),
                        "--price-as", "no-such-model"], capture_output=True, text=True, timeout=300, cwd=root)
    assert p.returncode == 2 and "no price for 'no-such-model'" in p.stderr and "Traceback" not in p.stderr
