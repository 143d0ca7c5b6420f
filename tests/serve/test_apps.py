"""Existing apps against ``cope serve`` with only the base URL changed: the official ``openai``
client and LangChain's ``ChatOpenAI``, a real server on 127.0.0.1 with SmolLM2 tiers, and
loopback stand-ins for the paid tier where a test needs its answer to be known (a tool call,
a JSON value, a streamed reply with pauses between words).
"""

from __future__ import annotations

import json
import time

import pytest
from pydantic import BaseModel

from fault_server import FaultServer, Reply, choices_body
from serving import BOB, SMOL, ServerProcess, http

pytestmark = pytest.mark.timeout(240)

CALL = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})
AFTER_TOOL = "It is 21 C and sunny in Paris."
STREAMED = "one two three four five six seven eight"


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apps")
    person = json.dumps({"name": "Ada", "age": 36})
    with FaultServer([Reply(body=choices_body([CALL])), Reply(body=choices_body([AFTER_TOOL]))]) as tools, \
            FaultServer([Reply(body=choices_body([person]))]) as js, \
            FaultServer([Reply(body=choices_body([STREAMED], completion_tokens=8), piece_delay_s=0.25)]) as slow:
        (tmp / "prices.toml").write_text("".join(
            f'[models."{m}"]\ninput = 1.0\noutput = 2.0\nsource = "test"\n' for m in ("tools", "js", "slow")))
        config = f"""
prices = "prices.toml"

[defaults]
small = "{SMOL}"
large = "{SMOL}"
max_tokens = 48

[presets.chat]                 # the open family (the built-in default), large tier alone
method = "large"

[presets.routed]               # chat, but arithmetic goes to the math family, as declared
method = "large"
route = [{{ pattern = '\\d+\\s*[-+*/]\\s*\\d+', task = "math" }}]

[presets.vote]                 # COPE on chat: the answer may come from a voting stage
n = 2

[presets.agent]                # tools go to the large tier (the default policy)
large = "openai/tools"
base_url = "{tools.base_url}"

[presets.agent-cascade]        # small samples vote on the call first
large = "openai/tools"
base_url = "{tools.base_url}"
tools = "cascade"
n = 3

[presets.typed]
large = "openai/js"
base_url = "{js.base_url}"
method = "cascade-noplan"
n = 2

[presets.slow]
large = "openai/slow"
base_url = "{slow.base_url}"
method = "large"

[keys.bob]
key = "{BOB}"
"""
        srv = ServerProcess(tmp, config)
        try:
            yield {"srv": srv, "tools": tools, "js": js, "slow": slow}
        finally:
            assert srv.stop() == 0, srv.log.read_text()


def chat_openai(srv: ServerProcess, model: str, **kw):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model, base_url=srv.url, api_key=BOB, max_retries=0, timeout=120, **kw)


def test_langchain_plain_chat_and_usage_is_what_was_received(apps):
    srv = apps["srv"]
    msg = chat_openai(srv, "vote", seed=4).invoke("Name three colours.")
    assert isinstance(msg.content, str) and msg.content.strip()
    assert msg.response_metadata["model_name"] == "vote"
    # the same request through the SDK: usage is the returned sample's tokens, the bill every call's
    r = srv.client(timeout=120).chat.completions.create(
        model="vote", messages=[{"role": "user", "content": "Name three colours."}], seed=4)
    ext = r.to_dict()["cope"]
    assert r.choices[0].message.content == msg.content
    assert msg.usage_metadata["output_tokens"] == r.usage.completion_tokens == ext["info"]["answer_tokens"]["completion"]
    bill = ext["bill"]
    assert bill["calls"] == len(ext["calls"]) > 1
    assert bill["completion_tokens"] == sum(c["completion_tokens"] for c in ext["calls"]) > r.usage.completion_tokens
    assert sum(t["calls"] for t in bill["tiers"].values()) == bill["calls"]
    answering = [c for c in ext["calls"] if c["stage"] == ext["stage"] and c["role"] == "execute"]
    assert r.usage.prompt_tokens in {c["prompt_tokens"] for c in answering}


def test_langchain_streams_the_large_tiers_tokens_as_they_decode(apps):
    srv = apps["srv"]
    llm = chat_openai(srv, "chat", seed=2)
    chunks = [c.content for c in llm.stream("Write two sentences about rivers.") if c.content]
    assert len(chunks) > 5  # the tokens as decoded, not one piece at the end
    assert "".join(chunks) == llm.invoke("Write two sentences about rivers.").content


def test_sdk_stream_from_a_paid_tier_arrives_while_it_is_generated(apps):
    """The stand-in pauses 0.25 s between words: the first words reach the client long before the last."""
    srv = apps["srv"]
    t0 = time.monotonic()
    seen = []
    for chunk in srv.client(timeout=60).chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "Count."}], stream=True,
            stream_options={"include_usage": True}):
        d = chunk.to_dict()
        if d["choices"] and d["choices"][0]["delta"].get("content"):
            seen.append((time.monotonic() - t0, d["choices"][0]["delta"]["content"]))
        if d.get("usage"):
            usage = d["usage"]
    assert "".join(p for _, p in seen) == STREAMED and len(seen) == 8
    assert seen[-1][0] - seen[0][0] > 1.2  # seven pauses between the first word and the last
    assert usage == {"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15}
    assert apps["slow"].seen[-1].body["stream"] is True


def test_stop_applies_to_a_stream_as_to_a_reply(apps):
    srv = apps["srv"]
    c = srv.client(timeout=60)
    ask = dict(model="slow", messages=[{"role": "user", "content": "Count."}], stop=["five"])
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**ask, stream=True)
                   if ch.choices)
    reply = c.chat.completions.create(**ask)
    assert text == reply.choices[0].message.content == "one two three four "
    assert reply.choices[0].finish_reason == "stop"


def test_langchain_bind_tools_round_trip(apps):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "21 C, sunny"

    srv, up = apps["srv"], apps["tools"]
    before = up.count
    llm = chat_openai(srv, "agent").bind_tools([get_weather])
    first = llm.invoke("What is the weather in Paris?")
    assert first.tool_calls and first.tool_calls[0]["name"] == "get_weather"
    assert first.tool_calls[0]["args"] == {"city": "Paris"}
    assert first.response_metadata["finish_reason"] == "tool_calls"
    history = [HumanMessage("What is the weather in Paris?"), first,
               ToolMessage(get_weather.invoke(first.tool_calls[0]["args"]), tool_call_id=first.tool_calls[0]["id"])]
    final = llm.invoke(history)
    assert final.content == AFTER_TOOL and not final.tool_calls
    # the large tier saw the tools in its prompt, then the call and its result as turns
    sent = [s.body["messages"] for s in up.seen[before:]]
    assert len(sent) == 2 and "get_weather" in sent[0][0]["content"]
    assert json.loads(sent[1][-2]["content"])["tool_calls"][0]["arguments"] == {"city": "Paris"}
    assert sent[1][-1]["content"].startswith("Tool result of get_weather") and "21 C" in sent[1][-1]["content"]


def test_cascade_tool_policy_votes_small_samples_first(apps):
    srv, up = apps["srv"], apps["tools"]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    before = up.count
    r = srv.client(timeout=120).chat.completions.create(
        model="agent-cascade", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools, seed=3)
    ext = r.to_dict()["cope"]
    first = ext["stages"][0]
    assert first["executor"] == SMOL and first["n"] == 3
    assert ext["task"] == "tools" and ext["task_from"] == "the request's tools (policy cascade)"
    if first["accepted"]:  # three small samples agreed on one valid call
        assert first["confidence"] >= 0.75 and r.choices[0].message.tool_calls and up.count == before
    else:
        assert ext["stage"] == 2 and up.count == before + 1
        assert r.choices[0].finish_reason in ("tool_calls", "stop")


def test_langchain_with_structured_output(apps):
    srv, js = apps["srv"], apps["js"]
    before = js.count
    person = chat_openai(srv, "typed", seed=1).with_structured_output(Person).invoke("Who wrote the first program?")
    assert person == Person(name="Ada", age=36)
    if js.count > before:  # the small samples did not agree on a valid value: the large tier was asked
        assert js.seen[-1].body["messages"][0]["content"].startswith("Answer with one JSON value")


def test_truncation_says_length_and_refused_parameters_name_themselves(apps):
    srv = apps["srv"]
    cut = chat_openai(srv, "chat", max_tokens=4).invoke("Write a long story about a dragon.")
    assert cut.response_metadata["finish_reason"] == "length"
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        chat_openai(srv, "chat", n=2).invoke("hi")
    assert "n must be 1" in str(err.value)
    status, _, body = http(srv.url + "/chat/completions", {
        "model": "agent", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]}, key=BOB)
    assert status == 400 and body["error"]["param"] == "tools"
    status, _, body = http(srv.url + "/chat/completions", {
        "model": "agent", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "tool_choice"}}],
        "tool_choice": {"type": "function", "function": {"name": "absent"}}}, key=BOB)
    assert status == 400 and body["error"]["param"] == "tool_choice" and "absent" in body["error"]["message"]
    status, _, body = http(srv.url + "/chat/completions", {
        "model": "chat", "messages": [{"role": "user", "content": "x"},
                                      {"role": "tool", "tool_call_id": "c1", "content": "42"}]}, key=BOB)
    assert status == 400 and body["error"]["param"] == "tools"


def test_request_ids_are_echoed_sent_upstream_and_in_json_logs(tmp_path):
    with FaultServer([Reply(body=choices_body(["fine"]))]) as up:
        (tmp_path / "prices.toml").write_text('[models."up"]\ninput = 1.0\noutput = 2.0\nsource = "test"\n')
        srv = ServerProcess(tmp_path, f'prices = "prices.toml"\n[presets.p]\nsmall = "{SMOL}"\nlarge = "openai/up"\n'
                                      f'base_url = "{up.base_url}"\nmethod = "large"\n',
                            extra=("--log-format", "json"))
        try:
            c = srv.client()
            raw = c.chat.completions.with_raw_response.create(
                model="p", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "trace-42"})
            assert raw.headers["x-request-id"] == "trace-42" and raw.parse().to_dict()["cope"]["request_id"] == "trace-42"
            assert up.seen[-1].headers["x-request-id"] == "trace-42"
            minted = c.chat.completions.with_raw_response.create(
                model="p", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "bad id; forged=1"})
            rid = minted.headers["x-request-id"]
            assert rid.startswith("req_") and up.seen[-1].headers["x-request-id"] == rid
            status, headers, _ = http(srv.url + "/chat/completions", {"model": "nope", "messages": []})
            assert status == 404 and headers["x-request-id"].startswith("req_")  # errors carry one too
        finally:
            assert srv.stop() == 0
        lines = [json.loads(x) for x in srv.log.read_text().splitlines() if x.startswith("{")]
        solved = [x for x in lines if x["logger"] == "cope.server" and "stage=" in x["message"]]
        assert [x["request_id"] for x in solved] == ["trace-42", rid]
        assert all(set(x) >= {"ts", "level", "logger", "message"} for x in lines)
        assert any(x["logger"].startswith("uvicorn") for x in lines)  # the server's own lines are JSON too


def test_logprobs_are_the_answering_samples_own(apps):
    """The chat family scores samples by their log-probabilities, so the answer's are returned."""
    c = apps["srv"].client(timeout=120)
    ask = dict(model="chat", messages=[{"role": "user", "content": "Describe a cat in one sentence."}], seed=5)
    r = c.chat.completions.create(**ask, logprobs=True)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content and len(content) > 3
    assert all(t.logprob <= 0 for t in content) and any(t.logprob < 0 for t in content)
    plain = c.chat.completions.create(**ask)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == r.choices[0].message.content
    word = r.choices[0].message.content.split()[2]
    cut = c.chat.completions.create(**ask, logprobs=True, stop=[word])
    joined = "".join(t.token for t in cut.choices[0].logprobs.content)
    assert joined.startswith(cut.choices[0].message.content) and len(joined) < len(r.choices[0].message.content)
    for bad in ({"top_logprobs": 3}, {"stream": True}):
        status, _, body = http(apps["srv"].url + "/chat/completions", {**ask, "logprobs": True, **bad}, key=BOB)
        assert status == 400 and body["error"]["param"] in ("top_logprobs", "logprobs")


def _native_call_body() -> dict:
    body = choices_body([""])
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "up_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]}
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


def test_an_endpoint_marked_native_gets_tools_and_schemas_as_request_fields(tmp_path):
    """A [models.NAME] table with native = true: the tools and the JSON schema go as the provider's own
    fields, and its native tool_calls are read like written ones; an unmarked endpoint gets neither."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    with FaultServer([Reply(body=_native_call_body()), Reply(body=choices_body(['{"name": "Ada", "age": 36}']))]) as up, \
            FaultServer([Reply(body=choices_body([CALL]))]) as plain:
        (tmp_path / "prices.toml").write_text("".join(
            f'[models."{m}"]\ninput = 1.0\noutput = 2.0\nsource = "test"\n' for m in ("big", "other")))
        srv = ServerProcess(tmp_path, f'''prices = "prices.toml"
[models.big]
spec = "openai/big"
base_url = "{up.base_url}"
native = true

[models.other]
spec = "openai/other"
base_url = "{plain.base_url}"

[presets.native]
small = "{SMOL}"
large = "big"
method = "large"

[presets.worded]
small = "{SMOL}"
large = "other"
method = "large"
''')
        try:
            c = srv.client(timeout=60)
            r = c.chat.completions.create(model="native", messages=[{"role": "user", "content": "Lima?"}],
                                          tools=tools, tool_choice="required")
            sent = up.seen[-1].body
            assert sent["tools"] == tools and sent["tool_choice"] == "required"
            call = r.choices[0].message.tool_calls[0]
            assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lima"}
            p = c.chat.completions.parse(model="native", messages=[{"role": "user", "content": "Who?"}],
                                         response_format=Person)
            sent = up.seen[-1].body
            assert sent["response_format"]["type"] == "json_schema"
            assert sent["response_format"]["json_schema"]["schema"]["required"] == ["name", "age"]
            assert p.choices[0].message.parsed == Person(name="Ada", age=36)
            w = c.chat.completions.create(model="worded", messages=[{"role": "user", "content": "Paris?"}], tools=tools)
            assert "tools" not in plain.seen[-1].body and "get_weather" in plain.seen[-1].body["messages"][0]["content"]
            assert w.choices[0].message.tool_calls[0].function.name == "get_weather"
        finally:
            assert srv.stop() == 0


def test_a_declared_route_sends_matching_messages_to_its_family_and_says_so(apps):
    c = apps["srv"].client(timeout=120)
    sums = c.chat.completions.create(model="routed", messages=[{"role": "user", "content": "What is 17 * 3?"}])
    ext = sums.to_dict()["cope"]
    assert ext["task"] == "math" and ext["task_from"].startswith("preset routed route 1: the message matches")
    card = c.models.retrieve("routed").to_dict()["cope"]
    assert card["route"] == [{"pattern": r"\d+\s*[-+*/]\s*\d+", "task": "math"}] and card["tools"] == "large"
    assert c.models.retrieve("agent-cascade").to_dict()["cope"]["tools"] == "cascade"
    chat = c.chat.completions.create(model="routed", messages=[{"role": "user", "content": "Say hello."}])
    ext = chat.to_dict()["cope"]
    assert ext["task"] == "open" and ext["task_from"] == "preset routed serves the open family"
