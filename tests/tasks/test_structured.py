"""Structured output as a task family: samples that validate vote on their content."""

from __future__ import annotations

import pytest

from cope.errors import ConfigError
from cope.models.base import Completion
from cope.tasks.base import Problem
from cope.tasks.structured import StructuredTask, canonical, parse_json

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
          "additionalProperties": False}


def _assess(task, texts):
    return task.assess(Problem("2+2?"), [Completion(text=t, completion_tokens=3) for t in texts])


def test_samples_that_validate_vote_on_their_content():
    task = StructuredTask(SCHEMA)
    a = _assess(task, ['{"answer": 4}', 'Sure!\n```json\n{ "answer" : 4 }\n```', '{"answer": 5}', "four"])
    assert a.answer == '{"answer":4}' and a.confidence == 0.5 and a.support == [0, 1]
    assert a.extracted == ['{"answer":4}', '{"answer":4}', '{"answer":5}', None]
    assert a.output == a.answer and a.info["valid_samples"] == 3


def test_a_value_that_parses_but_does_not_validate_is_a_missing_vote():
    task = StructuredTask(SCHEMA)
    a = _assess(task, ['{"answer": "4"}', '{"answer": 4, "extra": 1}', '{"result": 4}'])
    assert a.answer is None and a.confidence == 0.0 and a.support == []
    assert "is not of type 'integer'" in a.info["first_invalid_reason"]


def test_json_object_takes_any_object_and_canonical_ignores_spacing_and_order():
    task = StructuredTask(None)
    a = _assess(task, ['{"b": 1, "a": [1, 2]}', '{"a":[1,2],"b":1}', "[1, 2]"])
    assert a.answer == canonical({"a": [1, 2], "b": 1}) and a.confidence == pytest.approx(2 / 3)
    assert parse_json('text {"x": {"y": [1]}} more') == {"x": {"y": [1]}}
    with pytest.raises(ValueError):
        parse_json("no json here {")


def test_a_bad_schema_is_one_config_error():
    with pytest.raises(ConfigError, match="the JSON schema is not valid"):
        StructuredTask({"type": "nonsense-type"})
