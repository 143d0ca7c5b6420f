"""cope-auto end to end on real SmolLM2 runs: record, calibrate, write a preset, run it, replay it.

The same few arithmetic problems are recorded once (every stage, every
window), then run live with early stopping and with a calibrated preset
file; the live decisions, samples drawn and tokens must be what replaying
the recording says they would be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cope.errors import ConfigError
from cope.eval.metrics import replayed
from cope.eval.replay import calibrate, preset_from_calibration
from cope.eval.runner import EvalConfig, load_results, method_cascade, run_eval
from cope.methods import PresetFile, load_preset
from cope.tasks import get_task
from arith import smol_config, write_problems

SMOL = "local/smollm2-135m"
PROBLEMS = [("What is 3 + 4?", "7"), ("What is 10 - 6?", "4"), ("What is 2 times 5?", "10"),
            ("What is 9 + 9?", "18"), ("What is 12 - 5?", "7")]
ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_problems(tmp_path_factory.mktemp("data") / "arith.jsonl", PROBLEMS)


def config(data: Path, **kw) -> EvalConfig:
    return smol_config(data, dict(methods=["cope-auto", "large"], n=8, max_tokens=32, seed=3), **kw)


@pytest.fixture(scope="module")
def recorded(data, tmp_path_factory) -> Path:
    """cope-auto's full three-stage cascade, recorded (explicit thresholds: no family setting applies)."""
    out = tmp_path_factory.mktemp("rec")
    run_eval(config(data, record=True, tau1=0.75, tau2=0.5), out, use_cache=False, progress=False)
    return out


@pytest.mark.slow
def test_recording_draws_every_sample_in_both_styles(recorded):
    rows = [r for r in load_results(recorded) if r["method"] == "cope-auto"]
    assert len(rows) == len(PROBLEMS)
    for r in rows:
        s1, s2, _ = r["stages"]
        assert s1["drawn"] == 8 and len(s1["sample_tokens"]) == 8 and len(s1["window_latency_s"]) == 2
        assert s1["styles"] == ["cot", "pot"] * 4 and s2["styles"] == ["cot", "pot"] * 4
        assert sum(s1["sample_tokens"]) == s1["tokens"]["small"]["execute"]["completion"]


@pytest.mark.slow
def test_early_stopped_run_is_what_the_recording_replays(data, recorded, tmp_path):
    """Exact early stopping: the live run's decisions and draws equal the replay of the full recording."""
    live_dir = tmp_path / "live"
    # high thresholds: a weak model's scattered first window already makes them unreachable
    cfg = config(data, methods=["cope-auto"], tau1=0.75, tau2=0.75)
    run_eval(cfg, live_dir, use_cache=False, progress=False)
    live = {r["problem_id"]: r for r in load_results(live_dir)}
    stages = method_cascade(cfg, "cope-auto").stages
    rec = {r["problem_id"]: replayed(r, 0.75, 0.75, plan=stages)
           for r in load_results(recorded) if r["method"] == "cope-auto"}
    assert live.keys() == rec.keys()
    fewer = 0
    for pid, r in rec.items():
        got = live[pid]
        assert (got["stage"], got["answer"], got["correct"]) == (r["stage"], r["answer"], r["correct"]), pid
        for s_live, s_rec in zip(got["stages"], r["stages"][: r["stage"]]):
            assert s_live["drawn"] == s_rec.get("drawn", s_rec["n"]), pid
        assert got["tokens"]["small"]["execute"]["completion"] == r["tokens"]["small"]["execute"]["completion"]
        fewer += sum(s["n"] - s["drawn"] for s in got["stages"])
    assert fewer > 0  # some vote stopped early, or this test proves nothing


@pytest.mark.slow
def test_calibrated_preset_is_written_loaded_and_replays_its_decisions(data, recorded, tmp_path):
    r = calibrate(recorded, method="cope-auto", stages="auto", target_cost_ratio=0.6, boot=20)
    assert r["target_cost_usd_per_1m"] > 0 and r["cost_usd_per_1m"] <= r["target_cost_usd_per_1m"] + 1e-9
    assert tuple(r["stages"]) in {(1, 2, 3), (1, 3), (2, 3)}
    file = tmp_path / "auto.toml"
    preset = preset_from_calibration(r, "auto-test")
    file.write_text(preset.to_toml("test"))
    back = load_preset(file)
    assert (back.stages, back.tau1, back.tau2, back.base) == (preset.stages, preset.tau1, preset.tau2, "cope-auto")
    assert back.expected["chosen_on"].startswith("jsonl:")
    # a live run of the preset file makes the decisions the calibration replayed
    out = tmp_path / "run"
    cfg = config(data, methods=["auto-test"], extra={"presets": {"auto-test": back.to_dict()}})
    run_eval(cfg, out, use_cache=False, progress=False)
    live = {x["problem_id"]: x for x in load_results(out)}
    keep = [s - 1 for s in back.stages]
    accuracy = 0.0
    for row in load_results(recorded):
        if row["method"] != "cope-auto":
            continue
        sub = {**row, "stages": [row["stages"][i] for i in keep]}
        taus = [(back.tau1, back.tau2)[i] for i in keep[:-1]]
        rep = replayed(sub, *taus, plan=back.config().stages)
        got = live[row["problem_id"]]
        assert (got["answer"], got["correct"]) == (rep["answer"], rep["correct"]), row["problem_id"]
        accuracy += rep["correct"] / len(PROBLEMS)
    assert accuracy == pytest.approx(r["accuracy"])


def test_cli_calibrate_writes_a_preset_that_eval_and_solve_load(recorded, data, tmp_path):
    file = tmp_path / "p.toml"
    run = lambda *a: subprocess.run([sys.executable, "-m", "cope", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=600, cwd=ROOT)
    p = run("calibrate", str(recorded), "--method", "cope-auto", "--stages", "auto", "--target-cost-ratio", "0.6",
            "--name", "mine", "--write-preset", str(file))
    assert p.returncode == 0, p.stderr
    assert "expected on new problems" in p.stdout or "choice:" in p.stdout
    text = file.read_text()
    assert "cope calibrate" in text and 'base = "cope-auto"' in text and "[expected]" in text
    p = run("solve", "What is 2 + 2?", "--small", SMOL, "--large", SMOL, "--preset", str(file),
            "--max-tokens", "24", "--json", "--quiet", "--seed", "1")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["stages"][0]["n"] == 8
    bad = tmp_path / "bad.toml"
    bad.write_text('[preset]\nname = "x"\nbase = "nope"\n')
    p = run("solve", "What is 2 + 2?", "--preset", str(bad))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "unknown base method 'nope'" in p.stderr
    p = run("eval", f"jsonl:{data}", "--preset", str(bad), "--out", str(tmp_path / "e"))
    assert p.returncode == 2 and "unknown base method" in p.stderr


@pytest.mark.parametrize("body,needle", [
    ("[preset]\nbase = 'cope'\n", "needs 'name'"),
    ("[preset]\nname = 'a'\nbase = 'cope'\nstages = [1, 2]\n", "must be an increasing subset"),
    ("[preset]\nname = 'a'\nbase = 'cope'\ntau1 = 2\n", "'tau1' must be a number in [0, 1]"),
    ("[preset]\nname = 'a'\nbase = 'cope'\nstop = 'maybe'\n", "'stop' must be one of"),
    ("[preset]\nname = 'a'\nbase = 'cope'\ncolour = 1\n", "unknown key 'colour'"),
    ("name = 'a'\n", "no [preset] table"),
    ("[preset\n", "not a valid TOML file"),
])
def test_bad_preset_files_are_one_clear_error(body, needle, tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_preset(f)


def test_a_preset_subset_and_early_stopping_for_any_base(tmp_path):
    p = PresetFile(name="c13", base="cope", stages=(1, 3), tau1=0.6, window=2, stop="exact")
    cfg = p.config()
    assert len(cfg.stages) == 2 and cfg.stages[0].threshold == 0.6 and cfg.stages[-1].threshold is None
    assert cfg.stages[0].window == 2 and cfg.stages[0].stop == "exact" and cfg.stages[1].stop == "none"
    # stage 3 read the large model's guideline, which no kept stage writes now: it runs without it,
    # and the stage says so (what config.json records as the method's stages)
    assert cfg.stages[1].use_plans == () and PresetFile(name="all", base="cope").config().stages[2].use_plans == ("g_L",)


def test_server_serves_a_preset_file(tmp_path):
    from cope.serve.config import load_config

    f = tmp_path / "p.toml"
    f.write_text(PresetFile(name="tuned", base="cope-auto", stages=(1, 3), tau1=0.5).to_toml())
    cfg = load_config(None, environ={}, preset_files=[str(f)])
    kw = cfg.presets["tuned"].cope_kwargs(None)
    config = kw["solver"].cascade(get_task("math"))  # what the served Cope runs for its math family
    assert kw["solver"].preset_file == str(f)
    assert len(config.stages) == 2 and config.stages[0].styles == ("cot", "pot")
    f.write_text("[preset]\nname = 'cope'\nbase = 'cope'\n")
    with pytest.raises(ConfigError, match="already served"):
        load_config(None, environ={}, preset_files=[str(f)])


@pytest.mark.slow
def test_cope_auto_runs_its_familys_preset_and_the_recording_replays_it(data, recorded, tmp_path, monkeypatch):
    """The built-in route: cope-auto with no thresholds given runs the math preset file; the summary
    of the full recording replays the same stage subset, and a live run decides as the replay does."""
    import cope.methods as methods
    from cope.eval.metrics import summarize_run

    f = tmp_path / "math.toml"
    f.write_text(PresetFile(name="cope-auto-math", base="cope-auto", stages=(1, 3), tau1=0.5).to_toml())
    monkeypatch.setitem(methods.AUTO_PRESETS, "math", str(f))
    cfg = config(data, methods=["cope-auto"])
    cfg.extra["taus_given"] = False
    assert [st.seed_index for st in method_cascade(cfg, "cope-auto").stages] == [1, 3]
    # the same recording, as if its thresholds had been the defaults: the family's setting replays
    import shutil

    copy = tmp_path / "rec"
    shutil.copytree(recorded, copy)
    stored = json.loads((copy / "config.json").read_text())
    stored["extra"]["taus_given"] = False
    (copy / "config.json").write_text(json.dumps(stored))
    summary = summarize_run(copy)
    funnel = summary["methods"]["cope-auto"]["funnel"]
    assert [f_["stage"] for f_ in funnel] == [1, 2]  # two stages: 1 and 3 of the recording
    out = tmp_path / "live"
    run_eval(config(data, methods=["cope-auto"]), out, use_cache=False, progress=False)
    live = {r["problem_id"]: r for r in load_results(out)}
    assert all(r["n_stages"] == 2 for r in live.values())
    live_acc = sum(bool(r["correct"]) for r in live.values()) / len(live)
    assert live_acc == pytest.approx(summary["methods"]["cope-auto"]["accuracy"])
    # the explicit thresholds of the user win over the family's preset
    given = config(data, methods=["cope-auto"], tau1=0.6, tau2=0.5, extra={"taus_given": True})
    assert [st.threshold for st in method_cascade(given, "cope-auto").stages] == [0.6, 0.5, None]
