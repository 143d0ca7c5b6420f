"""``cope show DIR PROBLEM_ID``: one problem's trace, rebuilt from the run's journal.

A run's journal keeps every model call (keyed by what determines it: model, prompts,
parameters) with its samples, and one summary record per (method, problem). The trace a
researcher wants (the plans each planner wrote, what every sample of every stage said and how
they voted, the guideline a later stage was given, what each call cost) is rebuilt by running
the method on the problem again with every call answered from the journal: same config, same
seed, so the same keys, and no model runs. A call the journal does not hold (a run recorded
with other prompts, by an earlier version) is never made: the trace then falls back to what the
summary record holds (per stage: answer, confidence, the vote's clusters, cost; the plans) and
says why. The replayed result is checked against the recorded one.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from ..models.base import GenParams, Generation, Message
from .calls import call_key, gen_from_dict
from .rundir import journal_records, latest_results, load_config


class NotRecorded(ConfigError):
    """A call the replayed method makes that the journal does not hold."""


class _FromJournal:
    """A Model whose every call is answered from a run's journal (a miss is NotRecorded)."""

    def __init__(self, spec: str, request_params: Any, calls: dict[str, list], log: list) -> None:
        self.spec = spec
        self.request_params = request_params
        self.calls = calls
        self.log = log  # (spec, prompt, generation) for each generation returned, in order

    async def _get(self, kind: str, prompts: Sequence[Sequence[Message]], params: GenParams) -> list[Generation]:
        key = call_key(self.spec, kind, prompts, params, self.request_params)
        hit = self.calls.get(key)
        if hit is None:
            raise NotRecorded(f"a {self.spec} call of this replay is not in the journal (key {key[:12]})")
        gens = [gen_from_dict(g) for g in hit]
        self.log.extend((self.spec, p, g) for p, g in zip(prompts, gens))
        return gens

    async def generate(self, messages: Sequence[Message], params: GenParams) -> Generation:
        return (await self._get("generate", [messages], params))[0]

    async def generate_many(self, prompts: Sequence[Sequence[Message]], params: GenParams) -> list[Generation]:
        return await self._get("generate_many", list(prompts), params)


class Replayer:
    """A run opened once (config, journal, benchmark, task, prices) to trace any of its problems."""

    def __init__(self, out: Path) -> None:
        from ..benchmarks.registry import load_benchmark
        from ..pricing import PriceTable
        from ..tasks import get_task

        self.out = out
        self.cfg = cfg = load_config(out)
        records = journal_records(out)
        self.results: dict[str, dict[str, Any]] = {}
        for r in latest_results(records):
            self.results.setdefault(r["problem_id"], {})[r["method"]] = r
        self.calls = {r["key"]: r["generations"] for r in records if r.get("type") == "call"}
        self.bench = load_benchmark(cfg.benchmark, limit=cfg.limit, seed=cfg.seed, mapping=cfg.mapping, task=cfg.task)
        self.problems = {p.id: p for p in self.bench.problems}
        self.task = get_task(self.bench.task)
        self.prices = PriceTable.load(cfg.prices)

    def problem(self, problem_id: str) -> Any:
        if problem_id not in self.problems:
            ids = list(self.problems)
            near = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
            raise ConfigError(f"no problem '{problem_id}' in this run ({len(ids)} problems: {near})")
        return self.problems[problem_id]

    def trace(self, problem_id: str, methods: Sequence[str] | None = None) -> dict[str, Any]:
        """The problem, and per method its recorded result and (where the journal allows) the replayed trace."""
        from .runner import build_cope, problem_seed

        cfg, problem = self.cfg, self.problem(problem_id)
        results = self.results.get(problem_id, {})
        chosen = list(methods or [m for m in cfg.methods if m in results])
        unknown = [m for m in chosen if m not in cfg.methods]
        if unknown:
            raise ConfigError(f"method '{unknown[0]}' is not in this run; its methods: {', '.join(cfg.methods)}")
        out_methods: dict[str, Any] = {}
        for m in chosen:
            entry: dict[str, Any] = {"recorded": results.get(m)}
            out_methods[m] = entry
            if m not in results:
                entry["note"] = "no result for this problem in the journal (the run stopped before it)"
                continue
            if self.task.driver is not None:
                entry["note"] = ("an episode: its steps as the result record holds them"
                                 + ("" if results[m].get("episode") else " (this run's records predate per-step "
                                    "records: only the outcome is known)"))
                continue
            log: list = []
            try:
                # the same Cope as the run's (models are built lazily: nothing is loaded or called);
                # a placeholder key stands in for an API key the journal makes unnecessary
                c = build_cope(cfg, m, self.prices, api_key="replay-from-journal")
                for bound in c.models.values():
                    bound.model = _FromJournal(bound.model.spec, getattr(bound.model, "params", None), self.calls, log)
                result = asyncio.run(c.asolve(problem, task=self.task, seed=problem_seed(cfg.seed, problem.id)))
            except NotRecorded as exc:
                entry["note"] = (f"the samples could not be replayed ({exc}): the journal was written with other "
                                 "prompts or settings; shown from the result record alone")
                continue
            rec = results[m]
            entry["replayed"] = result.to_dict()
            entry["same_as_recorded"] = (result.answer == rec.get("answer") and result.stage == rec.get("stage")
                                         and abs(result.cost_usd - float(rec.get("cost_usd") or 0)) < 1e-9)
            entry["samples"] = _samples(result, log)
        return {"run": str(self.out), "benchmark": cfg.benchmark, "problem_id": problem_id, "problem": problem.text,
                "reference": problem.reference, "methods": out_methods}


def trace(out: Path, problem_id: str, methods: Sequence[str] | None = None) -> dict[str, Any]:
    """One problem's trace (see :class:`Replayer`)."""
    return Replayer(out).trace(problem_id, methods)


def _samples(result: Any, log: list) -> list[dict[str, Any]]:
    """Each call of the replay with its samples' texts, beside the call record it produced."""
    out = []
    for rec, (spec, prompt, gen) in zip(result.calls, log):
        out.append({"stage": rec.stage, "role": rec.role, "who": rec.who, "model": spec, "cost_usd": rec.cost_usd,
                    "prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.completion_tokens,
                    "latency_s": rec.latency_s,
                    "prompt_last": str(prompt[-1].get("content", "")) if prompt else "",
                    "texts": [c.text for c in gen.completions]})
    return out


def _short(text: str, width: int, full: bool) -> str:
    text = text.strip()
    if full:
        return textwrap.indent(text, "        ")
    one = " ".join(text.split())
    return "        " + (one if len(one) <= width else one[: width - 3] + "...")


def _one(value: Any, width: int = 72) -> str:
    """A value on one line, cut to ``width`` (answers may be whole programs)."""
    if value is None:
        return "none"
    one = " ".join(str(value).split())
    return repr(one if len(one) <= width else one[: width - 3] + "...")


def render(t: dict[str, Any], *, full: bool = False, width: int = 110) -> str:
    """The trace as text for a terminal."""
    ref = t["reference"]
    lines = [f"{t['benchmark']} problem {t['problem_id']} ({t['run']})", "",
             textwrap.indent(t["problem"].strip() if full else _short(t["problem"], 400, False).strip(), "  "),
             "  reference: " + (str(ref).strip() if full else _one(ref, width - 13))]
    for m, e in t["methods"].items():
        rec = e.get("recorded") or {}
        lines += ["", f"== {m}: answer {_one(rec.get('answer'))} "
                  f"({'correct' if rec.get('correct') else 'wrong' if rec.get('correct') is False else 'unscored'}), "
                  f"stage {rec.get('stage')} of {rec.get('n_stages')}, ${float(rec.get('cost_usd') or 0):.6f}"]
        if e.get("note"):
            lines.append(f"   note: {e['note']}")
        if "replayed" in e:
            lines += _render_replayed(e, full, width)
        elif rec.get("episode"):
            lines += [f"   step {x['step']:>3}: {x['action']!r} (stage {x['stage']}, confidence {x['confidence']:.2f}, "
                      f"${x['cost_usd']:.6f}{', fallback' if x.get('fallback') else ''}); votes "
                      + (", ".join(f"{k!r}: {v}" for k, v in (x.get("votes") or {}).items()) or "-")
                      for x in rec["episode"]]
        elif rec.get("stages"):
            lines += _render_recorded(rec)
    return "\n".join(lines)


def _render_recorded(rec: dict[str, Any]) -> list[str]:
    lines = []
    for p in rec.get("plans") or []:
        lines.append(f"   plan (stage {p['stage']}, {p['kind']} by {p['model']}): {' '.join(p['text'].split())}")
    for s in rec["stages"]:
        verdict = "accepted" if s.get("accepted") else "escalated"
        clusters = s.get("clusters")
        lines.append(f"   stage {s['stage']}: answer {_one(s.get('answer'))}, confidence {s.get('confidence', 0):.2f}, "
                     f"{verdict}, ${float(s.get('cost_usd') or 0):.6f}"
                     + (f"; clusters {clusters}" if clusters else ""))
    return lines


def _render_replayed(e: dict[str, Any], full: bool, width: int) -> list[str]:
    r = e["replayed"]
    lines = [f"   replayed from the journal: {'the same answer, stage and cost as recorded' if e['same_as_recorded'] else 'DIFFERS from the recorded result'}"]
    calls = e["samples"]
    for st in r["stages"]:
        verdict = "accepted" if st["accepted"] else "escalated"
        thr = st["threshold"]
        thr_s = "always answers" if thr is None else "never accepts" if thr == "never" else f"threshold {thr}"
        lines.append(f"   -- stage {st['stage']} ({st['executor']}, {st['drawn'] or st['n']} of {st['n']} samples, "
                     f"{thr_s}): answer {_one(st['answer'])}, confidence {st['confidence']:.2f}, {verdict}, "
                     f"${st['cost_usd']:.6f}")
        votes = st["info"].get("votes")
        if votes:
            lines.append("      votes: " + ", ".join(f"{k!s}: {v}" for k, v in votes.items()))
        for role in ("plan", "execute"):
            mine = [c for c in calls if c["stage"] == st["stage"] and c["role"] == role]
            for who in dict.fromkeys(c["who"] for c in mine):
                group = [c for c in mine if c["who"] == who]
                lines.append(f"      {role}: {len(group)} call(s) to {who} ({group[0]['model']}), "
                             f"{sum(len(c['texts']) for c in group)} sample(s), "
                             f"{sum(c['prompt_tokens'] for c in group):,} prompt + "
                             f"{sum(c['completion_tokens'] for c in group):,} completion tokens, "
                             f"${sum(c['cost_usd'] for c in group):.6f}")
                if role == "plan":
                    lines += [_short(x, width, full) for c in group for x in c["texts"]]
        extracted = st["extracted"]
        passing = st["info"].get("passing")
        texts = [x for c in calls if c["stage"] == st["stage"] and c["role"] == "execute" for x in c["texts"]]
        for i, text in enumerate(texts):
            got = extracted[i] if i < len(extracted) else None
            # code: passing lists the samples (by index) that pass every visible test
            checked = f", passes the visible tests: {'yes' if i in passing else 'no'}" if isinstance(passing, list) else ""
            lines.append(f"      sample {i + 1}: read as {_one(got, 48)}{checked}")
            lines.append(_short(text, width, full))
    for p in r["plans"]:
        if p.get("name"):
            lines.append(f"   kept plan {p['name']} (stage {p['stage']}, {p['kind']} by {p['model']}): "
                         f"{' '.join(p['text'].split())}")
    return lines
