"""A connection limiter shared by every worker: per-IP slots as leases in Redis.

:class:`RedisLimiter` implements :class:`scanner.net.ConnectionLimiter`, so the scanner
uses it exactly like its in-process :class:`~scanner.net.LocalLimiter`; only the per-IP
count lives in Redis, where every worker process of the fleet sees it. Ten workers
scanning domains that share one MX open at most ``per_ip`` connections to it in all.

How a slot is held::

    tlsfleet:limit:<ip>   sorted set   member = lease id,  score = expiry (ms, Redis clock)

* **Acquire** is one Lua script, atomic on the server: drop expired leases, and add ours
  if fewer than ``per_ip`` remain. It reads the time from Redis (``TIME``), so workers on
  hosts with skewed clocks agree on what has expired.
* **Leases expire** after ``lease_ttl`` seconds, so a worker that is SIGKILLed, or cut
  off from Redis, holds no slot for ever. A background task renews every lease this
  process holds every ``lease_ttl / 3`` seconds, so a long connection (a tarpit's
  greeting) keeps its slot. Renewal re-adds a lease that vanished (Redis flushed or
  restarted): the set then again counts the connections that are really open.
* **Release** removes the lease; if Redis is unreachable then, it simply expires.
* **Waiting** is polling with a jittered backoff (5 ms growing to 100 ms). In front of
  Redis, an in-process semaphore per IP lets at most ``per_ip`` tasks of this process
  compete for an IP at once, so a thousand queued probes do not poll Redis a thousand
  times; a process-wide semaphore applies the ``global_limit``.

When Redis cannot be reached for ``unavailable_after`` seconds, :meth:`RedisLimiter.slot`
raises :class:`LimiterUnavailable` rather than scan without the fleet-wide limit. The
scanner reports an unexpected exception as an ``internal`` error result whose message
starts with the exception's class name; :func:`is_limiter_failure` recognises those
results so that a job retries instead of storing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from scanner.models import EndpointResult

__all__ = ["LimiterUnavailable", "RedisLimiter", "is_limiter_failure"]

log = logging.getLogger(__name__)

#: KEYS[1] the IP's lease set; ARGV: limit, lease id, ttl in ms. Returns 1 when granted.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""

#: KEYS: lease sets; ARGV: ttl in ms, then one lease id per key. Upserts every lease.
_RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
return #KEYS
"""


class LimiterUnavailable(Exception):
    """Redis could not be asked for a slot; the connection was not opened."""


def is_limiter_failure(result: EndpointResult) -> bool:
    """True when ``result`` is the scanner's report of a :class:`LimiterUnavailable`
    (an infrastructure failure to retry, not a fact about the endpoint)."""
    error = result.error
    return (
        error is not None
        and error.kind == "internal"
        and error.message.startswith(LimiterUnavailable.__name__)
    )


class RedisLimiter:
    """Per-IP connection slots shared through Redis; a global limit per process.

    ``redis``: a ``redis.asyncio`` client (the worker passes arq's pool). ``per_ip``:
    connections at once to one address, fleet-wide. ``global_limit``: connections at
    once from this process. ``prefix``: key prefix (tests give each run its own).
    Close with :meth:`aclose` to hand back the slots still held.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        per_ip: int = 4,
        global_limit: int = 200,
        lease_ttl: float = 30.0,
        prefix: str = "tlsfleet:limit:",
        unavailable_after: float = 2.0,
    ) -> None:
        if per_ip < 1 or global_limit < 1:
            raise ValueError("connection limits must be at least 1")
        if lease_ttl <= 0 or unavailable_after < 0:
            raise ValueError("lease_ttl must be positive and unavailable_after not negative")
        self.redis = redis
        self.per_ip = per_ip
        self.global_limit = global_limit
        self.lease_ttl = lease_ttl
        self.prefix = prefix
        self.unavailable_after = unavailable_after
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._global = asyncio.Semaphore(global_limit)
        self._local: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._held: dict[str, str] = {}  # lease id → key
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._serial = itertools.count()
        self._renewer: asyncio.Task[None] | None = None
        #: Slots granted since start (for tests and metrics).
        self.granted = 0

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))

    def key(self, ip: str) -> str:
        """The Redis key of ``ip``'s lease set."""
        return f"{self.prefix}{ip}"

    @contextlib.asynccontextmanager
    async def slot(self, ip: str) -> AsyncIterator[None]:
        """Hold one of ``ip``'s slots (fleet-wide) and one of this process's slots."""
        async with self._local_gate(ip):
            lease = await self._take(ip)
            try:
                async with self._global:
                    yield
            finally:
                await self._give_back(lease)

    @contextlib.asynccontextmanager
    async def _local_gate(self, ip: str) -> AsyncIterator[None]:
        sem, users = self._local.get(ip, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_ip)
        self._local[ip] = (sem, users + 1)
        try:
            async with sem:
                yield
        finally:
            sem_now, users_now = self._local[ip]
            if users_now <= 1:
                del self._local[ip]
            else:
                self._local[ip] = (sem_now, users_now - 1)

    async def _take(self, ip: str) -> str:
        key = self.key(ip)
        lease = f"{self._owner}-{next(self._serial)}"
        delay = 0.005
        failing_since: float | None = None
        while True:
            try:
                granted = await self._acquire(keys=[key], args=[self.per_ip, lease, self.ttl_ms])
            except RedisError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self.unavailable_after:
                    raise LimiterUnavailable(
                        f"Redis unreachable for a slot on {ip}: {exc}"
                    ) from exc
                await asyncio.sleep(0.1 * (0.5 + random.random()))
                continue
            failing_since = None
            if granted == 1:
                self._held[lease] = key
                self.granted += 1
                self._ensure_renewer()
                return lease
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    async def _give_back(self, lease: str) -> None:
        key = self._held.pop(lease, None)
        if key is None:
            return
        try:
            await self.redis.zrem(key, lease)
        except RedisError as exc:  # the lease expires by itself
            log.warning("could not release limiter lease %s: %s", lease, exc)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="limiter-renewal")

    async def _renew_loop(self) -> None:
        interval = self.lease_ttl / 3
        while self._held:
            await asyncio.sleep(interval)
            await self.renew()

    async def renew(self) -> int:
        """Extend every lease this process holds; returns how many (0 if Redis failed)."""
        held = list(self._held.items())
        if not held:
            return 0
        keys = [key for _, key in held]
        args: list[Any] = [self.ttl_ms, *(lease for lease, _ in held)]
        try:
            return int(await self._renew(keys=keys, args=args))
        except RedisError as exc:
            log.warning("could not renew %d limiter leases: %s", len(held), exc)
            return 0

    def held(self) -> int:
        """Slots this process holds right now."""
        return len(self._held)

    async def aclose(self) -> None:
        """Stop renewing and hand back every slot still held (best effort)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        for lease in list(self._held):
            await self._give_back(lease)
