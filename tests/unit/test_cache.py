"""The API's versioned, single-flight cache (api/cache.py)."""

from __future__ import annotations

import asyncio

import pytest

from api.cache import VersionedCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_value_is_reused_for_its_version_only() -> None:
    cache = VersionedCache(ttl=60)
    calls: list[int] = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    assert await cache.get("k", 1, compute) == 1
    assert await cache.get("k", 1, compute) == 1
    assert await cache.get("other", 1, compute) == 2
    assert await cache.get("k", 2, compute) == 3  # the state moved on
    assert (cache.hits, cache.misses) == (1, 3)


async def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = VersionedCache(ttl=60, clock=clock)
    values = iter(range(10))

    async def compute() -> int:
        return next(values)

    assert await cache.get("k", 1, compute) == 0
    clock.now = 59.0
    assert await cache.get("k", 1, compute) == 0
    clock.now = 61.0
    assert await cache.get("k", 1, compute) == 1


async def test_concurrent_misses_compute_once() -> None:
    cache = VersionedCache()
    started = 0
    release = asyncio.Event()

    async def compute() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "counted"

    waiters = [asyncio.create_task(cache.get("k", 1, compute)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == ["counted"] * 5
    assert started == 1


async def test_a_failure_is_shared_but_not_cached() -> None:
    cache = VersionedCache()
    release = asyncio.Event()
    attempts = 0

    async def failing() -> int:
        nonlocal attempts
        attempts += 1
        await release.wait()
        raise RuntimeError("database gone")

    first = asyncio.create_task(cache.get("k", 1, failing))
    second = asyncio.create_task(cache.get("k", 1, failing))
    await asyncio.sleep(0)
    release.set()
    for task in (first, second):
        with pytest.raises(RuntimeError, match="database gone"):
            await task

    async def working() -> int:
        return 7

    assert await cache.get("k", 1, working) == 7
    assert attempts == 1


async def test_the_oldest_entries_make_room() -> None:
    cache = VersionedCache(size=2)

    async def compute() -> object:
        return object()

    a = await cache.get("a", 1, compute)
    await cache.get("b", 1, compute)
    await cache.get("c", 1, compute)
    assert await cache.get("a", 1, compute) is not a


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        VersionedCache(ttl=0)
