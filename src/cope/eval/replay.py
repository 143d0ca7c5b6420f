"""Record once, replay anything: thresholds, n <= recorded n, stage subsets.

A recorded run (``cope eval ... --record``) ran every stage of the cascade
for every problem, so each problem has every stage's confidence, correctness
and cost. Which stage would have answered under thresholds (t1, t2) is then
arithmetic on arrays: no model call, and a 100 x 100 sweep over 500 problems
takes milliseconds.

Exact for thresholds and for stage subsets that end in the last stage.
Approximate for n' < n: stage votes are recomputed on the first n' samples
(exact), but stage 2 ran with the g_S chosen from all n stage-1 samples, and
costs of sampled stages are pro-rated by n'/n.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..stopping import accepts, first_pass_settled, leader, replay_vote, vote_settled, windows
from .stats import bootstrap_ci, fold_ids

if TYPE_CHECKING:
    from ..methods import PresetFile


@dataclass
class Recorded:
    """Per-problem, per-stage arrays: shape (problems, stages)."""

    ids: list[str]
    conf: np.ndarray
    correct: np.ndarray
    cost: np.ndarray
    plan_cost: np.ndarray
    n: int
    # whether the last stage reads the plan stage 2 writes (COPE's g_L): skipping stage 2 still pays for it
    last_reads_plan: bool = True
    # the recorded cascade's accept rule (strict: confidence must exceed the threshold)
    strict: bool = False
    # per stage, the stages whose kept plans it reads (0-based); None: COPE's (the last reads stage 2's)
    reads: tuple[tuple[int, ...], ...] | None = None

    @property
    def stages(self) -> int:
        return self.conf.shape[1]


def _vote(clusters: Sequence[int | None], cluster_correct: dict[str, bool], k: int) -> tuple[float, bool]:
    sub = [c for c in clusters[:k] if c is not None]
    if not sub:
        return 0.0, False
    top, count, _, _ = leader(sub)  # ties: the cluster drawn first, as live voting does
    return count / k, bool(cluster_correct.get(str(top), False))


def load_recorded(out: Path, method: str = "cope", n: int | None = None) -> Recorded:
    from .rundir import load_config, load_results

    cfg = load_config(out)
    if not cfg.record:
        raise ConfigError(f"{out} was not recorded with --record; replay needs every stage of every problem")
    rows = [r for r in load_results(out) if r["method"] == method]
    if not rows:
        raise ConfigError(f"{out} holds no recorded results for method '{method}'")
    n_rec = cfg.n
    k = n or n_rec
    if not 1 <= k <= n_rec:
        raise ConfigError(f"n must be between 1 and the recorded n ({n_rec}), got {k}")
    n_st = max(len(r["stages"]) for r in rows)
    rows = [r for r in rows if len(r["stages"]) == n_st]
    conf = np.zeros((len(rows), n_st))
    correct = np.zeros((len(rows), n_st), dtype=bool)
    cost = np.zeros((len(rows), n_st))
    plan_cost = np.zeros((len(rows), n_st))
    for i, r in enumerate(rows):
        for j, s in enumerate(r["stages"]):
            plan_cost[i, j] = s.get("plan_cost_usd", 0.0)
            if k < n_rec and "clusters" in s and s["n"] == n_rec:
                conf[i, j], correct[i, j] = _vote(s["clusters"], s["cluster_correct"], k)
                plan = s.get("plan_cost_usd", 0.0)
                cost[i, j] = plan + (s["cost_usd"] - plan) * k / n_rec
                if j == 0:  # stage 1 plans scale with n too (one goal per sample)
                    cost[i, j] = s["cost_usd"] * k / n_rec
            else:
                conf[i, j], correct[i, j], cost[i, j] = s["confidence"], s["correct"], s["cost_usd"]
    from .rundir import method_cascade

    reads: tuple[tuple[int, ...], ...] | None = None
    try:
        cascade = method_cascade(cfg, method)
        last_reads_plan, strict = bool(cascade.stages[-1].use_plans), cascade.strict
        if len(cascade.stages) == n_st:
            keeper = {st.plan.keep_as: i for i, st in enumerate(cascade.stages) if st.plan and st.plan.keep_as}
            reads = tuple(tuple(sorted({keeper[u] for u in st.use_plans if u in keeper})) for st in cascade.stages)
    except ConfigError:  # a method this version no longer knows: assume it did, as COPE does
        last_reads_plan, strict = True, False
    return Recorded([r["problem_id"] for r in rows], conf, correct, cost, plan_cost, k, last_reads_plan, strict,
                    reads)


def sweep_n(rec: Recorded, taus: Sequence[np.ndarray], *, stages: Sequence[int] | None = None,
            rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accuracy and mean cost for every combination of thresholds, for a recording of any length.

    ``stages`` (1-based, increasing, ending with the last; default all) are the
    stages that run; ``taus`` holds one array of thresholds per deciding stage
    (every chosen stage but the last, which always answers). A chosen stage
    that reads a plan a skipped stage kept still pays for writing it. Returns
    arrays shaped ``(len(taus[0]), ..., len(taus[-1]))`` and the fraction of
    problems stopping at each chosen stage (a last axis).
    """
    total = rec.stages
    chosen = tuple(stages) if stages is not None else tuple(range(1, total + 1))
    st = [x - 1 for x in chosen]
    if not st or st != sorted(set(st)) or st[-1] != total - 1 or st[0] < 0:
        raise ConfigError(f"stages must be an increasing subset of 1..{total} that ends with {total}")
    if len(taus) != len(st) - 1:
        raise ConfigError(f"{len(st) - 1} threshold arrays are needed (one per deciding stage), got {len(taus)}")
    idx = np.arange(len(rec.ids)) if rows is None else rows
    conf, corr, cost = rec.conf[idx], rec.correct[idx], rec.cost[idx].copy()
    reads = rec.reads if rec.reads is not None else tuple(
        (1,) if j == total - 1 and rec.last_reads_plan and total > 1 else () for j in range(total))
    for j in st:
        for k in reads[j]:
            if k not in st:  # the plan this stage reads was still written (and paid for)
                cost[:, j] += rec.plan_cost[idx, k]
    D = len(taus)
    dims = tuple(len(t) for t in taus)
    shape = (*dims, len(idx))
    grids = [np.asarray(t, dtype=float).reshape((1,) * d + (len(t),) + (1,) * (D - d)) for d, t in enumerate(taus)]
    answered = np.zeros(shape, dtype=bool)
    acc_correct = np.zeros(shape)
    acc_cost = np.zeros(shape)
    running_cost = np.zeros(shape)
    stop_frac = []
    for d, s in enumerate(st):
        running_cost = running_cost + np.where(answered, 0.0, cost[:, s])
        stop = ~answered if d == len(st) - 1 else ~answered & accepts(conf[:, s], grids[d], rec.strict)
        acc_correct += np.where(stop, corr[:, s], 0.0)
        acc_cost += np.where(stop, running_cost, 0.0)
        stop_frac.append(stop.mean(axis=-1))
        answered |= stop
    return {"accuracy": acc_correct.mean(axis=-1), "cost": acc_cost.mean(axis=-1),
            "stop_fraction": np.stack(stop_frac, axis=-1)}


def sweep(rec: Recorded, t1: np.ndarray, t2: np.ndarray, *, stages: Sequence[int] = (1, 2, 3),
          rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accuracy and mean cost for every (t1, t2) pair, vectorized.

    ``stages`` picks a subset (1-based) of a three-stage recording; the last
    one chosen always answers. Returns arrays of shape (len(t1), len(t2)) plus
    the fraction of problems stopping at each chosen stage.
    """
    if rec.stages != 3:
        raise ConfigError("threshold replay expects a three-stage (COPE) recording")
    st = [s - 1 for s in stages]
    if not st or st != sorted(set(st)) or st[-1] != 2 or st[0] < 0:
        raise ConfigError("stages must be an increasing subset of 1, 2, 3 that ends with 3")
    idx = np.arange(len(rec.ids)) if rows is None else rows
    conf, corr, cost = rec.conf[idx], rec.correct[idx], rec.cost[idx].copy()
    if 1 not in st and rec.last_reads_plan:  # stage 3 still used stage 2's guideline: it pays for writing it
        cost[:, 2] += rec.plan_cost[idx, 1]
    t1 = np.asarray(t1, dtype=float)[:, None, None]
    t2 = np.asarray(t2, dtype=float)[None, :, None]
    shape = (t1.shape[0], t2.shape[1], len(idx))
    answered = np.zeros(shape, dtype=bool)
    acc_correct = np.zeros(shape)
    acc_cost = np.zeros(shape)
    stop_frac = []
    running_cost = np.zeros(shape)
    thresholds = {0: t1, 1: t2}
    for s in st:
        running_cost = running_cost + np.where(answered, 0.0, cost[:, s])
        if s == 2:
            stop = ~answered
        else:
            stop = ~answered & accepts(conf[:, s], thresholds[s], rec.strict)
        acc_correct += np.where(stop, corr[:, s], 0.0)
        acc_cost += np.where(stop, running_cost, 0.0)
        stop_frac.append(stop.mean(axis=2))
        answered |= stop
    return {"accuracy": acc_correct.mean(axis=2), "cost": acc_cost.mean(axis=2),
            "stop_fraction": np.stack(stop_frac, axis=-1)}


def _pairs(grid: np.ndarray, res: dict[str, np.ndarray], stages: Sequence[int] = (1, 2, 3)) -> list[tuple]:
    """(tau1, tau2, accuracy, USD per 1M problems, stages) for every grid point of a sweep."""
    acc, cost = res["accuracy"], res["cost"] * 1e6
    st = tuple(stages)
    # a threshold of a stage that does not run cannot matter: one grid line of it is enough
    rows = range(len(grid)) if 1 in st else [0]
    cols = range(len(grid)) if 2 in st else [0]
    # thresholds rounded off the float noise of linspace (0.30000000000000004 is 0.3)
    return [(round(float(grid[i]), 6), round(float(grid[j]), 6), float(acc[i, j]), float(cost[i, j]), st)
            for i in rows for j in cols]


# The stage policies ``--stages auto`` chooses among: all three, or skip stage 1 or stage 2.
POLICIES: tuple[tuple[int, ...], ...] = ((1, 2, 3), (1, 3), (2, 3))


def _candidates(rec: "Recorded", grid: np.ndarray, policies: Sequence[Sequence[int]],
                rows: np.ndarray | None = None) -> list[tuple]:
    out: list[tuple] = []
    for st in policies:
        out += _pairs(grid, sweep(rec, grid, grid, stages=st, rows=rows), st)
    return out


def _choose(pairs, target_cost: float | None, target_accuracy: float | None, *, strict: bool):
    """The calibration rule: best accuracy within the cost, or cheapest at the accuracy.

    ``strict`` raises when no pair meets the target; otherwise the closest
    pair is taken (cheapest, or most accurate), as a fold in
    cross-validation must still pick something.
    """
    # p = (tau1, tau2, accuracy, cost); the two targets are mirror images.
    if target_cost is not None:
        meets = lambda p: p[3] <= target_cost  # noqa: E731
        best = lambda p: (p[2], -p[3])  # noqa: E731  most accurate, then cheapest
        nearest = lambda p: (-p[3], p[2])  # noqa: E731  cheapest
        miss = (f"no thresholds reach a cost of ${target_cost:g} per 1M problems; "
                f"the cheapest costs ${min(p[3] for p in pairs):.2f}")
    else:
        meets = lambda p: p[2] >= target_accuracy  # noqa: E731
        best = lambda p: (-p[3], p[2])  # noqa: E731  cheapest, then most accurate
        nearest = lambda p: (p[2], -p[3])  # noqa: E731  most accurate
        miss = f"no thresholds reach accuracy {target_accuracy:g}; the best is {max(p[2] for p in pairs):.3f}"
    ok = [p for p in pairs if meets(p)]
    if not ok:
        if strict:
            raise ConfigError(miss)
        ok = [max(pairs, key=nearest)]
    return max(ok, key=best)


def _cross_validated(rec: Recorded, grid: np.ndarray, policies: Sequence[Sequence[int]], target_cost: float | None,
                     target_accuracy: float | None, *, folds: int = 5, seed: int = 0) -> dict[str, Any] | None:
    """Out-of-fold accuracy and cost of the calibration rule itself.

    Thresholds chosen and scored on the same problems flatter the choice
    (the sweep picks whatever got lucky). Here each fold's problems are
    answered with thresholds chosen on the other folds only, which is what a
    calibrated setting will do on new problems. None below 2 problems a fold.
    """
    P = len(rec.ids)
    if P < 2 * folds:
        return None

    fold = fold_ids(P, folds, seed)
    correct = np.zeros(P)
    cost = np.zeros(P)
    chosen = []
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        c = _choose(_candidates(rec, grid, policies, rows=train), target_cost, target_accuracy, strict=False)
        chosen.append({"tau1": c[0], "tau2": c[1], "stages": list(c[4])})
        for i in test:
            one = sweep(rec, np.array([c[0]]), np.array([c[1]]), stages=c[4], rows=np.array([i]))
            correct[i] = one["accuracy"][0, 0]
            cost[i] = one["cost"][0, 0] * 1e6
    return {"folds": folds, "accuracy": float(correct.mean()), "accuracy_ci95": bootstrap_ci(correct),
            "cost_usd_per_1m": float(cost.mean()), "cost_usd_per_1m_ci95": bootstrap_ci(cost),
            "chosen": chosen}


def against_large(out: Path, ids: Sequence[str], frontier: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Where the run's ``large`` method alone sits against a calibration's frontier, on the same problems:
    its accuracy and cost, the frontier's best accuracy, and how many settings match its accuracy for
    less (a user should know when no threshold setting beats simply calling the large model)."""
    from .rundir import load_results

    by_id = {r["problem_id"]: r for r in load_results(out) if r["method"] == "large"}
    rows = [by_id[i] for i in ids if i in by_id]
    if not rows or len(rows) < len(ids):
        return None
    acc = float(np.mean([bool(r["correct"]) for r in rows]))
    cost = 1e6 * float(np.mean([r["cost_usd"] for r in rows]))
    best = max((p["accuracy"] for p in frontier), default=0.0)
    beats = [p for p in frontier if p["accuracy"] >= acc - 1e-12 and p["cost_usd_per_1m"] < cost]
    return {"accuracy": acc, "cost_usd_per_1m": cost, "best_accuracy": best, "settings_that_beat_it": len(beats),
            "cheapest_that_beats_it": min(beats, key=lambda p: p["cost_usd_per_1m"]) if beats else None}


def large_cost_per_1m(out: Path) -> float:
    """The ``large`` method's mean cost in a run, USD per 1M problems: what a cost ratio is relative to."""
    from .rundir import load_results

    rows = [r for r in load_results(out) if r["method"] == "large"]
    if not rows:
        raise ConfigError(f"{out} has no 'large' results; a --target-cost-ratio needs them (run --method large too)")
    return 1e6 * float(np.mean([r["cost_usd"] for r in rows]))


def calibrate(out: Path, *, target_cost: float | None = None, target_accuracy: float | None = None,
              target_cost_ratio: float | None = None, method: str = "cope", n: int | None = None,
              stages: Sequence[int] | str | None = None, steps: int = 21, boot: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """Pick thresholds (and, with ``stages="auto"``, which stages run) from a recorded run.

    ``target_cost`` is USD per 1M problems (the unit of every report);
    ``target_cost_ratio`` the same as a fraction of the run's ``large``
    method; ``target_accuracy`` a fraction. Returns the chosen setting, its
    accuracy and cost with bootstrap intervals (problems resampled, choice
    held fixed), the out-of-fold accuracy and cost of the rule
    (``cross_validated``: what to expect on new problems, since the in-sample
    numbers of a chosen setting are flattered by the choice), and the
    frontier of the sweep.
    """
    if target_cost_ratio is not None:
        if target_cost is not None or target_accuracy is not None:
            raise ConfigError("give one of --target-cost, --target-cost-ratio or --target-accuracy")
        if not target_cost_ratio > 0:
            raise ConfigError(f"--target-cost-ratio must be > 0, got {target_cost_ratio}")
        target_cost = target_cost_ratio * large_cost_per_1m(out)
    if (target_cost is None) == (target_accuracy is None):
        raise ConfigError("give exactly one of --target-cost (USD per 1M problems), --target-cost-ratio "
                          "or --target-accuracy")
    rec = load_recorded(out, method=method, n=n)
    if rec.stages != 3:  # a cascade of another length (a cascade file's): one threshold per deciding stage
        return _calibrate_n(out, rec, target_cost, target_accuracy, method, stages, steps, boot, seed)
    policies = POLICIES if stages == "auto" else (tuple(stages or (1, 2, 3)),)
    grid = np.linspace(0.0, 1.0, steps)
    pairs = _candidates(rec, grid, policies)
    front = []
    for p in sorted(pairs, key=lambda p: (p[3], -p[2])):
        if not front or p[2] > front[-1][2]:
            front.append(p)
    choice = _choose(pairs, target_cost, target_accuracy, strict=True)
    chosen_stages = choice[4]
    rng = np.random.default_rng(seed)
    P = len(rec.ids)
    rows = rng.integers(0, P, size=(boot, P))
    accs, costs = [], []
    for r in rows:
        b = sweep(rec, np.array([choice[0]]), np.array([choice[1]]), stages=chosen_stages, rows=r)
        accs.append(float(b["accuracy"][0, 0]))
        costs.append(float(b["cost"][0, 0]) * 1e6)
    stop = sweep(rec, np.array([choice[0]]), np.array([choice[1]]), stages=chosen_stages)["stop_fraction"][0, 0]
    out_dict = {
        "run": str(out), "method": method, "problems": P, "n": rec.n, "stages": list(chosen_stages),
        "policies": [list(p) for p in policies], "target_cost_usd_per_1m": target_cost,
        "target_accuracy": target_accuracy,
        "tau1": choice[0], "tau2": choice[1],
        "accuracy": choice[2], "accuracy_ci95": tuple(np.quantile(accs, [0.025, 0.975]).tolist()),
        "cost_usd_per_1m": choice[3], "cost_usd_per_1m_ci95": tuple(np.quantile(costs, [0.025, 0.975]).tolist()),
        "stop_fraction": [float(x) for x in stop],
        "cross_validated": _cross_validated(rec, grid, policies, target_cost, target_accuracy, seed=seed),
        "frontier": [{"tau1": p[0], "tau2": p[1], "accuracy": p[2], "cost_usd_per_1m": p[3], "stages": list(p[4])}
                     for p in front],
    }
    out_dict["large"] = against_large(out, rec.ids, out_dict["frontier"])
    return out_dict


# The most threshold combinations one stage policy sweeps (a grid of steps^deciding stages is
# thinned to stay under it: 21 steps for two deciding stages, 21 for three, 11 for four).
MAX_COMBINATIONS = 20_000


def _policies_n(total: int, stages: Sequence[int] | str | None) -> list[tuple[int, ...]]:
    if stages == "auto":  # every subset of the deciding stages, the last stage always kept
        from itertools import combinations

        return [(*c, total) for k in range(total - 1, -1, -1) for c in combinations(range(1, total), k)]
    return [tuple(stages) if stages is not None else tuple(range(1, total + 1))]


def _grid_for(deciding: int, steps: int) -> np.ndarray:
    while deciding and steps > 2 and steps ** deciding > MAX_COMBINATIONS:
        steps = (steps - 1) // 2 + 1  # 21 -> 11 -> 6: thresholds stay on round values
    return np.linspace(0.0, 1.0, steps)


def _candidates_n(rec: Recorded, policies: Sequence[tuple[int, ...]], steps: int,
                  rows: np.ndarray | None = None) -> list[tuple]:
    """(thresholds, stages, accuracy, USD per 1M problems) for every grid point of every policy."""
    out: list[tuple] = []
    for st in policies:
        grid = _grid_for(len(st) - 1, steps)
        res = sweep_n(rec, [grid] * (len(st) - 1), stages=st, rows=rows)
        for ix in np.ndindex(*res["accuracy"].shape):
            taus = tuple(round(float(grid[i]), 6) for i in ix)
            out.append((taus, st, float(res["accuracy"][ix]), float(res["cost"][ix]) * 1e6))
    return out


def _one(rec: Recorded, choice: tuple, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    taus, st = choice[0], choice[1]
    return sweep_n(rec, [np.array([t]) for t in taus], stages=st, rows=rows)


def _calibrate_n(out: Path, rec: Recorded, target_cost: float | None, target_accuracy: float | None, method: str,
                 stages: Sequence[int] | str | None, steps: int, boot: int, seed: int) -> dict[str, Any]:
    """:func:`calibrate` for a recording of any number of stages: thresholds per deciding stage."""
    policies = _policies_n(rec.stages, stages)
    pairs = _candidates_n(rec, policies, steps)
    front: list[tuple] = []
    for p in sorted(pairs, key=lambda p: (p[3], -p[2])):
        if not front or p[2] > front[-1][2]:
            front.append(p)
    choice = _choose(pairs, target_cost, target_accuracy, strict=True)
    P = len(rec.ids)
    rng = np.random.default_rng(seed)
    accs, costs = [], []
    for r in rng.integers(0, P, size=(boot, P)):
        b = _one(rec, choice, rows=r)
        accs.append(float(b["accuracy"].ravel()[0]))
        costs.append(float(b["cost"].ravel()[0]) * 1e6)
    stop = _one(rec, choice)["stop_fraction"].reshape(-1, len(choice[1]))[0]
    cv = None
    folds = 5
    if P >= 2 * folds:  # out of fold: each fold answered with thresholds chosen on the others
        fold = fold_ids(P, folds, seed)
        correct, cost = np.zeros(P), np.zeros(P)
        chosen = []
        for k in range(folds):
            train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            c = _choose(_candidates_n(rec, policies, steps, rows=train), target_cost, target_accuracy, strict=False)
            chosen.append({"thresholds": list(c[0]), "stages": list(c[1])})
            for i in test:  # the fold's choice replayed on each of its problems
                single = _one(rec, c, rows=np.array([i]))
                correct[i] = float(single["accuracy"].ravel()[0])
                cost[i] = float(single["cost"].ravel()[0]) * 1e6
        cv = {"folds": folds, "accuracy": float(correct.mean()), "accuracy_ci95": bootstrap_ci(correct),
              "cost_usd_per_1m": float(cost.mean()), "cost_usd_per_1m_ci95": bootstrap_ci(cost), "chosen": chosen}
    result = {
        "run": str(out), "method": method, "problems": P, "n": rec.n, "stages": list(choice[1]),
        "policies": [list(p) for p in policies], "target_cost_usd_per_1m": target_cost,
        "target_accuracy": target_accuracy, "thresholds": list(choice[0]),
        "grid_steps": {",".join(map(str, p)): len(_grid_for(len(p) - 1, steps)) for p in policies},
        "accuracy": choice[2], "accuracy_ci95": tuple(np.quantile(accs, [0.025, 0.975]).tolist()),
        "cost_usd_per_1m": choice[3], "cost_usd_per_1m_ci95": tuple(np.quantile(costs, [0.025, 0.975]).tolist()),
        "stop_fraction": [float(x) for x in stop],
        "cross_validated": cv,
        "frontier": [{"thresholds": list(p[0]), "accuracy": p[2], "cost_usd_per_1m": p[3], "stages": list(p[1])}
                     for p in front],
    }
    result["large"] = against_large(out, rec.ids, result["frontier"])
    return result


def cascade_from_calibration(r: dict[str, Any]) -> str:
    """The calibrated setting as a cascade file: the recorded method's stages, those chosen kept, with
    the chosen thresholds (a kept stage that read a dropped stage's plan runs without it)."""
    from ..cascade_file import dump
    from ..methods.files import subset
    from .rundir import load_config, method_cascade

    cfg = load_config(Path(r["run"]))
    config = subset(method_cascade(cfg, r["method"]), tuple(r["stages"]), where=r["method"])
    thresholds = list(r["thresholds"]) if "thresholds" in r else [
        t for s, t in ((1, r["tau1"]), (2, r["tau2"])) if s in r["stages"]]
    kept = {st.plan.keep_as for st in config.stages if st.plan and st.plan.keep_as}
    stages = tuple(replace(st, threshold=(thresholds[i] if i < len(config.stages) - 1 else None),
                           use_plans=tuple(u for u in st.use_plans if u in kept))
                   for i, st in enumerate(config.stages))
    cv = r.get("cross_validated") or {}
    title = (f"{r['method']} calibrated on {cfg.benchmark} seed {cfg.seed}, {r['problems']} problems ({r['run']}): "
             f"accuracy {r['accuracy']:.3f} at ${r['cost_usd_per_1m']:.2f} per 1M problems in sample"
             + (f", {cv['accuracy']:.3f} at ${cv['cost_usd_per_1m']:.2f} out of fold" if cv else ""))
    return dump(replace(config, stages=stages), title=title)


def preset_from_calibration(r: dict[str, Any], name: str) -> "PresetFile":
    """The preset file a calibration chose, with what it expects and where it came from."""
    from ..methods import PresetFile
    from .rundir import load_config

    cfg = load_config(Path(r["run"]))
    cv = r["cross_validated"] or {}
    expected: dict[str, Any] = {
        "chosen_on": f"{cfg.benchmark} seed {cfg.seed}, {r['problems']} problems ({r['run']}, method {r['method']})",
        "accuracy_in_sample": round(r["accuracy"], 4), "cost_usd_per_1m_in_sample": round(r["cost_usd_per_1m"], 4),
    }
    if cv:
        expected.update({"accuracy_out_of_fold": round(cv["accuracy"], 4),
                         "cost_usd_per_1m_out_of_fold": round(cv["cost_usd_per_1m"], 4), "folds": cv["folds"]})
    if r.get("target_cost_usd_per_1m") is not None:
        expected["target_cost_usd_per_1m"] = round(r["target_cost_usd_per_1m"], 4)
    return PresetFile(name=name, base=r["method"], stages=tuple(r["stages"]), tau1=r["tau1"], tau2=r["tau2"],
                      n=r["n"], expected=expected)


# Replaying one recorded row: what the live cascade would have drawn and answered.

def replayed(r: dict[str, Any], *thresholds: float, plan: Sequence[Any] | None = None,
             strict: bool = False) -> dict[str, Any]:
    """A recorded result as the cascade would have ended with these stage thresholds.

    With ``plan`` (the live method's stages), a stage drawn in windows with an
    early-stopping rule is replayed too: the samples it would have drawn are
    counted from the recording's first samples (which the engine seeds as
    the live run's), and only their tokens are charged. With the exact rule
    the decision is the recording's own; with the predictive rule it is what
    the rule decided at its stop (see :func:`early_stop_changes`).
    """
    # the token tallies are rewritten per stage below: copied, so the recorded row stays as it was
    stages = [{**s, "tokens": {who: {role: dict(t) for role, t in roles.items()}
                               for who, roles in s.get("tokens", {}).items()}} if "tokens" in s else dict(s)
              for s in r["stages"]]
    stop = len(stages)
    for i, s in enumerate(stages[:-1]):
        if plan is not None and i < len(plan):
            _replay_stop(s, plan[i], thresholds[i], strict)
        if accepts(s["confidence"], thresholds[i], strict):
            stop = i + 1
            break
    if plan is not None and stop == len(stages) and len(plan) == len(stages):
        _replay_stop(stages[-1], plan[-1], None, strict)
    used = stages[:stop]
    tokens: dict[str, Any] = {}
    for s in used:
        for who, roles in s.get("tokens", {}).items():
            for role, t in roles.items():
                acc = tokens.setdefault(who, {}).setdefault(role, {"prompt": 0, "completion": 0})
                acc["prompt"] += t["prompt"]
                acc["completion"] += t["completion"]
    return {**r, "stages": stages, "stage": stop, "correct": used[-1]["correct"], "answer": used[-1]["answer"],
            "cost_usd": sum(s["cost_usd"] for s in used), "latency_s": sum(s["latency_s"] for s in used),
            "tokens": tokens}


def _replay_stop(s: dict[str, Any], st: Any, threshold: float | None, strict: bool) -> None:
    """Rewrite a recorded stage (in place) as its early-stopped live run would have drawn it."""
    rule = getattr(st, "stop", "none")
    n = s.get("n", 1)
    if rule == "none" or n <= 1 or s.get("drawn", n) < n:
        return
    need_answer = bool(st.plan and st.plan.keep_as and st.plan.count > 1)
    if "clusters" in s:
        keys = s["clusters"]
        drawn = replay_vote(keys, n, st.window, threshold, strict=strict, need_answer=need_answer, rule=rule)
        if drawn < n and rule == "predictive":
            # the predictive rule decides on what it drew: its answer and share may differ from all n
            conf, ok = _vote(keys[:drawn], s.get("cluster_correct", {}), drawn)
            if vote_settled(keys[:drawn], n, threshold, strict=strict, need_answer=need_answer, rule="exact"):
                conf, ok = s["confidence"], s["correct"]
            s["confidence"], s["correct"] = conf, ok
    elif "passing" in s:
        first = min(s["passing"], default=None)
        drawn = n
        if first is not None and first_pass_settled(1.0, first + 1, n, threshold, strict=strict, rule=rule):
            drawn = next(hi for lo, hi in windows(n, st.window) if lo <= first < hi)
    else:
        return
    if drawn >= n:
        return
    per = s.get("sample_tokens") or []
    for roles in s.get("tokens", {}).values():
        t = roles.get("execute")
        if t is None:
            continue
        t["completion"] = sum(per[:drawn]) if len(per) == n else round(t["completion"] * drawn / n)
        t["prompt"] = round(t["prompt"] * len(windows(drawn, st.window)) / len(windows(n, st.window)))
    w_s = s.get("window_latency_s") or []
    if len(w_s) == len(windows(n, st.window)):
        plan_s = s["latency_s"] - sum(w_s)  # the stage's planning call, if any, ran in full
        s["latency_s"] = plan_s + sum(w_s[: len(windows(drawn, st.window))])
    s["drawn"] = drawn


def early_stop_changes(rows: list[dict[str, Any]], stages: Sequence[Any], *, window: int = 4,
                       strict: bool = False) -> dict[str, Any] | None:
    """The predictive rule against the exact one, both replayed on a recording's full votes.

    The exact rule never changes a decision; the predictive one stops sooner
    and may. This counts, over the recorded problems, the samples each rule
    would have drawn and the problems whose deciding stage or
    correctness the predictive rule changed (a stage's recorded answer is kept,
    so a changed answer shows as changed correctness), so a user can see what its
    savings cost before turning it on. Stages without a window of their own
    are replayed in windows of ``window``: a recording drawn in one batch
    holds exchangeable samples, so its first k stand for a live run's first k.
    None when no stage votes (nothing to stop early).
    """
    if not rows or not any(st.n > 1 for st in stages) or len(stages) != len(rows[0]["stages"]):
        return None
    taus = [st.threshold for st in stages[:-1]]

    def run(rule: str) -> list[dict[str, Any]]:
        plan = [replace(st, stop=rule, window=st.window or window) if st.n > 1 else st for st in stages]
        return [replayed(r, *taus, plan=plan, strict=strict) for r in rows]

    def drawn(r: dict[str, Any]) -> int:
        return sum(int(s.get("drawn", s.get("n", 1))) for s in r["stages"][: r["stage"]])

    exact, pred = run("exact"), run("predictive")
    changed = [(e, p) for e, p in zip(exact, pred) if (e["stage"], bool(e["correct"])) != (p["stage"], bool(p["correct"]))]
    return {
        "problems": len(rows),
        "window": max((st.window or window) for st in stages if st.n > 1),
        "samples_exact": sum(drawn(r) for r in exact),
        "samples_predictive": sum(drawn(r) for r in pred),
        "samples_full": sum(drawn({**r, "stages": [{**s, "drawn": s.get("n", 1)} for s in r["stages"]]})
                            for r in exact),
        "decisions_changed": len(changed),
        "right_to_wrong": sum(1 for e, p in changed if e["correct"] and not p["correct"]),
        "wrong_to_right": sum(1 for e, p in changed if p["correct"] and not e["correct"]),
        "accuracy_exact": float(np.mean([bool(r["correct"]) for r in exact])),
        "accuracy_predictive": float(np.mean([bool(r["correct"]) for r in pred])),
    }


def episode_early_stop(rows: list[dict[str, Any]], stages: Sequence[Any], *, window: int = 4,
                       strict: bool = False) -> dict[str, Any] | None:
    """Early stopping replayed on an agent method's episodes: every step's complete votes.

    Each step of an episode is a cascade whose stages ran in full (a method
    without early stopping), so the exact rule, replayed on a step's recorded
    samples in windows of ``window``, draws fewer with the same decision at every
    step, hence the same actions and the same episode, on those samples (a live
    windowed run draws its own, exchangeable ones).
    The predictive rule may change a step's decision (whether its stage accepts,
    or which action wins); a changed step would have changed the game from there
    on, which no recording can say, so only the count of such steps is reported.
    None when no step voted in full.
    """
    if not any(st.n > 1 for st in stages):
        return None
    taus = [st.threshold for st in stages[:-1]] + [None]
    counts = {"full": 0, "exact": 0, "predictive": 0}
    small = {"full": 0, "exact": 0, "predictive": 0}
    steps = changed = 0
    for r in rows:
        for step in r.get("episode", []):
            ran = step.get("stages", [])[: step.get("stage", 0)]
            if not ran or any(s.get("drawn", s.get("n", 1)) < s.get("n", 1) for s in ran):
                continue  # a step that already stopped early (or predates per-step stages)
            steps += 1
            moved = False
            for i, s in enumerate(ran):
                st = stages[i] if i < len(stages) else None
                for rule in counts:
                    t = {**s, "tokens": {w: {k: dict(v) for k, v in roles.items()}
                                         for w, roles in s.get("tokens", {}).items()}}
                    if rule != "full" and st is not None and st.n > 1 and "clusters" in s:
                        _replay_stop(t, replace(st, stop=rule, window=st.window or window), taus[i], strict)
                    counts[rule] += int(t.get("drawn", t.get("n", 1)))
                    small[rule] += t["tokens"].get("small", {}).get("execute", {}).get("completion", 0)
                    if rule == "predictive" and taus[i] is not None:
                        keys = s["clusters"][: t.get("drawn", s["n"])] if "clusters" in s else []
                        moved |= bool(accepts(t["confidence"], taus[i], strict)) != bool(s["accepted"]) or (
                            bool(s["accepted"]) and leader(keys)[0] != leader(s.get("clusters", []))[0])
            changed += moved
    if not steps:
        return None
    return {
        "episodes": len(rows), "steps": steps, "window": max((st.window or window) for st in stages if st.n > 1),
        "samples_full": counts["full"], "samples_exact": counts["exact"], "samples_predictive": counts["predictive"],
        "small_tokens_full": small["full"], "small_tokens_exact": small["exact"],
        "small_tokens_predictive": small["predictive"], "steps_changed_predictive": changed,
    }
