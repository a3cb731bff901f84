"""A small cache for expensive read-only answers (fleet statistics), per API process.

An entry is used only while the fleet's *state version* is the one it was computed
at — a new result stored anywhere changes the version, so numbers never lag behind the
results — and for at most ``ttl`` seconds (what the version does not see: inventory
edits such as a customer moving to another account manager, and "expiring within N
days" moving with the clock). Concurrent requests for the same missing entry wait for
one computation instead of each running it (single flight).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["VersionedCache"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    version: Hashable
    made: float
    value: T


class VersionedCache:
    """At most ``size`` entries, each valid for its version and ``ttl`` seconds."""

    def __init__(
        self, *, ttl: float = 60.0, size: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl <= 0 or size < 1:
            raise ValueError("a cache needs ttl > 0 and size >= 1")
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry[Any]] = OrderedDict()
        self._flights: dict[tuple[Hashable, Hashable], asyncio.Future[Any]] = {}
        self.hits = 0
        self.misses = 0

    def _fresh(self, key: Hashable, version: Hashable) -> _Entry[Any] | None:
        entry = self._entries.get(key)
        if entry is None or entry.version != version or self._clock() - entry.made > self.ttl:
            return None
        self._entries.move_to_end(key)
        return entry

    async def get(self, key: Hashable, version: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The value for ``key`` at ``version``: cached, being computed by another
        request (awaited), or computed now by ``compute``. A failed computation is not
        cached; its waiters get its exception."""
        entry = self._fresh(key, version)
        if entry is not None:
            self.hits += 1
            value: T = entry.value
            return value
        flight = (key, version)
        pending = self._flights.get(flight)
        if pending is not None:
            self.hits += 1
            shared: T = await asyncio.shield(pending)
            return shared
        self.misses += 1
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._flights[flight] = future
        try:
            value = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(value)
            self._entries[key] = _Entry(version, self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return value
        finally:
            del self._flights[flight]
