"""The notice lifecycle on a real PostgreSQL with real TLS servers for the confirming
re-scan: open → notified after the re-scan confirms; a failure the re-scan does not
confirm never goes out; an unchanged problem set opens no second notice; a later sweep
without the findings resolves it (notice.resolved); a regression reopens it
(finding.regressed); an exception and its expiry; certificate steps each warned once.

Webhook events are checked in the delivery log (``webhook_deliveries``), where they are
written in the same transaction as the change."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import jobs, notices
from fleet.db.models import (
    AccountManager,
    Customer,
    Domain,
    DomainEndpoint,
    Endpoint,
    Notice,
    Sweep,
    SweepDomain,
    WebhookDelivery,
)
from fleet.findings import evaluate_sweep
from fleet.notices import CERT_STEP, NoticeConfig
from fleet.repositories import webhooks as webhook_repo
from fleet.repositories.results import record_result
from fleet.sweeps import SweepRuntime
from policy import Severity, default_profile
from scanner.dns import Resolver
from scanner.engine import ScanOptions
from scanner.models import Target
from scanner.net import LocalLimiter
from tests.integration.servers import MODERN, OLD_ONLY, Pki, TlsProfile, TlsServer, running

CONFIG = NoticeConfig(profile=default_profile(), min_severity=Severity.HIGH)
HOST = "tls.test"


@dataclass
class World:
    sessions: async_sessionmaker[AsyncSession]
    manager: int
    customer: int
    domain: int


@pytest.fixture
async def world(session_factory: async_sessionmaker[AsyncSession]) -> World:
    """One account manager with a customer and a domain, and a subscription to every
    notice event for that manager."""
    async with session_factory() as session:
        manager = AccountManager(name="Alice", email="alice@example.net")
        session.add(manager)
        await session.flush()
        customer = Customer(name="Example GmbH", account_manager_id=manager.id)
        session.add(customer)
        await session.flush()
        domain = Domain(name="example.test", customer_id=customer.id, tags=[])
        session.add(domain)
        await session.flush()
        await webhook_repo.create_subscription(
            session,
            url="https://8.8.8.8/hooks",
            secret="whsec_test-secret-0123456789",
            events=[
                "notice.opened",
                "notice.resolved",
                "finding.regressed",
                "certificate.expiring",
            ],
            account_manager_id=manager.id,
        )
        await session.commit()
        return World(session_factory, manager.id, customer.id, domain.id)


@pytest.fixture
async def redis(arq_redis_settings: RedisSettings) -> AsyncIterator[ArqRedis]:
    pool = await jobs.create_job_pool(arq_redis_settings)
    try:
        yield pool
    finally:
        await pool.aclose()


@pytest.fixture
def runtime(world: World, redis: ArqRedis, pki: Pki) -> SweepRuntime:
    return SweepRuntime(
        sessions=world.sessions,
        redis=redis,
        scan_options=ScanOptions(
            timeout=2.0, connect_timeout=2.0, greeting_timeout=2.0, ca_file=pki.ca_file
        ),
        limiter=LocalLimiter(per_ip=2),
        new_resolver=lambda: Resolver(()),
        allow_private=True,
    )


@pytest.fixture
def server(pki: Pki, request: pytest.FixtureRequest) -> Iterator[TlsServer]:
    profile: TlsProfile = getattr(request, "param", OLD_ONLY)
    with running(TlsServer(pki.server_context(profile))) as started:
        assert isinstance(started, TlsServer)
        yield started


def _target(server: TlsServer) -> Target:
    return Target(HOST, server.ip, server.port, "https", "implicit", HOST)


async def _scan(runtime: SweepRuntime, server: TlsServer) -> dict[str, Any]:
    return (await runtime.scanner(False).scan(_target(server))).to_dict()


async def _endpoint(world: World, server: TlsServer) -> int:
    async with world.sessions() as session:
        endpoint = Endpoint(ip=server.ip, port=server.port, service="https", host=HOST)
        session.add(endpoint)
        await session.commit()
        return endpoint.id


async def _sweep(
    world: World, documents: dict[int, dict[str, Any]], finished: dt.datetime | None = None
) -> int:
    """A closed sweep of the world's domain with these result documents."""
    async with world.sessions() as session:
        sweep = Sweep(
            kind="nightly",
            status="done",
            scope={"all": True},
            options={},
            finished_at=finished or dt.datetime.now(dt.UTC),
        )
        session.add(sweep)
        await session.flush()
        session.add(
            SweepDomain(sweep_id=sweep.id, domain_id=world.domain, status="ok", discovery={})
        )
        for endpoint_id, document in documents.items():
            session.add(
                DomainEndpoint(
                    sweep_id=sweep.id,
                    domain_id=world.domain,
                    endpoint_id=endpoint_id,
                    host=HOST,
                    how="web",
                )
            )
            await session.flush()
            await record_result(session, sweep.id, endpoint_id, document)
        await session.commit()
        return sweep.id


async def _judge(world: World, sweep_id: int) -> notices.SyncReport:
    stored = await evaluate_sweep(world.sessions, CONFIG.profile, sweep_id)
    assert stored is not None
    report = await notices.sync_sweep(world.sessions, CONFIG, sweep_id)
    assert report is not None
    return report


async def _notices(world: World) -> list[Notice]:
    async with world.sessions() as session:
        return list(await session.scalars(select(Notice).order_by(Notice.id)))


async def _events(world: World) -> list[tuple[str, dict[str, Any]]]:
    async with world.sessions() as session:
        rows = await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
        return [(d.event_type, d.payload["data"]) for d in rows]


def _modern(document: dict[str, Any]) -> dict[str, Any]:
    """The same endpoint's document as it reads once fixed (TLS 1.2/1.3 only)."""
    fixed = dict(document)
    fixed["protocols"] = {**document["protocols"], "TLSv1.0": False, "TLSv1.1": False}
    fixed["protocols"].update({"TLSv1.2": True, "TLSv1.3": True})
    fixed["cipher_suites"] = {
        "TLSv1.2": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        "TLSv1.3": ["TLS_AES_128_GCM_SHA256"],
    }
    return fixed


async def _notified(world: World, runtime: SweepRuntime, server: TlsServer) -> tuple[int, int]:
    """A legacy endpoint found by a sweep and confirmed: (endpoint id, notice id)."""
    endpoint = await _endpoint(world, server)
    sweep = await _sweep(world, {endpoint: await _scan(runtime, server)})
    report = await _judge(world, sweep)
    [notice_id] = report.confirm
    confirmed = await notices.confirm_notice(runtime, CONFIG, notice_id)
    assert confirmed.outcome == "notified"
    return endpoint, notice_id


async def test_a_confirmed_notice_goes_out_once(
    world: World, runtime: SweepRuntime, server: TlsServer
) -> None:
    # Given a sweep that found a server accepting only TLS 1.0/1.1
    endpoint = await _endpoint(world, server)
    document = await _scan(runtime, server)
    sweep = await _sweep(world, {endpoint: document})
    report = await _judge(world, sweep)
    # Then one notice opens, not yet sent: no notice.opened before the re-scan
    [notice] = await _notices(world)
    assert (report.opened, report.confirm, notice.status) == (1, [notice.id], "open")
    assert {(p["code"]) for p in notice.problems} == {"tls.only_legacy", "tls.legacy_version"}
    assert await _events(world) == []
    # When the confirming re-scan of the real server shows the same
    confirmed = await notices.confirm_notice(runtime, CONFIG, notice.id)
    # Then it goes out: notified, one notice.opened for the customer's manager
    assert (confirmed.outcome, confirmed.confirmed, len(confirmed.due)) == ("notified", 2, 1)
    [(kind, data)] = await _events(world)
    assert kind == "notice.opened"
    assert (data["notice_id"], data["account_manager_id"]) == (notice.id, world.manager)
    assert data["domains"] == ["example.test"]
    assert {p["endpoint"]["port"] for p in data["problems"]} == {server.port}
    [sent] = await _notices(world)
    assert sent.status == "notified"
    assert sent.notified_at is not None
    # … a second confirmation, a second sync of the same sweep: nothing more
    assert (await notices.confirm_notice(runtime, CONFIG, notice.id)).outcome == "skipped"
    again = await notices.sync_sweep(world.sessions, CONFIG, sweep)
    assert again is not None
    assert (again.opened, again.confirm) == (0, [])
    # When the next sweep shows the unchanged problem set
    later = await _judge(world, await _sweep(world, {endpoint: document}))
    # Then no second notice opens and nothing is sent
    assert (later.opened, later.confirm, later.resolved) == (0, [], 0)
    assert len(await _notices(world)) == 1
    assert len(await _events(world)) == 1


@pytest.mark.parametrize("server", [MODERN], indirect=True)
async def test_a_failure_the_rescan_does_not_confirm_never_becomes_a_notice(
    world: World, runtime: SweepRuntime, server: TlsServer
) -> None:
    # Given a sweep whose result said "TLS 1.0/1.1 only" for a server that in truth
    # (and at the re-scan) speaks TLS 1.2 and 1.3
    endpoint = await _endpoint(world, server)
    real = await _scan(runtime, server)
    assert real["protocols"]["TLSv1.3"] is True
    wrong = dict(real)
    wrong["protocols"] = {**real["protocols"], "TLSv1.0": True, "TLSv1.2": False, "TLSv1.3": False}
    wrong["cipher_suites"] = {"TLSv1.0": ["TLS_RSA_WITH_AES_128_CBC_SHA"]}
    report = await _judge(world, await _sweep(world, {endpoint: wrong}))
    [notice_id] = report.confirm
    # When the confirming re-scan runs
    outcome = await notices.confirm_notice(runtime, CONFIG, notice_id)
    # Then nothing is confirmed: the notice is dismissed and never sent
    assert (outcome.outcome, outcome.confirmed, outcome.due) == ("dismissed", 0, [])
    [notice] = await _notices(world)
    assert (notice.status, notice.notified_at, notice.confirmed) == ("dismissed", None, [])
    assert await _events(world) == []


async def test_a_fix_resolves_and_a_regression_reopens(
    world: World, runtime: SweepRuntime, server: TlsServer
) -> None:
    endpoint, notice_id = await _notified(world, runtime, server)
    legacy = await _scan(runtime, server)
    # When a later sweep no longer shows the findings
    fixed = await _judge(world, await _sweep(world, {endpoint: _modern(legacy)}))
    # Then the notice is resolved and notice.resolved goes out
    assert (fixed.resolved, fixed.opened) == (1, 0)
    [notice] = await _notices(world)
    assert (notice.id, notice.status) == (notice_id, "resolved")
    assert notice.resolved_at is not None
    kinds = [kind for kind, _ in await _events(world)]
    assert kinds == ["notice.opened", "notice.resolved"]
    # When the problem set shows again in a later sweep
    back = await _judge(world, await _sweep(world, {endpoint: legacy}))
    # Then the same notice reopens (its next generation) and finding.regressed goes out;
    # it is sent again only after its confirming re-scan
    assert (back.regressed, back.opened, back.confirm) == (1, 0, [notice_id])
    [reopened] = await _notices(world)
    assert (reopened.status, reopened.generation, reopened.regressions) == ("open", 2, 1)
    events = await _events(world)
    assert [kind for kind, _ in events] == ["notice.opened", "notice.resolved", "finding.regressed"]
    assert events[-1][1]["notice_id"] == notice_id
    again = await notices.confirm_notice(runtime, CONFIG, notice_id)
    assert again.outcome == "notified"
    assert [kind for kind, _ in await _events(world)][-1] == "notice.opened"


async def test_an_exception_holds_until_it_expires(
    world: World, runtime: SweepRuntime, server: TlsServer
) -> None:
    endpoint, notice_id = await _notified(world, runtime, server)
    today = dt.datetime.now(dt.UTC).date()
    # Given an accepted risk until tomorrow
    async with world.sessions() as session:
        notice = await session.get(Notice, notice_id)
        assert notice is not None
        with pytest.raises(ValueError, match="until"):
            await notices.set_exception(session, notice, "printers", today, today)
        await notices.set_exception(session, notice, "printers", today + dt.timedelta(1), today)
        await session.commit()
    # When a sweep still shows the problems: the exception holds, nothing is sent
    held = await _judge(world, await _sweep(world, {endpoint: await _scan(runtime, server)}))
    assert (held.opened, held.confirm, held.resolved) == (0, [], 0)
    [notice] = await _notices(world)
    assert (notice.status, notice.exception_reason) == ("exception", "printers")
    # When its date has passed, it goes back to open (to be re-scanned and sent again)
    assert await notices.expire_exceptions(world.sessions, today) == []
    assert await notices.expire_exceptions(world.sessions, today + dt.timedelta(2)) == [notice_id]
    [expired] = await _notices(world)
    assert expired.status == "open"
    again = await notices.confirm_notice(runtime, CONFIG, notice_id)
    assert again.outcome == "notified"


def _with_certificate(document: dict[str, Any], not_after: dt.datetime) -> dict[str, Any]:
    changed = _modern(document)
    changed["certificate"] = {
        **(document.get("certificate") or {}),
        "not_after": not_after.isoformat().replace("+00:00", "Z"),
        "status": "valid",
    }
    return changed


@pytest.mark.parametrize("server", [MODERN], indirect=True)
async def test_certificate_steps_warn_each_once(
    world: World, runtime: SweepRuntime, server: TlsServer
) -> None:
    # Given a healthy endpoint whose certificate expires on a fixed day
    endpoint = await _endpoint(world, server)
    base = await _scan(runtime, server)
    expires = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
    document = _with_certificate(base, expires)

    async def sweep_days_before(days: float) -> notices.SyncReport:
        finished = expires - dt.timedelta(days=days)
        return await _judge(world, await _sweep(world, {endpoint: document}, finished))

    # When sweeps judge it 90, 50, 45, 10, 9 and 3 days before it expires
    reports = [await sweep_days_before(d) for d in (90, 50.5, 45.5, 10.5, 9.5, 3.5)]
    # Then 60, 14 and 4 days each warn exactly once, in that order
    warned = [(kind, data["step"]) for kind, data in await _events(world)]
    assert warned == [
        ("certificate.expiring", 60),
        ("certificate.expiring", 14),
        ("certificate.expiring", 4),
    ]
    assert [r.certificate_warnings for r in reports] == [0, 1, 0, 1, 0, 1]
    # … under one notice, whose problem set follows the step
    [notice] = await _notices(world)
    assert notice.problems == [{"endpoint_id": endpoint, "code": CERT_STEP, "step": 4}]
    assert [r.opened for r in reports] == [0, 1, 0, 0, 0, 0]
