"""Model calls as data: a stable key, a shared cache, a journal and a budget.

``JournaledModel`` wraps any backend. A call whose key (model, messages,
parameters, seed) was answered before - in this run's journal or the shared
cache of earlier runs - is answered from there, which is what makes
``--resume`` free and replays exact. Every real call is journaled and counted
against the run's budget *before* it is made.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..errors import CopeError
from ..models.base import Completion, Generation, GenParams, Message, Model, report_samples
from ..pricing import Price
from .journal import Journal


class BudgetExceeded(CopeError):
    """The next call could take the run's spend past ``--max-usd``."""


def call_key(spec: str, kind: str, prompts: Sequence[Sequence[Message]], params: GenParams) -> str:
    """A stable hash of everything that determines a call's output."""
    blob = json.dumps(
        {"model": spec, "kind": kind, "prompts": [[dict(m) for m in p] for p in prompts], "params": asdict(params)},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def gen_to_dict(g: Generation) -> dict[str, Any]:
    return asdict(g)


def gen_from_dict(d: dict[str, Any]) -> Generation:
    return Generation(
        completions=[Completion(**c) for c in d["completions"]],
        prompt_tokens=d["prompt_tokens"], completion_tokens=d["completion_tokens"],
        latency_s=d["latency_s"], model=d["model"], extra=dict(d.get("extra", {})),
    )


class CallCache:
    """In-memory map, optionally backed by an SQLite file shared across runs."""

    def __init__(self, path: Path | None = None) -> None:
        self._mem: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()

    def get(self, key: str) -> list[Generation] | None:
        with self._lock:
            hit = self._mem.get(key)
            if hit is None and self._db is not None:
                row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
                if row:
                    hit = self._mem[key] = json.loads(row[0])
        return None if hit is None else [gen_from_dict(d) for d in hit]

    def put(self, key: str, gens: list[dict[str, Any]], persist: bool = True) -> None:
        with self._lock:
            self._mem[key] = gens
            if persist and self._db is not None:
                self._db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, json.dumps(gens)))
                self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class Budget:
    """Actual spend of a run against a cap; checked before each real call."""

    def __init__(self, max_usd: float | None, spent: float = 0.0) -> None:
        self.max_usd = max_usd
        self.spent = spent
        self._lock = threading.Lock()

    def reserve(self, bound: float) -> None:
        with self._lock:
            if self.max_usd is not None and self.spent + bound > self.max_usd:
                raise BudgetExceeded(
                    f"stopped: the next call could cost up to ${bound:.6f}, which would take the spend "
                    f"(${self.spent:.6f}) past --max-usd ${self.max_usd:g}"
                )

    def add(self, usd: float) -> None:
        with self._lock:
            self.spent += usd


def _upper_bound(price: Price, prompts: Sequence[Sequence[Message]], params: GenParams) -> float:
    # Tokens never outnumber characters for BPE vocabularies, plus a few
    # template tokens per message: a true upper bound, so the cap holds.
    prompt_tokens = sum(len(m.get("content", "")) + 8 for p in prompts for m in p)
    completion = params.max_tokens * params.n * len(prompts)
    return price.cost(prompt_tokens * (params.n if price.input_per_m else 1), completion)


class JournaledModel:
    """A Model that answers repeated calls from cache and journals real ones."""

    def __init__(self, inner: Model, price: Price, cache: CallCache, journal: Journal, budget: Budget,
                 use_cache: bool = True) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.price = price
        self.cache = cache
        self.journal = journal
        self.budget = budget
        self.use_cache = use_cache
        self.real_calls = 0
        self.cached_calls = 0

    async def _call(self, kind: str, prompts: Sequence[Sequence[Message]], params: GenParams) -> list[Generation]:
        key = call_key(self.spec, kind, prompts, params)
        cacheable = params.seed is not None  # unseeded sampling must stay random
        if cacheable and self.use_cache:
            hit = self.cache.get(key)
            if hit is not None:
                self.cached_calls += 1
                for g in hit:
                    g.extra["cached"] = True
                report_samples(sum(len(g.completions) for g in hit))
                return hit
        self.budget.reserve(_upper_bound(self.price, prompts, params))
        if kind == "generate":
            gens = [await self.inner.generate(prompts[0], params)]
        else:
            gens = list(await self.inner.generate_many(prompts, params))
        self.real_calls += 1
        usd = sum(self.price.cost(g.prompt_tokens, g.completion_tokens) for g in gens)
        self.budget.add(usd)
        data = [gen_to_dict(g) for g in gens]
        self.journal.write({"type": "call", "key": key, "model": self.spec, "kind": kind, "usd": usd,
                            "params": asdict(params), "generations": data})
        if cacheable:
            self.cache.put(key, data, persist=self.use_cache)
        return gens

    async def generate(self, messages: Sequence[Message], params: GenParams) -> Generation:
        return (await self._call("generate", [messages], params))[0]

    async def generate_many(self, prompts: Sequence[Sequence[Message]], params: GenParams) -> list[Generation]:
        return await self._call("generate_many", list(prompts), params)
