"""``cope keys usage``: every key's spend, read from the ledger without a running server.

The SQLite ledger is a file any process on the host can open, so an operator
reads what each key spent (in total, today, this month), what is held by
calls in flight, and the ledger's event log (holds charged because the
process that made them died) with the same numbers the server enforces.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ConfigError
from .config import ServerConfig
from .ledger import Account, Ledger, usage_dict


def key_usage(config: ServerConfig, events: int = 20) -> dict[str, Any]:
    """Each configured key's usage, the accounts the ledger holds that no key names, recent events."""
    if config.ledger.backend == "memory":
        raise ConfigError("this config keeps spend in memory ([ledger] backend = \"memory\"): only the running "
                          "server knows it; ask its GET /v1/cope/usage")
    if config.ledger.backend == "sqlite" and not config.ledger_path().is_file():
        return {"ledger": config.ledger.backend, "keys": [], "unknown_accounts": [], "events": [],
                "note": "no spend recorded yet: the ledger file does not exist"}
    store = config.open_ledger()
    try:
        ledger = Ledger(config.keys, store)
        rows = [ledger.usage(a) for a in ledger.accounts]
        for row in rows:  # this process's counters mean nothing here
            for k in ("requests", "in_flight", "refused"):
                row.pop(k)
        known = {a.store_id for a in ledger.accounts}
        unknown = []
        for account_id in store.accounts():  # sqlite and redis list them; memory was refused above
            if account_id not in known:
                row = usage_dict(Account(account_id, store_id=account_id), store.usage(account_id, time.time()))
                unknown.append({k: row[k] for k in ("key", "spent_usd", "reserved_usd")})
        return {"ledger": config.ledger.backend, "keys": rows, "unknown_accounts": unknown,
                "events": store.events(events)}
    finally:
        store.close()


def render(report: dict[str, Any]) -> str:
    """The usage report as a table."""
    lines = []
    if report.get("note"):
        lines.append(report["note"])
    if report["keys"]:
        lines.append(f"{'key':<24} {'spent':>12} {'budget':>12} {'today':>12} {'day budget':>12} "
                     f"{'month':>12} {'month budget':>12} {'held':>10}")

        def usd(v: float | None) -> str:
            return "-" if v is None else f"${v:.6f}"

        for r in report["keys"]:
            lines.append(f"{r['key']:<24} {usd(r['spent_usd']):>12} {usd(r['budget_usd']):>12} "
                         f"{usd(r['daily']['spent_usd']):>12} {usd(r['daily']['budget_usd']):>12} "
                         f"{usd(r['monthly']['spent_usd']):>12} {usd(r['monthly']['budget_usd']):>12} "
                         f"{usd(r['reserved_usd']):>10}")
    for r in report["unknown_accounts"]:
        lines.append(f"in the ledger but not in this config: {r['key']} (${r['spent_usd']:.6f} spent)")
    for e in report["events"]:
        lines.append(f"event: {e['kind']} call {e['call_id']} key {e['account']}: ${e['usd']:.6f}; {e['detail']}")
    return "\n".join(lines)
