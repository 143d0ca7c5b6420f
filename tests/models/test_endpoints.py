"""Each model is its own endpoint: the small one's URL and key never serve the large one's calls.

Two stand-in servers on 127.0.0.1 speak the real chat-completions protocol, so
the real OpenAI client and the real cascade are exercised end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fault_server import FaultServer, Reply, choices_body, completion_body

from cope import Cope, Endpoint
from cope.errors import ConfigError
from cope.pricing import PriceTable

SMALL_KEY, LARGE_KEY = "small-secret-0123456789", "large-secret-0123456789"


def _servers():
    return (FaultServer([Reply(body=completion_body({"n": 8}, text="The answer is \\boxed{4}."))]),
            FaultServer([Reply(body=completion_body({}, text="Add the two numbers."))]))


def _seen(server):
    return [(s.body.get("model"), s.headers.get("authorization")) for s in server.seen]


def test_each_model_calls_its_own_base_url_with_its_own_key(monkeypatch):
    monkeypatch.setenv("SMALL_KEY", SMALL_KEY)
    monkeypatch.setenv("LARGE_KEY", LARGE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "openai-secret-should-not-be-used")
    small_srv, large_srv = _servers()
    with small_srv, large_srv:
        c = Cope(small="openai/smol", large="openai/big", method="plan-only", n=2, prices=PriceTable.load(),
                 small_price_as="gpt-4o-mini", large_price_as="gpt-4o-mini",
                 small_base_url=small_srv.base_url, large_base_url=large_srv.base_url,
                 small_key_env="SMALL_KEY", large_key_env="LARGE_KEY")
        r = c.solve("What is 2 + 2?", seed=1)
    assert r.answer == "4"
    assert _seen(small_srv) and set(_seen(small_srv)) == {("smol", f"Bearer {SMALL_KEY}")}
    assert _seen(large_srv) and set(_seen(large_srv)) == {("big", f"Bearer {LARGE_KEY}")}


def test_the_command_line_sends_each_model_to_its_own_server(tmp_path):
    small_srv, large_srv = _servers()
    env = {**os.environ, "SMALL_KEY": SMALL_KEY, "LARGE_KEY": LARGE_KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    with small_srv, large_srv:
        p = subprocess.run(
            [sys.executable, "-m", "cope", "solve", "What is 2 + 2?", "--small", "openai/smol", "--large", "openai/big",
             "--method", "plan-only", "--n", "2", "--small-price-as", "gpt-4o-mini", "--large-price-as", "gpt-4o-mini",
             "--small-base-url", small_srv.base_url, "--large-base-url", large_srv.base_url,
             "--small-key-env", "SMALL_KEY", "--large-key-env", "LARGE_KEY", "--json", "--quiet"],
            capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["answer"] == "4"
    assert {m for m, _ in _seen(small_srv)} == {"smol"} and {m for m, _ in _seen(large_srv)} == {"big"}
    # a key variable that is not set is one line naming it, before any call
    p = subprocess.run([sys.executable, "-m", "cope", "solve", "2+2?", "--small", "openai/smol", "--large", "openai/big",
                        "--large-key-env", "NO_SUCH_KEY_VAR", "--large-price-as", "gpt-4o-mini",
                        "--small-price-as", "gpt-4o-mini"], capture_output=True, text=True,
                       env={k: v for k, v in env.items() if k != "NO_SUCH_KEY_VAR"}, timeout=60)
    assert p.returncode == 2 and "NO_SUCH_KEY_VAR" in p.stderr and "Traceback" not in p.stderr


def test_convenience_providers_preset_the_url_and_their_own_key_only(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "openai-secret-should-not-be-used")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    srv = FaultServer([Reply()])
    with srv:
        local = Endpoint("ollama/qwen2.5:0.5b", base_url=srv.base_url).build("small")
        assert local.spec == "ollama/qwen2.5:0.5b"
        assert PriceTable.load().for_spec(local.spec).input_per_m == 0.0  # served on the user's machine: free
        with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
            Endpoint("gemini/gemini-2.0-flash").build("large")
        monkeypatch.setenv("GEMINI_API_KEY", "gemini-secret-0123456789")
        remote = Endpoint("gemini/gemini-2.0-flash", base_url=srv.base_url).build("large")
        c = Cope(small=local, large=remote, method="large", prices=PriceTable.load(), large_price_as="gpt-4o-mini")
        c.solve("2+2?", seed=1)
        c2 = Cope(small=Endpoint("ollama/qwen2.5:0.5b", base_url=srv.base_url), large="local/smollm2-135m",
                  method="small", prices=PriceTable.load())
        c2.solve("2+2?", seed=1)
    auth = [s.headers.get("authorization") for s in srv.seen]
    assert auth[0] == "Bearer gemini-secret-0123456789"  # gemini's own variable
    assert "openai-secret-should-not-be-used" not in " ".join(a or "" for a in auth)  # never OpenAI's key
    assert Endpoint("ollama/x").build("small").base_url == "http://127.0.0.1:11434/v1"


@pytest.mark.parametrize("kwargs, message", [
    ({"small": "local/smollm2-135m", "small_base_url": "http://127.0.0.1:1/v1"}, "runs in this process"),
    ({"large": "openai/x", "large_key_env": "sk-not a name"}, "not the key itself"),
    ({"large": "openai/x", "large_base_url": "127.0.0.1:8080"}, "must start with http"),
    ({"large": Endpoint("openai/x", base_url="http://127.0.0.1:1/v1"), "large_base_url": "http://127.0.0.1:2/v1"},
     "not twice"),
    ({"large": Endpoint("local/smollm2-135m", native=True)}, "native is for a served model"),
    ({"large": Endpoint("openai/x", base_url="http://127.0.0.1:1/v1", native="yes")}, "native must be true or false"),
])
def test_bad_endpoints_are_one_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Cope(**{"small": "local/smollm2-135m", "large": "local/smollm2-135m", "large_price_as": "gpt-4o-mini",
                "prices": PriceTable.load(), **kwargs})


def test_a_served_preset_takes_each_models_endpoint(tmp_path, monkeypatch):
    from cope.serve import load_config

    monkeypatch.setenv("LARGE_KEY", LARGE_KEY)
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[presets.split]\nsmall = "ollama/qwen2.5:0.5b"\nlarge = "openai/gpt-4o-mini"\n'
                   'small_base_url = "http://127.0.0.1:11434/v1"\nlarge_base_url = "http://127.0.0.1:18081/v1"\n'
                   'large_key_env = "LARGE_KEY"\n')
    config = load_config(cfg, environ={})
    kw = config.presets["split"].cope_kwargs(None)
    assert (kw["small"].base_url, kw["large"].base_url, kw["large"].key_env) == (
        "http://127.0.0.1:11434/v1", "http://127.0.0.1:18081/v1", "LARGE_KEY")
    assert LARGE_KEY in config.secrets()  # scrubbed from the logs
    cfg.write_text(cfg.read_text().replace('"LARGE_KEY"', '"UNSET_KEY_VAR"'))
    with pytest.raises(ConfigError, match="preset 'split': environment variable UNSET_KEY_VAR"):
        load_config(cfg, environ={})


class _ReasoningStandIn:
    """A loopback chat-completions server that refuses what OpenAI's reasoning models refuse."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                outer.bodies.append(body)
                bad = ("max_tokens" if "max_tokens" in body else
                       "temperature" if body.get("temperature", 1) != 1 else None)
                if bad:
                    status, reply = 400, {"error": {"message": f"Unsupported parameter: '{bad}' is not supported "
                                                               "with this model.", "type": "invalid_request_error",
                                                    "param": bad, "code": "unsupported_parameter"}}
                else:
                    n = int(body.get("n") or 1)
                    reply = {"id": "r", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": i, "finish_reason": "stop", "logprobs": None,
                                          "message": {"role": "assistant", "content": "\\boxed{4}"}} for i in range(n)],
                             "usage": {"prompt_tokens": 10, "completion_tokens": 50 * n, "total_tokens": 10 + 50 * n,
                                       "completion_tokens_details": {"reasoning_tokens": 45 * n}}}
                    status = 200
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_reasoning_model_in_the_large_tier_is_asked_as_its_api_requires():
    with _ReasoningStandIn() as srv:
        c = Cope(small="local/smollm2-135m", large="openai/o4-mini", method="large", prices=PriceTable.load(),
                 large_base_url=srv.base_url, large_price_as="gpt-4o-mini", max_tokens=64)
        r = c.solve("What is 2 + 2?", seed=1)
        assert r.answer == "4"
        sent = srv.bodies[-1]
        assert sent["max_completion_tokens"] == 64 and "max_tokens" not in sent and "temperature" not in sent
        call = r.calls[-1]
        assert call.completion_tokens == 50  # reasoning tokens included: billed as output
        assert call.cost_usd == pytest.approx(PriceTable.load().for_spec("openai/o4-mini", "gpt-4o-mini").cost(10, 50))
        # the same server refuses a model asked the usual way: the refusal names the parameter
        plain = Cope(small="local/smollm2-135m", large=Endpoint("openai/o4-mini", base_url=srv.base_url,
                                                               reasoning=False),
                     method="large", prices=PriceTable.load(), large_price_as="gpt-4o-mini", max_tokens=64)
        from cope.errors import BackendError

        with pytest.raises(BackendError, match="max_tokens"):
            plain.solve("What is 2 + 2?", seed=1)


@pytest.mark.slow
def test_one_endpoint_down_is_one_line_naming_its_tier():
    from cope.errors import BackendError

    srv = FaultServer([Reply(body=completion_body({"n": 8}, text="Maybe \\boxed{3}, or \\boxed{5}."))])
    with srv:
        c = Cope(small="openai/smol", large="openai/big", method="plan-only", n=2, prices=PriceTable.load(),
                 small_price_as="gpt-4o-mini", large_price_as="gpt-4o-mini", small_base_url=srv.base_url,
                 large_base_url="http://127.0.0.1:9/v1", timeout=2)
        with pytest.raises(BackendError) as err:
            c.solve("What is 2 + 2?", seed=1)
    message = str(err.value)
    assert message.startswith("the large model (plan, stage 1): openai/big: cannot reach http://127.0.0.1:9/v1")
    assert err.value.tier == "large" and "\n" not in message


# A three-tier chain (a model on the user's machine, a cheap reasoning API, a strong API), each tier on
# its own loopback server: the first two disagree with themselves, so the question climbs to the third.
THREE_TIERS = """
[tiers.medium]

[[stage]]
executor = "small"
n = 2
threshold = 0.9

[[stage]]
executor = "medium"
n = 2
threshold = 0.9

[[stage]]
executor = "large"
n = 1
"""
PRICES = """
[models."mid"]
input = 1.0
output = 4.0
cached_input = 0.25
[models."big"]
input = 10.0
output = 40.0
cached_input = 5.0
"""


def _three_servers():
    return (FaultServer([Reply(body=choices_body(["\\boxed{3}", "\\boxed{5}"], prompt_tokens=20, completion_tokens=8))]),
            FaultServer([Reply(body=choices_body(["\\boxed{3}", "\\boxed{5}"], prompt_tokens=100,
                                                 completion_tokens=60, cached_tokens=80, reasoning_tokens=50))],
                        reasoning=True),
            FaultServer([Reply(body=choices_body(["\\boxed{4}"], prompt_tokens=1000, completion_tokens=10,
                                                 cached_tokens=600))]))


def _expected_cost():
    mid = (20 * 1.0 + 80 * 0.25 + 60 * 4.0) / 1e6  # 20 fresh and 80 cached prompt tokens
    big = (400 * 10.0 + 600 * 5.0 + 10 * 40.0) / 1e6
    return mid, big


def test_server_models_tables_give_each_tier_its_endpoint_over_http(tmp_path):
    from serving import ServerProcess

    small, medium, large = _three_servers()
    (tmp_path / "three.toml").write_text(THREE_TIERS)
    (tmp_path / "prices.toml").write_text(PRICES)
    config = f"""
prices = "prices.toml"

[models.mine]
spec = "llamacpp/smol"
base_url = "{small.base_url}"
params = {{ top_k = 20 }}

[models.cheap]
spec = "openai/mid"
base_url = "{medium.base_url}"
key_env = "MID_KEY"
reasoning = true
params = {{ reasoning_effort = "low" }}

[models.strong]
spec = "openai/big"
base_url = "{large.base_url}"
key_env = "BIG_KEY"
timeout = 30

[presets.chain]
small = "mine"
large = "strong"
task = "math"
cascade_file = "three.toml"
tiers = {{ medium = "cheap" }}
"""
    os.environ["MID_KEY"], os.environ["BIG_KEY"] = "mid-secret-0123456789", "big-secret-0123456789"
    try:
        with small, medium, large:
            server = ServerProcess(tmp_path, config)
            try:
                r = server.client(timeout=60).chat.completions.create(
                    model="chain", messages=[{"role": "user", "content": "What is 2 + 2?"}], seed=1)
            finally:
                server.stop()
    finally:
        del os.environ["MID_KEY"], os.environ["BIG_KEY"]
    ext = r.to_dict()["cope"]
    assert ext["answer"] == "4" and ext["stage"] == 3
    assert (small.count, medium.count, large.count) == (1, 1, 1)  # one request per tier, each to its own server
    assert small.seen[0].body["top_k"] == 20 and small.seen[0].body["model"] == "smol"
    sent = medium.seen[0].body
    assert sent["model"] == "mid" and sent["reasoning_effort"] == "low"
    assert "max_tokens" not in sent and "temperature" not in sent and sent["max_completion_tokens"] == 512
    assert medium.seen[0].headers["authorization"] == "Bearer mid-secret-0123456789"
    assert large.seen[0].headers["authorization"] == "Bearer big-secret-0123456789"
    assert "top_k" not in large.seen[0].body  # params are the endpoint's own
    assert "secret" not in small.seen[0].headers.get("authorization", "")  # no other tier's key
    assert [c["model"] for c in ext["calls"]] == ["llamacpp/smol", "openai/mid", "openai/big"]
    mid, big = _expected_cost()
    assert [c["cost_usd"] for c in ext["calls"]] == pytest.approx([0.0, mid, big])
    assert ext["cost_usd"] == pytest.approx(mid + big)
    usage, last = r.usage.to_dict(), ext["calls"][-1]  # usage: the large tier's answer, as received
    assert usage["prompt_tokens"] == last["prompt_tokens"] and usage["completion_tokens"] == last["completion_tokens"]
    assert usage.get("prompt_tokens_details", {}).get("cached_tokens", 0) == last["cached_tokens"]
    assert usage.get("completion_tokens_details", {}).get("reasoning_tokens", 0) == last["reasoning_tokens"]
    tiers = ext["bill"]["tiers"]  # the bill: every tier's tokens, the cache and reasoning breakdowns
    assert ext["bill"]["prompt_tokens"] == 1120 and sum(t["cached_tokens"] for t in tiers.values()) == 680
    assert sum(t["reasoning_tokens"] for t in tiers.values()) == 50


def test_the_command_line_gives_a_cascade_files_tier_its_own_endpoint(tmp_path):
    small, medium, large = _three_servers()
    (tmp_path / "three.toml").write_text(THREE_TIERS)
    (tmp_path / "prices.toml").write_text(PRICES)
    env = {**os.environ, "MID_KEY": "mid-secret-0123456789", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    base = [sys.executable, "-m", "cope", "solve", "What is 2 + 2?", "--cascade", str(tmp_path / "three.toml"),
            "--small", "llamacpp/smol", "--small-base-url", small.base_url, "--large", "openai/big",
            "--large-base-url", large.base_url, "--prices", str(tmp_path / "prices.toml"), "--json", "--quiet"]
    with small, medium, large:
        p = subprocess.run(base + ["--tier", "medium=openai/o4-mini", "--tier-base-url", f"medium={medium.base_url}",
                                   "--tier-key-env", "medium=MID_KEY", "--large-price-as", "big"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["answer"] == "4" and (small.count, medium.count, large.count) == (1, 1, 1)
        assert "max_tokens" not in medium.seen[0].body  # o4-mini is a reasoning model by its name
        assert medium.seen[0].headers["authorization"] == "Bearer mid-secret-0123456789"
        # a tier the file leaves to the caller, not given: one line naming it, before any call
        p = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 2 and "tier 'medium'" in p.stderr and "--tier medium=SPEC" in p.stderr
        assert "Traceback" not in p.stderr and small.count == 1
        for bad, message in ((["--tier", "medium"], "--tier takes NAME=VALUE"),
                             (["--tier-base-url", f"medium={medium.base_url}"], "--tier medium=SPEC"),
                             (["--tier", "large=openai/x"], "small and large are --large")):
            p = subprocess.run(base + bad, capture_output=True, text=True, env=env, timeout=60)
            assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, (bad, p.stderr)


@pytest.mark.parametrize("extra, message", [
    ('[presets.p]\nsmall = "nosuch"\n', "neither a [models.NAME] table"),
    ('[models.a]\nspec = "openai/x"\nbogus = 1\n', "unknown key 'bogus'"),
    ('[models.a]\nbase_url = "http://127.0.0.1:1/v1"\n', "needs spec"),
    ('[models.a]\nspec = "openai/x"\nparams = { temperature = 0.1 }\n', "set by the cascade itself"),
    ('[models.a]\nspec = "llamacpp/x"\n[presets.p]\nsmall = "a"\nsmall_base_url = "http://127.0.0.1:1/v1"\n',
     "give its base_url there"),
    ('[presets.p]\ntiers = { medium = "llamacpp/x" }\n', "set cascade_file too"),
    ('[presets.p]\ntiers = { small = "llamacpp/x" }\n', "small and large are the preset's"),
])
def test_bad_models_tables_are_one_clear_error(tmp_path, extra, message):
    from cope.serve import load_config

    cfg = tmp_path / "serve.toml"
    cfg.write_text(extra)
    with pytest.raises(ConfigError, match=message.replace("[", "\\[").replace("]", "\\]")):
        load_config(cfg, environ={})


def test_cached_prompt_tokens_are_billed_at_the_cached_rate(tmp_path):
    from cope.pricing import Price

    table = PriceTable.load()
    mini = table.get("gpt-4o-mini")
    assert mini.cached_input_per_m == pytest.approx(0.075)  # the shipped row
    assert mini.cost(1000, 0, cached_tokens=1000) == pytest.approx(mini.cost(1000, 0) / 2)
    assert Price("x", 1.0, 2.0).cost(1000, 10, cached_tokens=900) == Price("x", 1.0, 2.0).cost(1000, 10)  # no rate
    assert table.for_spec("local/smollm2-135m", "gpt-4o-mini").cached_input_per_m == pytest.approx(0.075)
    srv = FaultServer([Reply(body=choices_body(["\\boxed{4}"], prompt_tokens=1000, completion_tokens=10,
                                               cached_tokens=600))])
    with srv:
        c = Cope(small="local/smollm2-135m", large="openai/gpt-4o-mini", method="large", prices=table,
                 large_base_url=srv.base_url)
        r = c.solve("What is 2 + 2?", seed=1)
    assert r.calls[-1].cached_tokens == 600
    assert r.cost_usd == pytest.approx((400 * 0.15 + 600 * 0.075 + 10 * 0.60) / 1e6)
    bad = tmp_path / "p.toml"
    bad.write_text('[models."m"]\ninput = 1.0\noutput = 2.0\ncached_input = "cheap"\n')
    with pytest.raises(ConfigError, match="'cached_input' must be a number"):
        PriceTable.load(bad)


def _llama_server(tmp_path, name, key):
    """llama-cpp-python's own OpenAI-compatible server on SmolLM2, logging every request it answers
    and refusing (401) any request without its own key."""
    import socket
    import time
    import urllib.error
    import urllib.request

    from cope.models.local_files import model_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / f"{name}.log"
    sink = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path("smollm2-135m")),
                             "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--n_ctx", "2048",
                             "--api_key", key],
                            stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{base}/models", timeout=2)
        except urllib.error.HTTPError:  # 401 without the key: it is up
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.terminate()
                raise AssertionError(f"llama_cpp.server not answering: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)
    return proc, sink, base, log


@pytest.mark.slow
def test_two_real_llama_servers_each_get_their_own_models_requests(tmp_path):
    """The shape of the bug report: two llama.cpp servers, the second standing in for the paid API.
    Every request of each tier reaches its own server (counted in the servers' own access logs)."""
    servers = [_llama_server(tmp_path, "small", SMALL_KEY), _llama_server(tmp_path, "large", LARGE_KEY)]
    try:
        (_, _, small_url, small_log), (_, _, large_url, large_log) = servers
        p = subprocess.run(
            [sys.executable, "-m", "cope", "solve", "What is 2 + 3?", "--small", "openai/smol-small",
             "--large", "openai/fake-gpt-4o-mini", "--small-base-url", small_url, "--large-base-url", large_url,
             "--method", "plan-only", "--n", "2", "--max-tokens", "24", "--small-price-as", "gpt-4o-mini",
             "--large-price-as", "gpt-4o-mini", "--seed", "3", "--json", "--quiet",
             "--small-key-env", "SMALL_KEY", "--large-key-env", "LARGE_KEY"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OPENAI_API_KEY": "unused-0123456789", "SMALL_KEY": SMALL_KEY, "LARGE_KEY": LARGE_KEY})
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        # the keys swapped: the large server refuses the small model's key, one line naming the tier
        swapped = subprocess.run(
            [sys.executable, "-m", "cope", "solve", "What is 2 + 3?", "--small", "openai/smol-small",
             "--large", "openai/fake-gpt-4o-mini", "--small-base-url", small_url, "--large-base-url", large_url,
             "--method", "large", "--max-tokens", "8", "--large-price-as", "gpt-4o-mini",
             "--small-price-as", "gpt-4o-mini", "--large-key-env", "SMALL_KEY", "--quiet"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "SMALL_KEY": SMALL_KEY})
        assert swapped.returncode != 0 and "large model" in swapped.stderr and "401" in swapped.stderr
        assert "Traceback" not in swapped.stderr and len(swapped.stderr.strip().splitlines()) == 1
        # the large server down: one line naming that tier and its URL
        servers[1][0].terminate()
        servers[1][0].wait(timeout=20)
        down = subprocess.run(
            [sys.executable, "-m", "cope", "solve", "What is 2 + 3?", "--small", "openai/smol-small",
             "--large", "openai/fake-gpt-4o-mini", "--small-base-url", small_url, "--large-base-url", large_url,
             "--method", "plan-only", "--n", "2", "--max-tokens", "8", "--large-price-as", "gpt-4o-mini",
             "--small-price-as", "gpt-4o-mini", "--small-key-env", "SMALL_KEY", "--timeout", "2", "--quiet"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "SMALL_KEY": SMALL_KEY})
        lines = down.stderr.strip().splitlines()
        assert down.returncode != 0 and len(lines) == 1 and "Traceback" not in down.stderr
        assert "the large model" in lines[0] and f"cannot reach {large_url}" in lines[0]
    finally:
        for proc, sink, _, _ in servers:
            proc.terminate()
            proc.wait(timeout=20)
            sink.close()

    def posts(log, status="200"):
        return sum(1 for line in log.read_text(errors="replace").splitlines()
                   if "POST /v1/chat/completions" in line and f" {status}" in line)

    # llama.cpp's server answers one choice per request: a call of n samples is n requests
    want = {who: sum(c["n"] for c in out["calls"] if c["who"] == who) for who in ("small", "large")}
    assert want["small"] > 0 and want["large"] > 0
    assert (posts(small_log), posts(large_log)) == (want["small"], want["large"])
    assert posts(small_log, "401") == 0 and posts(large_log, "401") == 1  # only the swapped key's request


def _readme_block(marker: str) -> str:
    """The TOML block of the README's "Using an API model" section whose first line is ``marker``."""
    from pathlib import Path

    text = (Path(__file__).parent.parent.parent / "README.md").read_text()
    section = text[text.index("## Using an API model"):]
    start = section.index(f"```toml\n{marker}\n") + len("```toml\n")
    return section[start:section.index("```", start)]


def test_the_readme_three_tier_file_and_server_config_work_as_written(tmp_path):
    """The README's files, verbatim: three.toml runs from the command line (each tier's remote
    endpoint replaced by a loopback stand-in with the --*-base-url options), serve.toml loads."""
    small, _, large = _three_servers()
    medium = FaultServer([Reply(body=choices_body(["\\boxed{3}", "\\boxed{5}"] * 2))])  # gpt-4o-mini: not reasoning
    three = tmp_path / "three.toml"
    three.write_text(_readme_block("# three.toml"))
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-0123456789", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    with small, medium, large:
        p = subprocess.run(
            [sys.executable, "-m", "cope", "solve", "What is 17 * 23 - 5?", "--cascade", str(three),
             "--small", "ollama/qwen2.5:0.5b", "--small-base-url", small.base_url, "--large", "openai/gpt-4.1",
             "--large-base-url", large.base_url, "--tier", "medium=openai/gpt-4o-mini",
             "--tier-base-url", f"medium={medium.base_url}", "--tier-key-env", "medium=OPENAI_API_KEY",
             "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["stage"] == 3 and small.count and medium.count and large.count == 1
    seen = [{x.body["model"] for x in srv.seen} for srv in (small, medium, large)]
    assert seen == [{"qwen2.5:0.5b"}, {"gpt-4o-mini"}, {"gpt-4.1"}]  # each tier only on its own server
    assert [c["who"] for c in out["calls"]] == ["small", "medium", "large"]
    assert large.seen[0].headers["authorization"] == "Bearer sk-test-0123456789"
    assert out["calls"][0]["cost_usd"] == 0.0 and out["calls"][2]["cost_usd"] > 0  # ollama free, gpt-4.1 priced

    from cope.serve import load_config

    (tmp_path / "three.toml").write_text(_readme_block("# three.toml").replace(
        '[tiers.medium]\nspec = "openai/gpt-4o-mini"\nkey_env = "OPENAI_API_KEY"\n', "[tiers.medium]\n"))
    (tmp_path / "serve.toml").write_text(_readme_block("# serve.toml"))
    os.environ["OPENAI_API_KEY"] = "sk-test-0123456789"
    try:
        preset = load_config(tmp_path / "serve.toml", environ={}).presets["chain"]
    finally:
        del os.environ["OPENAI_API_KEY"]
    assert [(role, preset.endpoint(role).spec) for role in preset.roles()] == [
        ("small", "ollama/qwen2.5:0.5b"), ("large", "openai/gpt-4.1"), ("medium", "openai/o4-mini")]
    assert dict(preset.endpoint("medium").params) == {"reasoning_effort": "low"}


def test_only_openais_own_api_is_native_unless_told():
    from cope.models.openai_compat import OpenAIModel

    assert OpenAIModel("gpt-4o", api_key="sk-test-000000").native
    assert not OpenAIModel("m", base_url="http://127.0.0.1:1/v1").native
    assert OpenAIModel("m", base_url="http://127.0.0.1:1/v1", native=True).native
    assert Endpoint("vllm/m", native=True).build("large").native


def test_a_native_requests_fields_are_part_of_the_eval_call_cache_key(tmp_path):
    """Two calls that differ only in the JSON schema a native endpoint is asked to follow are two
    requests: the second must not be answered from the first one's cached samples."""
    import asyncio

    from cope.eval.calls import Budget, CallCache, JournaledModel
    from cope.eval.journal import Journal
    from cope.models.base import GenParams, native_fields
    from cope.models.openai_compat import OpenAIModel
    from cope.pricing import Price

    schema = lambda name: {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": {}}}}
    with FaultServer([Reply(body=completion_body({}, text='{"a": 1}'))]) as srv:
        inner = OpenAIModel("m", base_url=srv.base_url, api_key="sk-test-000000", native=True)
        model = JournaledModel(inner, Price("m", 1.0, 1.0), CallCache(), Journal(tmp_path / "journal.jsonl"), Budget(None))
        messages = [{"role": "user", "content": "give JSON"}]
        params = GenParams(seed=1, max_tokens=16)

        async def ask(fields):
            token = native_fields.set(fields)
            try:
                return await model.generate(messages, params)
            finally:
                native_fields.reset(token)

        for fields in (schema("A"), schema("B"), schema("A"), None, None):
            asyncio.run(ask(fields))
        names = [s.body.get("response_format", {}).get("json_schema", {}).get("name") for s in srv.seen]
    assert names == ["A", "B", None]  # A again and the plain call again came from the cache
    assert (model.real_calls, model.cached_calls) == (3, 2)
