"""Where each key's spend is kept: in memory, or in a SQLite file that survives restarts.

A budget is only a budget if a restart does not reset it and two processes
serving the same keys do not each spend it in full. So spend lives in a store
that every worker process of a host opens (SQLite, WAL mode), with three
operations, each one transaction:

* ``reserve``: before a paid call is sent, hold its worst-case cost; refused
  (``Refused``) when a budget of the key is already taken by spend plus holds;
* ``settle``: the call ended; drop the hold and charge what it cost;
* ``release``: the call was never sent; drop the hold, charge nothing.

A hold names the periods it counts in (the total, the day and the month it
started in, in the ledger's time zone), so a call that straddles midnight is
charged to the day it was admitted against. A process that dies leaves its
holds behind; any process that opens the store later charges a hold older
than ``stale_s`` at its full bound (the upstream bills a request it received,
whether or not anyone read the answer) and writes that into the store's event
log with the call's id, so nothing is lost silently. A settle that arrives
after its hold was charged that way is logged too, never charged twice.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Protocol, Sequence
from zoneinfo import ZoneInfo

# The periods a budget can be set for, by their config names.
PERIODS = {"budget_usd": "total", "daily_usd": "day", "monthly_usd": "month"}


class Refused(Exception):
    """A budget of the key is taken: ``period`` names which ("total", "day" or "month")."""

    def __init__(self, period: str, spent: float, held: float, budget: float) -> None:
        super().__init__(f"{period} budget taken")
        self.period, self.spent, self.held, self.budget = period, spent, held, budget


@dataclass(frozen=True)
class Hold:
    """A reservation: what was held, on whose key, and in which periods it is charged."""

    call_id: str
    account: str
    bound: float
    periods: tuple[str, ...]


@dataclass
class Usage:
    """One key's spend and holds in the current periods."""

    spent: dict[str, float] = field(default_factory=dict)  # by period id ("total", "day:2026-12-02", ...)
    held: dict[str, float] = field(default_factory=dict)
    holds: int = 0


def zone(name: str) -> tzinfo:
    """A time zone by name; UTC needs no time zone database."""
    return timezone.utc if name.upper() == "UTC" else ZoneInfo(name)


def period_ids(now: float, tz: tzinfo) -> dict[str, str]:
    """The current period id for each kind of budget, in the ledger's time zone."""
    local = datetime.fromtimestamp(now, tz)
    return {"total": "total", "day": f"day:{local:%Y-%m-%d}", "month": f"month:{local:%Y-%m}"}


class SpendStore(Protocol):
    """What the ledger needs from a backend; every method is one atomic step."""

    def reserve(self, account: str, bound: float, budgets: dict[str, float], now: float) -> Hold: ...

    def settle(self, hold: Hold, usd: float) -> None: ...

    def release(self, hold: Hold) -> None: ...

    def usage(self, account: str, now: float) -> Usage: ...

    def events(self, limit: int = 100) -> list[dict[str, object]]: ...

    def close(self) -> None: ...


class _Periods:
    """Shared by the backends: the period ids a hold made ``now`` counts in."""

    def __init__(self, tz: str, stale_s: float) -> None:
        self.tz = zone(tz)
        self.stale_s = stale_s

    def ids(self, now: float) -> dict[str, str]:
        return period_ids(now, self.tz)


class MemoryStore(_Periods):
    """Spend kept in this process only: gone on restart, not shared by workers."""

    def __init__(self, tz: str = "UTC", stale_s: float = 3600.0) -> None:
        super().__init__(tz, stale_s)
        self._spent: dict[tuple[str, str], float] = {}
        self._holds: dict[str, tuple[Hold, float]] = {}
        self._events: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def reserve(self, account: str, bound: float, budgets: dict[str, float], now: float) -> Hold:
        ids = self.ids(now)
        with self._lock:
            for kind, budget in budgets.items():
                pid = ids[kind]
                spent = self._spent.get((account, pid), 0.0)
                held = sum(h.bound for h, _ in self._holds.values() if h.account == account and pid in h.periods)
                if spent + held >= budget:
                    raise Refused(kind, spent, held, budget)
            hold = Hold(uuid.uuid4().hex, account, bound, tuple(ids.values()))
            self._holds[hold.call_id] = (hold, now)
            return hold

    def settle(self, hold: Hold, usd: float) -> None:
        with self._lock:
            if self._holds.pop(hold.call_id, None) is None:
                return
            for pid in hold.periods:
                self._spent[(hold.account, pid)] = self._spent.get((hold.account, pid), 0.0) + max(0.0, usd)

    def release(self, hold: Hold) -> None:
        self.settle(hold, 0.0)

    def usage(self, account: str, now: float) -> Usage:
        out = Usage()
        with self._lock:
            for kind, pid in self.ids(now).items():
                out.spent[kind] = self._spent.get((account, pid), 0.0)
                out.held[kind] = sum(h.bound for h, _ in self._holds.values()
                                     if h.account == account and pid in h.periods)
            out.holds = sum(1 for h, _ in self._holds.values() if h.account == account)
        return out

    def events(self, limit: int = 100) -> list[dict[str, object]]:
        return list(self._events[-limit:])

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (account TEXT NOT NULL, period TEXT NOT NULL, usd REAL NOT NULL,
                                  PRIMARY KEY (account, period));
CREATE TABLE IF NOT EXISTS holds (call_id TEXT PRIMARY KEY, account TEXT NOT NULL, bound REAL NOT NULL,
                                  periods TEXT NOT NULL, created REAL NOT NULL, owner TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS holds_by_account ON holds (account);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
                                   call_id TEXT NOT NULL, account TEXT NOT NULL, usd REAL NOT NULL,
                                   detail TEXT NOT NULL);
"""


class SqliteStore(_Periods):
    """Spend in a SQLite file, shared by every process on the host that opens it.

    WAL mode lets readers run beside the one writer; each operation is one
    ``BEGIN IMMEDIATE`` transaction, so two workers cannot both see room for
    a call and both hold it. Writers wait up to ``busy_s`` for each other.
    """

    def __init__(self, path: str | os.PathLike[str], tz: str = "UTC", stale_s: float = 3600.0,
                 busy_s: float = 10.0) -> None:
        super().__init__(tz, stale_s)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.owner = f"pid {os.getpid()}"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=busy_s, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a settled charge survives a power cut, not only a crash
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                self._db.execute(stmt)
        with self._tx() as db:  # holds left by processes that died while this one was down
            self._expire(db, time.time())

    class _Tx:
        def __init__(self, store: "SqliteStore") -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._db

        def __exit__(self, kind: object, exc: object, tb: object) -> None:
            try:
                self.store._db.execute("COMMIT" if kind is None or kind is Refused else "ROLLBACK")
            finally:
                self.store._lock.release()

    def _tx(self) -> "SqliteStore._Tx":
        return SqliteStore._Tx(self)

    def _expire(self, db: sqlite3.Connection, now: float, account: str | None = None) -> None:
        """Charge holds older than ``stale_s`` at their bound, and log each one."""
        where, args = "created < ?", [now - self.stale_s]
        if account is not None:
            where, args = where + " AND account = ?", args + [account]
        rows = db.execute(f"SELECT call_id, account, bound, periods, created, owner FROM holds WHERE {where}",
                          args).fetchall()
        for call_id, acct, bound, periods, created, owner in rows:
            for pid in periods.split(","):
                self._add(db, acct, pid, bound)
            db.execute("DELETE FROM holds WHERE call_id = ?", (call_id,))
            age = now - created
            db.execute("INSERT INTO events (at, kind, call_id, account, usd, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       (now, "expired", call_id, acct, bound,
                        f"held by {owner} for {age:.0f} s without a settle: charged its bound"))

    @staticmethod
    def _add(db: sqlite3.Connection, account: str, pid: str, usd: float) -> None:
        db.execute("INSERT INTO spend (account, period, usd) VALUES (?, ?, ?) "
                   "ON CONFLICT (account, period) DO UPDATE SET usd = usd + excluded.usd", (account, pid, usd))

    @staticmethod
    def _spent(db: sqlite3.Connection, account: str, pid: str) -> float:
        row = db.execute("SELECT usd FROM spend WHERE account = ? AND period = ?", (account, pid)).fetchone()
        return float(row[0]) if row else 0.0

    @staticmethod
    def _held(db: sqlite3.Connection, account: str, pid: str) -> float:
        row = db.execute("SELECT COALESCE(SUM(bound), 0) FROM holds WHERE account = ? "
                         "AND (',' || periods || ',') LIKE ?", (account, f"%,{pid},%")).fetchone()
        return float(row[0])

    def reserve(self, account: str, bound: float, budgets: dict[str, float], now: float) -> Hold:
        ids = self.ids(now)
        with self._tx() as db:
            self._expire(db, now, account)
            for kind, budget in budgets.items():
                spent, held = self._spent(db, account, ids[kind]), self._held(db, account, ids[kind])
                if spent + held >= budget:
                    raise Refused(kind, spent, held, budget)  # commits the expiry above
            hold = Hold(uuid.uuid4().hex, account, bound, tuple(ids.values()))
            db.execute("INSERT INTO holds (call_id, account, bound, periods, created, owner) VALUES (?, ?, ?, ?, ?, ?)",
                       (hold.call_id, account, bound, ",".join(hold.periods), now, self.owner))
            return hold

    def settle(self, hold: Hold, usd: float) -> None:
        usd = max(0.0, usd)
        with self._tx() as db:
            gone = db.execute("DELETE FROM holds WHERE call_id = ?", (hold.call_id,)).rowcount == 0
            if gone:  # charged at its bound already, by a process that took it for dead
                db.execute("INSERT INTO events (at, kind, call_id, account, usd, detail) VALUES (?, ?, ?, ?, ?, ?)",
                           (time.time(), "late-settle", hold.call_id, hold.account, usd,
                            f"settled after its hold of {hold.bound:.6f} was charged as stale; not charged again"))
                return
            for pid in hold.periods:
                self._add(db, hold.account, pid, usd)

    def release(self, hold: Hold) -> None:
        self.settle(hold, 0.0)

    def usage(self, account: str, now: float) -> Usage:
        out = Usage()
        with self._tx() as db:
            self._expire(db, now, account)
            for kind, pid in self.ids(now).items():
                out.spent[kind], out.held[kind] = self._spent(db, account, pid), self._held(db, account, pid)
            out.holds = db.execute("SELECT COUNT(*) FROM holds WHERE account = ?", (account,)).fetchone()[0]
        return out

    def accounts(self) -> list[str]:
        """Every account the file has spend or holds for."""
        with self._lock:
            rows = self._db.execute("SELECT account FROM spend UNION SELECT account FROM holds").fetchall()
        return sorted(r[0] for r in rows)

    def events(self, limit: int = 100) -> list[dict[str, object]]:
        with self._lock:
            rows = self._db.execute("SELECT at, kind, call_id, account, usd, detail FROM events "
                                    "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(("at", "kind", "call_id", "account", "usd", "detail"), r)) for r in reversed(rows)]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def budgets_of(limits: dict[str, float | None]) -> dict[str, float]:
    """The set budgets by period kind, from config names (budget_usd, daily_usd, monthly_usd)."""
    return {PERIODS[k]: v for k, v in limits.items() if v is not None}


__all__: Sequence[str] = ("Hold", "MemoryStore", "PERIODS", "Refused", "SpendStore", "SqliteStore", "Usage",
                          "budgets_of", "period_ids")
