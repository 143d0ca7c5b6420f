"""``report.html`` as an explorer: one self-contained page a researcher clicks through, offline.

Interactive plots (Plotly, its JavaScript inlined once, so the file opens with no network):
accuracy against cost with each point labelled and its intervals and thresholds on hover,
methods toggled from the legend; the stage funnel coloured by the tier that executed each
stage, with its planner and accuracy on hover; latency against cost; reliability diagrams.
A what-if selector re-prices every tier above small at another price row from the recorded
tokens (the same arithmetic as ``cope report --price-as``). A problem table opens each
problem's trace from its result records: per method, plans, every stage's answer, confidence,
verdict, votes and cost (``cope show`` replays the samples themselves). The page reads
``#price=MODEL&problem=ID`` (and the table's filters: ``method``, ``stage``, ``outcome``,
``disagree``) from its address, so a link opens a chosen view. With ``cope report --traces``
each trace also holds the problem's samples replayed from the journal (see cope.eval.show):
every call's tokens, seconds and USD, each sample's text and the answer read from it, and for
programs the visible tests each passed and the sandbox's error.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

TIER_COLOURS = {"small": "#4C78A8", "medium": "#F58518", "large": "#E45756"}
_MORE = ["#72B7B2", "#54A24B", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC"]
_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "hexagon", "cross", "triangle-down"]


def _colour(tier: str) -> str:
    if tier in TIER_COLOURS:
        return TIER_COLOURS[tier]
    return _MORE[sum(map(ord, tier)) % len(_MORE)]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _cut(text: Any, n: int = 400) -> Any:
    if not isinstance(text, str):
        return text
    return text if len(text) <= n else text[: n - 3] + "..."


def _problems(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per problem, per method: what a trace shows (long texts cut; the journal has them whole)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        stages = []
        for s in r.get("stages") or []:
            clusters = s.get("clusters") or []
            votes: dict[str, int] = {}
            for c in clusters:
                if c is not None:
                    votes[str(c)] = votes.get(str(c), 0) + 1
            stages.append({"stage": s.get("stage"), "answer": _cut(s.get("answer"), 200),
                           "confidence": s.get("confidence"), "accepted": s.get("accepted"),
                           "correct": s.get("correct"), "cost_usd": s.get("cost_usd"),
                           "drawn": s.get("drawn") or s.get("n"), "n": s.get("n"),
                           "clusters": clusters, "votes": votes, "passing": s.get("passing")})
        out.setdefault(r["problem_id"], {})[r["method"]] = {
            "answer": _cut(r.get("answer"), 300), "correct": r.get("correct"), "stage": r.get("stage"),
            "n_stages": r.get("n_stages"), "cost_usd": r.get("cost_usd"), "latency_s": r.get("latency_s"),
            "reference": _cut(r.get("reference"), 300),
            "plans": [{"stage": p.get("stage"), "kind": p.get("kind"), "name": p.get("name"),
                       "text": _cut(p.get("text"), 300)} for p in r.get("plans") or []],
            "stages": stages}
    return out


def replayed_traces(out: Path, width: int = 600) -> dict[str, dict[str, Any]]:
    """Every problem's samples, replayed from the journal (``cope report --traces``): per method,
    each call's tokens, seconds and USD with its samples' texts (cut to ``width``), and per stage
    the answer read from each sample and, for programs, the visible tests each one passed."""
    from .show import Replayer

    rp = Replayer(out)
    traces: dict[str, dict[str, Any]] = {}
    for pid in rp.problems:
        if pid not in rp.results:
            continue
        t = rp.trace(pid)
        for m, e in t["methods"].items():
            if "replayed" not in e:
                continue
            stages = [{"stage": st["stage"], "extracted": [_cut(x, 120) for x in st["extracted"]],
                       "tests_passed": st["info"].get("tests_passed"), "errors": st["info"].get("errors")}
                      for st in e["replayed"]["stages"]]
            calls = [{"stage": c["stage"], "role": c["role"], "who": c["who"], "prompt_tokens": c["prompt_tokens"],
                      "completion_tokens": c["completion_tokens"], "latency_s": round(c["latency_s"], 2),
                      "cost_usd": c["cost_usd"], "texts": [_cut(x, width) for x in c["texts"]]}
                     for c in e["samples"]]
            traces.setdefault(pid, {})[m] = {"stages": stages, "calls": calls, "same": e["same_as_recorded"]}
    return traces


def _accuracy_plot(summaries: list[dict[str, Any]], configs: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, (s, cfg) in enumerate(zip(summaries, configs)):
        for j, (m, v) in enumerate(s["methods"].items()):
            if v["accuracy"] is None:
                continue
            x, y = v["cost_usd_per_1m"], 100 * v["accuracy"]
            lo_x, hi_x = v["cost_usd_per_1m_ci95"]
            lo_y, hi_y = (100 * c for c in v["accuracy_ci95"])
            taus = _thresholds(cfg, m)
            fig.add_trace(go.Scatter(
                x=[x], y=[y], mode="markers+text", name=f"{m} ({s['benchmark']})" if len(summaries) > 1 else m,
                text=[m], textposition="top center",
                # points that sit on each other (same cost and accuracy) stay apart by shape and size
                marker={"symbol": _SYMBOLS[j % len(_SYMBOLS)], "size": 14 - 2 * (j % 3),
                        "line": {"width": 1, "color": "#333"}},
                error_x={"type": "data", "symmetric": False, "array": [hi_x - x], "arrayminus": [x - lo_x]},
                error_y={"type": "data", "symmetric": False, "array": [hi_y - y], "arrayminus": [y - lo_y]},
                legendgroup=s["run"], legendgrouptitle_text=s["benchmark"] if len(summaries) > 1 else None,
                hovertemplate=(f"<b>{html.escape(m)}</b> ({html.escape(s['benchmark'])})<br>"
                               f"accuracy {y:.1f}% [{lo_y:.1f}, {hi_y:.1f}]<br>"
                               f"USD per 1M problems {x:,.2f} [{lo_x:,.2f}, {hi_x:,.2f}]<br>"
                               f"problems {v['problems']}<br>thresholds {html.escape(taus)}<extra></extra>"),
                marker_color=_MORE[(k * 3 + j) % len(_MORE)] if len(summaries) > 1 else None))
    fig.update_layout(title="Accuracy vs cost (95% bootstrap intervals; click a legend entry to hide it)",
                      xaxis_title="USD per 1M problems", yaxis_title="accuracy (%)", height=520,
                      legend={"orientation": "v", "x": 1.02, "y": 1}, margin={"r": 220})
    return fig


def _thresholds(cfg: dict[str, Any], method: str) -> str:
    stages = (cfg.get("extra") or {}).get("cascades", {}).get(method)
    if not stages:
        return "-"
    return ", ".join("answers" if st.get("threshold") is None else f"{st['threshold']:g}" for st in stages)


def _funnel_plot(summaries: list[dict[str, Any]], configs: list[dict[str, Any]]) -> tuple[Any, list[str]]:
    import plotly.graph_objects as go

    fig = go.Figure()
    rows, single, shown = [], [], set()
    for s, cfg in zip(summaries, configs):
        cascades = (cfg.get("extra") or {}).get("cascades", {})
        for m, v in s["methods"].items():
            label = f"{m} ({s['benchmark']})" if len(summaries) > 1 else m
            if len(v["funnel"]) <= 1:
                single.append(f"{label}: one stage ({v['problems']} problems)")
                continue
            rows.append(label)
            for f in v["funnel"]:
                tier = f.get("executor") or "?"
                stages = cascades.get(m) or []
                st = stages[f["stage"] - 1] if 0 < f["stage"] <= len(stages) else {}
                planner = st.get("plan") or "no plan"
                planned_by = planner.rsplit(" by ", 1)[1] if " by " in planner else ""
                share = f["problems"] / max(v["problems"], 1)
                key = f"stage {f['stage']}: {tier}" + (f", planned by {planned_by}" if planned_by else "")
                fig.add_trace(go.Bar(
                    y=[label], x=[share], orientation="h", name=key, legendgroup=key, showlegend=key not in shown,
                    # fill: the executing tier; hatching: the planning tier (none: no plan)
                    marker={"color": _colour(tier), "opacity": 1.0 - 0.18 * (f["stage"] - 1),
                            "line": {"width": 1, "color": "white"},
                            "pattern": {"shape": {"": "", "small": ".", "large": "/"}.get(planned_by, "x"),
                                        "fgcolor": _colour(planned_by) if planned_by else None, "size": 7,
                                        "solidity": 0.25}},
                    text=[f"{f['stage']}: {f['problems']} ({_pct(f['accuracy'])})"], textposition="inside",
                    hovertemplate=(f"<b>{html.escape(label)}</b><br>stage {f['stage']} executed by "
                                   f"{html.escape(tier)}; planner: {html.escape(planner)}<br>"
                                   f"{f['problems']} problems answered here, accuracy {_pct(f['accuracy'])}"
                                   "<extra></extra>")))
                shown.add(key)
    fig.update_layout(barmode="stack", title="Where problems were answered (fill: the tier that executed the stage; "
                      "hatching: the tier that planned it; text: problems and their accuracy)",
                      xaxis_title="share of problems",
                      xaxis={"tickformat": ".0%"}, height=260 + 46 * max(len(rows), 1),
                      legend={"orientation": "h", "y": -0.25, "yanchor": "top"})
    return fig, single


def _latency_plot(summaries: list[dict[str, Any]], latency: dict[tuple[str, str], tuple[float, float]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in summaries:
        for m, v in s["methods"].items():
            p50, p90 = latency.get((s["run"], m), (v.get("latency_s_p50") or 0.0, 0.0))
            fig.add_trace(go.Scatter(
                x=[v["cost_usd_per_1m"]], y=[p50], mode="markers+text", text=[m], textposition="top center",
                name=f"{m} ({s['benchmark']})" if len(summaries) > 1 else m,
                error_y={"type": "data", "symmetric": False, "array": [max(p90 - p50, 0.0)], "arrayminus": [0]},
                hovertemplate=(f"<b>{html.escape(m)}</b><br>model seconds per problem: p50 {p50:.1f}, p90 {p90:.1f}"
                               f"<br>USD per 1M problems {v['cost_usd_per_1m']:,.2f}<extra></extra>")))
    fig.update_layout(title="Model time vs cost (marker: p50 seconds per problem; bar up to p90)",
                      xaxis_title="USD per 1M problems", yaxis_title="model seconds per problem", height=420)
    return fig


def _reliability_plot(summaries: list[dict[str, Any]]) -> Any | None:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"dash": "dot", "color": "#999"}, hoverinfo="skip"))
    any_bins = False
    for s in summaries:
        for m, stages in (s.get("calibration") or {}).items():
            for st in stages:
                bins = [b for b in st["bins"] if b["problems"]]
                if not bins:
                    continue
                any_bins = True
                fig.add_trace(go.Scatter(
                    x=[b["confidence"] for b in bins], y=[b["right"] / b["problems"] for b in bins],
                    mode="lines+markers", name=f"{m} stage {st['stage']} (ECE {st['ece']:.2f})",
                    marker={"size": [6 + min(b["problems"], 30) / 2 for b in bins]},
                    customdata=[[b["problems"], b["right"]] for b in bins],
                    hovertemplate=("confidence %{x:.2f}: %{customdata[1]} of %{customdata[0]} right"
                                   "<extra>" + html.escape(f"{m} stage {st['stage']}") + "</extra>")))
    if not any_bins:
        return None
    fig.update_layout(title="Reliability: a stage's confidence against how often its answer was right "
                      "(marker size: problems in the bin)", xaxis_title="stage confidence",
                      yaxis_title="share right", height=460, xaxis={"range": [0, 1.05]}, yaxis={"range": [0, 1.05]})
    return fig


def _what_if(summaries: list[dict[str, Any]], prices: Any) -> dict[str, Any]:
    """What the selector needs: each method's tokens above small per tier, its problems, the rows."""
    methods = []
    for s in summaries:
        for m, v in s["methods"].items():
            tiers = v.get("tier_tokens") or {"large": v.get("large_tokens") or {}}
            above = {t: {"prompt": sum(r.get("prompt", 0) for r in roles.values()),
                         "completion": sum(r.get("completion", 0) for r in roles.values())}
                     for t, roles in tiers.items() if t != "small"}
            methods.append({"run": s["benchmark"], "method": m, "problems": v["problems"],
                            "recorded": v["cost_usd_per_1m"], "tiers": above})
    rows = {name: [p.input_per_m, p.output_per_m] for name, p in sorted(prices.prices.items())}
    return {"methods": methods, "rows": rows}


def _settings(s: dict[str, Any], cfg: dict[str, Any]) -> str:
    cascades = (cfg.get("extra") or {}).get("cascades", {})
    items = [("benchmark", s["benchmark"]), ("run", s["run"]), ("small", s["small"]), ("large", s["large"]),
             ("n", cfg.get("n")), ("thresholds (tau1, tau2)", f"{cfg.get('tau1')}, {cfg.get('tau2')}"
                                   + (" (the family's defaults where None)" if cfg.get("tau1") is None else "")),
             ("seed", cfg.get("seed")), ("max tokens per sample", cfg.get("max_tokens")),
             ("problems", cfg.get("limit") or "all"), ("recorded (every stage run)", cfg.get("record")),
             ("price rows", "; ".join(s.get("pricing_notes") or []) or "each model's own")]
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items)
    for m, stages in cascades.items():
        desc = " → ".join(f"{st['executor']}×{st['n']}" + (f" ({st['plan']})" if st.get("plan") else "")
                          + (f" ≥{st['threshold']:g}" if st.get("threshold") is not None else "") for st in stages)
        cells += f"<tr><th>method {html.escape(m)}</th><td>{html.escape(desc)}</td></tr>"
    return f"<table class='settings'>{cells}</table>"


_SCRIPT = r"""
const DATA = JSON.parse(document.getElementById('cope-data').textContent);
const fmt = (v) => v.toLocaleString('en-US', {minimumFractionDigits: 2, maximumFractionDigits: 2});
function reprice(row) {
  const rate = DATA.whatif.rows[row];
  document.querySelectorAll('#whatif tbody tr').forEach((tr, i) => {
    const m = DATA.whatif.methods[i];
    let usd = m.recorded;
    if (rate) {
      usd = 0;
      for (const t of Object.values(m.tiers)) usd += t.prompt * rate[0] + t.completion * rate[1];
      usd = m.problems ? usd / 1e6 / m.problems * 1e6 : 0;
    }
    tr.querySelector('.usd').textContent = fmt(usd);
  });
  document.getElementById('whatif-note').textContent = rate
    ? 'every tier above small priced as ' + row + ' from the recorded tokens (a what-if, not what was paid)'
    : 'as recorded';
}
function esc(s) { return String(s === null || s === undefined ? '-' : s).replace(/[&<>"]/g,
  (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }
function showProblem(id) {
  const p = DATA.problems[id], box = document.getElementById('trace');
  if (!p) { box.innerHTML = '<p>no problem ' + esc(id) + '</p>'; return; }
  let out = '<h3>problem ' + esc(id) + '</h3>';
  for (const [m, r] of Object.entries(p)) {
    out += '<div class="method"><h4>' + esc(m) + ': ' + (r.correct ? 'right' : r.correct === false ? 'wrong' : 'unscored')
      + ', stage ' + esc(r.stage) + ' of ' + esc(r.n_stages) + ', $' + Number(r.cost_usd || 0).toFixed(6) + '</h4>';
    out += '<p>answer: <code>' + esc(r.answer) + '</code> reference: <code>' + esc(r.reference) + '</code></p>';
    if (r.plans.length) out += '<ul class="plans">' + r.plans.map((x) => '<li>stage ' + esc(x.stage) + ' ' + esc(x.kind)
      + (x.name ? ' (kept as ' + esc(x.name) + ')' : '') + ': ' + esc(x.text) + '</li>').join('') + '</ul>';
    out += '<table class="stages"><tr><th>stage</th><th>samples</th><th>answer</th><th>confidence</th><th>verdict</th>'
      + '<th>votes</th><th>USD</th></tr>';
    for (const s of r.stages) {
      const votes = Object.entries(s.votes).map(([c, k]) => 'cluster ' + c + ': ' + k).join(', ')
        || (s.passing ? (s.passing.length ? 'samples passing the visible tests: '
          + s.passing.map((i) => i + 1).join(', ') : 'no sample passes the visible tests') : '-');
      out += '<tr class="stage"><td>' + esc(s.stage) + '</td><td>' + esc(s.drawn) + ' of ' + esc(s.n) + '</td><td><code>'
        + esc(s.answer) + '</code>' + (s.correct === true ? ' ✓' : s.correct === false ? ' ✗' : '') + '</td><td>'
        + Number(s.confidence || 0).toFixed(2) + '</td><td>' + (s.accepted ? 'accepted' : 'escalated') + '</td><td class="votes">'
        + esc(votes) + '</td><td>' + Number(s.cost_usd || 0).toFixed(6) + '</td></tr>';
    }
    out += '</table>';
    if (r.replay) out += replayed(r.replay);
    out += '</div>';
  }
  box.innerHTML = out;
}
function replayed(rp) {
  let out = '<details open><summary>samples, replayed from the journal' + (rp.same ? '' : ' (differs from the record)')
    + '</summary><table class="calls"><tr><th>stage</th><th>call</th><th>tier</th><th>tokens (prompt + completion)</th>'
    + '<th>seconds</th><th>USD</th></tr>';
  for (const c of rp.calls) out += '<tr><td>' + esc(c.stage) + '</td><td>' + esc(c.role) + '</td><td>' + esc(c.who)
    + '</td><td>' + esc(c.prompt_tokens) + ' + ' + esc(c.completion_tokens) + '</td><td>' + esc(c.latency_s)
    + '</td><td>' + Number(c.cost_usd).toFixed(6) + '</td></tr>';
  out += '</table>';
  for (const st of rp.stages) {
    const texts = rp.calls.filter((c) => c.stage === st.stage && c.role === 'execute').flatMap((c) => c.texts);
    const plans = rp.calls.filter((c) => c.stage === st.stage && c.role === 'plan').flatMap((c) => c.texts);
    out += '<h5>stage ' + esc(st.stage) + '</h5>';
    if (plans.length) out += '<ol class="plans">' + plans.map((t) => '<li>' + esc(t) + '</li>').join('') + '</ol>';
    out += '<ol class="samples">' + texts.map((t, i) => '<li class="sample">read as <code>' + esc(st.extracted[i])
      + '</code>' + (st.tests_passed ? ', visible tests passed: ' + esc(st.tests_passed[i]) : '')
      + (st.errors && st.errors[i] ? ', sandbox: ' + esc(st.errors[i]) : '')
      + '<pre>' + esc(t) + '</pre></li>').join('') + '</ol>';
  }
  return out + '</details>';
}
function applyFilters() {
  const m = document.getElementById('f-method').value, st = document.getElementById('f-stage').value;
  const oc = document.getElementById('f-outcome').value, dis = document.getElementById('f-disagree').checked;
  let shown = 0;
  document.querySelectorAll('#problems tbody tr').forEach((tr) => {
    const outcome = JSON.parse(tr.dataset.outcome), stages = JSON.parse(tr.dataset.stages);
    const ms = m ? [m] : Object.keys(outcome);
    let ok = ms.some((k) => k in outcome && (!st || String(stages[k]) === st)
      && (!oc || (oc === 'right' ? outcome[k] === true : outcome[k] === false)));
    if (dis && tr.dataset.disagree !== '1') ok = false;
    tr.style.display = ok ? '' : 'none';
    shown += ok ? 1 : 0;
  });
  document.getElementById('f-count').textContent = shown + ' problems shown';
}
function fromHash() {
  const q = new URLSearchParams(location.hash.slice(1));
  for (const [k, id] of [['method', 'f-method'], ['stage', 'f-stage'], ['outcome', 'f-outcome']]) {
    if (q.get(k) !== null) document.getElementById(id).value = q.get(k);
  }
  if (q.get('disagree') !== null) document.getElementById('f-disagree').checked = q.get('disagree') === '1';
  applyFilters();
  if (q.get('price')) { document.getElementById('price').value = q.get('price'); reprice(q.get('price')); }
  if (q.get('problem')) showProblem(q.get('problem'));
}
document.getElementById('price').addEventListener('change', (e) => reprice(e.target.value));
document.querySelectorAll('#problems tbody tr').forEach((tr) => tr.addEventListener('click',
  () => showProblem(tr.dataset.id)));
for (const id of ['f-method', 'f-stage', 'f-outcome', 'f-disagree']) {
  document.getElementById(id).addEventListener('change', applyFilters);
}
window.addEventListener('hashchange', fromHash);
fromHash();
"""

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;max-width:none}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
table.settings th{background:#f6f6f6;font-weight:600}code{background:#f3f3f3;white-space:pre-wrap}
#problems tbody tr{cursor:pointer}#problems tbody tr:hover{background:#eef4ff}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(640px,1fr));gap:1em}
.method{border-left:4px solid #4C78A8;padding-left:.8em;margin:.8em 0}.ok{color:#2a7}.bad{color:#c33}
#trace{min-height:3em}pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:4px;margin:2px 0;
font-size:12px;max-height:16em;overflow:auto}.filters select{margin-right:.6em}
"""


def explorer_page(summaries: list[dict[str, Any]], configs: list[dict[str, Any]],
                  records: list[list[dict[str, Any]]], prices: Any, command: str, tables_html: str,
                  traces: list[dict[str, Any]] | None = None) -> str:
    """The whole page: settings, plots, the what-if selector, the problem explorer, the tables."""
    from plotly.offline import get_plotlyjs

    latency: dict[tuple[str, str], tuple[float, float]] = {}
    for s, recs in zip(summaries, records):
        for m in s["methods"]:
            xs = sorted(float(r.get("latency_s") or 0.0) for r in recs if r["method"] == m)
            if xs:
                latency[(s["run"], m)] = (xs[len(xs) // 2], xs[min(len(xs) - 1, int(0.9 * len(xs)))])
    figs = [("accuracy", _accuracy_plot(summaries, configs))]
    funnel, single = _funnel_plot(summaries, configs)
    figs.append(("funnel", funnel))
    figs.append(("latency", _latency_plot(summaries, latency)))
    rel = _reliability_plot(summaries)
    if rel is not None:
        figs.append(("reliability", rel))
    divs = {name: fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                              config={"displaylogo": False, "responsive": True}) for name, fig in figs}
    problems: dict[str, Any] = {}
    for k, recs in enumerate(records):
        for pid, by_method in _problems(recs).items():
            for m, row in by_method.items():
                replay = (traces[k] if traces else {}).get(pid, {}).get(m)
                if replay is not None:
                    row["replay"] = replay
            problems.setdefault(pid, {}).update(by_method)
    whatif = _what_if(summaries, prices)
    data = json.dumps({"problems": problems, "whatif": whatif}, ensure_ascii=False).replace("</", "<\\/")

    methods = list(dict.fromkeys(m for s in summaries for m in s["methods"]))
    rows = []
    for pid, by_method in problems.items():
        cells = "".join(
            "<td>-</td>" if m not in by_method else
            f"<td class='{'ok' if by_method[m]['correct'] else 'bad'}'>"
            f"{'✓' if by_method[m]['correct'] else '✗' if by_method[m]['correct'] is False else '·'} "
            f"stage {by_method[m]['stage']}, ${float(by_method[m]['cost_usd'] or 0):.6f}</td>" for m in methods)
        outcome = {m: by_method[m]["correct"] for m in by_method}
        attrs = (f" data-id='{html.escape(pid, quote=True)}' data-outcome='{html.escape(json.dumps(outcome), quote=True)}'"
                 f" data-stages='{html.escape(json.dumps({m: by_method[m]['stage'] for m in by_method}), quote=True)}'"
                 f" data-disagree='{int(len(set(outcome.values())) > 1)}'")
        rows.append(f"<tr{attrs}><td>{html.escape(pid)}</td>{cells}</tr>")
    whatif_rows = "".join(f"<tr><td>{html.escape(m['run'])}</td><td>{html.escape(m['method'])}</td>"
                          f"<td class='usd'>{m['recorded']:,.2f}</td></tr>" for m in whatif["methods"])
    options = "<option value=''>as recorded</option>" + "".join(
        f"<option value='{html.escape(n, quote=True)}'>{html.escape(n)}</option>" for n in whatif["rows"])
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cope report</title>",
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>",
        "<h1>cope evaluation report</h1>",
        f"<p>Regenerate: <code>{html.escape(command)}</code>. Every number is recomputed from the runs' journals.</p>",
        "".join(f"<h2>Settings: {html.escape(s['benchmark'])}</h2>{_settings(s, c)}" for s, c in zip(summaries, configs)),
        divs["accuracy"], divs["funnel"],
        ("<p>Single-stage methods, not in the funnel: " + html.escape("; ".join(single)) + "</p>") if single else "",
        divs["latency"], divs.get("reliability", ""),
        "<h2>What if every tier above small were priced as another model</h2>",
        "<p><label>price row: <select id='price'>" + options + "</select></label> <span id='whatif-note'>as recorded"
        "</span></p><table id='whatif'><thead><tr><th>run</th><th>method</th><th>USD per 1M problems</th></tr></thead>"
        f"<tbody>{whatif_rows}</tbody></table>",
        "<h2>Problems (click one for its trace; <code>cope show DIR ID</code> prints every sample)</h2>",
        "<p class='filters'>method <select id='f-method'><option value=''>any</option>"
        + "".join(f"<option>{html.escape(m)}</option>" for m in methods) + "</select> "
        "stage <select id='f-stage'><option value=''>any</option><option>1</option><option>2</option>"
        "<option>3</option><option>4</option></select> "
        "outcome <select id='f-outcome'><option value=''>any</option><option value='right'>right</option>"
        "<option value='wrong'>wrong</option></select> "
        "<label><input type='checkbox' id='f-disagree'> methods disagree (one right, another wrong)</label> "
        "<span id='f-count'></span></p>"
        "<div class='grid'><div><table id='problems'><thead><tr><th>problem</th>"
        + "".join(f"<th>{html.escape(m)}</th>" for m in methods) + f"</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div><div id='trace'><p>Click a problem.</p></div></div>",
        "<h2>Tables</h2>", tables_html,
        f"<script type='application/json' id='cope-data'>{data}</script><script>{_SCRIPT}</script></body></html>",
    ]
    return "".join(parts)


def run_configs(dirs: list[Path]) -> list[dict[str, Any]]:
    """Each run's config.json as a dict (an empty one where it is missing)."""
    out = []
    for d in dirs:
        path = d / "config.json"
        out.append(json.loads(path.read_text()) if path.is_file() else {})
    return out
