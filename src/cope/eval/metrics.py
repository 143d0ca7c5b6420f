"""Metrics over a run's results: accuracy with intervals, cost, funnel, frontier.

Intervals are percentile bootstraps over problems (seeded, so a report is
reproducible); a difference between methods inside the interval is noise,
which is the reviewers' point about the paper's tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .replay import early_stop_changes, episode_early_stop, replayed
from .stats import aiq, bootstrap_ci, fold_ids, frontier, paired_vs

__all__ = ["aiq", "bootstrap_ci", "fold_ids", "frontier", "paired_vs", "replayed", "early_stop_changes",
           "summarize_run", "method_metrics", "reliability", "stage3_without_plan", "style_breakdown",
           "judged_win_rates", "win_rates", "write_summary"]


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


def stage3_replay(rows: dict[str, list[dict[str, Any]]], cfg: Any) -> list[dict[str, Any]]:
    """The registry's replay of ``cope-s3-noplan`` from a recording's cope and large rows."""
    return stage3_without_plan(rows["cope"], rows["large"], cfg.tau1, cfg.tau2)


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


def _tier_order(name: str) -> tuple[int, str]:
    """small first, large last, any named tier between them (alphabetically)."""
    return ({"small": 0, "large": 2}.get(name, 1), name)


def _executor(results: list[dict[str, Any]], stage: int) -> str | None:
    """The tier that executed a stage, read off its records: the one with execute tokens there.

    A stage's executor is not in older records, but its tokens are, so a run
    of any number of tiers gets its funnel labelled by name. The most common
    answer wins (a stage is one tier in every problem of one method).
    """
    seen: dict[str, int] = {}
    for r in results:
        for st in r.get("stages", []):
            if st.get("stage") == stage:
                # an ensemble stage (several tiers share its samples) is labelled by all of them
                tiers = "+".join(t for t, roles in st.get("tokens", {}).items() if "execute" in roles)
                if tiers:
                    seen[tiers] = seen.get(tiers, 0) + 1
    return max(seen, key=lambda t: (seen[t], t)) if seen else None


def _ran(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages a result ran: a problem's, or every step's of an episode (each step is a cascade)."""
    if "episode" in r:
        return [st for step in r["episode"] for st in step.get("stages", [])[: step.get("stage", 0)]]
    return r.get("stages", [])[: r.get("stage", 0)]


def method_metrics(results: list[dict[str, Any]], n_stages: int | None = None) -> dict[str, Any]:
    correct = [float(r["correct"]) for r in results if r["correct"] is not None]
    cost = [float(r["cost_usd"]) for r in results]
    lat = [float(r.get("latency_s", 0.0)) for r in results]
    n = len(results)
    # every tier's tokens by role: a cascade of N tiers (small, medium, large, ...) names each
    by_tier: dict[str, dict[str, dict[str, int]]] = {}
    small_generated = 0
    small_samples = 0
    draws: dict[int, list[tuple[int, int]]] = {}  # stage -> (drawn, n) of each problem that ran it
    for r in results:
        for st in _ran(r):
            drawn = st.get("drawn", st.get("n", 1))
            draws.setdefault(st["stage"], []).append((drawn, st.get("n", 1)))
            if "execute" in st.get("tokens", {}).get("small", {}):
                small_samples += drawn
        tokens = r.get("tokens", {})
        for tier, roles in tokens.items():
            for role, t in roles.items():
                cell = by_tier.setdefault(tier, {}).setdefault(role, {"prompt": 0, "completion": 0})
                for k in ("prompt", "completion"):
                    cell[k] += t.get(k, 0)
        small_generated += sum(t["completion"] for t in tokens.get("small", {}).values())
    stages = n_stages or max((r["stage"] for r in results), default=1)
    funnel = []
    for s in range(1, stages + 1):
        at = [r for r in results if r["stage"] == s]
        scored = [r for r in at if r["correct"] is not None]
        entry = {"stage": s, "problems": len(at),
                 "accuracy": (sum(r["correct"] for r in scored) / len(scored)) if scored else None}
        tier = _executor(results, s)
        if tier:
            entry["executor"] = tier
        funnel.append(entry)
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
        "large_tokens": {role: dict(by_tier.get("large", {}).get(role, {"prompt": 0, "completion": 0}))
                         for role in ("plan", "execute")},
        "tier_tokens": {t: by_tier[t] for t in sorted(by_tier, key=_tier_order)},
        # The local model is priced at 0, but its decoding is the CPU time COPE
        # spends instead of money; generated tokens measure it on any machine.
        "small_generated_tokens_per_problem": small_generated / n if n else float("nan"),
        # small-model samples drawn per problem: early stopping lowers it, at the same decisions
        "small_samples_per_problem": small_samples / n if n else float("nan"),
        # per stage: mean samples drawn (of n) over the problems (an episode's: the steps) that ran it
        "stage_draws": [{"stage": k, "problems": len(v), "drawn_mean": float(np.mean([d for d, _ in v])),
                         "n": max(m for _, m in v), **({"per": "step"} if "episode" in results[0] else {})}
                        for k, v in sorted(draws.items())],
        "funnel": funnel,
        **({"steps_mean": float(np.mean([r["steps"] for r in results]))} if results and "steps" in results[0] else {}),
        "latency_s_mean": float(np.mean(lat)) if lat else float("nan"),
        "latency_s_p50": float(np.median(lat)) if lat else float("nan"),
    }


def repriced(results: list[dict[str, Any]], cfg: Any, price_as: str) -> list[dict[str, Any]]:
    """What a run would have cost with every tier above small priced as ``price_as``: each stage's
    cost recomputed from its recorded tokens (no model call); the small tier keeps its own price."""
    from ..pricing import PriceTable

    table = PriceTable.load(cfg.prices)
    new = table.get(price_as)
    small = table.for_spec(cfg.small, cfg.small_price_as)

    def cost(tokens: dict[str, Any], role: str | None = None) -> float:
        return sum((small if tier == "small" else new).cost(t["prompt"], t["completion"])
                   for tier, roles in tokens.items() for r, t in roles.items() if role in (None, r))

    out = []
    for r in results:
        stages = [({**st, "cost_usd": cost(st["tokens"]), "plan_cost_usd": cost(st["tokens"], "plan")}
                   if "tokens" in st else st) for st in r.get("stages", [])]
        used = stages[: r.get("stage") or len(stages)]
        total = sum(st["cost_usd"] for st in used) if stages and all("tokens" in st for st in stages) else (
            cost(r["tokens"]) if r.get("tokens") else r["cost_usd"])
        out.append({**r, "stages": stages, "cost_usd": total})
    return out


def summarize_run(out: Path, price_as: str | None = None) -> dict[str, Any]:
    """Metrics per method from a run directory's journal (the one source of truth); ``price_as``
    re-prices every tier above small from the recorded tokens (a what-if bill)."""
    from .rundir import journal_records, latest_results, load_config

    cfg = load_config(out)
    records = journal_records(out)  # one read (one decompression of an archive) for everything below
    results = latest_results(records)
    notes = []
    if price_as:
        results = repriced(results, cfg, price_as)
        notes.append(f"what-if: every tier above small priced as {price_as} from the recorded tokens "
                     "(cached-input discounts not applied); without --price-as the journal's own costs")
    errors = sum(1 for r in records if r.get("type") == "error")
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_method.setdefault(r["method"], []).append(r)
    calibration: dict[str, list[dict[str, Any]]] = {}
    early_stopping: dict[str, dict[str, Any]] = {}
    styles = {m: t for m, rows in by_method.items() if (t := style_breakdown(rows))}
    if cfg.record:
        from ..methods import METHODS, REPLAYS
        from ..plugins import resolve

        for m, spec in METHODS.items():
            if spec.reliability and by_method.get(m):
                calibration[m] = reliability(by_method[m])
        # A recording ran every stage; what a cascade would have done is its
        # replay at the method's own thresholds.
        from .rundir import method_cascade

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
        for rp in REPLAYS.values():  # methods the recording answers with no model call (frugal-cv, ...)
            if rp.name not in by_method and all(src in by_method for src in rp.sources):
                built = resolve(rp.build)({src: by_method[src] for src in rp.sources}, cfg)
                if built is not None:
                    by_method[rp.name] = built
                    notes.append(rp.note)
    # an agent method without early stopping voted every step in full: what the rules would save
    episode_early: dict[str, dict[str, Any]] = {}
    for m, rows in by_method.items():
        if rows and "episode" in rows[0] and m in cfg.methods:
            from .rundir import method_cascade

            cascade = method_cascade(cfg, m)
            if all(st.stop == "none" for st in cascade.stages):
                if (e := episode_early_stop(rows, cascade.stages, strict=cascade.strict)) is not None:
                    episode_early[m] = e
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
        "episode_early_stopping": episode_early,
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
