"""Webhook delivery against a real HTTP receiver on loopback and a real PostgreSQL:
retries until the receiver recovers, dead letters and redelivery, a worker killed
mid-delivery, digests, the private-address rule, and secrets kept out of the logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from arq.connections import RedisSettings
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import deliveries, jobs
from fleet.db.models import WebhookDelivery
from fleet.deliveries import DeliveryConfig
from fleet.repositories import webhooks as repo
from fleet.settings import Settings
from fleet.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Event,
    RetrySchedule,
    SignatureError,
    event_id,
    verify,
)
from worker.context import WorkerConfig
from worker.options import WorkerOptions
from worker.settings import create_worker

SECRET = "whsec_3b1f9e0c-test-secret"
#: Tiny delays, so that retries happen within the test.
FAST = RetrySchedule(base=0.01, factor=2.0, cap=0.05, max_attempts=4)
BOUND = 60.0


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that verifies signatures, dedupes by the
    delivery id, and fails (500) the first ``fail_first`` requests."""

    fail_first: int = 0
    #: Hold the first request this many seconds before answering (a slow receiver).
    hang_first: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/tlsfleet"

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.requests.append({"headers": headers, "body": body})
            count = len(self.requests)
        if count == 1 and self.hang_first:
            time.sleep(self.hang_first)
        if count <= self.fail_first:
            return 500
        try:
            verify(SECRET, headers.get(SIGNATURE_HEADER.lower(), ""), body, now=time.time())
        except SignatureError:
            with self.lock:
                self.bad_signatures += 1
            return 401
        key = headers[DELIVERY_HEADER.lower()]
        with self.lock:
            if key in self.processed:
                self.duplicates += 1
            else:
                self.processed[key] = json.loads(body)
        return 204


def _serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver.server = server
    return server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    server = _serve(made)
    yield made
    server.shutdown()
    server.server_close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _event(n: int, kind: str = "notice.opened") -> Event:
    return Event(
        id=event_id(kind, n),
        type=kind,
        created_at=dt.datetime.now(dt.UTC),
        data={"notice_id": n, "customer": f"customer {n}"},
    )


async def _subscribe(sessions: async_sessionmaker[AsyncSession], url: str, **options: Any) -> int:
    async with sessions() as session:
        subscription = await repo.create_subscription(
            session,
            url=url,
            secret=SECRET,
            events=options.pop("events", ["notice.opened", "notice.resolved", "sweep.completed"]),
            **options,
        )
        await session.commit()
        return subscription.id


async def _emit(
    sessions: async_sessionmaker[AsyncSession], events: list[Event], sweep_id: int | None = None
) -> list[int]:
    async with sessions() as session:
        ids: list[int] = []
        for event in events:
            ids += await repo.emit(session, event, account_manager_id=None, sweep_id=sweep_id)
        await session.commit()
        return ids


async def _drain(
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    config: DeliveryConfig,
) -> None:
    """Act as the worker and the reconciler: attempt every due delivery until none is
    pending (bounded)."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        async with sessions() as session:
            pending = list(
                await session.scalars(
                    select(WebhookDelivery.id).where(WebhookDelivery.status == "pending")
                )
            )
            due = await repo.due_deliveries(session)
        if not pending:
            return
        for delivery_id in due:
            await deliveries.attempt(sessions, http, delivery_id, config)
        await asyncio.sleep(0.01)
    raise AssertionError("deliveries still pending after the bound")


async def _statuses(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, int]]:
    async with sessions() as session:
        rows = await session.execute(
            select(WebhookDelivery.status, WebhookDelivery.attempts).order_by(WebhookDelivery.id)
        )
        return [(status, attempts) for status, attempts in rows]


async def test_every_event_arrives_once_after_the_receiver_recovers(
    session_factory: async_sessionmaker[AsyncSession], receiver: Receiver, http: httpx.AsyncClient
) -> None:
    # Given a receiver that fails its first 5 requests, and 4 events (one emitted twice),
    receiver.fail_first = 5
    await _subscribe(session_factory, receiver.url)
    events = [_event(n) for n in range(4)]
    await _emit(session_factory, [*events, events[0]])
    # when the deliveries are attempted until none is pending,
    await _drain(session_factory, http, DeliveryConfig(schedule=FAST, allow_private=True))
    # then every event arrived exactly once with a valid signature, as its envelope,
    assert sorted(receiver.processed) == sorted(e.id for e in events)
    assert receiver.duplicates == 0
    assert receiver.bad_signatures == 0
    for event in events:
        assert receiver.processed[event.id] == json.loads(event.body())
    # and the log says how many attempts each took (5 failures spread over 4 events).
    statuses = await _statuses(session_factory)
    assert [s for s, _ in statuses] == ["delivered"] * 4
    assert sum(a for _, a in statuses) == 4 + 5


async def test_a_receiver_down_for_the_whole_window_ends_in_dead_letters_then_redelivery(
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    http: httpx.AsyncClient,
    unused_tcp_port: int,
) -> None:
    # Given a subscription to a port where nothing listens,
    down = f"http://127.0.0.1:{unused_tcp_port}/hook"
    subscription = await _subscribe(session_factory, down)
    await _emit(session_factory, [_event(1), _event(2)])
    config = DeliveryConfig(schedule=FAST, allow_private=True)
    # when every attempt of the schedule fails,
    await _drain(session_factory, http, config)
    # then both deliveries are dead after the schedule's attempts, with the error logged;
    assert await _statuses(session_factory) == [("dead", FAST.max_attempts)] * 2
    async with session_factory() as session:
        logged = await repo.list_deliveries(session, subscription, before=None, limit=10)
    assert all("ConnectError" in (d.last_error or "") for d in logged)
    # and once the receiver is back (the subscription moved to it), redelivery succeeds.
    async with session_factory() as session:
        moved = await repo.get_subscription(session, subscription)
        assert moved is not None
        moved.url = receiver.url
        for delivery in logged:
            assert await repo.redeliver(session, delivery.id)
        await session.commit()
    await _drain(session_factory, http, config)
    assert [s for s, _ in await _statuses(session_factory)] == ["delivered", "delivered"]
    assert len(receiver.processed) == 2


_KILLED_WORKER = """
import asyncio, sys
import httpx
from fleet import deliveries, jobs
from fleet.db.session import create_engine, create_sessionmaker
from fleet.deliveries import DeliveryConfig

async def main() -> None:
    engine = create_engine(sys.argv[1])
    async with httpx.AsyncClient() as http:
        await deliveries.attempt(
            create_sessionmaker(engine), http, int(sys.argv[2]),
            DeliveryConfig(allow_private=True, lease=float(sys.argv[3]), timeout=60),
        )

asyncio.run(main())
"""


async def test_a_worker_killed_mid_delivery_loses_nothing(
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    http: httpx.AsyncClient,
    database_url: str,
) -> None:
    # Given a receiver that holds its first request, and a worker process sending to it,
    receiver.hang_first = 3.0
    await _subscribe(session_factory, receiver.url)
    [delivery_id] = await _emit(session_factory, [_event(7)])
    lease = 1.0
    worker = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WORKER, database_url, str(delivery_id), str(lease)],
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + BOUND
        while not receiver.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert receiver.requests, "the worker never reached the receiver"
        # when the worker is killed while its POST is in flight,
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.wait(timeout=BOUND)
    # then the claimed delivery is pending, hidden only until its lease ends,
    assert await _statuses(session_factory) == [("pending", 1)]
    # and the next worker delivers it: the receiver has the event once.
    await _drain(session_factory, http, DeliveryConfig(schedule=FAST, allow_private=True))
    assert await _statuses(session_factory) == [("delivered", 2)]
    assert list(receiver.processed) == [_event(7).id]


async def test_digest_sends_a_sweeps_events_as_one_delivery(
    session_factory: async_sessionmaker[AsyncSession], receiver: Receiver, http: httpx.AsyncClient
) -> None:
    # Given a digest subscription and three events of sweep 41 (one twice),
    await _subscribe(session_factory, receiver.url, digest=True)
    events = [_event(n) for n in (1, 2, 3)]
    assert await _emit(session_factory, [*events, events[1]], sweep_id=41) == []
    config = DeliveryConfig(schedule=FAST, allow_private=True)
    await _drain(session_factory, http, config)
    # nothing is sent while the sweep runs;
    assert receiver.requests == []
    # when the sweep completes, one delivery carries the three events, in order.
    async with session_factory() as session:
        released = await repo.release_digests(session, 41)
        await session.commit()
    assert len(released) == 1
    await _drain(session_factory, http, config)
    [digest] = receiver.processed.values()
    assert digest["type"] == "digest"
    assert digest["data"]["sweep_id"] == 41
    assert [e["id"] for e in digest["data"]["events"]] == [e.id for e in events]


async def test_private_webhook_targets_are_refused_unless_allowed(
    session_factory: async_sessionmaker[AsyncSession], receiver: Receiver, http: httpx.AsyncClient
) -> None:
    await _subscribe(session_factory, receiver.url)
    await _emit(session_factory, [_event(1)])
    # With the default rule, a loopback receiver is never contacted,
    await _drain(session_factory, http, DeliveryConfig(schedule=FAST))
    assert receiver.requests == []
    async with session_factory() as session:
        [delivery] = await session.scalars(select(WebhookDelivery))
    assert delivery.status == "dead"
    assert "non-public address 127.0.0.1" in (delivery.last_error or "")


async def test_unwanted_types_and_other_managers_get_nothing(
    session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    from fleet.db.models import AccountManager

    async with session_factory() as session:
        alice = AccountManager(name="Alice", email="alice@example.net")
        bob = AccountManager(name="Bob", email="bob@example.net")
        session.add_all([alice, bob])
        await session.commit()
        alice_id, bob_id = alice.id, bob.id
    await _subscribe(
        session_factory, receiver.url, account_manager_id=alice_id, events=["notice.resolved"]
    )
    async with session_factory() as session:
        # An event type the subscription does not want, and another manager's event:
        none = await repo.emit(session, _event(1), account_manager_id=alice_id)
        none += await repo.emit(session, _event(2, "notice.resolved"), account_manager_id=bob_id)
        mine = await repo.emit(session, _event(3, "notice.resolved"), account_manager_id=alice_id)
        await session.commit()
    assert none == []
    assert len(mine) == 1


async def test_secrets_are_never_logged(
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.fail_first = 1
    await _subscribe(session_factory, receiver.url)
    await _emit(session_factory, [_event(1)])
    await _drain(session_factory, http, DeliveryConfig(schedule=FAST, allow_private=True))
    assert "webhook delivery" in caplog.text
    assert SECRET not in caplog.text
    signature = receiver.requests[0]["headers"][SIGNATURE_HEADER.lower()]
    assert signature.split("v1=")[1] not in caplog.text


async def test_a_worker_delivers_and_retries_through_the_queue(
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    database_url: str,
    arq_redis_settings: RedisSettings,
) -> None:
    # Given a real arq worker (in this process), a receiver failing its first 2
    # requests, and 3 events whose deliveries are queued after their commit,
    receiver.fail_first = 2
    await _subscribe(session_factory, receiver.url)
    due = await _emit(session_factory, [_event(n) for n in range(3)])
    settings = Settings.model_validate(
        {
            "database_url": SecretStr(database_url),
            "allow_private_targets": True,
            "webhook_retry_base": 0.05,
            "webhook_retry_cap": 0.2,
        }
    )
    config = WorkerConfig(
        settings=settings,
        database_url=database_url,
        redis_settings=arq_redis_settings,
        options=WorkerOptions(job_timeout=20, poll_delay=0.05, retry_delay=0.05, max_tries=3),
    )
    redis = await jobs.create_job_pool(arq_redis_settings)
    try:
        assert await deliveries.enqueue_deliveries(redis, due) == 3
    finally:
        await redis.aclose()
    # when the worker runs until its queue is empty (failed attempts re-queue themselves),
    worker = create_worker(config, burst=True, handle_signals=False)
    try:
        async with asyncio.timeout(BOUND):
            await worker.main()
    finally:
        await worker.close()
    # then every event was delivered, once per event at the deduping receiver.
    assert [s for s, _ in await _statuses(session_factory)] == ["delivered"] * 3
    assert len(receiver.processed) == 3
    assert receiver.duplicates == 0
    assert len(receiver.requests) == 3 + 2


async def test_closing_a_sweep_announces_it_and_releases_its_digests(
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    http: httpx.AsyncClient,
    arq_redis_settings: RedisSettings,
) -> None:
    from fleet import sweeps
    from fleet.db.models import Sweep
    from scanner.dns import Resolver
    from scanner.engine import ScanOptions
    from scanner.net import LocalLimiter

    # Given a global subscription to sweep.completed, a digest subscription, and a
    # sweep whose results are all in (it has no endpoints) with one digest event,
    await _subscribe(session_factory, receiver.url, events=["sweep.completed"])
    await _subscribe(session_factory, receiver.url, digest=True, events=["notice.opened"])
    async with session_factory() as session:
        sweep = Sweep(kind="adhoc", status="scanning", scope={"all": True}, options={})
        session.add(sweep)
        await session.commit()
        sweep_id = sweep.id
    assert await _emit(session_factory, [_event(5)], sweep_id=sweep_id) == []
    redis = await jobs.create_job_pool(arq_redis_settings)
    try:
        runtime = sweeps.SweepRuntime(
            sessions=session_factory,
            redis=redis,
            scan_options=ScanOptions(),
            limiter=LocalLimiter(per_ip=1, global_limit=1),
            new_resolver=lambda: Resolver(()),
        )
        # when the sweep closes (twice: the second changes nothing),
        assert await sweeps.close(runtime, sweep_id)
        assert not await sweeps.close(runtime, sweep_id)
        # then the two deliveries were queued in the closing step,
        queued = await redis.queued_jobs()
        assert len([j for j in queued if j.function == deliveries.DELIVER_JOB]) == 2
    finally:
        await redis.aclose()
    await _drain(session_factory, http, DeliveryConfig(schedule=FAST, allow_private=True))
    # and the receiver has the sweep.completed event and the digest with its event.
    by_type = {d["type"]: d for d in receiver.processed.values()}
    assert sorted(by_type) == ["digest", "sweep.completed"]
    assert by_type["sweep.completed"]["data"]["sweep_id"] == sweep_id
    assert by_type["sweep.completed"]["id"] == event_id("sweep.completed", sweep_id)
    assert [e["id"] for e in by_type["digest"]["data"]["events"]] == [_event(5).id]
