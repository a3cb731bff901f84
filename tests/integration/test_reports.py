"""The current state behind filters and statistics (``fleet.repositories.reports``):
maintained forward-only by ``record_result(s)`` under concurrent writers, and backfilled
by its migration from results stored before it."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.db.migrate import upgrade
from fleet.db.models import DomainEndpointLatest, DomainLatest, EndpointLatest, ScanResult
from fleet.db.session import sync_url
from fleet.repositories.results import record_result, record_results
from fleet.repositories.sweeps import create_sweep, record_discovery
from tests.integration.test_migrations import empty_database
from tests.integration.test_store import LEGACY, MODERN, add_domains, ok_result, plan

__all__ = ["empty_database"]  # the fixture, used here too

#: The revision before the current-state tables.
BEFORE = "5e1c0a7f3b21"


async def test_concurrent_writers_leave_the_newest_result_and_sweep(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    # Given eight sweeps of two domains on a shared MX cluster; in the last sweep
    # b.example has moved to an MX of its own
    sweeps: list[int] = []
    async with session_factory() as session:
        ids = await add_domains(session, ["a.example", "b.example"])
        for number in range(8):
            last = number == 7
            mx = {
                "a.example": ("mx.example", ("10.2.0.1", "10.2.0.2")),
                "b.example": ("mx.b.example", ("10.2.0.3",))
                if last
                else ("mx.example", ("10.2.0.1", "10.2.0.2")),
            }
            sweep = await create_sweep(session, kind="nightly", scope={"all": True})
            record = await record_discovery(session, sweep.id, plan(mx), ids)
            sweeps.append(sweep.id)
        endpoints = {key.ip: eid for key, eid in record.endpoint_ids.items()}
        await session.commit()

    # When every sweep's results are stored at once, in a random order, each from its own
    # transaction, with scanning times that do not follow the sweep order
    rng = random.Random(5)
    days = list(range(1, 9))
    rng.shuffle(days)
    jobs = [
        (sweep_id, ip, f"2026-11-{day:02d}T02:00:00Z")
        for sweep_id, day in zip(sweeps, days, strict=True)
        for ip in ("10.2.0.1", "10.2.0.2", "10.2.0.3")
        if ip != "10.2.0.3" or sweep_id == sweeps[-1]
    ]
    rng.shuffle(jobs)

    async def store(sweep_id: int, ip: str, scanned_at: str) -> None:
        async with session_factory() as session:
            protocols = LEGACY if scanned_at.endswith("05T02:00:00Z") else MODERN
            if ip == "10.2.0.1":
                await record_result(
                    session,
                    sweep_id,
                    endpoints[ip],
                    ok_result(ip, protocols, scanned_at=scanned_at),
                )
            else:
                await record_results(
                    session,
                    sweep_id,
                    {endpoints[ip]: ok_result(ip, protocols, scanned_at=scanned_at)},
                )
            await session.commit()

    await asyncio.gather(*(store(*job) for job in jobs))

    # Then each endpoint's current result is its newest by scanning time, not the last
    # stored nor the last sweep's
    async with session_factory() as session:
        results = list(await session.scalars(select(ScanResult)))
        newest: dict[int, ScanResult] = {}
        for r in results:
            if r.endpoint_id not in newest or (r.scanned_at, r.id) > (
                newest[r.endpoint_id].scanned_at,
                newest[r.endpoint_id].id,
            ):
                newest[r.endpoint_id] = r
        latest = {row.endpoint_id: row for row in await session.scalars(select(EndpointLatest))}
        assert {e: row.result_id for e, row in latest.items()} == {
            e: r.id for e, r in newest.items()
        }
        assert {e: row.tls10 for e, row in latest.items()} == {
            e: r.tls10 for e, r in newest.items()
        }
        # and every domain is at the last sweep, with the endpoints it used there.
        domains = dict(
            (await session.execute(select(DomainLatest.domain_id, DomainLatest.sweep_id))).all()
        )
        assert domains == {ids["a.example"]: sweeps[-1], ids["b.example"]: sweeps[-1]}
        uses = set(
            (
                await session.execute(
                    select(DomainEndpointLatest.domain_id, DomainEndpointLatest.endpoint_id)
                )
            ).all()
        )
        assert uses == {
            (ids["a.example"], endpoints["10.2.0.1"]),
            (ids["a.example"], endpoints["10.2.0.2"]),
            (ids["b.example"], endpoints["10.2.0.3"]),
        }


@pytest.fixture
def old_database(empty_database: str) -> str:
    """A database at the revision before the current-state tables, with results: two
    sweeps of one domain on two endpoints, the second sweep newer for one endpoint only
    and with an older scanning time for the other."""
    upgrade(empty_database, BEFORE)
    statements = [
        "INSERT INTO customers (id, name) VALUES (1, 'C')",
        "INSERT INTO domains (id, name, customer_id) VALUES (1, 'a.example', 1)",
        "INSERT INTO endpoints (id, ip, port, service, host) VALUES "
        "(1, '10.3.0.1', 25, 'smtp', 'mx'), (2, '10.3.0.2', 25, 'smtp', 'mx')",
        "INSERT INTO sweeps (id, kind, status, scope) VALUES "
        "(1, 'nightly', 'done', '{\"all\": true}'), (2, 'nightly', 'done', '{\"all\": true}')",
        "INSERT INTO domain_endpoints (sweep_id, domain_id, endpoint_id, host, how) VALUES "
        "(1, 1, 1, 'mx', 'mx'), (1, 1, 2, 'mx', 'mx'), (2, 1, 1, 'mx', 'mx')",
        "INSERT INTO scan_results (id, sweep_id, endpoint_id, status, tls10, lowest_protocol, "
        "scanned_at, document) VALUES "
        "(10, 1, 1, 'ok', true, 2, '2026-11-01', '{}'), "
        "(11, 1, 2, 'ok', true, 2, '2026-11-03', '{}'), "
        "(12, 2, 1, 'ok', false, 4, '2026-11-02', '{}'), "
        "(13, 2, 2, 'ok', false, 4, '2026-11-02', '{}')",
    ]
    with psycopg.connect(sync_url(empty_database), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)
    return empty_database


def test_the_migration_backfills_the_current_state(old_database: str) -> None:
    upgrade(old_database)
    with psycopg.connect(sync_url(old_database)) as connection:
        latest = connection.execute(
            "SELECT endpoint_id, result_id, sweep_id, tls10, port, service "
            "FROM endpoint_latest ORDER BY endpoint_id"
        ).fetchall()
        domains = connection.execute("SELECT domain_id, sweep_id FROM domain_latest").fetchall()
        uses = connection.execute(
            "SELECT domain_id, endpoint_id FROM domain_endpoint_latest ORDER BY 2"
        ).fetchall()
    # Endpoint 1: sweep 2 is newer. Endpoint 2: sweep 1's result was scanned later.
    assert latest == [(1, 12, 2, False, 25, "smtp"), (2, 11, 1, True, 25, "smtp")]
    assert domains == [(1, 2)]
    assert uses == [(1, 1)]


async def test_a_domain_that_lost_its_endpoints_uses_none_after_its_sweep_closes(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    from fleet.repositories.sweeps import close_sweep
    from scanner.discovery import plan_endpoints
    from scanner.models import Discovery, ErrorInfo
    from tests.integration.test_store import SMTP_ONLY, mail_discovery

    # Given two domains on one MX, scanned in a first sweep,
    async with session_factory() as session:
        ids = await add_domains(session, ["gone.example", "flaky.example"])
        mx = dict.fromkeys(ids, ("mx.example", ("10.3.0.1",)))
        first = await create_sweep(session, kind="nightly", scope={"all": True})
        record = await record_discovery(session, first.id, plan(mx), ids)
        [endpoint] = record.endpoint_ids.values()
        await record_result(session, first.id, endpoint, ok_result("10.3.0.1"))
        assert await close_sweep(session, first.id) is not None
        await session.commit()
    # when in a second sweep one has no mail servers any more (a definite answer) and
    # the other's DNS failed,
    second_plan = plan_endpoints(
        [
            Discovery("gone.example", "no_mail"),
            Discovery("flaky.example", "error", errors=(ErrorInfo("timeout", "dns", "slow"),)),
            mail_discovery("other.example", "mx.other.example", "10.3.0.2"),
        ],
        SMTP_ONLY,
        allow_private=True,
    )
    async with session_factory() as session:
        ids |= await add_domains(session, ["other.example"])
        second = await create_sweep(session, kind="nightly", scope={"all": True})
        record = await record_discovery(session, second.id, second_plan, ids)
        [other] = record.endpoint_ids.values()
        await record_result(session, second.id, other, ok_result("10.3.0.2"))
        assert await close_sweep(session, second.id) is not None
        await session.commit()
    # then the first uses no endpoint now, the failed one keeps what it had.
    async with session_factory() as session:
        uses = {
            (d, e)
            for d, e in await session.execute(
                select(DomainEndpointLatest.domain_id, DomainEndpointLatest.endpoint_id)
            )
        }
        current = dict(
            (await session.execute(select(DomainLatest.domain_id, DomainLatest.sweep_id))).all()
        )
    assert uses == {(ids["flaky.example"], endpoint), (ids["other.example"], other)}
    assert current[ids["gone.example"]] == second.id
    assert current[ids["flaky.example"]] == first.id
