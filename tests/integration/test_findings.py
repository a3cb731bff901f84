"""Findings stored per sweep from real result documents (scans of real TLS servers):
the rows are the policy's findings, judged at the sweep's close, stored once however
often the job runs, and reached through the sweep's domains by customer and manager."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.db.models import (
    AccountManager,
    Customer,
    Domain,
    DomainEndpoint,
    Endpoint,
    Finding,
    Sweep,
    SweepDomain,
)
from fleet.findings import evaluate_sweep, profile_for
from fleet.repositories.findings import latest_judged_sweep, list_findings
from fleet.repositories.results import record_result
from fleet.settings import Settings
from policy import default_profile, evaluate
from scanner.engine import Scanner, ScanOptions
from scanner.models import Target
from tests.integration.servers import LEGACY, MODERN, Pki, TlsServer, running

HOST = "tls.test"
CUTOFF = dt.date(2027, 3, 31)


async def _scan(pki: Pki, server: TlsServer) -> dict[str, Any]:
    scanner = Scanner(ScanOptions(timeout=2.0, connect_timeout=2.0, ca_file=pki.ca_file))
    target = Target(HOST, server.ip, server.port, "https", "implicit", HOST)
    return (await scanner.scan(target)).to_dict()


async def _seed(
    sessions: async_sessionmaker[AsyncSession], documents: list[dict[str, Any]], status: str
) -> tuple[int, int, int]:
    """Two customers (of two managers), one domain each, and a sweep in which the first
    domain uses every endpoint and the second only the last: (sweep, customer a, b)."""
    async with sessions() as session:
        managers = [AccountManager(name=n, email=f"{n}@example.net") for n in ("a", "b")]
        session.add_all(managers)
        await session.flush()
        customers = [
            Customer(name=f"c{i}", account_manager_id=m.id) for i, m in enumerate(managers)
        ]
        session.add_all(customers)
        await session.flush()
        domains = [
            Domain(name=f"d{i}.test", customer_id=c.id, tags=[]) for i, c in enumerate(customers)
        ]
        sweep = Sweep(
            kind="adhoc",
            status=status,
            scope={"all": True},
            options={},
            finished_at=dt.datetime(2026, 11, 28, 2, tzinfo=dt.UTC),
        )
        session.add_all([*domains, sweep])
        await session.flush()
        for domain in domains:
            session.add(
                SweepDomain(sweep_id=sweep.id, domain_id=domain.id, status="ok", discovery={})
            )
        for n, document in enumerate(documents):
            target = document["target"]
            endpoint = Endpoint(
                ip=target["ip"], port=target["port"], service="https", host=target["host"]
            )
            session.add(endpoint)
            await session.flush()
            users = domains if n == len(documents) - 1 else domains[:1]
            for domain in users:
                session.add(
                    DomainEndpoint(
                        sweep_id=sweep.id,
                        domain_id=domain.id,
                        endpoint_id=endpoint.id,
                        host=HOST,
                        how="web",
                    )
                )
            await session.flush()
            await record_result(session, sweep.id, endpoint.id, document)
        await session.commit()
        return sweep.id, customers[0].id, customers[1].id


async def test_findings_are_the_policys_stored_once(
    session_factory: async_sessionmaker[AsyncSession], pki: Pki
) -> None:
    # Given a closed sweep of a legacy server (TLS 1.0-1.3, weak suites) and a modern one
    with (
        running(TlsServer(pki.server_context(LEGACY))) as legacy,
        running(TlsServer(pki.server_context(MODERN))) as modern,
    ):
        assert isinstance(legacy, TlsServer)
        assert isinstance(modern, TlsServer)
        documents = [await _scan(pki, modern), await _scan(pki, legacy)]
    sweep, first, second = await _seed(session_factory, documents, "done")
    profile = default_profile(cutoff=CUTOFF)
    # When its findings are evaluated, twice
    once = await evaluate_sweep(session_factory, profile, sweep)
    twice = await evaluate_sweep(session_factory, profile, sweep)
    # Then the stored rows are exactly what the policy says at the sweep's close
    judged = dt.datetime(2026, 11, 28, 2, tzinfo=dt.UTC)
    expected = {
        (doc["target"]["port"], f.code, f.severity.value, f.detail)
        for doc in documents
        for f in evaluate(doc, profile, judged)
    }
    assert {"tls.legacy_version", "cipher.anonymous"} <= {code for _, code, _, _ in expected}
    async with session_factory() as session:
        rows = (await session.execute(select(Finding, Endpoint).join(Endpoint))).all()
        count = await session.scalar(select(func.count()).select_from(Finding))
    assert {(e.port, f.code, f.severity, f.detail) for f, e in rows} == expected
    assert {(f.rules_version, f.profile) for f, _ in rows} == {("2026.11.1", "default")}
    assert once is not None
    assert twice is not None
    assert (once.stored, twice.stored) == (True, False)
    assert once.findings == twice.findings == count == len(expected)
    # … and reached by customer and manager through the sweep's domains
    async with session_factory() as session:
        assert await latest_judged_sweep(session) == sweep
        all_rows = await list_findings(session, sweep_id=sweep, after=None, limit=1000)
        of_second = await list_findings(
            session, sweep_id=sweep, after=None, limit=1000, customer_id=second
        )
        of_first = await list_findings(
            session, sweep_id=sweep, after=None, limit=1000, customer_id=first, min_rank=3
        )
    assert len(all_rows) == count
    assert {e.port for _, e in of_second} == {legacy.port}
    assert {e.port for _, e in of_first} == {legacy.port}
    assert all(f.severity_rank >= 3 for f, _ in of_first)


async def test_an_open_sweep_is_not_judged(
    session_factory: async_sessionmaker[AsyncSession], pki: Pki
) -> None:
    with running(TlsServer(pki.server_context(MODERN))) as modern:
        assert isinstance(modern, TlsServer)
        documents = [await _scan(pki, modern)]
    sweep, _, _ = await _seed(session_factory, documents, "scanning")
    assert await evaluate_sweep(session_factory, default_profile(), sweep) is None


def test_the_profile_follows_the_settings(tmp_path: Any) -> None:
    assert profile_for(Settings(cutoff_date=CUTOFF)).cutoff == CUTOFF
    policy = tmp_path / "policy.toml"
    policy.write_text('name = "strict"\ncutoff = 2027-02-28\n', encoding="utf-8")
    loaded = profile_for(Settings(policy_file=policy))
    assert (loaded.name, loaded.cutoff) == ("strict", dt.date(2027, 2, 28))
    policy.write_text('name = "bad"\nseverity = {"tls.nope" = "high"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tls\.nope"):
        profile_for(Settings(policy_file=policy))
