"""The FrugalGPT-style baseline: a scorer fitted on recorded votes decides acceptance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cope.errors import ConfigError
from cope.eval.journal import read_journal
from cope.eval.runner import EvalConfig, load_results, run_eval
from cope.frugal import FrugalScorer, train_from_run, vote_features

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
