"""FrugalGPT-style acceptance: a light scorer trained on recorded runs.

FrugalGPT accepts a cheap model's answer when a learned scorer says it is
likely right, instead of trusting a raw confidence number. Here the scorer is
a logistic regression on features of the small model's vote (consensus share,
number of distinct answers, share of samples without an answer), fitted by
Newton's method in numpy (a handful of features needs no ML library), trained
on a recorded run whose labels are the stage-1 answer's correctness. It plugs
into the same engine as a task wrapper: the stage's confidence becomes the
scorer's probability of being correct.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..eval.rundir import RunContext, load_results
from ..eval.replay import replayed
from ..eval.stats import fold_ids
from ..models.base import Completion, Message
from ..tasks.base import Assessment, Plan, Problem, Task

FEATURES = ("consensus", "distinct_share", "no_answer_share")


def vote_features(confidence: float, clusters: Sequence[int | None]) -> list[float]:
    """Features of one stage's vote; works on a live Assessment or a recorded stage."""
    n = max(len(clusters), 1)
    distinct = len({c for c in clusters if c is not None})
    missing = sum(1 for c in clusters if c is None)
    return [float(confidence), distinct / n, missing / n]


@dataclass
class FrugalScorer:
    """Logistic regression over ``FEATURES`` (plus a bias)."""

    weights: list[float]
    trained_on: list[str] = field(default_factory=list)  # problem ids, to spot train/test overlap
    accuracy: float | None = None  # training accuracy of the 0.5 rule, for the record

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, *, l2: float = 1.0, ids: Sequence[str] = ()) -> "FrugalScorer":
        """Newton's method on the L2-regularized log-loss; converges in a few steps."""
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ConfigError("the frugal scorer needs at least one recorded example")
        A = np.hstack([X, np.ones((X.shape[0], 1))])
        w = np.zeros(A.shape[1])
        reg = l2 * np.eye(A.shape[1])
        reg[-1, -1] = 0.0  # the bias is not shrunk
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-A @ w))
            grad = A.T @ (p - y) + reg @ w
            hess = (A * (p * (1 - p))[:, None]).T @ A + reg + 1e-9 * np.eye(A.shape[1])
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        scorer = cls(weights=[float(v) for v in w], trained_on=list(ids))
        scorer.accuracy = float(np.mean((scorer.predict(X) >= 0.5) == (y >= 0.5)))
        return scorer

    def predict(self, X: np.ndarray) -> np.ndarray:
        A = np.hstack([np.asarray(X, dtype=float), np.ones((len(X), 1))])
        return 1.0 / (1.0 + np.exp(-A @ np.asarray(self.weights)))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"features": FEATURES, "weights": self.weights,
                                    "trained_on": self.trained_on, "accuracy": self.accuracy}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "FrugalScorer":
        try:
            d = json.loads(Path(path).read_text())
            if tuple(d["features"]) != FEATURES or len(d["weights"]) != len(FEATURES) + 1:
                raise ValueError("feature mismatch")
            return cls(weights=[float(w) for w in d["weights"]], trained_on=list(d.get("trained_on", [])),
                       accuracy=d.get("accuracy"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a frugal scorer file ({exc})") from None


def train_from_run(out: Path, *, method: str | None = None, l2: float = 1.0) -> FrugalScorer:
    """Fit a scorer on a run's stage-1 votes, labelled by whether stage 1's answer was right.

    Any method whose first stage votes (small-vote, cascade-noplan, cope,
    abc) gives training rows; ``method`` restricts to one.
    """
    X, y, ids = [], [], []
    for r in load_results(out):
        if method and r["method"] != method:
            continue
        s = r["stages"][0]
        if "clusters" not in s or s["n"] < 2:
            continue
        X.append(vote_features(s["confidence"], s["clusters"]))
        y.append(1.0 if s["correct"] else 0.0)
        ids.append(r["problem_id"])
    if not X:
        raise ConfigError(f"{out} has no recorded stage-1 votes (n >= 2) to train the frugal scorer on")
    return FrugalScorer.fit(np.array(X), np.array(y), l2=l2, ids=ids)


def cross_fitted(rows: Sequence[dict], *, folds: int = 5, threshold: float = 0.5, seed: int = 0,
                 l2: float = 1.0) -> list[dict]:
    """FrugalGPT replayed on a recorded two-stage run, without a separate training run.

    ``rows`` are recorded results of a method whose stage 1 votes and whose
    stage 2 is the large model (cascade-noplan). Problems are split into
    ``folds`` at random (seeded); each fold's stage-1 votes are scored by a
    scorer fitted on the other folds only, so no problem is scored by a
    scorer that saw its label. A problem keeps the small vote when the
    score is >= ``threshold`` and pays for stage 2 otherwise. Returns result
    rows shaped like a run's, with ``frugal_p`` per problem.
    """
    usable = [r for r in rows if len(r["stages"]) >= 2 and "clusters" in r["stages"][0]
              and r["stages"][0].get("n", 0) >= 2]
    if len(usable) < 2 * folds:
        raise ConfigError(f"cross-fitting needs at least {2 * folds} recorded problems, got {len(usable)}")
    X = np.array([vote_features(r["stages"][0]["confidence"], r["stages"][0]["clusters"]) for r in usable])
    y = np.array([1.0 if r["stages"][0]["correct"] else 0.0 for r in usable])
    fold = fold_ids(len(usable), folds, seed)
    p = np.zeros(len(usable))
    for k in range(folds):
        train = fold != k
        p[~train] = FrugalScorer.fit(X[train], y[train], l2=l2).predict(X[~train])
    out = []
    for r, pk in zip(usable, p):
        first = {**r["stages"][0], "confidence": float(pk)}
        row = replayed({**r, "stages": [first, *r["stages"][1:]]}, threshold)
        out.append({**row, "method": "frugal-cv", "frugal_p": float(pk)})
    return out



def cross_fitted_replay(rows: dict[str, Sequence[dict]], cfg: Any) -> list[dict] | None:
    """The registry's replay of ``frugal-cv``: cross-fitted on cascade-noplan's recorded rows
    (None when the recording has too few problems to cross-fit)."""
    try:
        return cross_fitted(rows["cascade-noplan"])
    except ConfigError:
        return None


class FrugalTask(Task):
    """A task whose stage confidence is the scorer's probability that the vote is right.

    Everything else is the wrapped family's (prompts, plan wording, styles,
    scoring), except early stopping: the scorer's probability is not a count
    over samples, so a vote is always drawn in full (the base class's rule).
    """

    default_taus = (0.5, 0.5)  # accept when the scorer thinks the vote is more likely right than wrong

    def __init__(self, inner: Task, scorer: FrugalScorer) -> None:
        self.inner = inner
        self.scorer = scorer
        self.name = inner.name
        self.needs_logprobs = inner.needs_logprobs
        self.slow_assess = inner.slow_assess
        self.plan_asks = inner.plan_asks  # type: ignore[misc]
        self.executor_styles = inner.executor_styles

    def problem_from_text(self, text: str, **kw: Any) -> Problem:
        return self.inner.problem_from_text(text, **kw)

    def executor_messages(self, problem: Problem, plans: Sequence[Plan], **kw: Any) -> list[Message]:
        return self.inner.executor_messages(problem, plans, **kw)

    def assess(self, problem: Problem, completions: Sequence[Completion], **kw: Any) -> Assessment:
        a = self.inner.assess(problem, completions, **kw)
        clusters = a.info.get("clusters")
        if not isinstance(clusters, list) or len(completions) < 2:
            return a  # nothing to score (a single greedy answer): keep the task's own confidence
        p = float(self.scorer.predict(np.array([vote_features(a.confidence, clusters)]))[0])
        return replace(a, confidence=p, info={**a.info, "consensus": a.confidence, "frugal_p": p})

    def score(self, problem: Problem, answer: str | None) -> bool:
        return self.inner.score(problem, answer)


def task_for_run(task: Task, run: "RunContext") -> Task:
    """The registry's hook for ``frugal`` in an eval run: the task wrapped with a trained scorer.

    The scorer is trained once on ``--frugal-train`` and saved in the run
    directory, so a resumed run scores with the same scorer as before its stop.
    """
    scorer_file = run.out / "frugal_scorer.json"
    if run.resume and scorer_file.is_file():
        scorer = FrugalScorer.load(scorer_file)
    else:
        scorer = train_from_run(Path(run.cfg.frugal_train or ""))
        scorer.save(scorer_file)
    overlap = len(set(scorer.trained_on) & {p.id for p in run.problems})
    if overlap:
        run.journal.write({"type": "note", "message": f"frugal scorer trained on {overlap} of these problems"})
    return FrugalTask(task, scorer)
