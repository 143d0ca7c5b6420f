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
from fault_server import FaultServer, Reply, completion_body

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
    assert (kw["small_base_url"], kw["large_base_url"], kw["large_key_env"]) == (
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
