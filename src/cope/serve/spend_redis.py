"""The networked spend store: Redis, for replicas of the server on several hosts.

Why Redis and not PostgreSQL: every paid call does a reserve and a settle, so
the store sits on the request path; in Redis each is one server-side Lua
script, atomic by construction (scripts run one at a time), one round trip,
with no lock contention and a small pure-Python client. Durability is the
Redis server's: run it with ``appendonly yes`` so a Redis restart keeps spend.

Layout under a key prefix (default ``cope:``): ``spend:<account>`` (a hash of
period id -> USD), ``hold:<call id>`` (a hash: account, bound, periods,
created, owner), ``holds:<account>`` (a sorted set of call ids by creation
time), ``events`` (a list of JSON records) and ``accounts`` (a set). The
scripts take key names from their arguments, so one Redis primary holds it
all (not a Redis Cluster).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

from .spend import Hold, Refused, Usage, _Periods

# Charge every hold of the account older than the cut-off at its bound, and log it.
_EXPIRE = """
local function expire(p, acct, cutoff, now)
  local zkey = p .. 'holds:' .. acct
  for _, cid in ipairs(redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff)) do
    local hkey = p .. 'hold:' .. cid
    local bound = redis.call('HGET', hkey, 'bound')
    if bound then
      local periods = redis.call('HGET', hkey, 'periods')
      local created = tonumber(redis.call('HGET', hkey, 'created'))
      local owner = redis.call('HGET', hkey, 'owner')
      for pid in string.gmatch(periods, '[^,]+') do
        redis.call('HINCRBYFLOAT', p .. 'spend:' .. acct, pid, bound)
      end
      redis.call('DEL', hkey)
      redis.call('RPUSH', p .. 'events', cjson.encode({at = now, kind = 'expired', call_id = cid, account = acct,
        usd = tonumber(bound), detail = 'held by ' .. owner .. ' for ' .. string.format('%.0f', now - created) ..
        ' s without a settle: charged its bound'}))
    end
    redis.call('ZREM', zkey, cid)
  end
end
local function held(p, acct, pid)
  local total = 0
  local needle = ',' .. pid .. ','
  for _, cid in ipairs(redis.call('ZRANGE', p .. 'holds:' .. acct, 0, -1)) do
    local hkey = p .. 'hold:' .. cid
    local periods = redis.call('HGET', hkey, 'periods')
    if periods and string.find(',' .. periods .. ',', needle, 1, true) then
      total = total + tonumber(redis.call('HGET', hkey, 'bound'))
    end
  end
  return total
end
local function spent(p, acct, pid)
  return tonumber(redis.call('HGET', p .. 'spend:' .. acct, pid) or '0')
end
"""

# ARGV: prefix, account, call id, bound, now, stale_s, owner, periods (csv), then (kind, period id, budget)...
_RESERVE = _EXPIRE + """
local p, acct, id = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[5])
expire(p, acct, now - tonumber(ARGV[6]), now)
for i = 9, #ARGV, 3 do
  local pid, budget = ARGV[i + 1], tonumber(ARGV[i + 2])
  local s, h = spent(p, acct, pid), held(p, acct, pid)
  if s + h >= budget then
    return {'refused', ARGV[i], tostring(s), tostring(h), tostring(budget)}
  end
end
redis.call('HSET', p .. 'hold:' .. id, 'account', acct, 'bound', ARGV[4], 'periods', ARGV[8], 'created', ARGV[5],
           'owner', ARGV[7])
redis.call('ZADD', p .. 'holds:' .. acct, now, id)
redis.call('SADD', p .. 'accounts', acct)
return {'ok'}
"""

# ARGV: prefix, call id, usd, now, account, bound
_SETTLE = """
local p, id = ARGV[1], ARGV[2]
local hkey = p .. 'hold:' .. id
local acct = redis.call('HGET', hkey, 'account')
if not acct then
  redis.call('RPUSH', p .. 'events', cjson.encode({at = tonumber(ARGV[4]), kind = 'late-settle', call_id = id,
    account = ARGV[5], usd = tonumber(ARGV[3]), detail = 'settled after its hold of ' .. ARGV[6] ..
    ' was charged as stale; not charged again'}))
  return 0
end
for pid in string.gmatch(redis.call('HGET', hkey, 'periods'), '[^,]+') do
  redis.call('HINCRBYFLOAT', p .. 'spend:' .. acct, pid, ARGV[3])
end
redis.call('DEL', hkey)
redis.call('ZREM', p .. 'holds:' .. acct, id)
return 1
"""

# ARGV: prefix, account, now, stale_s, then period ids...; returns spent, held pairs and the hold count
_USAGE = _EXPIRE + """
local p, acct = ARGV[1], ARGV[2]
local now = tonumber(ARGV[3])
expire(p, acct, now - tonumber(ARGV[4]), now)
local out = {}
for i = 5, #ARGV do
  table.insert(out, tostring(spent(p, acct, ARGV[i])))
  table.insert(out, tostring(held(p, acct, ARGV[i])))
end
table.insert(out, tostring(redis.call('ZCARD', p .. 'holds:' .. acct)))
return out
"""


class RedisStore(_Periods):
    """Spend in one Redis server, shared by every replica that points at it."""

    def __init__(self, url: str, tz: str = "UTC", stale_s: float = 3600.0, prefix: str = "cope:") -> None:
        super().__init__(tz, stale_s)
        import redis

        self.prefix = prefix
        self.owner = f"pid {os.getpid()} on {socket.gethostname()}"
        self._r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, decode_responses=True)
        self._r.ping()  # a wrong URL or a down server fails at startup, not on the first paid call
        self._reserve = self._r.register_script(_RESERVE)
        self._settle = self._r.register_script(_SETTLE)
        self._usage = self._r.register_script(_USAGE)
        import time

        for account in self.accounts():  # holds left by processes that died while this one was down
            self.usage(account, time.time())

    def reserve(self, account: str, bound: float, budgets: dict[str, float], now: float) -> Hold:
        ids = self.ids(now)
        hold = Hold(uuid.uuid4().hex, account, bound, tuple(ids.values()))
        args: list[Any] = [self.prefix, account, hold.call_id, repr(bound), repr(now), repr(self.stale_s), self.owner,
                           ",".join(hold.periods)]
        for kind, budget in budgets.items():
            args += [kind, ids[kind], repr(budget)]
        out = self._reserve(args=args)
        if out[0] == "refused":
            raise Refused(out[1], float(out[2]), float(out[3]), float(out[4]))
        return hold

    def settle(self, hold: Hold, usd: float) -> None:
        import time

        self._settle(args=[self.prefix, hold.call_id, repr(max(0.0, usd)), repr(time.time()), hold.account,
                           f"{hold.bound:.6f}"])

    def release(self, hold: Hold) -> None:
        self.settle(hold, 0.0)

    def usage(self, account: str, now: float) -> Usage:
        ids = self.ids(now)
        out = self._usage(args=[self.prefix, account, repr(now), repr(self.stale_s), *ids.values()])
        use = Usage(holds=int(float(out[-1])))
        for i, kind in enumerate(ids):
            use.spent[kind], use.held[kind] = float(out[2 * i]), float(out[2 * i + 1])
        return use

    def accounts(self) -> list[str]:
        return sorted(self._r.smembers(self.prefix + "accounts"))

    def events(self, limit: int = 100) -> list[dict[str, object]]:
        return [json.loads(e) for e in self._r.lrange(self.prefix + "events", -limit, -1)]

    def close(self) -> None:
        self._r.close()
