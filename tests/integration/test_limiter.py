"""The Redis connection limiter: per-IP slots shared by processes, leases that expire.

Real Redis (the ``redis_url`` fixture); real processes where "another worker" matters;
the per-IP count taken on the servers' side with :class:`tests.integration.fakes.Gauge`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from fleet.limiter import LimiterUnavailable, RedisLimiter, is_limiter_failure
from scanner.engine import Scanner, ScanOptions
from tests.integration.fakes import FakeLegacyServer, Gauge, Launcher, target_for

#: Bound on anything that waits (a liveness bound, never a timing assertion).
BOUND = 30.0

# RC4-SHA and DES-CBC3-SHA: what the canned legacy stack accepts.
SUITES = [0x0005, 0x000A]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's leases."""
    return f"tlsfleet-test:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def serve() -> Iterator[Launcher]:
    with Launcher() as launcher:
        yield launcher


async def _hold_until(
    limiter: RedisLimiter, ip: str, entered: asyncio.Event, leave: asyncio.Event
) -> None:
    async with limiter.slot(ip):
        entered.set()
        await leave.wait()


async def test_per_ip_slots_are_shared_between_limiters(redis_url: str, prefix: str) -> None:
    # Given two limiters on their own connections (as two worker processes have)
    one = RedisLimiter(Redis.from_url(redis_url), per_ip=2, prefix=prefix)
    two = RedisLimiter(Redis.from_url(redis_url), per_ip=2, prefix=prefix)
    leave = asyncio.Event()
    try:
        async with asyncio.timeout(BOUND):
            # When the first holds both slots of 127.0.0.1 and the second one of 127.0.0.2
            held = [asyncio.Event() for _ in range(3)]
            holders = [
                asyncio.create_task(_hold_until(one, "127.0.0.1", held[0], leave)),
                asyncio.create_task(_hold_until(one, "127.0.0.1", held[1], leave)),
                asyncio.create_task(_hold_until(two, "127.0.0.2", held[2], leave)),
            ]
            await asyncio.gather(*(e.wait() for e in held))
            # Then the second cannot get a third slot on 127.0.0.1 while they are held…
            third = asyncio.Event()
            waiter = asyncio.create_task(_hold_until(two, "127.0.0.1", third, asyncio.Event()))
            await asyncio.sleep(0.3)  # the waiter polls Redis several times meanwhile
            assert not third.is_set()
            assert two.granted == 1
            assert await one.redis.zcard(one.key("127.0.0.1")) == 2
            # … and gets it as soon as they are released
            leave.set()
            await asyncio.gather(*holders)
            await third.wait()
            waiter.cancel()
    finally:
        for limiter in (one, two):
            await limiter.aclose()
            await limiter.redis.aclose()


async def test_release_hands_the_slot_back(redis: Redis, prefix: str) -> None:
    limiter = RedisLimiter(redis, per_ip=1, prefix=prefix)
    async with asyncio.timeout(BOUND):
        for _ in range(5):
            async with limiter.slot("192.0.2.1"):
                assert await redis.zcard(limiter.key("192.0.2.1")) == 1
        assert await redis.zcard(limiter.key("192.0.2.1")) == 0
    assert limiter.granted == 5
    await limiter.aclose()


async def test_renewal_keeps_a_long_connection_slot(redis_url: str, prefix: str) -> None:
    # Given leases that expire after 0.3 s, and a connection held for 1.5 s (5 TTLs)
    holder = RedisLimiter(Redis.from_url(redis_url), per_ip=1, lease_ttl=0.3, prefix=prefix)
    other = RedisLimiter(Redis.from_url(redis_url), per_ip=1, lease_ttl=0.3, prefix=prefix)
    order: list[str] = []

    async def hold() -> None:
        async with holder.slot("192.0.2.2"):
            order.append("held")
            await asyncio.sleep(1.5)
            order.append("released")

    try:
        async with asyncio.timeout(BOUND):
            task = asyncio.create_task(hold())
            while not order:
                await asyncio.sleep(0.01)
            # When another process asks for the same IP meanwhile
            async with other.slot("192.0.2.2"):
                order.append("other")
            await task
    finally:
        for limiter in (holder, other):
            await limiter.aclose()
            await limiter.redis.aclose()
    # Then it got the slot only after the holder let go: renewal kept the lease alive
    assert order == ["held", "released", "other"]


_HOLDER = """
import asyncio, sys
from redis.asyncio import Redis
from fleet.limiter import RedisLimiter

async def main() -> None:
    limiter = RedisLimiter(Redis.from_url(sys.argv[1]), per_ip=1, lease_ttl=1.0, prefix=sys.argv[2])
    async with limiter.slot("192.0.2.3"):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_process_does_not_hold_its_slot_for_ever(
    redis: Redis, redis_url: str, prefix: str
) -> None:
    # Given another process holding the only slot of an IP (leases of 1 s, renewed)
    limiter = RedisLimiter(redis, per_ip=1, lease_ttl=1.0, prefix=prefix)
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, redis_url, prefix], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert await asyncio.to_thread(proc.stdout.readline) == "held\n"
            assert await redis.zcard(limiter.key("192.0.2.3")) == 1
            # When it is SIGKILLed with the slot held
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
        finally:
            proc.kill()
    # Then its lease expires and the slot can be had again
    async with asyncio.timeout(BOUND), limiter.slot("192.0.2.3"):
        assert await redis.zcard(limiter.key("192.0.2.3")) == 1
    await limiter.aclose()


async def test_renewal_restores_leases_after_redis_lost_them(redis: Redis, prefix: str) -> None:
    # Given a held slot whose lease vanished (Redis flushed or restarted)
    limiter = RedisLimiter(redis, per_ip=1, prefix=prefix)
    async with limiter.slot("192.0.2.4"):
        await redis.delete(limiter.key("192.0.2.4"))
        # When the leases are renewed
        assert await limiter.renew() == 1
        # Then the set again counts the connection that is really open
        assert await redis.zcard(limiter.key("192.0.2.4")) == 1
    await limiter.aclose()


async def test_unreachable_redis_is_an_error_to_retry_never_a_result(serve: Launcher) -> None:
    # Given a limiter whose Redis is not there
    dead = Redis(unix_socket_path=f"/tmp/tlsfleet-no-redis-{os.getpid()}.sock")
    limiter = RedisLimiter(dead, per_ip=2, unavailable_after=0.2)
    # Then asking for a slot fails with LimiterUnavailable…
    with pytest.raises(LimiterUnavailable):
        async with asyncio.timeout(BOUND), limiter.slot("192.0.2.5"):
            pass
    # … and a scan under it comes back as a result the job recognises as such
    server = serve(FakeLegacyServer({"TLSv1.0"}, SUITES, ip="127.95.0.1"))
    scanner = Scanner(ScanOptions(timeout=2.0).quick, limiter=limiter)
    async with asyncio.timeout(BOUND):
        result = await scanner.scan(target_for(server))
    assert is_limiter_failure(result)
    assert server.connections == 0
    await dead.aclose()


# -- two processes, one server-side count ------------------------------------------------

_SCANNER = """
import asyncio, json, sys
from redis.asyncio import Redis
from fleet.limiter import RedisLimiter
from scanner.engine import Scanner, ScanOptions
from scanner.models import Target

async def main() -> None:
    url, prefix, per_ip, ports = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    redis = Redis.from_url(url)
    limiter = RedisLimiter(redis, per_ip=per_ip, prefix=prefix)
    scanner = Scanner(ScanOptions(timeout=5.0).quick, limiter=limiter)
    targets = [
        Target("fake.test", "127.95.0.2", p, "https", "implicit", "fake.test") for p in ports
    ]
    input()  # start together
    statuses = [r.status async for r in scanner.scan_many(targets)]
    await limiter.aclose()
    await redis.aclose()
    print(json.dumps(statuses), flush=True)

asyncio.run(main())
"""


async def test_two_processes_never_exceed_the_per_ip_limit(
    redis_url: str, prefix: str, serve: Launcher
) -> None:
    # Given four endpoints on one address that hold every connection a moment,
    # their busy connections counted together on the server side
    gauge = Gauge()
    servers = [
        serve(
            FakeLegacyServer(
                {"TLSv1.0", "TLSv1.2"}, SUITES, ip="127.95.0.2", gauge=gauge, hold=0.02
            )
        )
        for _ in range(4)
    ]
    ports = json.dumps([s.port for s in servers])
    # When two processes scan all four at once, 2 connections per IP allowed fleet-wide
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCANNER, redis_url, prefix, "2", ports],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = await asyncio.to_thread(proc.communicate, timeout=BOUND * 2)
            outputs.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # Then every scan succeeded and the servers never saw more than 2 at once
    assert outputs == [["ok"] * 4, ["ok"] * 4]
    assert gauge.peak <= 2
    assert gauge.total > 8
