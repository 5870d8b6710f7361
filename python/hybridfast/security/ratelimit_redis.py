"""`limits.backend: redis`: rate-limit counters shared by every instance on one Redis.

The Lua scripts below are the core's GCRA (`rust/core/src/ratelimit.rs`) line for line: a
bucket is a hash `{level, updated}` where `level` counts `amount × 60000` and drains `limit`
per millisecond; a request is admitted when every scope's bucket has room, and only then
charged, all inside one script (Redis runs scripts one at a time, so instances cannot
overshoot). Time is Redis' own clock (`TIME`), so instances with skewed clocks agree.
Concurrent slots are a sorted set of hold ids scored by their expiry: an instance killed
mid-request loses its slots after `hold_ttl_s`, not forever.
"""

from __future__ import annotations

from typing import Any

from hybridfast.config import LimitsConfig, RateLimitConfig
from hybridfast.security.ratelimit import Hold, Limit, Verdict, Window

_PERIOD_MS = 60_000
# What the scripts return as the wait of a request that can never fit.
_NEVER = -1

_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local function load(key, limit)
  local v = redis.call('HMGET', key, 'level', 'updated')
  local level = tonumber(v[1]) or 0
  local updated = tonumber(v[2]) or now
  local elapsed = now - updated
  if elapsed > period then elapsed = period end
  if elapsed > 0 then
    level = level - elapsed * limit
    if level < 0 then level = 0 end
  end
  return level
end
local function store(key, level)
  redis.call('HSET', key, 'level', string.format('%d', level), 'updated', string.format('%d', now))
  redis.call('PEXPIRE', key, period * 2)
end
"""

# KEYS: per scope its requests bucket, tokens bucket and slot set.
# ARGV: period, tokens, hold id, hold ttl ms, then per scope rpm, tpm, max_parallel (0: none).
_ACQUIRE = (
    _COMMON
    + """
local tokens = tonumber(ARGV[2])
local hold = ARGV[3]
local ttl = tonumber(ARGV[4])
local n = #KEYS / 3
local NEVER = 4611686018427387904
local denied, kind, wait = 0, '', -1
local function refuse(i, k, ms)
  if ms > wait then denied, kind, wait = i, k, ms end
end
local req, tok = {}, {}
for i = 1, n do
  local rpm = tonumber(ARGV[2 + 3 * i])
  local tpm = tonumber(ARGV[3 + 3 * i])
  local par = tonumber(ARGV[4 + 3 * i])
  if par > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 * i], '-inf', now)
    if redis.call('ZCARD', KEYS[3 * i]) >= par then refuse(i, 'parallel', 0) end
  end
  if rpm > 0 then
    req[i] = load(KEYS[3 * i - 2], rpm)
    local over = req[i] + period - rpm * period
    if over > 0 then refuse(i, 'requests', math.ceil(over / rpm)) end
  end
  if tpm > 0 then
    tok[i] = load(KEYS[3 * i - 1], tpm)
    if tokens > tpm then
      refuse(i, 'tokens', NEVER)
    else
      local over = tok[i] + tokens * period - tpm * period
      if over > 0 then refuse(i, 'tokens', math.ceil(over / tpm)) end
    end
  end
end
local allowed = denied == 0
local rw = {-1, -1, -1}
local tw = {-1, -1, -1}
local function tighter(w, limit, level)
  local remaining = math.floor((limit * period - level) / period)
  if remaining < 0 then remaining = 0 end
  if w[1] < 0 or remaining < w[2] then
    w[1], w[2], w[3] = limit, remaining, math.ceil(level / limit)
  end
end
for i = 1, n do
  local rpm = tonumber(ARGV[2 + 3 * i])
  local tpm = tonumber(ARGV[3 + 3 * i])
  local par = tonumber(ARGV[4 + 3 * i])
  if allowed then
    if par > 0 then
      redis.call('ZADD', KEYS[3 * i], now + ttl, hold)
      redis.call('PEXPIRE', KEYS[3 * i], ttl)
    end
    if rpm > 0 then
      req[i] = req[i] + period
      store(KEYS[3 * i - 2], req[i])
    end
    if tpm > 0 then
      tok[i] = tok[i] + tokens * period
      store(KEYS[3 * i - 1], tok[i])
    end
  end
  if rpm > 0 then tighter(rw, rpm, req[i]) end
  if tpm > 0 then tighter(tw, tpm, tok[i]) end
end
if wait == NEVER then wait = -1 end
return {allowed and 1 or 0, denied, kind, wait, rw[1], rw[2], rw[3], tw[1], tw[2], tw[3]}
"""
)

# KEYS as above. ARGV: period, hold id, estimated, actual, then per scope rpm, tpm, par.
_SETTLE = (
    _COMMON
    + """
local hold = ARGV[2]
local delta = (tonumber(ARGV[4]) - tonumber(ARGV[3])) * period
for i = 1, #KEYS / 3 do
  local tpm = tonumber(ARGV[3 + 3 * i])
  local par = tonumber(ARGV[4 + 3 * i])
  if par > 0 then redis.call('ZREM', KEYS[3 * i], hold) end
  if tpm > 0 and delta ~= 0 then
    local level = load(KEYS[3 * i - 1], tpm) + delta
    if level < 0 then level = 0 end
    store(KEYS[3 * i - 1], level)
  end
end
return 1
"""
)


def _window(limit: int, remaining: int, reset_ms: int) -> Window | None:
    return None if limit < 0 else Window(limit, remaining, reset_ms)


class RedisBackend:
    """Shared counters; the limits themselves come from each instance's config."""

    def __init__(self, config: LimitsConfig, client: Any = None) -> None:
        if client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:  # pragma: no cover - the redis extra is installed in CI
                raise ImportError(
                    "limits.backend: redis needs the redis extra: pip install 'hybridfast[redis]'"
                ) from exc
            client = aioredis.from_url(config.redis_url)
        self.client = client
        self.prefix = config.redis_prefix
        self.hold_ttl_ms = int(config.hold_ttl_s * 1000)
        self.limits: dict[str, Limit] = {}
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)

    def configure(self, scope: str, rule: RateLimitConfig | Limit) -> None:
        for value in (rule.rpm, rule.tpm, rule.max_parallel):
            if value is not None and value <= 0:
                raise ValueError(f"rate limit of {scope} must be positive")
        self.limits[scope] = Limit(rule.rpm, rule.tpm, rule.max_parallel)

    def remove(self, scope: str) -> None:
        self.limits.pop(scope, None)

    def _layout(self, scopes: list[str]) -> tuple[list[str], list[str], list[int]]:
        names = [s for s in scopes if s in self.limits]
        keys: list[str] = []
        args: list[int] = []
        for name in names:
            keys += [
                f"{self.prefix}:r:{name}",
                f"{self.prefix}:t:{name}",
                f"{self.prefix}:p:{name}",
            ]
            limit = self.limits[name]
            args += [limit.rpm or 0, limit.tpm or 0, limit.max_parallel or 0]
        return names, keys, args

    async def acquire(self, scopes: list[str], tokens: int, hold_id: str) -> Verdict:
        names, keys, args = self._layout(scopes)
        if not names:
            return Verdict(True)
        raw = await self._acquire(
            keys=keys, args=[_PERIOD_MS, tokens, hold_id, self.hold_ttl_ms, *args]
        )
        allowed, denied, kind, wait, rl, rr, rs, tl, tr, ts = raw
        kind_text = kind.decode() if isinstance(kind, bytes) else str(kind)
        return Verdict(
            allowed=bool(allowed),
            denied_scope=names[int(denied) - 1] if int(denied) > 0 else None,
            denied_kind=kind_text or None,
            retry_after_ms=None if int(wait) == _NEVER and not allowed else max(0, int(wait)),
            requests=_window(int(rl), int(rr), int(rs)),
            tokens=_window(int(tl), int(tr), int(ts)),
        )

    async def settle(self, hold: Hold, actual: int) -> None:
        names, keys, args = self._layout(hold.scopes)
        if names:
            await self._settle(
                keys=keys, args=[_PERIOD_MS, hold.hold_id, hold.estimated, actual, *args]
            )

    async def close(self) -> None:
        await self.client.aclose()
