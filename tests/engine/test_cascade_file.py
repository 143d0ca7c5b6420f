"""Cascades as data: every built-in method round-trips through a cascade file, and bad files are one error."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cope import Cope
from cope.cascade_file import dump, load
from cope.errors import ConfigError
from cope.methods import METHODS
from cope.models.base import Completion, Generation
from cope.pricing import PriceTable
from cope.solver import SolverConfig
from cope.tasks import get_task


@pytest.mark.parametrize("family", ["math", "code", "open"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_round_trips_through_a_cascade_file(method, family, tmp_path):
    config = SolverConfig(method=method, n=4).validate().cascade(get_task(family))
    f = tmp_path / "c.toml"
    f.write_text(dump(config, title=method))
    assert load(f) == config


BAD = [
    ('[[stage]]\nexecutor = "medium"\n', "unknown executor tier 'medium'; tiers: small, large"),
    ('[[stage]]\nexecutor = "small"\nn = 2\nthreshold = 1.5\n[[stage]]\nexecutor = "large"\n', "threshold must be in"),
    ('[[stage]]\nexecutor = "small"\nn = 3\nthreshold = 0.5\n[stage.plan]\nplanner = "small"\nkind = "goal"\ncount = 2\n'
     '[[stage]]\nexecutor = "large"\n', "must be a multiple of the plan count"),
    ('[[stage]]\nexecutor = "small"\nsamples = 4\n', "unknown key 'samples'"),
    ('[[stage]]\nexecutor = "small"\nthreshold = 0.5\n', "always answers: remove its threshold"),
    ('[[stage]]\nexecutor = "large"\nuse_plans = ["g_X"]\n', "uses plan 'g_X', which no earlier stage keeps"),
    ('[[stage]]\nexecutor = "small"\n[stage.plan]\nplanner = "small"\nkind = "essay"\n', "plan kind must be one of"),
    ('[cascade]\nstrict = "yes"\n[[stage]]\nexecutor = "small"\n', "strict = true or false"),
    ('stage = 3\n', "no [[stage]] tables"),
    ('[[stage]\n', "not a valid TOML file"),
    ('[tiers.mid]\nspec = 3\n[[stage]]\nexecutor = "mid"\n', "[tiers.mid] needs spec"),
    ('[tiers.mid]\nspec = "openai/x"\ntimeout = "soon"\n[[stage]]\nexecutor = "mid"\n', "[tiers.mid]: "),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_cascade_file_is_one_error_naming_the_file(text, message, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load(f)
    assert str(f) in str(err.value)


class Agreeing:
    """Every sample answers 4: a one-stage cascade file accepts it without the large model."""

    def __init__(self, spec: str) -> None:
        self.spec, self.calls = spec, 0

    async def generate(self, messages, params):
        self.calls += 1
        return Generation([Completion("\\boxed{4}", 5) for _ in range(params.n)], 10, 5 * params.n, 0.01, self.spec)

    async def generate_many(self, prompts, params):
        return [await self.generate(p, params) for p in prompts]


def test_cope_runs_the_stages_a_file_holds(tmp_path):
    f = tmp_path / "two.toml"
    f.write_text('[[stage]]\nexecutor = "small"\nn = 3\ntemperature = 0.7\nthreshold = 1.0\n'
                 '[[stage]]\nexecutor = "large"\n')
    small, large = Agreeing("local/a"), Agreeing("local/b")
    c = Cope(small=small, large=large, solver=SolverConfig(cascade_file=str(f)), prices=PriceTable.load(),
             large_price_as="gpt-4o-mini")
    r = c.solve("2+2?", task="math", seed=1)
    assert (r.answer, r.stage, len(c.config_for(get_task("math")).stages)) == ("4", 1, 2)
    assert small.calls == 1 and large.calls == 0 and r.stages[0].n == 3
    with pytest.raises(ConfigError, match="not both"):
        SolverConfig(cascade_file=str(f), preset_file=str(f)).validate()


def test_cascade_show_prints_a_file_that_solve_reads(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cope", "cascade", "show", "cope-auto", "--task", "code"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    f = tmp_path / "auto-code.toml"
    f.write_text(out.stdout)
    assert load(f) == SolverConfig(method="cope-auto").cascade(get_task("code"))
    bad = subprocess.run([sys.executable, "-m", "cope", "solve", "2+2?", "--cascade", str(tmp_path / "none.toml")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "cascade file not found" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_runs_a_cascade_file_as_a_method_and_the_server_serves_one(tmp_path):
    import json

    from cope.eval.rundir import load_config, method_cascade
    from cope.serve import load_config as load_server_config

    f = tmp_path / "one-small.toml"
    f.write_text('[[stage]]\nexecutor = "small"\nn = 1\nmax_tokens = 16\n')
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "cope", "eval", "gsm", "--limit", "1", "--cascade", str(f),
                        "--small", "local/smollm2-135m", "--large", "local/smollm2-135m", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    cfg = load_config(out)
    assert cfg.methods == ["one-small"] and method_cascade(cfg, "one-small") == load(f)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["one-small"]["problems"] == 1
    (tmp_path / "serve.toml").write_text('[presets.mine]\ncascade_file = "one-small.toml"\n')
    served = load_server_config(tmp_path / "serve.toml", environ={}).presets["mine"]
    assert served.solver.cascade(get_task("math")) == load(f) and served.thresholds() == [None]
    (tmp_path / "serve.toml").write_text('[presets.mine]\ncascade_file = "none.toml"\n')
    with pytest.raises(ConfigError, match="preset 'mine': cascade file not found"):
        load_server_config(tmp_path / "serve.toml", environ={})


def test_cope_takes_a_cascade_file_or_a_cascade_config(tmp_path):
    f = tmp_path / "one.toml"
    f.write_text('[[stage]]\nexecutor = "small"\nn = 2\ntemperature = 0.5\n')
    kw = dict(small=Agreeing("local/a"), large=Agreeing("local/b"), prices=PriceTable.load(), large_price_as="gpt-4o-mini")
    by_file = Cope(cascade=f, **kw)
    assert by_file.config_for(get_task("math")) == load(f) and by_file.solve("2+2?", seed=1).stage == 1
    assert Cope(cascade=load(f), **kw).config_for(get_task("code")) == load(f)
    with pytest.raises(ConfigError, match="not several"):
        Cope(cascade=f, solver=SolverConfig(), **kw)


THREE_TIERS = """
[tiers.medium]
spec = "openai/mid"
base_url = "{mid}"
key_env = "MID_KEY"
price_as = "gpt-4o-mini"

[[stage]]
executor = "small"
n = 2
temperature = 0.8
threshold = 1.0

[[stage]]
executor = "medium"
n = 2
temperature = 0.8
threshold = 1.0

[[stage]]
executor = "large"
"""


def _split_vote():
    from fault_server import Reply

    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": i, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": f"\\\\boxed{{{i + 1}}}"}} for i in range(2)],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}
    return [Reply(body=body)]


def test_a_three_tier_cascade_file_runs_from_the_command_line(tmp_path):
    import json as _json
    import os

    from fault_server import FaultServer, Reply, completion_body

    with FaultServer(_split_vote()) as small, FaultServer(_split_vote()) as mid, \
            FaultServer([Reply(body=completion_body({}, text="\\\\boxed{4}"))]) as large:
        f = tmp_path / "three.toml"
        f.write_text(THREE_TIERS.format(mid=mid.base_url))
        assert [t for t, _ in load(f).tiers] == ["medium"]
        env = {**os.environ, "MID_KEY": "mid-secret-0123456789"}
        p = subprocess.run([sys.executable, "-m", "cope", "solve", "What is 2 + 2?", "--cascade", str(f),
                            "--small", "openai/sm", "--small-base-url", small.base_url, "--small-price-as", "gpt-4o-mini",
                            "--large", "openai/lg", "--large-base-url", large.base_url, "--large-price-as", "gpt-4o",
                            "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        out = _json.loads(p.stdout)
        assert out["answer"] == "4" and out["stage"] == 3
        assert (small.count, mid.count, large.count) == (1, 1, 1)  # each tier's call reached its own server
        assert mid.seen[0].headers["authorization"] == "Bearer mid-secret-0123456789"
        who = {c["who"] for c in out["calls"]}
        assert who == {"small", "medium", "large"}
    bad = tmp_path / "bad.toml"
    bad.write_text(THREE_TIERS.format(mid="http://127.0.0.1:9/v1").replace('executor = "medium"', 'executor = "mediun"'))
    with pytest.raises(ConfigError, match="unknown executor tier 'mediun'; tiers: small, large, medium"):
        load(bad)
    bad.write_text('[tiers.small]\nspec = "openai/x"\n[[stage]]\nexecutor = "small"\n')
    with pytest.raises(ConfigError, match="small and large are the caller's models"):
        load(bad)


def test_a_three_tier_cascade_file_runs_in_eval_with_a_report(tmp_path):
    import json as _json
    import os

    from fault_server import FaultServer, Reply, completion_body

    with FaultServer(_split_vote()) as small, FaultServer(_split_vote()) as mid, \
            FaultServer([Reply(body=completion_body({}, text="\\\\boxed{4}"))]) as large:
        f = tmp_path / "three.toml"
        f.write_text(THREE_TIERS.format(mid=mid.base_url))
        env = {**os.environ, "MID_KEY": "mid-secret-0123456789"}
        out = tmp_path / "run"
        p = subprocess.run([sys.executable, "-m", "cope", "eval", "gsm", "--limit", "2", "--cascade", str(f),
                            "--small", "openai/sm", "--small-base-url", small.base_url, "--small-price-as", "gpt-4o-mini",
                            "--large", "openai/lg", "--large-base-url", large.base_url, "--large-price-as", "gpt-4o",
                            "--out", str(out), "--quiet", "--no-cache"], capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        assert (small.count, mid.count, large.count) == (2, 2, 2)
        summary = _json.loads((out / "summary.json").read_text())
        three = summary["methods"]["three"]
        assert three["problems"] == 2 and three["cost_usd_total"] > 0
        # every tier is named: the funnel by each stage's executor, the tokens by tier
        assert [f.get("executor") for f in three["funnel"]] == ["small", "medium", "large"]
        assert [f["problems"] for f in three["funnel"]] == [0, 0, 2]
        assert list(three["tier_tokens"]) == ["small", "medium", "large"]
        assert three["tier_tokens"]["medium"]["execute"]["completion"] > 0
        r = subprocess.run([sys.executable, "-m", "cope", "report", str(out), "--out", str(tmp_path / "rep")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        md = (tmp_path / "rep" / "summary.md").read_text()
        assert "| three |" in md and "1 small: 0, 2 medium: 0, 3 large: 2" in md
        assert re.search(r"medium 0 / [1-9][\d,]*; large", md)


def test_a_served_preset_builds_every_tier_of_its_cascade_file(tmp_path, monkeypatch):
    from cope.serve import load_config as load_server_config

    monkeypatch.setenv("MID_KEY", "mid-secret-0123456789")
    (tmp_path / "three.toml").write_text(THREE_TIERS.format(mid="http://127.0.0.1:9/v1"))
    (tmp_path / "serve.toml").write_text(
        '[presets.three]\ncascade_file = "three.toml"\nsmall = "openai/sm"\nlarge = "openai/lg"\n'
        'small_base_url = "http://127.0.0.1:9/v1"\nlarge_base_url = "http://127.0.0.1:9/v1"\n'
        'small_price_as = "gpt-4o-mini"\nprice_as = "gpt-4o"\n')
    preset = load_server_config(tmp_path / "serve.toml", environ={}).presets["three"]
    c = Cope(**preset.cope_kwargs(PriceTable.load()))
    assert list(c.models) == ["small", "large", "medium"] and c.models["medium"].model.spec == "openai/mid"
    assert [st.executor for st in c.config_for(get_task("math")).stages] == ["small", "medium", "large"]


ENSEMBLE = """
[tiers.other]
spec = "openai/other"
base_url = "{other}"
price_as = "gpt-4o-mini"

[[stage]]
executor = "small"
ensemble = ["other"]
n = 4
temperature = 0.8
threshold = 1.0

[[stage]]
executor = "large"
"""


def _answers(text: str, n: int):
    from fault_server import Reply, choices_body

    return [Reply(body=choices_body([text] * n))]


@pytest.mark.parametrize("other_says, accepted", [("\\\\boxed{4}", True), ("\\\\boxed{5}", False)])
def test_an_abc_tier_of_two_distinct_models_votes_their_samples_together(tmp_path, other_says, accepted):
    """ABC's shape: the first tier is an ensemble of two different models, each on its own server;
    all agree -> the tier answers, else the large model does."""
    from fault_server import FaultServer

    with FaultServer(_answers("\\\\boxed{4}", 2)) as small, FaultServer(_answers(other_says, 2)) as other, \
            FaultServer(_answers("\\\\boxed{4}", 1)) as large:
        f = tmp_path / "abc2.toml"
        f.write_text(ENSEMBLE.format(other=other.base_url))
        c = Cope(small="openai/sm", large="openai/lg", small_base_url=small.base_url, large_base_url=large.base_url,
                 small_price_as="gpt-4o-mini", large_price_as="gpt-4o", prices=PriceTable.load(), cascade=str(f))
        r = c.solve("What is 2 + 2?", seed=1)
    assert [s.body.get("n") for s in small.seen] == [2] and [s.body.get("n") for s in other.seen] == [2]
    assert r.stages[0].executor == "openai/sm + openai/other" and r.stages[0].n == 4
    assert r.stages[0].confidence == (1.0 if accepted else 0.5)
    assert (r.stage, large.count) == ((1, 0) if accepted else (2, 1))
    assert r.answer == "4"
    assert [c.who for c in r.calls if c.stage == 1] == ["small", "other"]
    round_trip = load(f)
    assert load_text(dump(round_trip)).stages == round_trip.stages


def load_text(text: str):
    from cope.cascade_file import loads

    return loads(text)


@pytest.mark.parametrize("stage, message", [
    ('executor = "small"\nensemble = ["nosuch"]\nn = 2\n', "unknown ensemble tier 'nosuch'"),
    ('executor = "small"\nensemble = ["small"]\nn = 2\n', "named twice"),
    ('executor = "small"\nensemble = ["large"]\nn = 1\n', "every ensemble member a sample"),
])
def test_a_bad_ensemble_is_one_error(stage, message):
    from cope.cascade_file import loads

    with pytest.raises(ConfigError, match=message):
        loads("[[stage]]\n" + stage)
