"""`cope report`: a Markdown summary and a self-contained HTML page with plots.

Everything shown is recomputed from the run directories' journals, and the
page prints the command that regenerates it.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .metrics import summarize_run


def _fmt_ci(v: float | None, ci: tuple[float, float] | list[float] | None, pct: bool = True) -> str:
    if v is None or ci is None:
        return "- (judged)"
    if pct:
        return f"{100 * v:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"{v:,.2f} [{ci[0]:,.2f}, {ci[1]:,.2f}]"


def _local_work(s: dict[str, Any]) -> list[str]:
    """What each method asked of the local machine: samples drawn per stage, tokens, model time."""
    methods = s["methods"]
    if not methods:
        return []
    base = methods.get("large", {}).get("latency_s_p50")
    per_step = any(d.get("per") == "step" for v in methods.values() for d in v.get("stage_draws", []))
    lines = ["", "Local work per problem (samples drawn per stage, over the "
                 + ("steps of every episode" if per_step else "problems") + " that ran it; model seconds, "
                 "median" + (", and its ratio to `large`'s median in this run" if base else "") + "):", "",
             "| method | samples drawn per stage | small samples | small tokens generated | model s p50 |"
             + (" vs large |" if base else ""), "|---|---|---|---|---|" + ("---|" if base else "")]
    for m, v in methods.items():
        draws = ", ".join(f"{d['stage']}: {d['drawn_mean']:.1f} of {d['n']}" for d in v.get("stage_draws", []))
        ratio = f" {v['latency_s_p50'] / base:.2f}x |" if base else ""
        lines.append(f"| {m} | {draws or '-'} | {v.get('small_samples_per_problem', 0.0):.1f} | "
                     f"{v['small_generated_tokens_per_problem']:,.0f} | {v['latency_s_p50']:.1f} |{ratio}")
    return lines


def _tier_tokens(v: dict[str, Any]) -> str:
    """Plan / execute tokens of every tier but small, by name ("medium 0 / 812; large 1,204 / 3,310")."""
    tiers = v.get("tier_tokens") or {"large": v["large_tokens"]}  # summaries written before tiers were named
    cells = []
    for tier, roles in tiers.items():
        if tier == "small":
            continue
        plan, execute = (sum(roles.get(r, {}).values()) for r in ("plan", "execute"))
        cells.append(f"{tier} {plan:,} / {execute:,}")
    return "; ".join(cells) or "none"


def _funnel(v: dict[str, Any]) -> str:
    """Where problems stopped, each stage named by its executor tier: "1 small: 40 (90%), 2 large: 10 (60%)"."""
    return ", ".join(
        f"{f['stage']}{' ' + f['executor'] if f.get('executor') else ''}: {f['problems']}"
        + (f" ({100 * f['accuracy']:.0f}%)" if f["accuracy"] is not None else "")
        for f in v["funnel"])


def _markdown(summaries: list[dict[str, Any]], command: str) -> str:
    lines = ["# cope evaluation report", "", f"Regenerate: `{command}`", ""]
    for s in summaries:
        lines += [f"## {s['benchmark']} ({s['run']})", "",
                  f"small `{s['small']}`, large `{s['large']}`"
                  + (f"; {'; '.join(s['pricing_notes'])}" if s["pricing_notes"] else ""), ""]
        lines += ["| method | problems | accuracy [95% CI] | USD per 1M problems [95% CI] | USD total | "
                  "tokens of the tiers above small (plan / execute) | small tokens generated per problem | "
                  "stages (problems: accuracy) | latency p50 s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m, v in s["methods"].items():
            lines.append(
                f"| {m} | {v['problems']} | {_fmt_ci(v['accuracy'], v['accuracy_ci95'])} | "
                f"{_fmt_ci(v['cost_usd_per_1m'], v['cost_usd_per_1m_ci95'], pct=False)} | "
                f"{v['cost_usd_total']:.4f} | {_tier_tokens(v)} | "
                f"{v['small_generated_tokens_per_problem']:,.0f} | {_funnel(v)} | {v['latency_s_p50']:.1f} |")
        lines += _local_work(s)
        paired = s.get("paired_vs_large") or {}
        if paired:
            lines += ["", "Against `large` on the same problems (paired bootstrap over problems; a difference "
                          "whose interval holds 0 is not established):", "",
                      "| method | problems | accuracy difference [95% CI] | right only here / only large | "
                      "cost ratio to large [95% CI] |", "|---|---|---|---|---|"]
            for m, p in paired.items():
                lo, hi = p["accuracy_diff_ci95"]
                ratio = ("-" if p["cost_ratio"] is None else
                         f"{p['cost_ratio']:.2f}x [{p['cost_ratio_ci95'][0]:.2f}, {p['cost_ratio_ci95'][1]:.2f}]")
                lines.append(f"| {m} | {p['problems']} | {100 * p['accuracy_diff']:+.1f} pts "
                             f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {p['only_method_right']} / "
                             f"{p['only_baseline_right']} | {ratio} |")
        styles = s.get("styles") or {}
        if styles:
            lines += ["", "Mixed votes by executor style, every drawn sample (cot: reasoning in words; pot: a "
                          "program, run in the sandbox; right / answered / samples):", "",
                      "| method | stage | style | right | answered | samples |", "|---|---|---|---|---|---|"]
            for m, cells in styles.items():
                for c in cells:
                    lines.append(f"| {m} | {c['stage']} | {c['style']} | {c['right']} | {c['answered']} | "
                                 f"{c['samples']} |")
        calibration = s.get("calibration") or {}
        if any(calibration.values()):
            lines += ["", "Confidence against accuracy, every recorded problem at every deciding stage "
                          "(confidence: right / problems; ECE is the problem-weighted gap between the two):", "",
                      "| method | stage | confidence: right / problems | ECE |", "|---|---|---|---|"]
            for m, stages in calibration.items():
                for st in stages:
                    cells = ", ".join(f"{b['confidence']:.2f}: {b['right']}/{b['problems']}" for b in st["bins"])
                    lines.append(f"| {m} | {st['stage']} | {cells} | {st['ece']:.2f} |")
        early = s.get("early_stopping") or {}
        if early:
            lines += ["", "Early stopping replayed on the recording's full votes (each voting stage in windows of "
                          "the method's own size, or 4): samples drawn over all problems by each rule, and what the "
                          "predictive rule changed against the exact one (which changes nothing by construction):",
                      "", "| method | problems | samples: all n / exact / predictive | decisions changed | "
                          "right to wrong / wrong to right | accuracy exact / predictive |",
                      "|---|---|---|---|---|---|"]
            for m, e in early.items():
                lines.append(f"| {m} | {e['problems']} | {e['samples_full']} / {e['samples_exact']} / "
                             f"{e['samples_predictive']} | {e['decisions_changed']} | {e['right_to_wrong']} / "
                             f"{e['wrong_to_right']} | {100 * e['accuracy_exact']:.1f}% / "
                             f"{100 * e['accuracy_predictive']:.1f}% |")
        for name, w in s.get("judged", {}).items():
            lo, hi = w["adjusted_ci95"]
            lines += ["", f"Judged: {name}: {w['wins']} wins, {w['ties']} ties, {w['losses']} losses of {w['n']}; "
                         f"win rate {100 * w['win_rate']:.1f}%, counting ties as half {100 * w['adjusted_win_rate']:.1f}% "
                         f"[{100 * lo:.1f}, {100 * hi:.1f}]"]
        episodes = [f"{m} {v['steps_mean']:.1f}" for m, v in s["methods"].items() if "steps_mean" in v]
        if episodes:
            lines += ["", "Episodes (accuracy is the success rate); mean steps: " + ", ".join(episodes)]
        if s.get("episode_early_stopping"):
            lines += ["", "Early stopping replayed on every step's full votes (windows of the method's own size, "
                          "or 4): the exact rule keeps every step's decision, so the episodes are the same; a step "
                          "the predictive rule changed would have changed the game from there on:", "",
                      "| method | episodes | steps | samples: all n / exact / predictive | "
                      "small tokens generated: all n / exact / predictive | steps changed by predictive |",
                      "|---|---|---|---|---|---|"]
            for m, e in s["episode_early_stopping"].items():
                lines.append(f"| {m} | {e['episodes']} | {e['steps']} | {e['samples_full']} / {e['samples_exact']} / "
                             f"{e['samples_predictive']} | {e['small_tokens_full']:,} / {e['small_tokens_exact']:,} / "
                             f"{e['small_tokens_predictive']:,} | {e['steps_changed_predictive']} |")
        if s.get("aiq") is not None:
            lines += ["", f"AIQ (area under the cost-accuracy frontier of these methods): {s['aiq']:.3f}"]
        if s.get("errors"):
            lines += ["", f"{s['errors']} problem(s) ended in a backend error (journaled; `--resume` retries them)."]
        lines.append("")
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(md: str) -> str:
    """The Markdown this module writes (headings, tables, paragraphs) as HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, body = table[0], [r for r in table[1:] if not all(set(c) <= {"-"} for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


def _plots(summaries: list[dict[str, Any]], sweeps: dict[str, Any]) -> list[tuple[str, bytes]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in summaries:
        for m, v in s["methods"].items():
            if v["accuracy"] is None:
                continue
            x, y = v["cost_usd_per_1m"], 100 * v["accuracy"]
            xe = [[x - v["cost_usd_per_1m_ci95"][0]], [v["cost_usd_per_1m_ci95"][1] - x]]
            ye = [[y - 100 * v["accuracy_ci95"][0]], [100 * v["accuracy_ci95"][1] - y]]
            ax.errorbar([x], [y], xerr=xe, yerr=ye, fmt="o", capsize=3, label=f"{m} ({s['benchmark']})")
        sw = sweeps.get(s["run"])
        if sw:
            xs = [p["cost_usd_per_1m"] for p in sw]
            ys = [100 * p["accuracy"] for p in sw]
            ax.plot(xs, ys, "-", color="gray", alpha=0.7, label=f"COPE threshold sweep ({s['benchmark']})")
    ax.set_xlabel("USD per 1M problems")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs cost (95% bootstrap intervals)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:  # nothing scored against a reference (open-ended runs are judged pairwise)
        ax.text(0.5, 0.5, "no reference-scored methods", ha="center", transform=ax.transAxes)
    out.append(("accuracy_vs_cost.png", _png(fig)))
    plt.close(fig)

    staged = [(s, m, v) for s in summaries for m, v in s["methods"].items() if len(v["funnel"]) > 1]
    if staged:
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(staged)))
        labelled: set[str] = set()  # one legend entry per stage and tier, whichever row shows it first
        for row, (s, m, v) in enumerate(staged):
            left = 0
            for f in v["funnel"]:
                share = f["problems"] / max(v["problems"], 1)
                label = f"stage {f['stage']}" + (f" ({f['executor']})" if f.get("executor") else "")
                ax.barh(row, share, left=left, color=f"C{f['stage'] - 1}",
                        label=label if label not in labelled else None)
                labelled.add(label)
                if share > 0.06:
                    ax.text(left + share / 2, row, f"{f['problems']}", ha="center", va="center", fontsize=8)
                left += share
        ax.set_yticks(range(len(staged)), [f"{m} ({s['benchmark']})" for s, m, _ in staged])
        ax.set_xlabel("share of problems answered at each stage")
        ax.set_title("stage funnel")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not on them
        fig.tight_layout()
        out.append(("stage_funnel.png", _png(fig)))
        plt.close(fig)
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def write_report(dirs: list[Path], out: Path | None = None, price_as: str | None = None,
                 traces: bool = False) -> dict[str, Path]:
    """Write summary.md, report.html and the PNGs into ``out`` (default: the first run dir);
    ``price_as`` re-prices every tier above small from the recorded tokens (a what-if bill);
    ``traces`` embeds every problem's samples, replayed from the journals (slower: programs run again)."""
    from .replay import calibrate

    summaries = [summarize_run(d, price_as) for d in dirs]
    sweeps: dict[str, Any] = {}
    for d, s in zip(dirs, summaries):
        if s["record"] and "cope" in s["methods"] and not price_as:  # the sweep is priced by the journal
            try:
                sweeps[s["run"]] = calibrate(d, target_accuracy=0.0, boot=50)["frontier"]
            except (ConfigError, ValueError):  # a partial recording still gets a report, just no sweep curve
                sweeps[s["run"]] = None
    out = out or dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    command = ("cope report " + " ".join(str(d) for d in dirs) + (f" --price-as {price_as}" if price_as else "")
               + (" --traces" if traces else ""))
    md = _markdown(summaries, command)
    (out / "summary.md").write_text(md)
    (out / "summary.json").write_text(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    for name, data in _plots(summaries, sweeps):  # static pictures for summary.md
        (out / name).write_bytes(data)
    from ..pricing import PriceTable
    from .explorer import explorer_page, replayed_traces, run_configs
    from .rundir import load_results

    configs = run_configs(dirs)
    page = explorer_page(summaries, configs, [load_results(d) for d in dirs],
                         PriceTable.load(configs[0].get("prices")), command, _html(md),
                         [replayed_traces(d) for d in dirs] if traces else None)
    (out / "report.html").write_text(page)
    return {"markdown": out / "summary.md", "html": out / "report.html"}
