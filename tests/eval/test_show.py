"""``cope show DIR PROBLEM_ID``: a problem's trace rebuilt from a real SmolLM2 run's journal."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cope.eval.journal import read_journal
from cope.eval.runner import load_results
from cope.eval.show import trace

@pytest.fixture(scope="module")
def run(small_run: Path) -> Path:
    return small_run


def cope_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cope", *args], capture_output=True, text=True, timeout=120)


def test_the_trace_holds_every_call_and_sample_of_the_journal(run):
    t = trace(run, "q0")
    rec = {r["method"]: r for r in load_results(run) if r["problem_id"] == "q0"}
    journal_texts = {c["text"] for r in read_journal(run / "journal.jsonl") if r.get("type") == "call"
                     for g in r["generations"] for c in g["completions"]}
    for m in ("cope", "large"):
        e = t["methods"][m]
        assert e["same_as_recorded"], m
        assert e["replayed"]["answer"] == rec[m]["answer"] and e["replayed"]["stage"] == rec[m]["stage"]
        assert len(e["samples"]) == rec[m]["calls"]  # one entry per call the method made
        texts = [x for c in e["samples"] for x in c["texts"]]
        assert texts and set(texts) <= journal_texts
    cope = t["methods"]["cope"]
    plans = [c for c in cope["samples"] if c["role"] == "plan" and c["stage"] == 1]
    assert plans and len(plans[0]["texts"]) == 2  # n = 2 goals
    assert sum(c["cost_usd"] for c in cope["samples"]) == pytest.approx(rec["cope"]["cost_usd"])


def test_cope_show_prints_plans_samples_and_votes(run):
    r = cope_cli("show", str(run), "q1", "--method", "cope")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "What is 10 - 6?" in out and "== cope:" in out and "== large:" not in out
    assert "replayed from the journal: the same answer, stage and cost as recorded" in out
    assert "-- stage 1" in out and "plan: 1 call(s) to small" in out and "sample 1: read as" in out
    as_json = json.loads(cope_cli("show", str(run), "q1", "--json").stdout)
    assert set(as_json["methods"]) == {"cope", "large"}


def test_a_call_missing_from_the_journal_falls_back_to_the_record(run, tmp_path):
    """A journal written with other prompts (an earlier version): no model runs, the record is shown."""
    copy = tmp_path / "old"
    copy.mkdir()
    (copy / "config.json").write_text((run / "config.json").read_text())
    kept = [r for r in read_journal(run / "journal.jsonl")
            if not (r.get("type") == "call" and r["kind"] == "generate" and r["params"]["n"] == 2)]  # drop the goals
    with gzip.open(copy / "journal.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    r = cope_cli("show", str(copy), "q0", "--method", "cope")
    assert r.returncode == 0, r.stderr
    assert "could not be replayed" in r.stdout and "stage 1: answer" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (("nope",), "no problem 'nope' in this run (2 problems: q0, q1)"),
    (("q0", "--method", "small"), "method 'small' is not in this run"),
])
def test_bad_input_is_one_line(run, args, needle):
    r = cope_cli("show", str(run), *args)
    assert r.returncode == 2 and r.stderr.startswith("cope: error: ") and needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
