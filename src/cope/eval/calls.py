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
import secrets
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from ..errors import BackendError, CopeError
from ..models.base import Completion, Generation, GenParams, Message, Model, native_fields, report_samples
from ..pricing import Price, upper_bound_usd
from .journal import Journal


class BudgetExceeded(CopeError):
    """The next call could take the run's spend past ``--max-usd``."""


def call_key(spec: str, kind: str, prompts: Sequence[Sequence[Message]], params: GenParams,
             request_params: Mapping[str, Any] | None = None) -> str:
    """A stable hash of everything that determines a call's output (an endpoint's own request
    fields too, when it has any: top_k changes the samples; without them the key is as before)."""
    data: dict[str, Any] = {"model": spec, "kind": kind, "prompts": [[dict(m) for m in p] for p in prompts],
                            "params": asdict(params)}
    if request_params:
        data["request_params"] = dict(request_params)
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
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
        return self.lookup(key)[0]

    def lookup(self, key: str) -> tuple[list[Generation] | None, bool]:
        """(the cached answer or None, whether it came from the shared file just now, not from this run)."""
        shared = False
        with self._lock:
            hit = self._mem.get(key)
            if hit is None and self._db is not None:
                row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
                if row:
                    hit = self._mem[key] = json.loads(row[0])
                    shared = True
        return (None if hit is None else [gen_from_dict(d) for d in hit]), shared

    def put(self, key: str, gens: list[dict[str, Any]], persist: bool = True) -> None:
        with self._lock:
            self._mem[key] = gens
            if persist and self._db is not None:
                self._db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, json.dumps(gens)))
                self._db.commit()

    def entries(self) -> dict[str, list[dict[str, Any]]]:
        """The calls held in memory (a run's journal, as resume loaded it), as plain data."""
        with self._lock:
            return dict(self._mem)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class Budget:
    """Actual spend of a run against a cap.

    Each real call reserves its worst-case cost before it is sent and
    settles to what it was billed after, so concurrent calls cannot all pass
    the check and overshoot together: spend stays under the cap.
    """

    def __init__(self, max_usd: float | None, spent: float = 0.0) -> None:
        self.max_usd = max_usd
        self.spent = spent
        self.reserved = 0.0
        self._in_flight = 0
        self._lock = threading.Lock()

    def reserve(self, bound: float) -> None:
        with self._lock:
            if self.max_usd is not None and self.spent + self.reserved + bound > self.max_usd:
                raise BudgetExceeded(
                    f"stopped: the next call could cost up to ${bound:.6f}, which would take the spend "
                    f"(${self.spent:.6f}, ${self.reserved:.6f} more in flight) past --max-usd ${self.max_usd:g}"
                )
            self.reserved += bound
            self._in_flight += 1

    def settle(self, bound: float, usd: float) -> None:
        """A reserved call ended: release its reservation, count what it cost."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            # with nothing in flight nothing is reserved (no float residue of the sums)
            self.reserved = max(0.0, self.reserved - bound) if self._in_flight else 0.0
            self.spent += usd


def _upper_bound(price: Price, prompts: Sequence[Sequence[Message]], params: GenParams) -> float:
    return upper_bound_usd(price, prompts, params.n, params.max_tokens)


class Ledger(Protocol):
    """Where a journaled model's calls are looked up, paid for and written down.

    Local runs keep all of it in the process (:class:`LocalLedger`); a run
    spread over machines keeps it on the driver and its workers reach it
    remotely, so the methods are coroutines.
    """

    async def lookup(self, key: str) -> list[Generation] | None: ...
    async def reserve(self, bound: float) -> None: ...
    async def settle(self, bound: float, usd: float) -> None: ...
    async def record(self, record: dict[str, Any], cacheable: bool = False) -> None: ...


class LocalLedger:
    """A run's cache, journal and budget in this process."""

    def __init__(self, cache: CallCache, journal: Journal, budget: Budget, persist: bool = True) -> None:
        self.cache, self.journal, self.budget, self.persist = cache, journal, budget, persist

    async def lookup(self, key: str) -> list[Generation] | None:
        hit, shared = self.cache.lookup(key)
        if shared and hit is not None:
            # an answer another run paid for: journaled here too (at no cost to this run), so the run
            # directory alone replays and resumes, on a machine without this one's shared cache
            first = hit[0]
            self.journal.write({"type": "call", "key": key, "model": first.model, "usd": 0.0,
                                "from": "shared cache", "generations": [gen_to_dict(g) for g in hit]})
        return hit

    async def reserve(self, bound: float) -> None:
        self.budget.reserve(bound)

    async def settle(self, bound: float, usd: float) -> None:
        self.budget.settle(bound, usd)

    async def record(self, record: dict[str, Any], cacheable: bool = False) -> None:
        self.journal.write(record)
        if cacheable and record.get("type") == "call":
            self.cache.put(record["key"], record["generations"], persist=self.persist)


class JournaledModel:
    """A Model that answers repeated calls from cache and journals real ones."""

    def __init__(self, inner: Model, price: Price, cache: CallCache | None = None, journal: Journal | None = None,
                 budget: Budget | None = None, use_cache: bool = True, *, ledger: Ledger | None = None) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.price = price
        if ledger is None:
            if cache is None or journal is None or budget is None:
                raise TypeError("JournaledModel needs a ledger, or a cache, a journal and a budget")
            ledger = LocalLedger(cache, journal, budget, persist=use_cache)
        self.ledger = ledger
        self.use_cache = use_cache
        self.real_calls = 0
        self.cached_calls = 0

    async def _call(self, kind: str, prompts: Sequence[Sequence[Message]], params: GenParams) -> list[Generation]:
        request_params = dict(getattr(self.inner, "params", None) or {})
        if getattr(self.inner, "native", False) and (fields := native_fields.get()):
            # a served model asked to answer natively (a JSON schema, tools) gets other requests
            request_params["native"] = fields
        key = call_key(self.spec, kind, prompts, params, request_params or None)
        cacheable = params.seed is not None  # unseeded sampling must stay random
        ledger = self.ledger
        if cacheable and self.use_cache:
            hit = await ledger.lookup(key)
            if hit is not None:
                self.cached_calls += 1
                for g in hit:
                    g.extra["cached"] = True
                report_samples(sum(len(g.completions) for g in hit))
                return hit
        bound = _upper_bound(self.price, prompts, params)
        await ledger.reserve(bound)
        intent = None
        if bound > 0:
            # a priced call is journaled before it is sent: if the run dies while it is in flight,
            # the API may bill it although no answer was kept, and --resume counts it (see runner)
            intent = secrets.token_hex(6)
            try:
                await ledger.record({"type": "intent", "intent": intent, "key": key, "model": self.spec,
                                     "bound": bound})
            except BaseException:
                await ledger.settle(bound, 0.0)
                raise
        try:
            if kind == "generate":
                gens = [await self.inner.generate(prompts[0], params)]
            else:
                gens = list(await self.inner.generate_many(prompts, params))
        except BackendError as exc:
            # requests that were answered (and billed) before the failure are spend like any other
            paid = [g for g in exc.spent if isinstance(g, Generation)]
            usd = sum(self.price.cost_of(g) for g in paid)
            await ledger.settle(bound, usd)
            if paid or intent:
                await ledger.record({"type": "call_failed", "key": key, "model": self.spec, "kind": kind,
                                     "usd": usd, "params": asdict(params), "error": str(exc),
                                     "generations": [gen_to_dict(g) for g in paid], "intent": intent})
            raise
        except BaseException:
            await ledger.settle(bound, 0.0)
            raise
        self.real_calls += 1
        usd = sum(self.price.cost_of(g) for g in gens)
        await ledger.settle(bound, usd)
        data = [gen_to_dict(g) for g in gens]
        record = {"type": "call", "key": key, "model": self.spec, "kind": kind, "usd": usd,
                  "params": asdict(params), "generations": data}
        if intent:
            record["intent"] = intent
        await ledger.record(record, cacheable=cacheable)
        return gens

    async def generate(self, messages: Sequence[Message], params: GenParams) -> Generation:
        return (await self._call("generate", [messages], params))[0]

    async def generate_many(self, prompts: Sequence[Sequence[Message]], params: GenParams) -> list[Generation]:
        return await self._call("generate_many", list(prompts), params)
