"""Budgets counted across instances, in Redis.

Why Redis rather than PostgreSQL: a request's budgets (key, user, team, model group,
global) must be checked and held together, all or none. In Redis one Lua script does that
atomically in one round trip (~0.1 ms), with no row locks and so no lock ordering or
deadlocks between instances; in PostgreSQL it is a transaction taking a row lock per budget
(~1 ms, and every instance serialises on the global budget's row).

How it stays exact:
- Money is Redis integers (64-bit), changed only with HINCRBY from decimal strings the
  client sends; Lua never does arithmetic on amounts (its numbers are doubles, exact only
  to 2⁵³ picodollars ≈ $9,007). Each budget window keeps `avail = limit − spent −
  reserved`; a hold subtracts from `avail` and is refused when the result is below zero
  (the sign of a reply is exact), and taken back from every budget already touched.
- Idempotent: a hold is keyed by request id; reserving twice returns the first hold, and
  settling or releasing twice changes nothing (a settled marker lives for a day).
- No drift into false refusals: each hold has a deadline (`ledger.hold_ttl_s`); holds of
  an instance that died are swept and given back by the next script that runs.
- Seeded from the store: when a window's counter does not exist yet (a new window, a
  flushed Redis), it starts from the spend the store holds for that window.

The durable record stays the ledger store (PostgreSQL when instances share one); Redis
holds only the live counters.
"""

from __future__ import annotations

from typing import Any

from hybridfast import _core
from hybridfast.errors import ConfigError
from hybridfast.ledger import metrics
from hybridfast.ledger.budgets import Budget, BudgetState, refusal
from hybridfast.types import Caller

_SWEEP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
for _, rid in ipairs(expired) do
  local hk = ARGV[1] .. rid
  local h = redis.call('HMGET', hk, 'pos', 'neg', 'keys')
  if h[3] then
    for key in string.gmatch(h[3], '[^\\n]+') do
      if redis.call('EXISTS', key) == 1 then
        redis.call('HINCRBY', key, 'avail', h[1])
        redis.call('HINCRBY', key, 'reserved', h[2])
      end
    end
  end
  redis.call('DEL', hk)
  redis.call('ZREM', KEYS[1], rid)
end
"""

# Seeds budget keys KEYS[first..] from ARGV[seed..] triples (limit, spent, avail, expire_at).
_SEED = """
local function seed(first, base)
  for i = first, #KEYS do
    local a = base + (i - first) * 4
    if redis.call('EXISTS', KEYS[i]) == 0 then
      redis.call('HSET', KEYS[i], 'limit', ARGV[a], 'spent', ARGV[a + 1], 'reserved', '0',
                 'avail', ARGV[a + 2])
      if ARGV[a + 3] ~= '0' then redis.call('PEXPIREAT', KEYS[i], ARGV[a + 3]) end
    end
  end
end
"""

# KEYS: holds zset, hold hash, budget keys...  ARGV: hold prefix, request id, +amount,
# -amount, ttl ms, then seed quadruples.
RESERVE = (
    _SWEEP
    + _SEED
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {1} end
seed(3, 6)
for i = 3, #KEYS do
  if ARGV[3] ~= '0' and redis.call('HINCRBY', KEYS[i], 'avail', ARGV[4]) < 0 then
    for j = 3, i do redis.call('HINCRBY', KEYS[j], 'avail', ARGV[3]) end
    return {0, i - 2, redis.call('HGET', KEYS[i], 'avail')}
  end
end
local keys = {}
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[3])
  keys[#keys + 1] = KEYS[i]
end
redis.call('HSET', KEYS[2], 'pos', ARGV[3], 'neg', ARGV[4], 'keys', table.concat(keys, '\\n'))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[2])
return {1}
"""
)

# KEYS: holds zset, hold hash, settled marker, budget keys...  ARGV: hold prefix, request
# id, +cost, -cost, marker ttl ms, then seed quadruples.
SETTLE = (
    _SWEEP
    + _SEED
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local h = redis.call('HMGET', KEYS[2], 'pos', 'neg', 'keys')
if h[3] then
  for key in string.gmatch(h[3], '[^\\n]+') do
    if redis.call('EXISTS', key) == 1 then
      redis.call('HINCRBY', key, 'avail', h[1])
      redis.call('HINCRBY', key, 'reserved', h[2])
    end
  end
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[2])
end
seed(4, 6)
for i = 4, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'spent', ARGV[3])
  redis.call('HINCRBY', KEYS[i], 'avail', ARGV[4])
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
return 1
"""
)

# KEYS: holds zset, hold hash.  ARGV: hold prefix, request id.
RELEASE = (
    _SWEEP
    + """
local h = redis.call('HMGET', KEYS[2], 'pos', 'neg', 'keys')
if not h[3] then return 0 end
for key in string.gmatch(h[3], '[^\\n]+') do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'avail', h[1])
    redis.call('HINCRBY', key, 'reserved', h[2])
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: one budget key. ARGV: new limit, +delta. Changes the limit of a live window.
CHANGE_LIMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'avail', ARGV[2])
return 1
"""

_SETTLED_TTL_MS = 86_400_000


class RedisBudgets:
    """Shared budget counters; every method is one script call (one round trip)."""

    def __init__(
        self, url: str, prefix: str, budgets: list[Budget], *, hold_ttl_s: float = 900.0
    ) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigError(
                "ledger.counter redis needs the redis package",
                hint="pip install 'hybridfast[redis]'",
            ) from None
        self._redis: Any = aioredis.from_url(url)
        self.prefix = prefix
        self.budgets = budgets  # (the setter builds the core's matcher)
        self.hold_ttl_ms = int(hold_ttl_s * 1000)
        self._reserve = self._redis.register_script(RESERVE)
        self._settle = self._redis.register_script(SETTLE)
        self._release = self._redis.register_script(RELEASE)
        self._change = self._redis.register_script(CHANGE_LIMIT)
        # What the store held for each budget's window when this instance started.
        self._seed_spent: dict[tuple[str, str | None, str, int], int] = {}

    @property
    def budgets(self) -> list[Budget]:
        return self._budgets

    @budgets.setter
    def budgets(self, budgets: list[Budget]) -> None:
        self._budgets = list(budgets)
        self._windows = _core.BudgetWindows([b.as_tuple() for b in self._budgets])

    def _key(self, b: Budget, start: int) -> str:
        return f"{self.prefix}:b:{b.label}:{start}"

    def _budget_args(
        self, caller: Caller, group: str | None
    ) -> tuple[list[Budget], list[str], list[str]]:
        # Which budgets apply and their windows come from the core, as in the books.
        chosen, keys, seeds = [], [], []
        applicable = self._windows.applicable(caller.key_name, caller.user, caller.team, group)
        for index, start, end in applicable:
            b = self._budgets[index]
            spent = self._seed_spent.get((*b.ident, start), 0)
            chosen.append(b)
            keys.append(self._key(b, start))
            # Counters outlive their window by a day, then Redis drops them.
            expire = str(end + 86_400_000) if end else "0"
            seeds += [str(b.limit), str(spent), str(b.limit - spent), expire]
        return chosen, keys, seeds

    async def seed(self, books: _core.Ledger) -> None:
        """Remembers the store's spend per budget window, to start counters that do not
        exist yet; and checks that Redis answers."""
        for scope, name, window, _limit, _soft, start, spent, _reserved in books.budgets():
            begin = 0 if window == "total" else int(start)
            self._seed_spent[(scope, name, window, begin)] = int(spent)
        try:
            await self._redis.ping()
        except Exception as exc:
            raise _core.StorageError(f"budget counter: Redis does not answer ({exc})") from None

    async def reserve(
        self, caller: Caller, group: str | None, request_id: str, amount: int
    ) -> None:
        chosen, keys, seeds = self._budget_args(caller, group)
        if not keys:
            return
        hold = f"{self.prefix}:h:"
        result = await self._reserve(
            keys=[f"{self.prefix}:holds", hold + request_id, *keys],
            args=[hold, request_id, str(amount), str(-amount), str(self.hold_ttl_ms), *seeds],
        )
        if int(result[0]) == 1:
            return
        budget = chosen[int(result[1]) - 1]
        metrics.REFUSED.labels(budget.label).inc()
        raise refusal(budget.label, max(0, int(result[2])))

    async def settle(self, caller: Caller, group: str | None, request_id: str, cost: int) -> None:
        _, keys, seeds = self._budget_args(caller, group)
        hold = f"{self.prefix}:h:"
        await self._settle(
            keys=[
                f"{self.prefix}:holds",
                hold + request_id,
                f"{self.prefix}:s:{request_id}",
                *keys,
            ],
            args=[hold, request_id, str(cost), str(-cost), str(_SETTLED_TTL_MS), *seeds],
        )

    async def release(self, request_id: str) -> None:
        hold = f"{self.prefix}:h:"
        await self._release(
            keys=[f"{self.prefix}:holds", hold + request_id], args=[hold, request_id]
        )

    async def change_limit(
        self, budget: Budget, old_limit: int | None, states: list[BudgetState]
    ) -> None:
        if old_limit is None:
            return
        start, _ = _core.budget_window(budget.window)
        await self._change(
            keys=[self._key(budget, start)], args=[str(budget.limit), str(budget.limit - old_limit)]
        )

    async def state(self, budget: Budget, now_ms: int) -> dict[str, int] | None:
        """The shared counter of a budget's current window (None: not started)."""
        start, _ = _core.budget_window(budget.window, now_ms)
        raw = await self._redis.hgetall(self._key(budget, start))
        if not raw:
            return None
        return {k.decode(): int(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self._redis.aclose()
