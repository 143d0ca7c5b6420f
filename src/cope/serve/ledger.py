"""Who is calling and what they have spent: API keys and USD budgets, in memory.

Spend is kept in this process only and starts at zero on every restart: the
server is a single process in front of one machine's models, and a budget here
is a guard against a runaway client, not an invoice. An operator who needs
spend to survive restarts reads each response's ``cope.cost_usd``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from .config import KeyConfig


class AuthError(Exception):
    """No key, or a key the server does not know (HTTP 401)."""


class BudgetExceeded(Exception):
    """The key has spent its budget (HTTP 429, insufficient_quota)."""


@dataclass
class Account:
    """Running totals for one key. ``budget_usd`` None means unlimited."""

    name: str
    budget_usd: float | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0  # worst-case cost of the model calls in flight
    calls_in_flight: int = 0
    requests: int = 0
    in_flight: int = 0
    refused: int = 0

    def to_dict(self) -> dict[str, object]:
        left = None if self.budget_usd is None else max(0.0, self.budget_usd - self.spent_usd)
        return {"key": self.name, "spent_usd": self.spent_usd, "budget_usd": self.budget_usd,
                "remaining_usd": left, "reserved_usd": self.reserved_usd, "requests": self.requests,
                "in_flight": self.in_flight,
                "refused": self.refused}


class Ledger:
    """Keys, budgets and spend.

    Without configured keys the server is open and all spend goes to one
    account named "anonymous". Every model call reserves its worst-case cost
    before it is sent (see :mod:`cope.serve.metering`) and is charged what it
    cost when it ends, or its whole reservation when it was cut off (a client
    that hung up: the upstream bills the request anyway). A call is let
    through while spend plus reservations is under the budget, so a key
    overshoots its budget by at most one reserved call, however many
    requests it sends at once.
    """

    def __init__(self, keys: list[KeyConfig]) -> None:
        self._secrets = [(k.secret.encode(), Account(k.name, k.budget_usd)) for k in keys]
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

    def admit(self, account: Account) -> None:
        """Refuse a key whose budget is spent; count the request otherwise."""
        if account.budget_usd is not None and account.spent_usd + account.reserved_usd >= account.budget_usd:
            account.refused += 1
            raise BudgetExceeded(
                f"key '{account.name}' has spent ${account.spent_usd:.6f} of its ${account.budget_usd:.6f} budget"
            )
        account.requests += 1

    def charge(self, account: Account, usd: float) -> None:
        account.spent_usd += max(0.0, usd)

    def reserve(self, account: Account, bound: float) -> None:
        """Hold ``bound`` USD for a call about to be sent; refuse once the budget is taken."""
        if account.budget_usd is not None and account.spent_usd + account.reserved_usd >= account.budget_usd:
            account.refused += 1
            raise BudgetExceeded(
                f"key '{account.name}' has spent ${account.spent_usd:.6f} of its ${account.budget_usd:.6f} "
                f"budget (${account.reserved_usd:.6f} more held by calls in flight)"
            )
        account.reserved_usd += bound
        account.calls_in_flight += 1

    def settle(self, account: Account, bound: float, usd: float) -> None:
        """A reserved call ended: release the hold, charge what it cost."""
        account.calls_in_flight = max(0, account.calls_in_flight - 1)
        account.reserved_usd = max(0.0, account.reserved_usd - bound) if account.calls_in_flight else 0.0
        self.charge(account, usd)
