"""The FrugalGPT-style baseline: a scorer fitted on recorded votes decides acceptance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cope.errors import ConfigError
from cope.eval.journal import read_journal
from cope.eval.runner import EvalConfig, load_results, run_eval
from cope.methods.frugal import FrugalScorer, train_from_run, vote_features

SMOL = "local/smollm2-135m"


def test_scorer_learns_that_consensus_predicts_correctness(tmp_path):
    rng = np.random.default_rng(0)
    consensus = rng.random(400)
    y = (rng.random(400) < consensus).astype(float)  # right more often when the vote agrees
    X = np.column_stack([consensus, 1 - consensus, np.zeros(400)])
    s = FrugalScorer.fit(X, y)
    p = s.predict(np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.9, 0.1, 0.0]]))
    assert p[0] < p[1] < p[2]
    assert p[0] < 0.35 and p[2] > 0.65
    f = tmp_path / "scorer.json"
    s.save(f)
    assert np.allclose(FrugalScorer.load(f).predict(X[:5]), s.predict(X[:5]))
    f.write_text('{"features": ["x"], "weights": [1]}')
    with pytest.raises(ConfigError):
        FrugalScorer.load(f)


def test_vote_features():
    assert vote_features(0.5, [0, 0, 1, None]) == [0.5, 0.5, 0.25]
    assert vote_features(0.0, []) == [0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("fdata") / "arith.jsonl"
    qs = [("What is 3 + 4?", "7"), ("What is 10 - 6?", "4"), ("What is 2 times 5?", "10"), ("What is 9 + 9?", "18")]
    p.write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in qs) + "\n")
    return p


def cfg(data: Path, **kw) -> EvalConfig:
    base = dict(benchmark=f"jsonl:{data}", methods=["small-vote"], small=SMOL, large=SMOL,
                large_price_as="gpt-4o-mini", n=3, max_tokens=32, seed=3)
    base.update(kw)
    return EvalConfig(**base)


def test_frugal_method_end_to_end(data, tmp_path):
    train = tmp_path / "train"
    run_eval(cfg(data), train, progress=False)
    scorer = train_from_run(train)
    assert len(scorer.trained_on) == 4
    out = tmp_path / "frugal"
    run_eval(cfg(data, methods=["frugal"], frugal_train=str(train)), out, progress=False)
    assert (out / "frugal_scorer.json").is_file()
    rows = load_results(out)
    assert len(rows) == 4
    for r in rows:
        s1 = r["stages"][0]
        p = float(scorer.predict(np.array([vote_features(s1_consensus(out, r), s1["clusters"])]))[0])
        assert s1["confidence"] == pytest.approx(p)  # the stage's confidence is the scorer's probability
        assert (r["stage"] == 1) == (p >= 0.5)
    notes = [x for x in read_journal(out / "journal.jsonl") if x.get("type") == "note"]
    assert notes and "trained on 4" in notes[0]["message"]  # overlap with the training run is flagged


def s1_consensus(out: Path, r: dict) -> float:
    clusters = [c for c in r["stages"][0]["clusters"] if c is not None]
    if not clusters:
        return 0.0
    return max(clusters.count(c) for c in set(clusters)) / len(r["stages"][0]["clusters"])


def test_frugal_needs_a_training_run(data, tmp_path):
    with pytest.raises(ConfigError, match="--frugal-train"):
        run_eval(cfg(data, methods=["frugal"]), tmp_path / "x", progress=False)
    empty = tmp_path / "greedy"
    run_eval(cfg(data, methods=["small"], limit=1), empty, progress=False)
    with pytest.raises(ConfigError, match="no recorded stage-1 votes"):
        train_from_run(empty)


def _recorded_row(i: int, consensus: float, small_right: bool) -> dict:
    """A cascade-noplan result as a recording journals it: a stage-1 vote, then the large model."""
    votes = 8
    top = round(consensus * votes)
    clusters = [0] * top + list(range(1, votes - top + 1))
    stage1 = {"stage": 1, "n": votes, "confidence": top / votes, "clusters": clusters, "correct": small_right,
              "answer": "s", "cost_usd": 0.0, "latency_s": 1.0, "tokens": {}}
    stage2 = {"stage": 2, "n": 1, "confidence": 1.0, "correct": True, "answer": "L", "cost_usd": 1e-4,
              "latency_s": 2.0, "tokens": {"large": {"execute": {"prompt": 10, "completion": 5}}}}
    return {"method": "cascade-noplan", "problem_id": f"p{i}", "stages": [stage1, stage2], "stage": 2,
            "n_stages": 2, "correct": True, "cost_usd": 1e-4, "latency_s": 3.0}


def test_cross_fitted_frugal_replays_a_recording_without_leaking_labels():
    from cope.methods.frugal import cross_fitted

    rng = np.random.default_rng(1)
    cons = rng.choice([0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0], size=60)
    rows = [_recorded_row(i, c, bool(c >= 0.6)) for i, c in enumerate(cons)]
    out = cross_fitted(rows)
    assert [r["method"] for r in out] == ["frugal-cv"] * 60
    for r, c in zip(out, cons):
        # high consensus is right here, so the scorer keeps it; low consensus pays the large model
        assert r["stage"] == (1 if c >= 0.6 else 2)
        assert r["cost_usd"] == (0.0 if c >= 0.6 else 1e-4)
    assert all(r["correct"] for r in out)
    # A problem's own label never reaches the scorer that scores it.
    flipped = [dict(r) for r in rows]
    flipped[7] = _recorded_row(7, cons[7], not bool(cons[7] >= 0.6))
    again = cross_fitted(flipped)
    assert again[7]["frugal_p"] == out[7]["frugal_p"]
    assert any(a["frugal_p"] != b["frugal_p"] for a, b in zip(again, out))
    with pytest.raises(ConfigError, match="at least 10"):
        cross_fitted(rows[:9])


def test_a_recorded_summary_adds_cross_fitted_frugal(tmp_path):
    from dataclasses import asdict

    from cope.eval.metrics import summarize_run

    cfg = EvalConfig(benchmark="gsm", methods=["cascade-noplan"], record=True, n=8, tau1=0.75, tau2=0.5)
    (tmp_path / "config.json").write_text(json.dumps(asdict(cfg)))
    rng = np.random.default_rng(2)
    cons = rng.choice([0.25, 0.5, 0.75, 1.0], size=20)
    rows = [{"type": "result", **_recorded_row(i, c, bool(c >= 0.6))} for i, c in enumerate(cons)]
    (tmp_path / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = summarize_run(tmp_path)
    assert set(s["methods"]) == {"cascade-noplan", "frugal-cv"}
    cv = s["methods"]["frugal-cv"]
    assert cv["problems"] == 20 and cv["accuracy"] == 1.0
    # the scorer escalates only the low-consensus half; the consensus rule at 0.75 agrees here
    assert cv["cost_usd_per_1m"] == pytest.approx(1e6 * 1e-4 * float(np.mean(cons < 0.6)))
    assert any(n.startswith("frugal-cv:") for n in s["pricing_notes"])

