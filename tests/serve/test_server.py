"""The OpenAI-compatible server, end to end: a real server process on 127.0.0.1,
the official ``openai`` client, the embedded SmolLM2 model, and scripted
upstream servers standing in for paid APIs (so their token counts and prices,
and what they were sent, are exact).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import openai
import pytest

from cope.tasks import TASKS
from fault_server import FaultServer, Reply, completion_body, error_body
from serving import ALICE, BOB, REMOTE_COST, REMOTE_TEXT, SMOL, ServerProcess, http, wait_for

pytestmark = pytest.mark.timeout(180)

@pytest.fixture(scope="module")
def upstreams():
    remote_reply = Reply(body=completion_body({"model": "remote"}, text=REMOTE_TEXT))
    with FaultServer([remote_reply]) as remote, FaultServer([Reply(delay_s=60)]) as stuck, \
            FaultServer([Reply(400, body=error_body("model overloaded", "invalid_request_error"))]) as broken:
        yield {"remote": remote, "stuck": stuck, "broken": broken}


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstreams):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "prices.toml").write_text("".join(
        f'[models."{m}"]\ninput = 1.0\noutput = 2.0\nsource = "test"\n' for m in ("remote", "stuck", "broken")))
    up = {k: v.base_url for k, v in upstreams.items()}
    (tmp / "gone.gguf").write_bytes(b"GGUF")  # present at startup, deleted by a test
    config = f"""
prices = "prices.toml"

[defaults]
task = "math"                     # these presets answer arithmetic (the built-in default is chat)

[presets.tiny]
small = "{SMOL}"
large = "{SMOL}"
small_price_as = "gpt-4o-mini"
price_as = "gpt-4o-mini"
n = 2
tau1 = 0.0
max_tokens = 24

[presets.remote]
small = "{SMOL}"
large = "openai/remote"
method = "large"
base_url = "{up['remote']}"

[presets.remote-prepend]
small = "{SMOL}"
large = "openai/remote"
method = "large"
base_url = "{up['remote']}"
system = "prepend"

[presets.slow]
small = "{SMOL}"
large = "openai/stuck"
method = "large"
base_url = "{up['stuck']}"
timeout_s = 1.5

[presets.stuck]
small = "{SMOL}"
large = "openai/stuck"
method = "large"
base_url = "{up['stuck']}"

[presets.broken]
small = "{SMOL}"
large = "openai/broken"
method = "large"
base_url = "{up['broken']}"

[presets.vanishing]
small = "local/{tmp / 'gone.gguf'}"
large = "{SMOL}"

[keys.alice]
key = "{ALICE}"
budget_usd = 1e-5

[keys.bob]
key_env = "TEST_BOB_KEY"

[limits]
max_concurrent = 1
max_waiting = 0
max_input_chars = 4000
max_messages = 8
max_body_bytes = 20000
"""
    os.environ["TEST_BOB_KEY"] = BOB
    srv = ServerProcess(tmp, config)
    yield srv
    assert srv.stop() == 0, srv.log.read_text()  # SIGTERM is a clean shutdown


def usage_of(key: str, srv: ServerProcess) -> dict:
    return http(srv.url + "/cope/usage", key=key)[2]


def test_health_without_a_key_says_only_that_the_server_is_up(server):
    assert server.health(key=None) == {"status": "ok"}
    assert server.health(key="sk-not-a-key-at-all") == {"status": "ok"}
    assert {"running", "waiting", "solving", "loaded"} <= set(server.health())


def test_models_lists_every_preset_and_needs_a_key(server):
    ids = [m.id for m in server.client().models.list()]
    assert ids[: 1 + len(TASKS)] == ["cope", *(f"cope-{t}" for t in TASKS)]
    assert {"tiny", "remote", "slow", "stuck", "broken"} <= set(ids)
    card = server.client().models.retrieve("tiny").to_dict()
    assert card["cope"]["small"] == SMOL and card["cope"]["n"] == 2 and card["owned_by"] == "cope"
    with pytest.raises(openai.NotFoundError):
        server.client().models.retrieve("gpt-5")
    with pytest.raises(openai.AuthenticationError):
        server.client(key="sk-not-a-key-at-all").models.list()
    status, _, body = http(server.url + "/models", key=None)
    assert status == 401 and "missing API key" in body["error"]["message"]


def test_completion_usage_is_the_answer_and_the_bill_sums_every_call(server):
    before = usage_of(BOB, server)["spent_usd"]
    r = server.client(timeout=120).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What is 7 + 5?"}], seed=1)
    d = r.to_dict()
    ext = d["cope"]
    calls = ext["calls"]
    assert r.model == "tiny" and r.object == "chat.completion" and len(r.choices) == 1
    assert ext["stage"] == 1 and len(calls) == 3  # 2 goals, then one execution per goal
    # usage: what the client received (the sample whose text is returned); bill: every call
    got = ext["info"]["answer_tokens"]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (got["prompt"], got["completion"])
    assert 0 < r.usage.completion_tokens < sum(c["completion_tokens"] for c in calls)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    bill = ext["bill"]
    assert bill["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls) > r.usage.prompt_tokens
    assert bill["completion_tokens"] == sum(c["completion_tokens"] for c in calls)
    assert bill["usd"] == pytest.approx(ext["cost_usd"]) and bill["tiers"]["small"]["calls"] == 3
    # Both models are priced as gpt-4o-mini here, so every call costs something.
    assert ext["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls)) and ext["cost_usd"] > 0
    assert ext["stages"][0]["cost_usd"] == pytest.approx(ext["cost_usd"])
    assert [p["kind"] for p in ext["plans"]] == ["goal", "goal"]
    assert r.choices[0].message.content == ext["output"] and r.choices[0].message.content
    assert ext["preset"] == "tiny" and ext["key"]["key"] == "bob"
    assert ext["task"] == "math" and ext["task_from"] == "preset tiny serves the math family"
    assert any("priced as gpt-4o-mini" in n for n in ext["info"]["pricing"])
    after = usage_of(BOB, server)
    assert after["spent_usd"] == pytest.approx(before + ext["cost_usd"])
    assert ext["key"]["spent_usd"] == pytest.approx(after["spent_usd"])


def test_stream_sends_content_extension_and_usage(server):
    stream = server.client(timeout=120).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What is 3 + 4?"}], seed=2, stream=True,
        stream_options={"include_usage": True}, max_tokens=8)
    chunks = [c.to_dict() for c in stream]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    ext = next(c["cope"] for c in chunks if "cope" in c)
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert len(finals) == 1 and "cope" in finals[0]
    assert text and text == ext["output"]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["prompt_tokens"] == ext["info"]["answer_tokens"]["prompt"] > 0
    assert usage["completion_tokens"] == ext["info"]["answer_tokens"]["completion"] > 0
    assert ext["bill"]["completion_tokens"] == sum(c["completion_tokens"] for c in ext["calls"])
    assert len({c["id"] for c in chunks}) == 1
    # max_tokens caps each executor sample below the preset's 24 (plans keep their own cap).
    executions = [c for c in ext["calls"] if c["role"] == "execute"]
    assert executions and all(c["completion_tokens"] <= 8 * c["n"] for c in executions)


CONVERSATION = [
    {"role": "system", "content": "Answer in French."},
    {"role": "user", "content": "How many legs has a spider?"},
    {"role": "assistant", "content": "Eight."},
    {"role": "user", "content": [{"type": "text", "text": "And how many"}, {"type": "text", "text": "has an ant?"}]},
]


def test_history_and_system_messages_reach_the_model_as_documented(server, upstreams):
    remote = upstreams["remote"]
    n0 = remote.count
    r = server.client().chat.completions.create(model="remote", messages=CONVERSATION)
    assert remote.count == n0 + 1  # "large alone": one upstream call
    sent = remote.seen[-1].body["messages"]
    assert sent[0]["role"] == "system" and "French" not in sent[0]["content"]  # the task's own system prompt
    assert sent[1:3] == [{"role": "user", "content": "How many legs has a spider?"},
                         {"role": "assistant", "content": "Eight."}]
    assert sent[-1]["role"] == "user" and "And how many\nhas an ant?" in sent[-1]["content"]
    assert "French" not in json.dumps(sent)  # dropped by default
    assert r.choices[0].message.content == REMOTE_TEXT and r.to_dict()["cope"]["answer"] == "6"
    assert r.usage.to_dict() == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert r.to_dict()["cope"]["cost_usd"] == pytest.approx(REMOTE_COST)

    server.client().chat.completions.create(model="remote-prepend", messages=CONVERSATION)
    last = remote.seen[-1].body["messages"][-1]["content"]
    assert last.index("Answer in French.") < last.index("has an ant?")


def test_budget_refuses_a_spent_key_without_calling_a_model(server, upstreams):
    remote = upstreams["remote"]
    alice = server.client(key=ALICE)
    r = alice.chat.completions.create(model="remote", messages=[{"role": "user", "content": "2+2?"}])
    assert r.to_dict()["cope"]["key"]["remaining_usd"] == 0.0
    n = remote.count
    with pytest.raises(openai.RateLimitError) as err:
        server.client(key=ALICE, max_retries=2).chat.completions.create(
            model="remote", messages=[{"role": "user", "content": "2+2?"}])
    assert err.value.code == "insufficient_quota" and "alice" in err.value.message
    assert remote.count == n  # refused before any model call, and not retried by the SDK
    acct = usage_of(ALICE, server)
    assert acct["spent_usd"] == pytest.approx(REMOTE_COST) and acct["budget_usd"] == 1e-5
    assert acct["requests"] == 1 and acct["refused"] == 1
    # Another key is unaffected.
    assert server.client().chat.completions.create(model="remote", messages=[{"role": "user", "content": "1?"}])


BAD_REQUESTS = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    ({"model": "tiny"}, 400, "messages: Field required"),
    ({"model": "tiny", "messages": []}, 400, "must not be empty"),
    ({"model": "tiny", "messages": [{"role": "tool", "content": "x"}]}, 400, "must come from the user"),
    ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
     400, "last message must come from the user"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "   "}]}, 400, "empty"),
    ({"model": "tiny", "messages": [{"role": "assistant", "content": None}, {"role": "user", "content": "x"}]},
     400, "no content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, "only text parts"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400, "needs a string 'text'"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "lone surrogate"),
    (b"[" * 5_000 + b"]" * 5_000, 400, "not valid JSON"),  # nesting too deep to parse
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n must be 1"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     400, "tools"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
     400, "response_format"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "seed": -1}, 400, "seed"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "cope": {"tests": "assert f()"}},
     400, "cope.tests"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x" * 4001}]}, 400, "at most 4000"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}] * 9}, 400, "at most 8 messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": 7}]}, 400, "messages.0.content"),
    ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x" * 30000}]}, 413, "exceeds 20000 bytes"),
    ({"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
]


@pytest.mark.parametrize("body,status,needle", BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_bad_requests_get_openai_style_errors(server, body, status, needle):
    got, headers, data = http(server.url + "/chat/completions", body)
    assert got == status, data
    err = data["error"]
    assert needle in err["message"] and err["type"] and set(err) == {"message", "type", "param", "code"}
    assert headers.get("x-should-retry") == "false"  # a client must not retry a mistake
    if status == 404:
        assert err["code"] == "model_not_found"
    if "4000" in needle:
        assert err["code"] == "context_length_exceeded"
    if "messages" in needle and "at most" in needle:
        assert err["code"] == "array_above_max_length" and err["param"] == "messages"


def test_message_limit_admits_exactly_the_maximum(server):
    turns = [{"role": "user", "content": "1?"}, {"role": "assistant", "content": "1."}] * 3
    messages = [{"role": "system", "content": "Be brief."}, *turns, {"role": "user", "content": "2+2?"}]
    assert len(messages) == 8  # [limits] max_messages
    r = server.client().chat.completions.create(model="remote", messages=messages)
    assert r.choices[0].message.content == REMOTE_TEXT


def test_chunked_body_over_the_limit_is_a_413(server):
    """A chunked body declares no length; it is counted as it arrives."""
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 30000}]}).encode()
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    conn = HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        for k, v in (("Content-Type", "application/json"), ("Authorization", f"Bearer {BOB}"),
                     ("Transfer-Encoding", "chunked")):
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(0, len(body), 4096):
            chunk = body[i:i + 4096]
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        status, data = resp.status, json.loads(resp.read())
    finally:
        conn.close()
    assert status == 413 and "exceeds 20000 bytes" in data["error"]["message"], data
    assert server.health()["status"] == "ok"


def test_unknown_routes_and_methods_are_json_errors(server):
    assert http(server.base + "/v2/nothing")[0] == 404
    status, _, data = http(server.url + "/chat/completions", method="GET")
    assert status == 405 and "error" in data
    assert server.health()["status"] == "ok"


def test_responses_are_not_held_back_by_nagle(server):
    """A small response must not wait for the client's delayed ACK (~40 ms each):
    the server's sockets have TCP_NODELAY."""
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    conn = HTTPConnection(host, int(port), timeout=10)
    times = []
    try:
        for _ in range(21):  # one keep-alive connection
            t0 = time.perf_counter()
            conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {BOB}"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["object"] == "list"
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    assert sorted(times)[10] < 0.02, times


def test_sdk_raises_typed_errors(server):
    c = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="tiny", messages=[{"role": "assistant", "content": "hi"}])
    assert err.value.param == "messages.0.role"
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):  # a streamed request fails before the stream starts
        c.chat.completions.create(model="tiny", messages=[], stream=True)


@pytest.mark.slow
def test_a_preset_request_timeout_bounds_each_api_request(tmp_path, upstreams):
    stuck = upstreams["stuck"]
    srv = ServerProcess(tmp_path, f'''
[presets.quick]
small = "{SMOL}"
large = "openai/stuck"
method = "large"
base_url = "{stuck.base_url}"
price_as = "gpt-4o-mini"
request_timeout_s = 0.5
''')
    try:
        n = stuck.count
        t0 = time.monotonic()
        status, _, data = http(srv.url + "/chat/completions", {"model": "quick", "messages": [
            {"role": "user", "content": "2+2?"}]}, key=None)
        assert status == 502 and "timed out after 0.5 s" in data["error"]["message"], data
        assert stuck.count - n == 5 and time.monotonic() - t0 < 30  # five attempts of 0.5 s, not 5 x 120 s
    finally:
        assert srv.stop() == 0


def test_solve_past_the_time_limit_is_a_504(server, upstreams):
    n = upstreams["stuck"].count
    before = usage_of(BOB, server)["spent_usd"]
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        server.client(max_retries=2, timeout=30).chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "2+2?"}])
    assert err.value.status_code == 504 and "time limit" in err.value.message
    assert time.monotonic() - t0 < 15  # the upstream would have held it for 60 s
    assert upstreams["stuck"].count == n + 1  # reached the model once; the SDK did not retry
    wait_for(lambda: server.health()["solving"] == 0, 5)
    # the call was sent, so the upstream bills it: the key is charged the most it could have cost
    charged = usage_of(BOB, server)["spent_usd"] - before
    # (512 completion tokens at $2 per 1M, plus the prompt's characters at $1 per 1M)
    assert 512 * 2.0 / 1e6 < charged < 0.002 and usage_of(BOB, server)["reserved_usd"] == 0


def test_upstream_failure_is_a_502_not_retried(server, upstreams):
    broken = upstreams["broken"]
    n = broken.count
    with pytest.raises(openai.APIStatusError) as err:
        server.client(max_retries=2).chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "2+2?"}])
    assert err.value.status_code == 502 and err.value.type == "upstream_error"
    assert "model overloaded" in err.value.message
    assert broken.count == n + 1


def test_preset_that_cannot_be_built_is_a_503(server):
    (server.tmp / "gone.gguf").unlink()
    status, headers, data = http(server.url + "/chat/completions",
                                 {"model": "vanishing", "messages": [{"role": "user", "content": "1+1?"}]})
    assert status == 503 and data["error"]["code"] == "model_unavailable"
    assert "gone.gguf" in data["error"]["message"] and headers.get("x-should-retry") == "false"
    assert "vanishing" not in server.health()["loaded"]


def test_busy_server_answers_429_and_a_hangup_frees_the_slot(server, upstreams):
    stuck = upstreams["stuck"]
    outcome: list[BaseException] = []

    def hang() -> None:
        try:
            server.client(timeout=4).chat.completions.create(
                model="stuck", messages=[{"role": "user", "content": "2+2?"}])
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    n = stuck.count
    before = usage_of(BOB, server)["spent_usd"]
    t = threading.Thread(target=hang)
    t.start()
    wait_for(lambda: server.health()["running"] == 1 and stuck.count == n + 1, 20)
    # max_concurrent = 1, max_waiting = 0: a second request is refused at once.
    status, headers, data = http(server.url + "/chat/completions",
                                 {"model": "tiny", "messages": [{"role": "user", "content": "1+1?"}]})
    assert status == 429 and data["error"]["code"] == "server_busy" and headers.get("retry-after") == "1"
    status, _, data = http(server.url + "/chat/completions",
                           {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "1+1?"}]})
    assert status == 429 and data["error"]["code"] == "server_busy"
    t.join(timeout=30)
    assert outcome and isinstance(outcome[0], openai.APITimeoutError)
    # The client hung up after 4 s; the upstream would hold the solve for 60 s.
    # The server notices, cancels the solve and frees the slot within seconds.
    assert wait_for(lambda: server.health()["solving"] == 0, 10) < 10
    assert server.health()["running"] == 0
    # hanging up does not make a paid call free (it did: $0 charged for a billed request)
    assert usage_of(BOB, server)["spent_usd"] - before > 0
    r = server.client().chat.completions.create(model="remote", messages=[{"role": "user", "content": "ok?"}])
    assert r.choices[0].message.content == REMOTE_TEXT


def test_stream_hangup_cancels_the_solve(server, upstreams):
    stuck = upstreams["stuck"]
    n = stuck.count
    t0 = time.monotonic()
    with pytest.raises(Exception) as err:  # the read timeout surfaces while iterating
        with server.client(timeout=3).chat.completions.create(
                model="stuck", messages=[{"role": "user", "content": "2+2?"}], stream=True) as stream:
            for _ in stream:
                pass
    assert "timeout" in type(err.value).__name__.lower() or "timed out" in str(err.value).lower(), repr(err.value)
    assert stuck.count == n + 1
    wait_for(lambda: server.health()["solving"] == 0, 10)  # the cascade itself stopped
    assert time.monotonic() - t0 < 20  # not the 60 s the upstream would hold it
    assert server.health()["running"] == 0


# Keys from COPE_API_KEYS, keys kept out of the logs, 16 requests at once.
ENV_A = "sk-env-a-000000000011"
ENV_B = "sk-env-b-000000000012"
CAROL = "sk-carol-000000000013"  # in COPE_API_KEYS and in the file, which gives her a budget
WRONG = "sk-wrong-000000000099"
UPSTREAM_KEY = "sk-upstream-secret-0042"
SECRETS = (ENV_A, ENV_B, CAROL, WRONG, UPSTREAM_KEY)
MANY = 16
REMOTE_PRESET = """
[presets.remote]
small = "{smol}"
large = "openai/remote"
task = "math"
method = "large"
base_url = "{url}"
"""


def remote_config(tmp: Path, url: str, extra: str = "") -> str:
    (tmp / "prices.toml").write_text('[models."remote"]\ninput = 1.0\noutput = 2.0\nsource = "test"\n')
    return 'prices = "prices.toml"\n' + REMOTE_PRESET.format(smol=SMOL, url=url) + extra


@pytest.fixture(scope="module")
def wide(tmp_path_factory, upstreams):
    """Keys in the file and in COPE_API_KEYS, the access log on, debug level, and
    limits that take 16 requests at once: 4 run, 12 wait."""
    tmp = tmp_path_factory.mktemp("wide")
    config = remote_config(tmp, upstreams["remote"].base_url, f"""api_key_env = "TEST_UPSTREAM_KEY"

[presets.many]
small = "{SMOL}"
large = "{SMOL}"
small_price_as = "gpt-4o-mini"
price_as = "gpt-4o-mini"
method = "cascade-noplan"
n = 2
tau1 = 1.0
max_tokens = 8

[keys.carol]
key = "{CAROL}"
budget_usd = 1e-5

[limits]
max_concurrent = 4
max_waiting = {MANY - 4}
""")
    os.environ["TEST_UPSTREAM_KEY"] = UPSTREAM_KEY
    srv = ServerProcess(tmp, config, extra=("--log-level", "debug"), keys=f"{ENV_A}, ,{CAROL},{ENV_B},")
    yield srv
    assert srv.stop() == 0, srv.log.read_text()
    log = srv.log.read_text()  # shutdown lines included
    assert not [s for s in SECRETS if s in log]


def test_keys_from_the_environment_alone(tmp_path, upstreams):
    remote = upstreams["remote"]
    srv = ServerProcess(tmp_path, remote_config(tmp_path, remote.base_url), keys=ENV_A)
    try:
        chat = {"model": "remote", "messages": [{"role": "user", "content": "2+2?"}]}
        for key in (None, WRONG, ENV_A[:-1], ENV_A + "1"):
            assert http(srv.url + "/models", key=key)[0] == 401
            n, before = remote.count, usage_of(ENV_A, srv)
            status, headers, body = http(srv.url + "/chat/completions", chat, key=key)
            assert status == 401 and body["error"]["code"] == "invalid_api_key", body
            assert headers.get("x-should-retry") == "false"
            assert remote.count == n and usage_of(ENV_A, srv) == before  # no model call, nothing spent
        with pytest.raises(openai.AuthenticationError):
            srv.client(key=WRONG, max_retries=2).chat.completions.create(**chat)
        assert usage_of(ENV_A, srv)["spent_usd"] == 0
        r = srv.client(key=ENV_A).chat.completions.create(**chat)
        assert r.choices[0].message.content == REMOTE_TEXT
        acct = usage_of(ENV_A, srv)
        assert acct["key"] == "COPE_API_KEYS[1]" and acct["budget_usd"] is None and acct["requests"] == 1
        assert acct["spent_usd"] == pytest.approx(REMOTE_COST)
    finally:
        assert srv.stop() == 0
    assert ENV_A not in srv.log.read_text()


def test_keys_from_the_file_and_the_environment_together(wide, upstreams):
    remote = upstreams["remote"]
    # Labelled by position among the entries (blank ones skipped), never by their text.
    for key, label in ((ENV_A, "COPE_API_KEYS[1]"), (ENV_B, "COPE_API_KEYS[3]")):
        acct = usage_of(key, wide)
        assert acct["key"] == label and acct["budget_usd"] is None
    carol = usage_of(CAROL, wide)  # in both: the file's name and budget win
    assert carol["key"] == "carol" and carol["budget_usd"] == 1e-5
    chat = {"model": "remote", "messages": [{"role": "user", "content": "2+2?"}]}
    n, before = remote.count, usage_of(ENV_A, wide)
    for key in (None, WRONG, "sk-bob-0000000002"):  # a key of the other server is nothing here
        status, _, body = http(wide.url + "/chat/completions", chat, key=key)
        assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert remote.count == n and usage_of(ENV_A, wide) == before
    r = wide.client(key=ENV_A).chat.completions.create(**chat)
    assert r.choices[0].message.content == REMOTE_TEXT and remote.count == n + 1
    assert remote.seen[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the preset's upstream key
    assert usage_of(ENV_A, wide)["spent_usd"] == pytest.approx(before["spent_usd"] + REMOTE_COST)


@pytest.mark.slow
def test_sixteen_simultaneous_requests_are_all_answered_correctly(wide):
    client = wide.client(key=ENV_B, timeout=170)
    asks = [(f"What is {i} + {2 * i + 1}?", 1000 + i, 10_000 if i % 2 else None) for i in range(MANY)]
    start = threading.Barrier(MANY)
    peak = {"running": 0, "waiting": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            h = wide.health(key=ENV_B)
            for k in peak:
                peak[k] = max(peak[k], h[k])
            time.sleep(0.05)

    def ask(i: int):
        text, seed, cap = asks[i]
        start.wait(timeout=30)
        # A cap above the preset's 8 tokens never raises it.
        return client.chat.completions.create(model="many", messages=[{"role": "user", "content": text}],
                                              seed=seed, max_tokens=cap)

    before = usage_of(ENV_B, wide)["spent_usd"]
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(MANY) as pool:
            replies = list(pool.map(ask, range(MANY)))
    finally:
        done.set()
        watcher.join(timeout=10)
    assert len({r.id for r in replies}) == MANY
    exts = [r.to_dict()["cope"] for r in replies]
    for (text, seed, _), r, ext in zip(asks, replies, exts):
        calls = ext["calls"]
        assert r.model == "many" and ext["preset"] == "many" and ext["seed"] == seed
        # cascade-noplan: stage 1 is the small model's vote, stage 2 the large model alone.
        assert ext["stage"] in (1, 2) and len(calls) == ext["stage"] == len(ext["stages"])
        assert isinstance(ext["confidence"], (int, float)) and 0.0 <= ext["confidence"] <= 1.0
        assert r.usage.completion_tokens == ext["info"]["answer_tokens"]["completion"] > 0
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert ext["bill"]["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls) >= r.usage.prompt_tokens > 0
        assert ext["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls)) and ext["cost_usd"] > 0
        assert sum(st["cost_usd"] for st in ext["stages"]) == pytest.approx(ext["cost_usd"])
        assert all(c["completion_tokens"] <= 8 * c["n"] for c in calls)
        assert r.choices[0].message.content == ext["output"] and ext["key"]["key"] == "COPE_API_KEYS[3]"
    assert usage_of(ENV_B, wide)["spent_usd"] == pytest.approx(before + sum(e["cost_usd"] for e in exts))
    assert peak["running"] <= 4 and peak["waiting"] > 0  # queued, not refused
    # Each reply belongs to its request: the same request alone, later, gets the
    # same texts and tokens (seeded decoding reproduces them).
    for i in (0, 7, MANY - 1):
        text, seed, cap = asks[i]
        again = client.chat.completions.create(model="many", messages=[{"role": "user", "content": text}],
                                               seed=seed, max_tokens=cap)
        ext = again.to_dict()["cope"]
        assert again.choices[0].message.content == replies[i].choices[0].message.content
        assert again.usage.to_dict() == replies[i].usage.to_dict()
        assert [s["extracted"] for s in ext["stages"]] == [s["extracted"] for s in exts[i]["stages"]]


def test_keys_never_appear_in_the_logs(wide, upstreams):
    """Access log on, debug level: right, wrong, missing and malformed keys, a 401,
    a budget 429, keys in a query string and in a message; none reaches the output."""
    chat = {"model": "remote", "messages": [{"role": "user", "content": "2+2?"}]}
    leaky = {"model": "remote", "messages": [{"role": "user", "content": f"My key is {ENV_A}. 2+2?"}]}
    n = upstreams["remote"].count
    assert http(wide.url + "/chat/completions", chat, key=ENV_A)[0] == 200
    assert http(wide.url + "/chat/completions", leaky, key=ENV_B)[0] == 200
    assert ENV_A in json.dumps(upstreams["remote"].seen[-1].body)  # the message did go upstream
    assert http(wide.url + f"/models?api_key={ENV_B}", key=ENV_B)[0] == 200
    assert http(wide.url + "/chat/completions", chat, key=WRONG)[0] == 401
    assert http(wide.url + f"/models?key={WRONG}", key=None)[0] == 401
    assert http(wide.url + "/models", key=None, headers={"Authorization": f"Basic {WRONG}"})[0] == 401
    assert http(wide.url + "/models", key=None, headers={"Authorization": WRONG})[0] == 401
    assert http(wide.url + "/chat/completions", chat, key=CAROL)[0] == 200  # reaches her budget
    status, _, body = http(wide.url + "/chat/completions", chat, key=CAROL)
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert upstreams["remote"].count == n + 3
    log = wide.log.read_text()  # each line is flushed before its response is sent
    # The logs were written, at debug level, with one access line per request ...
    assert "DEBUG" in log and '"POST /v1/chat/completions HTTP/1.1" 401' in log
    assert '"POST /v1/chat/completions HTTP/1.1" 429' in log and "key=carol" in log
    assert "/v1/models?api_key=[redacted]" in log and "/v1/models?key=[redacted]" in log
    # ... and no key is in them.
    assert [s for s in SECRETS if s in log] == []


def test_bad_keys_in_the_environment_are_one_error_line_without_the_key():
    for value, needle in (("sk-good-00000001,short12", "key 2 of 2 must be at least 8 characters"),
                          (" , ", "COPE_API_KEYS is set but holds no key")):
        env = {**os.environ, "COPE_API_KEYS": value}
        p = subprocess.run([sys.executable, "-m", "cope.serve", "--port", "0"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.startswith("cope: error:") and needle in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        assert "short12" not in p.stderr and "sk-good" not in p.stderr


def test_sigterm_lets_in_flight_requests_finish(tmp_path):
    """A plain and a streamed request are waiting on a model when SIGTERM arrives:
    the server stops taking connections, both finish whole, then it exits with 0."""
    held = Reply(body=completion_body({"model": "remote"}, text=REMOTE_TEXT), delay_s=3.0)
    with FaultServer([held]) as upstream:
        srv = ServerProcess(tmp_path, remote_config(tmp_path, upstream.base_url))
        got: dict[str, object] = {}
        messages = [{"role": "user", "content": "How many legs has an ant?"}]

        def plain() -> None:
            try:
                got["plain"] = srv.client(timeout=30).chat.completions.create(model="remote", messages=messages)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                got["plain"] = exc

        def streamed() -> None:
            data = json.dumps({"model": "remote", "messages": messages, "stream": True,
                               "stream_options": {"include_usage": True}}).encode()
            req = urllib.request.Request(srv.url + "/chat/completions", data=data,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    got["stream"] = r.read().decode()
            except BaseException as exc:  # noqa: BLE001
                got["stream"] = exc

        def refused() -> bool:
            host, port = srv.base.removeprefix("http://").rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        threads = [threading.Thread(target=f) for f in (plain, streamed)]
        try:
            for t in threads:
                t.start()
            wait_for(lambda: upstream.count == 2, 20)  # both solves are waiting on the model
            srv.proc.send_signal(signal.SIGTERM)
            wait_for(refused, 5)  # no new connections while the two finish
            assert any(t.is_alive() for t in threads)
            for t in threads:
                t.join(timeout=30)
            rc = srv.proc.wait(timeout=20)
        finally:
            srv.stop()
    assert rc == 0
    r = got["plain"]
    assert isinstance(r, openai.types.chat.ChatCompletion), r
    assert r.choices[0].message.content == REMOTE_TEXT and r.to_dict()["cope"]["answer"] == "6"
    text = got["stream"]
    assert isinstance(text, str), text
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == REMOTE_TEXT
    assert [c["cope"]["answer"] for c in chunks if "cope" in c] == ["6"]
    assert chunks[-1]["usage"]["total_tokens"] == 9
    assert "Traceback" not in srv.log.read_text()


def test_default_presets_open_server_and_clean_exit(tmp_path):
    srv = ServerProcess(tmp_path, None)
    try:
        ids = [m.id for m in srv.client(key="anything").models.list()]
        assert ids == ["cope", *(f"cope-{t}" for t in TASKS)]
        status, _, acct = http(srv.url + "/cope/usage", key=None)  # no [keys]: open, one account
        assert status == 200 and acct["key"] == "anonymous" and acct["spent_usd"] == 0
        assert srv.health()["loaded"] == []  # presets are built on first use only
    finally:
        rc = srv.stop()
    assert rc == 0
    assert "Traceback" not in srv.log.read_text()


BAD_CONFIGS = [
    ('[presets.x]\ntau3 = 0.5\n', "unknown key 'tau3'"),
    ('[presets.x]\ntask = "poetry"\n', "unknown task 'poetry'"),
    ('[presets.x]\nsmall = "nosuch/model"\n', "unknown model spec 'nosuch/model'"),
    ('[presets.x]\nlarge = "openai/unpriced"\nbase_url = "http://127.0.0.1:9/v1"\n', "no price for 'unpriced'"),
    ('[presets.x]\ntau1 = 1.5\n', "tau1 must be a number in [0, 1]"),
    ('[presets.x]\nn = "eight"\n', "'n' must be an integer"),
    ('[presets.x]\nsystem = "keep"\n', "system must be one of"),
    ('[presets.x]\ntools = "small"\n', "tools must be one of large, cascade"),
    ('[[presets.x.route]]\npattern = "(unclosed"\ntask = "math"\n', "route 1: pattern is not a regular expression"),
    ('[[presets.x.route]]\npattern = "\\\\d"\ntask = "poetry"\n', "route 1: unknown task 'poetry'"),
    ('[presets.x]\nroute = "math"\n', "'route' must be [[...route]] tables"),
    ('[presets."bad name"]\n', "preset name 'bad name'"),
    ('[keys.a]\nkey = "short"\n', "at least 8 characters"),
    ('[keys.a]\nkey_env = "COPE_TEST_UNSET_VARIABLE"\n', "COPE_TEST_UNSET_VARIABLE is not set"),
    ('[limits]\nmax_concurrent = 0\n', "max_concurrent must be >= 1"),
    ('[limits]\nmax_messages = 0\n', "max_messages must be >= 1"),
    ('[limitz]\n', "unknown section or key 'limitz'"),
    ('[presets.x\n', "not valid TOML"),
]


@pytest.mark.parametrize("text,needle", BAD_CONFIGS, ids=range(len(BAD_CONFIGS)))
def test_bad_config_is_one_error_line(tmp_path, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    p = subprocess.run([sys.executable, "-m", "cope.serve", "--port", "0", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cope: error:") and needle in lines[0], p.stderr


def test_busy_port_and_missing_config_are_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "cope.serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("cope: error: cannot listen on 127.0.0.1:")
    p = subprocess.run([sys.executable, "-m", "cope.serve", "--config", str(tmp_path / "none.toml")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "config file not found" in p.stderr and "Traceback" not in p.stderr


def test_importing_the_server_modules_is_light():
    code = ("import sys, cope, cope.serve.cli, cope.serve; "
            "print([m for m in ('fastapi', 'uvicorn', 'openai', 'llama_cpp', 'numpy', 'pydantic') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_streams_over_the_queue_limit_get_a_429_never_an_in_band_busy(server):
    """max_concurrent 1, max_waiting 0: of simultaneous streams, one runs; the others get a 429
    status with Retry-After. A 200 carrying a server_busy event (the place was taken after the
    status was sent) must never happen."""
    body = json.dumps({"model": "tiny", "stream": True, "seed": 1,
                       "messages": [{"role": "user", "content": "1+1?"}]}).encode()
    start = threading.Barrier(6)

    def one() -> tuple[int, str]:
        conn = HTTPConnection("127.0.0.1", int(server.base.rsplit(":", 1)[1]), timeout=120)
        start.wait()
        conn.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {BOB}",
                                                           "Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        return r.status, text

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: one(), range(6)))
    assert all(status in (200, 429) for status, _ in outcomes), outcomes
    assert any(status == 200 for status, _ in outcomes)
    for status, text in outcomes:
        if status == 200:
            assert "server_busy" not in text and text.rstrip().endswith("data: [DONE]"), text[-300:]
    wait_for(lambda: server.health()["waiting"] == 0 and server.health()["running"] == 0, 10)


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(server):
    port = int(server.base.rsplit(":", 1)[1])
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + BOB.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": \"ti")
        s.close()
    time.sleep(1.0)
    assert server.health()["status"] == "ok"
    assert "Traceback" not in server.log.read_text()


@pytest.mark.slow
def test_idle_connections_are_closed_by_the_server(server):
    """Half-open connections that never send a request are closed after the header deadline (10 s)."""
    port = int(server.base.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(20)]
    slow = socket.create_connection(("127.0.0.1", port), timeout=20)
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    t0 = time.monotonic()
    for s in [*idle, slow]:
        assert s.recv(1) == b""  # closed by the server
        s.close()
    assert time.monotonic() - t0 < 16
    assert server.health()["status"] == "ok"


def test_the_default_model_is_chat_and_the_families_are_one_name_away(tmp_path):
    """An app that knows nothing of cope asks for model "cope" and gets the open (chat) family."""
    from cope.serve import load_config

    built = load_config(None, environ={}).presets
    assert built["cope"].task == "open" and built["cope-math"].task == "math"
    assert {f"cope-{t}" for t in TASKS} <= set(built)
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[presets.mine]\nsmall = "local/smollm2-135m"\nlarge = "local/smollm2-135m"\n'
                   '[presets.sums]\nsmall = "local/smollm2-135m"\nlarge = "local/smollm2-135m"\ntask = "math"\n')
    presets = load_config(cfg, environ={}).presets
    assert (presets["mine"].task, presets["sums"].task, presets["cope"].task) == ("open", "math", "open")


def test_stop_ignored_parameters_and_refused_logprobs_are_said(server):
    """Every parameter is honoured, refused with a 400 naming it, or named as ignored in the reply."""
    raw = server.client().chat.completions.with_raw_response.create(
        model="remote", messages=[{"role": "user", "content": "How many legs has an ant?"}],
        stop=["spider"], temperature=0.3, top_p=0.9)
    r = raw.parse()
    assert r.choices[0].message.content == "Four legs less than a " and r.choices[0].finish_reason == "stop"
    assert raw.headers["x-cope-ignored"] == "temperature, top_p"
    assert r.to_dict()["cope"]["ignored_params"] == ["temperature", "top_p"]
    plain = server.client().chat.completions.with_raw_response.create(
        model="remote", messages=[{"role": "user", "content": "How many legs has an ant?"}])
    assert "x-cope-ignored" not in plain.headers and plain.parse().choices[0].message.content == REMOTE_TEXT
    status, _, body = http(server.url + "/chat/completions",
                           {"model": "remote", "messages": [{"role": "user", "content": "x"}], "logprobs": True})
    assert status == 400 and body["error"]["param"] == "logprobs"
    status, _, body = http(server.url + "/chat/completions",
                           {"model": "remote", "messages": [{"role": "user", "content": "x"}], "stop": [""]})
    assert status == 400 and body["error"]["param"] == "stop"


def test_a_reply_cut_by_max_tokens_says_length(server):
    r = server.client(timeout=120).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Explain in detail how to add 7 and 5."}],
        max_tokens=3, seed=1)
    ext = r.to_dict()["cope"]
    assert r.choices[0].message.content  # the sample's text, cut at three tokens
    assert r.choices[0].finish_reason == "length" and ext["info"]["finish_reason"] == "length"


def test_metrics_count_what_was_sent_and_spent(server):
    """/metrics: requests by preset and status, the stage reached, dollars by key and tier, the queue."""
    import re as _re

    def scrape(key=BOB):
        req = urllib.request.Request(server.base + "/metrics")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["content-type"].startswith("text/plain")
            return r.read().decode()

    def value(text, name, **labels):
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        m = _re.search(rf"^{name}\{{{_re.escape(want)}\}} (\S+)$", text, _re.M)
        return float(m.group(1)) if m else 0.0

    before = scrape()
    r = server.client().chat.completions.create(model="remote", messages=[{"role": "user", "content": "Legs?"}])
    status, _, _ = http(server.url + "/chat/completions", {"model": "remote", "messages": []})
    status_missing, _, _ = http(server.url + "/chat/completions", {"model": "no-such-model", "messages": []})
    after = scrape()
    assert status == 400 and status_missing == 404
    assert value(after, "cope_requests_total", preset="remote", status="200") == \
        value(before, "cope_requests_total", preset="remote", status="200") + 1
    assert value(after, "cope_requests_total", preset="remote", status="400") >= 1
    assert value(after, "cope_requests_total", preset="-", status="404") >= 1  # an unknown name is not a label
    assert "no-such-model" not in after
    assert value(after, "cope_stage_reached_total", preset="remote", stage="1") >= 1
    spent = value(after, "cope_spend_usd_total", key="bob", tier="large") - \
        value(before, "cope_spend_usd_total", key="bob", tier="large")
    assert spent == pytest.approx(r.to_dict()["cope"]["cost_usd"])
    assert _re.search(r"^cope_waiting 0\.0$", after, _re.M) and "cope_solve_seconds_bucket" in after
    with pytest.raises(urllib.error.HTTPError) as err:
        scrape(key=None)
    assert err.value.code == 401
