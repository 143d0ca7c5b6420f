"""Numbers over problems: bootstrap intervals, paired differences, folds, frontiers.

Pure arithmetic on arrays, so metrics, replay, calibration and the frugal
scorer share one seeded definition of each (a report is reproducible, and a
fold split is the same wherever it is drawn).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], *, b: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(b, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def paired_vs(results: dict[str, list[dict[str, Any]]], baseline: str, *, b: int = 2000,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each method against ``baseline`` on the problems both answered, resampled together.

    Two methods' separate intervals overlap even when one is reliably
    better, because most problems are easy or hard for both; resampling the
    problems as pairs gives the interval of the difference itself. Returns,
    per method, the accuracy difference (method minus baseline) and the cost
    ratio (method's total over the baseline's) with 95% intervals, and how
    many problems each one alone got right.
    """
    base = {r["problem_id"]: r for r in results.get(baseline, []) if r.get("correct") is not None}
    out: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(seed)
    for m, rows in sorted(results.items()):
        if m == baseline:
            continue
        pairs = [(r, base[r["problem_id"]]) for r in rows
                 if r.get("correct") is not None and r["problem_id"] in base]
        if not pairs:
            continue
        a = np.array([float(r["correct"]) for r, _ in pairs])
        c = np.array([float(q["correct"]) for _, q in pairs])
        ca = np.array([float(r["cost_usd"]) for r, _ in pairs])
        cc = np.array([float(q["cost_usd"]) for _, q in pairs])
        idx = rng.integers(0, len(pairs), size=(b, len(pairs)))
        diffs = (a[idx] - c[idx]).mean(axis=1)
        entry: dict[str, Any] = {
            "problems": len(pairs), "baseline": baseline,
            "accuracy_diff": float((a - c).mean()),
            "accuracy_diff_ci95": tuple(float(x) for x in np.quantile(diffs, [0.025, 0.975])),
            "only_method_right": int(((a == 1) & (c == 0)).sum()),
            "only_baseline_right": int(((a == 0) & (c == 1)).sum()),
            "cost_ratio": None, "cost_ratio_ci95": None,
        }
        if cc.sum() > 0:
            base_sums = cc[idx].sum(axis=1)
            ratios = ca[idx].sum(axis=1)[base_sums > 0] / base_sums[base_sums > 0]
            entry["cost_ratio"] = float(ca.sum() / cc.sum())
            entry["cost_ratio_ci95"] = tuple(float(x) for x in np.quantile(ratios, [0.025, 0.975]))
        out[m] = entry
    return out


def fold_ids(count: int, folds: int, seed: int = 0) -> np.ndarray:
    """A seeded, balanced assignment of ``count`` items to ``folds`` folds (cross-fitting)."""
    return np.random.default_rng(seed).permutation(count) % folds


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The cost-accuracy frontier: points no cheaper-or-equal point beats."""
    best: list[tuple[float, float]] = []
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not best or a > best[-1][1]:
            best.append((c, a))
    return best


def aiq(points: Sequence[tuple[float, float]]) -> float:
    """Area under the non-decreasing frontier over the cost range, normalized (RouterBench's AIQ).

    Between frontier points the accuracy a router could reach is the linear
    interpolation (mixing two settings at random), so the area uses the upper
    convex hull of the frontier.
    """
    f = frontier(points)
    if len(f) < 2 or f[-1][0] == f[0][0]:
        return f[0][1] if f else float("nan")
    hull: list[tuple[float, float]] = []
    for p in f:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()  # hull[-1] lies under the chord: not on the upper hull
            else:
                break
        hull.append(p)
    xs, ys = zip(*hull)
    return float(np.trapezoid(ys, xs) / (xs[-1] - xs[0]))
