"""report.html as an explorer, loaded in headless Chromium: no console message, the what-if
selector's totals are the ones computed from the tokens, a problem's trace shows its votes.

Chromium reads ``#price=MODEL&problem=ID`` the way a person's click sets it; ``--dump-dom``
returns the page after its scripts ran, and ``--enable-logging`` prints every console line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from cope.eval.metrics import summarize_run
from cope.eval.report import write_report

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs it where "
                                                         "it can: apt-get install chromium)")


def load(page: Path, fragment: str = "") -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and every console line it printed."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=5000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def cells(dom: str, table_id: str, cls: str) -> list[str]:
    body = re.search(rf"<table id=\"{table_id}\">(.*?)</table>", dom, re.S).group(1)
    return [unescape(x) for x in re.findall(rf'<td class="{cls}">(.*?)</td>', body)]


def test_the_console_catches_a_broken_page(tmp_path):
    """The check below can fail: a page with a script error prints it."""
    bad = tmp_path / "bad.html"
    bad.write_text("<p>x</p><script>undefinedFunction();</script>")
    _, console = load(bad)
    assert any("undefinedFunction" in line for line in console)


@pytest.mark.parametrize("source", ["committed", "smollm2"])
def test_the_explorer_loads_reprices_and_opens_a_trace(source, small_run, tmp_path):
    if source == "committed":
        run = tmp_path / "humaneval-164"
        shutil.copytree(ROOT / "results" / "humaneval-164", run)
        problem = "HumanEval/32"  # every method escalated to stage 3 there
    else:
        run, problem = small_run, "q1"
    out = tmp_path / "report"
    page = write_report([run], out)["html"]
    dom, console = load(page)
    assert console == [], console
    assert dom.count('class="plotly-graph-div') >= 3  # accuracy, funnel, latency drawn
    recorded = summarize_run(run)
    assert cells(dom, "whatif", "usd") == [f"{v['cost_usd_per_1m']:,.2f}" for v in recorded["methods"].values()]

    dom, console = load(page, f"price=gpt-4o&problem={problem}")
    assert console == [], console
    repriced = summarize_run(run, "gpt-4o")  # cope report --price-as: the same tokens at gpt-4o's row
    assert cells(dom, "whatif", "usd") == [f"{v['cost_usd_per_1m']:,.2f}" for v in repriced["methods"].values()]
    assert "priced as gpt-4o from the recorded tokens" in dom
    trace = dom[dom.index('<div id="trace">'):]
    assert f"problem {problem}" in trace
    for m in recorded["methods"]:
        assert f"<h4>{m}:" in trace
    votes = re.findall(r'<td class="votes">(.*?)</td>', trace)
    assert votes and any(v != "-" for v in votes)  # a vote (clusters, or which programs passed) per stage


def test_traces_hold_the_replayed_samples_and_the_filters_select_rows(small_run, tmp_path):
    from cope.eval.runner import load_results

    page = write_report([small_run], tmp_path / "report", traces=True)["html"]
    dom, console = load(page, "problem=q1")
    assert console == [], console
    trace = dom[dom.index('<div id="trace">'):]
    assert "samples, replayed from the journal</summary>" in trace  # the replay matched the record
    assert trace.count('<li class="sample">') >= 3  # cope's samples (n = 2 per voting stage) and large's one
    assert "read as <code>" in trace and '<table class="calls">' in trace
    rows = {r["problem_id"]: r for r in load_results(small_run) if r["method"] == "large"}
    for outcome, want in (("right", True), ("wrong", False)):
        dom, console = load(page, f"method=large&outcome={outcome}")
        assert console == []
        tags = re.findall(r'<tr data-id="([^"]+)"([^>]*)>', dom)
        assert {pid for pid, _ in tags} == set(rows)
        shown = {pid for pid, rest in tags if "display: none" not in rest}
        assert shown == {pid for pid, r in rows.items() if r["correct"] is want}
        assert f"{len(shown)} problems shown" in dom
