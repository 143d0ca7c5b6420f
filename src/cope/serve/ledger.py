"""Who is calling and what they have spent: API keys, budgets per period, and the spend store.

Authentication and this process's counters (requests, refusals, solves in
flight) live here; spend and holds live in a :mod:`cope.serve.spend` store,
which is a SQLite file by default, so a budget holds across restarts and
across the worker processes of one host. Budgets are per key: a total
(``budget_usd``), a day's (``daily_usd``) and a month's (``monthly_usd``),
days and months counted in the ledger's time zone.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from .config import KeyConfig
from .spend import Hold, MemoryStore, Refused, SpendStore, Usage

class AuthError(Exception):
    """No key, or a key the server does not know (HTTP 401)."""


class BudgetExceeded(Exception):
    """The key has spent its budget (HTTP 429, insufficient_quota)."""


_PERIOD_NAMES = {"total": "total", "day": "daily", "month": "monthly"}


@dataclass
class Account:
    """One key: its label, the id its spend is kept under, its budgets, this process's counters."""

    name: str
    budgets: dict[str, float] = field(default_factory=dict)  # by period kind: total, day, month
    store_id: str = ""
    requests: int = 0
    in_flight: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        self.store_id = self.store_id or self.name

    @property
    def budget_usd(self) -> float | None:
        return self.budgets.get("total")


class Ledger:
    """Keys, budgets and spend.

    Without configured keys the server is open and all spend goes to one
    account named "anonymous". Every model call reserves its worst-case cost
    before it is sent (see :mod:`cope.serve.metering`) and is charged what it
    cost when it ends, or its whole reservation when it was cut off (a client
    that hung up: the upstream bills the request anyway). A call is let
    through while spend plus holds is under each of the key's budgets, so a
    key overshoots a budget by at most one reserved call, however many
    requests it sends at once and however many processes share the store.
    """

    def __init__(self, keys: list[KeyConfig], store: SpendStore | None = None) -> None:
        self.store: SpendStore = store if store is not None else MemoryStore()
        self._secrets = [(k.secret.encode(), Account(k.name, k.budgets(), k.account)) for k in keys]
        self.open = not keys
        self._anonymous = Account("anonymous")

    @property
    def accounts(self) -> list[Account]:
        return [self._anonymous] if self.open else [a for _, a in self._secrets]

    def authenticate(self, authorization: str | None) -> Account:
        """The account of a ``Bearer`` key; every configured key is compared, in constant time."""
        if self.open:
            return self._anonymous
        if not authorization:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
        given = token.strip().encode()
        found = None
        for secret, account in self._secrets:
            if hmac.compare_digest(secret, given):
                found = account
        if found is None:
            raise AuthError("invalid API key")
        return found

    def _refusal(self, account: Account, exc: Refused) -> BudgetExceeded:
        account.refused += 1
        which = "" if exc.period == "total" else f"{_PERIOD_NAMES[exc.period]} "
        held = f" (${exc.held:.6f} more held by calls in flight)" if exc.held else ""
        return BudgetExceeded(f"key '{account.name}' has spent ${exc.spent:.6f} of its ${exc.budget:.6f} "
                              f"{which}budget{held}")

    def admit(self, account: Account) -> None:
        """Refuse a key whose budget is spent; count the request otherwise."""
        if account.budgets:
            use = self.store.usage(account.store_id, time.time())
            for kind, budget in account.budgets.items():
                if use.spent[kind] + use.held[kind] >= budget:
                    raise self._refusal(account, Refused(kind, use.spent[kind], use.held[kind], budget))
        account.requests += 1

    def reserve(self, account: Account, bound: float) -> Hold:
        """Hold ``bound`` USD for a call about to be sent; refuse once a budget is taken."""
        try:
            return self.store.reserve(account.store_id, bound, account.budgets, time.time())
        except Refused as exc:
            raise self._refusal(account, exc) from None

    def settle(self, hold: Hold, usd: float) -> None:
        """A reserved call ended: release the hold, charge what it cost."""
        self.store.settle(hold, usd)

    def release(self, hold: Hold) -> None:
        """A reserved call was never sent: release the hold, charge nothing."""
        self.store.release(hold)

    def usage(self, account: Account) -> dict[str, object]:
        """The key's spend and budgets now, read from the store (every process's calls)."""
        return usage_dict(account, self.store.usage(account.store_id, time.time()))


def usage_dict(account: Account, use: Usage) -> dict[str, object]:
    """What ``GET /v1/cope/usage`` and ``cope keys usage`` show for one key.

    ``remaining_usd`` is what the tightest of its budgets leaves (None: no budget).
    """
    left = [max(0.0, b - use.spent[k]) for k, b in account.budgets.items()]
    periods = {_PERIOD_NAMES[k]: {"spent_usd": use.spent[k], "budget_usd": account.budgets.get(k),
                                  "reserved_usd": use.held[k]} for k in ("day", "month")}
    return {"key": account.name, "spent_usd": use.spent["total"], "budget_usd": account.budget_usd,
            "remaining_usd": min(left) if left else None, "reserved_usd": use.held["total"],
            "calls_in_flight": use.holds, "requests": account.requests, "in_flight": account.in_flight,
            "refused": account.refused, **periods}
