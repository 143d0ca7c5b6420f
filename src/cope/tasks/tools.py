"""Tool calling (a request's ``tools``) as a task family: each sample either calls tools or answers.

Every tier is asked the same way, by prompt: the tools' names, descriptions and JSON-schema
parameters are in the system prompt, and a sample that wants a tool writes one JSON object
``{"tool_calls": [{"name": ..., "arguments": {...}}]}``; anything else is a text answer. So a
local model with no tool-calling template, and a paid one, are asked alike, and samples can be
voted on: a call counts only if it names a declared tool and its arguments validate against
that tool's schema (``jsonschema``); valid calls vote on their content (name and arguments,
key order and spacing aside). Text answers are not compared: each is a vote of its own, so
samples agree only on a call (a small model that ignores the tools and chats writes texts that
would "agree" on nothing that was checked). The stage's confidence is the winner's share of all
samples: small samples that agree on a call answer, and ones that disagree, write invalid calls
or answer in text escalate (the ``cascade`` policy); a lone sample (the large tier) answers.

``tool_choice`` is kept: ``none`` asks for a text answer (the tool results of earlier turns
still shown), ``required`` makes a text answer an invalid sample, a named function makes any other call
invalid. Without ``parallel_tool_calls``, a sample with more than one call is invalid.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..errors import ConfigError
from ..models.base import Completion, Message
from .base import Assessment, Plan, Problem, Task, plan_lines
from .structured import canonical, parse_json

TEXT = "text"  # the vote key of a text answer (numbered per sample: text answers never agree)


class ToolChoiceError(ConfigError):
    """``tool_choice`` names a function that is not among the tools."""


def _schema_validator(schema: Any, where: str) -> Any:
    from jsonschema import validators
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: parameters must be a JSON schema object")
    try:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"{where}: the parameters schema is not valid: {exc.message}") from None
    return cls(schema)


def read_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI's ``tools`` list as ``{"name", "description", "parameters"}`` rows, checked (ConfigError)."""
    rows: list[dict[str, Any]] = []
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(t.get("function"), dict):
            raise ConfigError(f"{where}: a tool must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
        fn = t["function"]
        name = fn.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ConfigError(f"{where}: function.name must be a non-empty string of at most 64 characters")
        if any(r["name"] == name for r in rows):
            raise ConfigError(f"{where}: the tool name '{name}' is declared twice")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        _schema_validator(params, f"{where} ({name})")
        rows.append({"name": name, "description": str(fn.get("description") or ""), "parameters": params})
    if not rows:
        raise ConfigError("tools must not be empty")
    return rows


class ToolsTask(Task):
    """Samples that call the request's tools or answer in text, voted on what they do."""

    name = "tools"
    default_taus = (0.75, 0.5)

    def __init__(self, tools: Sequence[Any], choice: str = "auto", parallel: bool = True) -> None:
        self.tools = read_tools(tools)
        self.wire_tools = [dict(t) for t in tools]  # as the client sent them, for a native endpoint
        names = [t["name"] for t in self.tools]
        if choice not in ("auto", "required", "none") and choice not in names:
            raise ToolChoiceError(f"tool_choice names '{choice}', which is not among the tools ({', '.join(names)})")
        self.choice = choice
        self.parallel = parallel
        self._validators = {t["name"]: _schema_validator(t["parameters"], t["name"]) for t in self.tools}

    def native_fields(self) -> dict[str, Any] | None:
        """The tools as the provider's own ``tools`` / ``tool_choice`` (an endpoint marked native):
        its calls come back as ``tool_calls`` and are read like written ones."""
        choice: Any = self.choice if self.choice in ("auto", "required", "none") else {
            "type": "function", "function": {"name": self.choice}}
        out: dict[str, Any] = {"tools": self.wire_tools, "tool_choice": choice}
        if not self.parallel:
            out["parallel_tool_calls"] = False
        return out

    # -- prompts -----------------------------------------------------------------
    def system_prompt(self) -> str:
        listing = "\n".join(json.dumps(t, sort_keys=True) for t in self.tools)
        must = {"auto": "Call a tool when it helps; when you can answer without one, answer in plain text.",
                "required": "You must call a tool: answer with the JSON object only.",
                "none": "Do not call a tool now: answer in plain text."}.get(
            self.choice, f"You must call the tool '{self.choice}': answer with the JSON object only.")
        many = "one or more calls" if self.parallel else "exactly one call"
        return ("You can call these tools (one JSON line each: name, description, JSON schema of its arguments):\n"
                f"{listing}\n\nTo call tools, answer with one JSON object and nothing else, holding {many}:\n"
                '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}\n'
                f"{must} Tool results come back as messages that start with 'Tool result'.")

    def executor_messages(self, problem: Problem, plans: Sequence[Plan]) -> list[Message]:
        guide = plan_lines(plans)
        after = list(problem.meta.get("after", ()))  # the tool round-trip after the user's question
        return [{"role": "system", "content": self.system_prompt()}, *problem.history,
                {"role": "user", "content": (f"{guide}\n\n" if guide else "") + problem.text}, *after]

    # -- reading samples ----------------------------------------------------------
    def read(self, text: str) -> tuple[str | None, list[dict[str, Any]] | None, str]:
        """(vote key or None when invalid, the calls or None for a text answer, why invalid)."""
        if self.choice == "none":
            return (TEXT, None, "") if text.strip() else (None, None, "empty")
        try:
            value = parse_json(text)
        except ValueError:
            value = None
        calls = None
        if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
            calls = value["tool_calls"]
        elif isinstance(value, dict) and "name" in value and ("arguments" in value or "parameters" in value):
            calls = [value]
        if calls is None:
            if self.choice != "auto":
                return None, None, "a tool call is required"
            return (TEXT, None, "") if text.strip() else (None, None, "empty")
        if not calls:
            return None, None, "tool_calls is empty"
        if len(calls) > 1 and not self.parallel:
            return None, None, "more than one call without parallel_tool_calls"
        out = []
        for c in calls:
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                return None, None, "a call without a name"
            name = c["name"]
            args = c.get("arguments", c.get("parameters", {}))
            if isinstance(args, str):  # OpenAI's own wire form: arguments as a JSON string
                try:
                    args = json.loads(args)
                except ValueError:
                    return None, None, f"{name}: arguments are not JSON"
            if name not in self._validators:
                return None, None, f"no tool named '{name}'"
            if self.choice not in ("auto", "required", "none") and name != self.choice:
                return None, None, f"'{name}' called where '{self.choice}' is required"
            if not isinstance(args, dict):
                return None, None, f"{name}: arguments must be a JSON object"
            bad = [e.message for e in self._validators[name].iter_errors(args)]
            if bad:
                return None, None, f"{name}: {bad[0]}"
            out.append({"name": name, "arguments": args})
        return canonical(out), out, ""

    def assess(self, problem: Problem, completions: Sequence[Completion], **kw: Any) -> Assessment:
        keys: list[str | None] = []
        parsed: list[list[dict[str, Any]] | None] = []
        reasons: list[str] = []
        for c in completions:
            key, calls, why = self.read(c.text)
            keys.append(key)
            parsed.append(calls)
            if why:
                reasons.append(why)
        votes: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k is not None:
                votes.setdefault(f"{TEXT}:{i}" if k == TEXT else k, []).append(i)
        info: dict[str, object] = {"valid_samples": sum(k is not None for k in keys),
                                   "votes": {k: len(v) for k, v in votes.items()}}
        if reasons:
            info["first_invalid_reason"] = reasons[0]
        if not votes:
            first = next((c.text for c in completions if c.text.strip()), "")
            return Assessment(answer=None, confidence=0.0, support=[], extracted=keys, output=first, info=info)
        top = max(votes, key=lambda k: (len(votes[k]), -votes[k][0]))  # ties: the one drawn first
        pick = votes[top][0]
        info["tool_calls"] = parsed[pick]  # None: the answer is text
        text = keys[pick] == TEXT
        output = completions[pick].text if text else top
        return Assessment(answer=output.strip() if text else top, confidence=len(votes[top]) / len(completions),
                          support=votes[top], extracted=keys, output=output, info=info)

    def score(self, problem: Problem, answer: str | None) -> bool:
        return answer is not None and problem.reference is not None and answer == problem.reference


def render_turns(messages: Sequence[Any]) -> list[Message]:
    """A tool round-trip as plain chat turns every model reads: an assistant's calls as the JSON
    object the prompt asks for, each tool result as a user turn naming the call it answers."""
    names: dict[str, str] = {}
    out: list[Message] = []
    for m in messages:
        role = m["role"]
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                fn = tc.get("function") or {}
                names[str(tc.get("id"))] = str(fn.get("name"))
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = fn.get("arguments")
                calls.append({"name": fn.get("name"), "arguments": args})
            text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
            if m.get("content"):
                text = f"{m['content']}\n{text}"
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            call = str(m.get("tool_call_id") or "")
            name = names.get(call, "a tool")
            out.append({"role": "user", "content": f"Tool result of {name} (call {call}):\n{m.get('content') or ''}"})
        else:
            out.append({"role": role, "content": m.get("content") or ""})
    return out
