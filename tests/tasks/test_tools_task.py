"""The tools family: what counts as a call, what votes with what, what escalates."""

from __future__ import annotations

import json

import pytest

from cope.errors import ConfigError
from cope.models.base import Completion
from cope.tasks.base import Problem
from cope.tasks.tools import ToolsTask, render_turns

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def call(name: str, **args) -> str:
    return json.dumps({"tool_calls": [{"name": name, "arguments": args}]})


def assess(task: ToolsTask, *texts: str):
    return task.assess(Problem("q"), [Completion(t, 1) for t in texts])


def test_calls_vote_on_content_and_invalid_ones_are_missing_votes():
    task = ToolsTask([WEATHER, TIME])
    a = assess(task, call("get_weather", city="Paris"),
               '```json\n{"tool_calls": [{"arguments": {"city": "Paris"}, "name": "get_weather"}]}\n```',
               call("get_weather"),  # no city: fails the schema
               call("send_email", to="x"),  # no such tool
               "It is sunny.")
    assert a.confidence == pytest.approx(2 / 5) and a.support == [0, 1]
    assert a.info["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert a.extracted[2] is None and a.extracted[3] is None and a.info["valid_samples"] == 3
    assert "city" in a.info["first_invalid_reason"]


def test_text_answers_never_agree_so_a_chatty_small_tier_escalates():
    task = ToolsTask([WEATHER])
    a = assess(task, "It is sunny.", "It is sunny.", "It is sunny.")
    assert a.confidence == pytest.approx(1 / 3) and a.info["tool_calls"] is None
    assert a.answer == "It is sunny." and a.output == "It is sunny."
    lone = assess(task, "Sunny today.")  # the large tier's single sample answers
    assert lone.confidence == 1.0 and lone.answer == "Sunny today."


def test_tool_choice_and_parallel_calls_are_kept():
    required = ToolsTask([WEATHER], "required")
    assert assess(required, "Sunny.").answer is None
    named = ToolsTask([WEATHER, TIME], "get_time")
    assert assess(named, call("get_weather", city="Oslo")).answer is None
    assert assess(named, call("get_time")).info["tool_calls"] == [{"name": "get_time", "arguments": {}}]
    single = ToolsTask([WEATHER, TIME], parallel=False)
    two = json.dumps({"tool_calls": [{"name": "get_time", "arguments": {}},
                                     {"name": "get_weather", "arguments": {"city": "Rome"}}]})
    assert assess(single, two).answer is None and assess(ToolsTask([WEATHER, TIME]), two).answer is not None
    none = ToolsTask([WEATHER], "none")
    assert none.assess(Problem("q"), [Completion(call("get_weather", city="Oslo"), 1)]).info["tool_calls"] is None


@pytest.mark.parametrize("tools, choice, needle", [
    ([], "auto", "must not be empty"),
    ([{"type": "function", "function": {"name": ""}}], "auto", "function.name"),
    ([WEATHER, WEATHER], "auto", "declared twice"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": 12}}}], "auto", "not valid"),
    ([WEATHER], "get_time", "not among the tools"),
])
def test_bad_tools_are_config_errors(tools, choice, needle):
    with pytest.raises(ConfigError, match=needle):
        ToolsTask(tools, choice)


def test_a_round_trip_renders_as_turns_every_model_reads():
    turns = render_turns([
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
    ])
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert json.loads(turns[1]["content"]) == {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}
    assert turns[2]["content"].startswith("Tool result of get_weather (call call_1)") and "-3 C" in turns[2]["content"]
    task = ToolsTask([WEATHER])
    msgs = task.executor_messages(Problem("Weather in Oslo?", meta={"after": turns[1:]}), [])
    assert msgs[0]["role"] == "system" and "get_weather" in msgs[0]["content"]
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant", "user"]
