"""Metrics over a run's results: accuracy with intervals, cost, funnel, frontier.

Intervals are percentile bootstraps over problems (seeded, so a report is
reproducible); a difference between methods inside the interval is noise,
which is the reviewers' point about the paper's tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..stopping import accepts


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
    from ..stopping import first_pass_settled, replay_vote, vote_settled, windows

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
            from .replay import _vote

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
    from dataclasses import replace

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


def stage3_without_plan(cope_rows: list[dict[str, Any]], large_rows: list[dict[str, Any]],
                        tau1: float, tau2: float) -> list[dict[str, Any]]:
    """COPE whose last stage ignores the guideline: an ablation a recording answers for free.

    In a recorded run the ``large`` method is exactly stage 3 without g_L (the
    same model, greedy, no plan), so splicing its answer in as stage 3 shows
    what the guideline does to the large executor, with no model call.
    Stage 2's planning cost stays: the guideline was still written for stage 2.
    """
    large = {r["problem_id"]: r for r in large_rows}
    out = []
    for r in cope_rows:
        alone = large.get(r["problem_id"])
        if alone is None or len(r["stages"]) != 3:
            continue
        s3 = {**alone["stages"][0], "stage": 3}
        out.append({**replayed({**r, "stages": [r["stages"][0], r["stages"][1], s3]}, tau1, tau2),
                    "method": "cope-s3-noplan"})
    return out


def style_breakdown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage and executor style (chain-of-thought, program): samples, answers, right answers.

    A mixed vote's samples are read two ways; this says which way was right
    more often, from the recorded clusters (a sample is right when its
    answer's cluster is), over every stage a result drew.
    """
    counts: dict[tuple[int, str], list[int]] = {}
    for r in rows:
        for st in r.get("stages", []):
            styles, clusters = st.get("styles"), st.get("clusters")
            if not styles or not isinstance(clusters, list):
                continue
            right = st.get("cluster_correct", {})
            for style, c in zip(styles, clusters):
                cell = counts.setdefault((st["stage"], style), [0, 0, 0])
                cell[0] += 1
                cell[1] += c is not None
                cell[2] += bool(c is not None and right.get(str(c)))
    return [{"stage": k[0], "style": k[1], "samples": v[0], "answered": v[1], "right": v[2]}
            for k, v in sorted(counts.items())]


def reliability(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How often a recorded stage's answer was right at each confidence it reported.

    Consensus and perplexity are proxies, not probabilities: a vote can agree
    and be wrong. A recording holds every stage of every problem, so each
    deciding stage (all but the last) gets its confidence-to-accuracy table
    and its expected calibration error (the problem-weighted gap between
    confidence and accuracy), which says how far a threshold can be trusted.
    """
    out = []
    n_stages = min((len(r["stages"]) for r in rows), default=0)
    for i in range(n_stages - 1):
        pairs = [(float(r["stages"][i]["confidence"]), bool(r["stages"][i]["correct"])) for r in rows
                 if r["stages"][i].get("correct") is not None]
        if not pairs:
            continue
        keys = {round(c, 2) for c, _ in pairs}
        # votes of n samples give at most n + 1 values; anything finer is binned by tenths
        key = (lambda c: round(c, 2)) if len(keys) <= 10 else (lambda c: min(int(c * 10), 9) / 10)
        bins: dict[float, list[tuple[float, bool]]] = {}
        for c, ok in pairs:
            bins.setdefault(key(c), []).append((c, ok))
        table = [{"confidence": k, "problems": len(v), "right": sum(ok for _, ok in v)} for k, v in sorted(bins.items())]
        # each bin's gap is between its right count and its summed confidences (not its label)
        ece = sum(abs(sum(ok for _, ok in v) - sum(c for c, _ in v)) for v in bins.values()) / len(pairs)
        out.append({"stage": i + 1, "bins": table, "ece": ece})
    return out


def method_metrics(results: list[dict[str, Any]], n_stages: int | None = None) -> dict[str, Any]:
    correct = [float(r["correct"]) for r in results if r["correct"] is not None]
    cost = [float(r["cost_usd"]) for r in results]
    lat = [float(r.get("latency_s", 0.0)) for r in results]
    n = len(results)
    large = {"plan": {"prompt": 0, "completion": 0}, "execute": {"prompt": 0, "completion": 0}}
    small_generated = 0
    small_samples = 0
    draws: dict[int, list[tuple[int, int]]] = {}  # stage -> (drawn, n) of each problem that ran it
    for r in results:
        for st in r.get("stages", [])[: r.get("stage", 0)]:
            drawn = st.get("drawn", st.get("n", 1))
            draws.setdefault(st["stage"], []).append((drawn, st.get("n", 1)))
            if "execute" in st.get("tokens", {}).get("small", {}):
                small_samples += drawn
        tokens = r.get("tokens", {})
        for role, t in tokens.get("large", {}).items():
            for k in ("prompt", "completion"):
                large[role][k] += t[k]
        small_generated += sum(t["completion"] for t in tokens.get("small", {}).values())
    stages = n_stages or max((r["stage"] for r in results), default=1)
    funnel = []
    for s in range(1, stages + 1):
        at = [r for r in results if r["stage"] == s]
        scored = [r for r in at if r["correct"] is not None]
        funnel.append({"stage": s, "problems": len(at),
                       "accuracy": (sum(r["correct"] for r in scored) / len(scored)) if scored else None})
    acc_ci = bootstrap_ci(correct)
    cost_ci = bootstrap_ci(cost)
    return {
        "problems": n,
        # None when nothing could be scored (open-ended answers: see the judged win rates)
        "accuracy": sum(correct) / len(correct) if correct else None,
        "accuracy_ci95": acc_ci if correct else None,
        "cost_usd_total": sum(cost),
        "cost_usd_per_1m": 1e6 * sum(cost) / n if n else float("nan"),
        "cost_usd_per_1m_ci95": (1e6 * cost_ci[0], 1e6 * cost_ci[1]),
        "large_tokens": large,
        # The local model is priced at 0, but its decoding is the CPU time COPE
        # spends instead of money; generated tokens measure it on any machine.
        "small_generated_tokens_per_problem": small_generated / n if n else float("nan"),
        # small-model samples drawn per problem: early stopping lowers it, at the same decisions
        "small_samples_per_problem": small_samples / n if n else float("nan"),
        # per stage: mean samples drawn (of n) over the problems that ran it
        "stage_draws": [{"stage": k, "problems": len(v), "drawn_mean": float(np.mean([d for d, _ in v])),
                         "n": max(m for _, m in v)} for k, v in sorted(draws.items())],
        "funnel": funnel,
        **({"steps_mean": float(np.mean([r["steps"] for r in results]))} if results and "steps" in results[0] else {}),
        "latency_s_mean": float(np.mean(lat)) if lat else float("nan"),
        "latency_s_p50": float(np.median(lat)) if lat else float("nan"),
    }


def summarize_run(out: Path) -> dict[str, Any]:
    """Metrics per method from a run directory's journal (the one source of truth)."""
    from .runner import journal_records, latest_results, load_config

    cfg = load_config(out)
    records = journal_records(out)  # one read (one decompression of an archive) for everything below
    results = latest_results(records)
    errors = sum(1 for r in records if r.get("type") == "error")
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_method.setdefault(r["method"], []).append(r)
    notes = []
    calibration: dict[str, list[dict[str, Any]]] = {}
    early_stopping: dict[str, dict[str, Any]] = {}
    styles = {m: t for m, rows in by_method.items() if (t := style_breakdown(rows))}
    if cfg.record:
        for m in ("cope", "cascade-noplan"):
            if by_method.get(m):
                calibration[m] = reliability(by_method[m])
        # A recording ran every stage; what a cascade would have done is its
        # replay at the method's own thresholds.
        from .runner import method_cascade

        for m, rows in by_method.items():
            cascade = method_cascade(cfg, m)
            stages = cascade.stages
            early = any(st.stop != "none" and st.n > 1 for st in stages)
            picks = [(st.seed_index or i + 1) - 1 for i, st in enumerate(stages)]
            if rows and len(stages) < len(rows[0]["stages"]) and all(st.seed_index for st in stages):
                # a preset that runs a subset of the recorded cascade (cope-auto's calibrated
                # stages): its stages are the recorded ones it was cut from
                rows = [{**r, "n_stages": len(stages),
                         "stages": [{**r["stages"][k], "stage": i + 1} for i, k in enumerate(picks)]}
                        for r in rows if len(r["stages"]) > max(picks)]
                notes.append(f"{m}: stages {', '.join(str(k + 1) for k in picks)} of the recorded cascade")
                by_method[m] = rows
            changes = early_stop_changes(rows, stages, strict=cascade.strict)
            if changes:
                early_stopping[m] = changes
            if len(stages) > 1 or early:
                taus = [st.threshold for st in stages[:-1]]
                by_method[m] = [replayed(r, *taus, plan=stages, strict=cascade.strict) for r in rows]
                notes.append(f"{m}: replayed from the recording at thresholds {', '.join(f'{t:g}' for t in taus)}"
                             + (", its votes stopped early as live (samples drawn in windows)" if early else ""))
        if "cascade-noplan" in by_method and "frugal-cv" not in by_method:
            # FrugalGPT with no extra run: its scorer is cross-fitted on this
            # recording's own stage-1 votes (each fold scored by the others).
            from ..errors import ConfigError
            from ..frugal import cross_fitted

            try:
                by_method["frugal-cv"] = cross_fitted(by_method["cascade-noplan"])
                notes.append("frugal-cv: cascade-noplan's recording with a logistic-regression scorer "
                             "cross-fitted over 5 folds of these problems instead of the consensus threshold")
            except ConfigError:
                pass  # too few problems to cross-fit
        if "cope" in by_method and "large" in by_method and "cope-s3-noplan" not in by_method:
            by_method["cope-s3-noplan"] = stage3_without_plan(by_method["cope"], by_method["large"],
                                                              cfg.tau1, cfg.tau2)
            notes.append("cope-s3-noplan: ablation replayed from the recording, COPE's stages 1-2 with the "
                         "large model's unplanned greedy answer (the large method's) as stage 3")
    methods = {m: method_metrics(rs, rs[0].get("n_stages")) for m, rs in sorted(by_method.items())}
    paired = paired_vs(by_method, "large") if "large" in by_method else {}
    points = [(v["cost_usd_per_1m"], v["accuracy"]) for v in methods.values()
              if v["problems"] and v["accuracy"] is not None]
    judged = win_rates(records)
    if cfg.large_price_as:
        notes.append(f"{cfg.large} priced as {cfg.large_price_as}")
    if cfg.small_price_as:
        notes.append(f"{cfg.small} priced as {cfg.small_price_as}")
    return {
        "run": str(out),
        "benchmark": cfg.benchmark,
        "small": cfg.small,
        "large": cfg.large,
        "pricing_notes": notes,
        "record": cfg.record,
        "methods": methods,
        "errors": errors,
        "frontier": frontier(points),
        "aiq": aiq(points) if len(points) > 1 else None,
        "judged": judged,
        "paired_vs_large": paired,
        "calibration": calibration,
        "early_stopping": early_stopping,
        "styles": styles,
        "regenerate": f"cope report {out}",
    }


def judged_win_rates(out: Path) -> dict[str, dict[str, Any]]:
    """Win rates from the run's judgement records: {"METHOD vs BASELINE (JUDGE)": {...}}."""
    from .journal import read_journal

    return win_rates(read_journal(out / "journal.jsonl"))


def win_rates(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Win rates from judgement records, the latest verdict per pair counting."""
    latest: dict[tuple[str, str, str, str], str] = {}
    for r in records:
        if r.get("type") == "judgement":
            latest[(r["method"], r["baseline"], r["judge"], r["problem_id"])] = r["verdict"]
    groups: dict[tuple[str, str, str], list[str]] = {}
    for (m, b, j, _), v in latest.items():
        groups.setdefault((m, b, j), []).append(v)
    table = {}
    for (m, b, j), vs in sorted(groups.items()):
        points = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[v] for v in vs]
        table[f"{m} vs {b} ({j})"] = {
            "n": len(vs), "wins": vs.count("win"), "ties": vs.count("tie"), "losses": vs.count("loss"),
            "win_rate": vs.count("win") / len(vs), "adjusted_win_rate": float(np.mean(points)),
            "adjusted_ci95": bootstrap_ci(points),
        }
    return table


def write_summary(out: Path) -> dict[str, Any]:
    s = summarize_run(out)
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    return s
