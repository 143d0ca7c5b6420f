"""Charging a key per model call, so that no call that was paid for goes uncharged.

The server's models are shared by every request, so the key a call is made
for travels in a context variable that :meth:`Service.solve` sets; tasks the
cascade starts inherit it. Each call reserves its worst-case cost on that key
before it is sent and settles when it ends:

* answered: charged what it cost (the price table, as the result's cost);
* failed after partial answers (``BackendError.spent``): charged what was answered;
* cancelled (the client hung up, the server's time limit): charged the whole
  reservation, because the upstream bills a request it has received whether
  or not anyone waits for the answer.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any, Callable, Sequence

from ..errors import BackendError
from ..models.base import Generation, GenParams, Message
from ..pricing import Price, upper_bound_usd
from .ledger import Account, Ledger

# (ledger, account) of the request being solved; None outside a request (no metering)
CURRENT: ContextVar[tuple[Ledger, Account] | None] = ContextVar("cope_serve_account", default=None)


class MeteredModel:
    """A Model that reserves and charges each call on the current request's key."""

    def __init__(self, inner: Any, price: Price, tier: str = "",
                 on_charge: "Callable[[str, str, float], None] | None" = None) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.price = price
        self.tier = tier
        self.on_charge = on_charge  # (key name, tier, USD) each time a call is charged: /metrics

    def __getattr__(self, name: str) -> Any:  # everything else (aclose, counters) is the backend's
        return getattr(self.inner, name)

    async def _metered(self, prompts: Sequence[Sequence[Message]], params: GenParams, call: Any) -> Any:
        who = CURRENT.get()
        if who is None:
            return await call()
        ledger, account = who
        bound = upper_bound_usd(self.price, prompts, params.n, params.max_tokens)
        hold = ledger.reserve(account, bound)

        def settle(usd: float) -> None:
            ledger.settle(hold, usd)
            if self.on_charge is not None:
                self.on_charge(account.name, self.tier, usd)

        try:
            out = await call()
        except BackendError as exc:
            paid = [g for g in exc.spent if isinstance(g, Generation)]
            settle(sum(self.price.cost_of(g) for g in paid))
            raise
        except (asyncio.CancelledError, TimeoutError):
            settle(bound)  # sent, so billed; what it cost is unknown: the most it could
            raise
        except BaseException:
            ledger.release(hold)
            raise
        gens = out if isinstance(out, list) else [out]
        settle(sum(self.price.cost_of(g) for g in gens))
        return out

    async def generate(self, messages: Sequence[Message], params: GenParams) -> Generation:
        return await self._metered([messages], params, lambda: self.inner.generate(messages, params))

    async def generate_many(self, prompts: Sequence[Sequence[Message]], params: GenParams) -> list[Generation]:
        return await self._metered(list(prompts), params, lambda: self.inner.generate_many(prompts, params))


def meter(cope: Any, on_charge: "Callable[[str, str, float], None] | None" = None) -> Any:
    """Wrap each of a Cope's models (once) so its calls charge the current request's key."""
    for tier, bound in cope.models.items():
        if not isinstance(bound.model, MeteredModel):
            bound.model = MeteredModel(bound.model, bound.price, tier, on_charge)
    return cope
