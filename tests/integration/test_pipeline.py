"""The whole pipeline on one real arq worker (in this process, burst mode): a sweep of
a local fleet → results → close → findings → notices confirmed by a re-scan → signed
webhooks at a real loopback receiver; and a second sweep that changes nothing sends
nothing new."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from arq.connections import RedisSettings
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import jobs, sweeps
from fleet.db.models import Finding, Notice, WebhookDelivery
from fleet.repositories import webhooks as webhook_repo
from fleet.settings import Settings
from tests.integration.test_sweep_harness import SRV_ONLY, LocalFleet, import_inventory, local_fleet
from tests.integration.test_webhooks import SECRET, Receiver, _serve
from worker.context import WorkerConfig
from worker.options import WorkerOptions
from worker.settings import create_worker

BOUND = 120.0


@pytest.fixture
def fleet() -> Iterator[LocalFleet]:
    with local_fleet("127.94.0") as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    server = _serve(made)
    yield made
    server.shutdown()
    server.server_close()


def _config(database_url: str, redis: RedisSettings, fleet: LocalFleet) -> WorkerConfig:
    settings = Settings.model_validate(
        {
            "database_url": SecretStr(database_url),
            "resolvers": [fleet.nameserver],
            "allow_private_targets": True,
            "per_ip_limit": 2,
            "timeout": 2.0,
            "greeting_timeout": 2.0,
            "notices_enabled": True,
            "webhook_retry_base": 0.05,
            "webhook_retry_cap": 0.2,
        }
    )
    return WorkerConfig(
        settings=settings,
        database_url=database_url,
        redis_settings=redis,
        options=WorkerOptions(job_timeout=30, poll_delay=0.05, retry_delay=0.05, max_tries=3),
        nightly=SRV_ONLY,
    )


async def _sweep_and_drain(config: WorkerConfig, sessions: async_sessionmaker[AsyncSession]) -> int:
    """Start a sweep of everything and run a worker until its queue is empty."""
    redis = await jobs.create_job_pool(config.redis_settings)
    try:
        sweep_id = await sweeps.start_sweep(sessions, redis, scope={"all": True}, options=SRV_ONLY)
    finally:
        await redis.aclose()
    worker = create_worker(config, burst=True, handle_signals=False)
    try:
        async with asyncio.timeout(BOUND):
            await worker.main()
    finally:
        await worker.close()
    return sweep_id


async def test_a_sweep_ends_in_confirmed_notices_and_signed_webhooks(
    session_factory: async_sessionmaker[AsyncSession],
    database_url: str,
    arq_redis_settings: RedisSettings,
    fleet: LocalFleet,
    receiver: Receiver,
) -> None:
    # Given the local fleet's inventory (three customers, legacy TLS stacks) and a
    # global subscription to notices and sweeps,
    await import_inventory(session_factory, fleet.records)
    async with session_factory() as session:
        await webhook_repo.create_subscription(
            session,
            url=receiver.url,
            secret=SECRET,
            events=["notice.opened", "sweep.completed"],
        )
        await session.commit()
    config = _config(database_url, arq_redis_settings, fleet)

    # when a sweep runs on a worker until nothing is left to do,
    first = await _sweep_and_drain(config, session_factory)

    # then the sweep's findings are stored, with the legacy protocols the stacks accept,
    async with session_factory() as session:
        codes = set(await session.scalars(select(Finding.code).where(Finding.sweep_id == first)))
        notices = list(await session.scalars(select(Notice).order_by(Notice.id)))
        deliveries = list(await session.scalars(select(WebhookDelivery)))
    assert {"tls.legacy_version", "tls.only_legacy", "cipher.rc4"} <= codes
    # each customer with a problem has one notice, confirmed by the re-scan and sent,
    customers = {record.customer for record in fleet.records}
    assert len(notices) == len(customers)
    assert {n.status for n in notices} == {"notified"}
    assert all(n.confirmed for n in notices)
    # and the receiver has one signed notice.opened per notice and the sweep's end.
    assert {d.status for d in deliveries} == {"delivered"}
    opened = [e for e in receiver.processed.values() if e["type"] == "notice.opened"]
    completed = [e for e in receiver.processed.values() if e["type"] == "sweep.completed"]
    assert len(opened) == len(notices)
    assert [e["data"]["sweep_id"] for e in completed] == [first]
    assert receiver.bad_signatures == 0
    assert receiver.duplicates == 0

    # When a second sweep finds the same problems,
    second = await _sweep_and_drain(config, session_factory)
    # then no notice is opened or sent again; only the sweep's end is announced.
    async with session_factory() as session:
        again = list(await session.scalars(select(Notice).order_by(Notice.id)))
    assert [(n.id, n.status) for n in again] == [(n.id, "notified") for n in notices]
    types = sorted(e["type"] for e in receiver.processed.values())
    assert types.count("notice.opened") == len(notices)
    assert [
        e["data"]["sweep_id"] for e in receiver.processed.values() if e["type"] == "sweep.completed"
    ] == [first, second]
