"""Structured output (``response_format`` json_object / json_schema) as a task family.

A JSON answer is checkable, so it is a confidence signal of its own: each
sample is parsed (prose or a code fence around the value is tolerated) and
validated against the schema with ``jsonschema``; samples that fail are
missing votes, and those that pass vote on their *content* (the same object
written with other spacing or key order is one vote). The stage's confidence
is the winning content's share of all samples, so a small tier whose samples
validate and agree answers, and one that writes prose or disagrees escalates.
The answer is the winning value as canonical JSON, and it always validates:
a cascade whose last stage found no valid sample has no answer (the server
turns that into an error, never into text that does not parse).
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from ..errors import ConfigError
from ..models.base import Completion, Message
from .base import Assessment, Plan, Problem, Task, chat, plan_lines

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (a fenced block first), or raises ValueError."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        for i, ch in enumerate(chunk):
            if ch in "{[":
                try:
                    value, _ = decoder.raw_decode(chunk, i)
                except ValueError:
                    continue
                return value
    raise ValueError("no JSON object or array in the text")


def canonical(value: Any) -> str:
    """One text per JSON value: sorted keys, no spaces (the vote's key and the returned content)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class StructuredTask(Task):
    """JSON answers, voted on their content among the samples that validate against ``schema``.

    ``schema`` None stands for ``json_object``: any JSON object validates.
    """

    name = "json"
    default_taus = (0.75, 0.5)  # a content majority, as for math's answers

    def __init__(self, schema: dict[str, Any] | None = None, name: str = "") -> None:
        from jsonschema import validators
        from jsonschema.exceptions import SchemaError

        self.schema = schema if schema is not None else {"type": "object"}
        self.schema_name = name
        try:
            cls = validators.validator_for(self.schema)
            cls.check_schema(self.schema)
        except SchemaError as exc:
            raise ConfigError(f"the JSON schema is not valid: {exc.message}") from None
        self._validator = cls(self.schema)

    def errors(self, value: Any) -> list[str]:
        """Why ``value`` does not validate (empty when it does)."""
        try:
            return [e.message for e in self._validator.iter_errors(value)][:3]
        except Exception as exc:  # a schema that checks but cannot be applied (an unresolvable $ref): no value passes
            return [f"the schema cannot be applied: {exc}"]

    def native_fields(self) -> dict[str, Any] | None:
        """The schema as the provider's own ``response_format`` (an endpoint marked native)."""
        if self.schema == {"type": "object"} and not self.schema_name:
            return {"response_format": {"type": "json_object"}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": self.schema_name or "answer", "schema": self.schema}}}

    def executor_messages(self, problem: Problem, plans: Sequence[Plan]) -> list[Message]:
        system = ("Answer with one JSON value and nothing else: no prose, no code fence. It must validate "
                  "against this JSON schema:\n" + json.dumps(self.schema, indent=None, sort_keys=True))
        guide = plan_lines(plans)
        return chat(system, problem, (f"{guide}\n\n" if guide else "") + problem.text)

    def assess(self, problem: Problem, completions: Sequence[Completion], **kw: Any) -> Assessment:
        keys: list[str | None] = []
        reasons: list[str] = []
        for c in completions:
            try:
                value = parse_json(c.text)
            except ValueError as exc:
                keys.append(None)
                reasons.append(str(exc))
                continue
            problems = self.errors(value)
            keys.append(None if problems else canonical(value))
            if problems:
                reasons.append(problems[0])
        votes: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k is not None:
                votes.setdefault(k, []).append(i)
        info: dict[str, object] = {"valid_samples": sum(k is not None for k in keys)}
        if reasons:
            info["first_invalid_reason"] = reasons[0]
        if not votes:
            return Assessment(answer=None, confidence=0.0, support=[], extracted=keys, output="", info=info)
        top = max(votes, key=lambda k: (len(votes[k]), -votes[k][0]))  # ties: the content drawn first
        return Assessment(answer=top, confidence=len(votes[top]) / max(len(completions), 1),
                          support=votes[top], extracted=keys, output=top, info=info)

    def score(self, problem: Problem, answer: str | None) -> bool:
        if answer is None or problem.reference is None:
            return False
        try:
            return canonical(json.loads(problem.reference)) == answer
        except ValueError:
            return False
