"""Grafana's side: the PostgreSQL views (migration ``589fbdb53c7d``) agree with what the
API says on real PostgreSQL; every SQL panel of the shipped Grafana dashboard runs
against them; every Prometheus expression names a metric the API or the worker
exports; and the worker's metrics are recorded and served."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import func
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app
from api.metrics import Metrics
from fleet.db.models import Finding, Notice, Sweep
from fleet.findings import evaluate_sweep, profile_for
from fleet.inventory import InventoryRecord
from fleet.jobs import JobName
from fleet.repositories import apikeys
from fleet.repositories.inventory import domains_in_scope, upsert_inventory
from fleet.repositories.reports import store_sweep_stats
from fleet.repositories.results import record_results
from fleet.repositories.sweeps import create_sweep, record_discovery
from fleet.settings import Settings
from scanner.discovery import plan_endpoints
from tests.integration.api.harness import settings_for
from tests.integration.test_store import (
    LEGACY,
    MODERN,
    SMTP_ONLY,
    error_result,
    mail_discovery,
    ok_result,
)
from tests.ports import free_port
from worker.metrics import WorkerMetrics, instrument

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "helm" / "tlsfleet" / "dashboards" / "tlsfleet.json"
)
VIEWS = (
    "v_fleet_protocols",
    "v_fleet_summary",
    "v_findings_by_severity",
    "v_sweep_trend",
    "v_account_manager_summary",
    "v_sweep_progress",
    "v_notices_by_status",
)


@dataclass(frozen=True, slots=True)
class Seeded:
    closed: int
    open_sweep: int
    key: str


@pytest.fixture
async def app(database_url: str, redis_url: str, engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    del engine  # requested for its clean-up
    application = create_app(settings_for(database_url, redis_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as http:
        yield http


_MX = {
    "a.example": ("mx.a.example", "10.7.0.1"),  # Ann's: legacy TLS
    "b.example": ("mx.b.example", "10.7.0.2"),  # Bob's: modern, password before TLS
    "c.example": ("mx.c.example", "10.7.0.3"),  # nobody's: the scan fails
    "d.example": ("mx.a.example", "10.7.0.1"),  # Bob's too, on Ann's legacy MX
}


async def _sweep(
    session: AsyncSession, ids: dict[str, int], results: dict[str, Any]
) -> tuple[int, dict[str, int]]:
    sweep = await create_sweep(session, kind="nightly", scope={"all": True})
    discoveries = [mail_discovery(d, host, ip) for d, (host, ip) in _MX.items()]
    plan = plan_endpoints(discoveries, SMTP_ONLY, allow_private=True)
    record = await record_discovery(session, sweep.id, plan, ids)
    endpoints = {key.ip: endpoint_id for key, endpoint_id in record.endpoint_ids.items()}
    await record_results(
        session, sweep.id, {endpoints[ip]: result for ip, result in results.items()}
    )
    return sweep.id, endpoints


@pytest.fixture
async def seeded(session_factory: async_sessionmaker[AsyncSession]) -> Seeded:
    """Two account managers, four domains on three MX endpoints; a closed nightly sweep
    with findings, stored statistics and a notice; a second sweep still scanning."""
    records = [
        InventoryRecord("a.example", "Customer A", "Ann", "ann@provider.test"),
        InventoryRecord("b.example", "Customer B", "Bob", "bob@provider.test"),
        InventoryRecord("c.example", "Customer C"),
        InventoryRecord("d.example", "Customer D", "Bob", "bob@provider.test"),
    ]
    results = {
        "10.7.0.1": ok_result("10.7.0.1", {"TLSv1.0": True, "TLSv1.1": True}),
        "10.7.0.2": ok_result("10.7.0.2", MODERN, plaintext=True, offered=False),
        "10.7.0.3": error_result("10.7.0.3", "timeout"),
    }
    async with session_factory() as session:
        await upsert_inventory(session, records)
        ids = {ref.name: ref.id for ref in await domains_in_scope(session, {"all": True})}
        closed, _ = await _sweep(session, ids, results)
        await session.execute(
            update(Sweep)
            .where(Sweep.id == closed)
            .values(status="done", finished_at=dt.datetime.now(dt.UTC))
        )
        await store_sweep_stats(session, closed)
        await session.commit()
    await evaluate_sweep(session_factory, profile_for(Settings()), closed)
    async with session_factory() as session:
        customer = await session.scalar(text("SELECT id FROM customers WHERE name = 'Customer A'"))
        session.add(
            Notice(
                customer_id=customer,
                status="notified",
                problem_hash="0" * 64,
                problems=[],
                sweep_id=closed,
                last_sweep_id=closed,
            )
        )
        # the second sweep has stored one result of three so far
        open_sweep, _ = await _sweep(session, ids, {"10.7.0.1": ok_result("10.7.0.1", LEGACY)})
        await session.execute(update(Sweep).where(Sweep.id == open_sweep).values(status="scanning"))
        key = await apikeys.create_key(session, role="viewer", name="grafana test")
        await session.commit()
    return Seeded(closed, open_sweep, key.secret)


async def _view(sessions: async_sessionmaker[AsyncSession], sql: str) -> list[dict[str, Any]]:
    async with sessions() as session:
        return [dict(row._mapping) for row in await session.execute(text(sql))]


async def test_the_views_say_what_the_api_says(
    session_factory: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    seeded: Seeded,
) -> None:
    headers = {"Authorization": f"Bearer {seeded.key}"}
    stats = (await client.get("/v1/stats?by_account_manager=true", headers=headers)).json()
    counts = stats["counts"]
    # Given a fleet with problems of every kind (the check is not vacuous)
    assert counts["endpoints"] == 3
    assert counts["findings"]["legacy_tls"] == 1

    protocols = await _view(session_factory, "SELECT * FROM v_fleet_protocols ORDER BY rank")
    assert {r["protocol"]: r["accepting"] for r in protocols} == counts["protocols"]
    assert {r["protocol"]: r["lowest"] for r in protocols} == counts["lowest_protocol"]
    assert {r["protocol"]: r["highest"] for r in protocols} == counts["highest_protocol"]

    (summary,) = await _view(session_factory, "SELECT * FROM v_fleet_summary")
    assert summary.pop("endpoints") == counts["endpoints"]
    assert summary == counts["findings"]

    managers = await _view(session_factory, "SELECT * FROM v_account_manager_summary")
    by_id = {m["account_manager_id"]: m for m in managers}
    assert len(stats["account_managers"]) == 2
    for manager in stats["account_managers"]:
        row = by_id[manager["account_manager_id"]]
        assert row["name"] == manager["name"]
        assert row["endpoints"] == manager["counts"]["endpoints"]
        for column in ("legacy_tls", "no_modern_tls", "plaintext_before_tls", "errors"):
            assert row[column] == manager["counts"]["findings"][column], column
    assert sorted((m["name"], m["customers"], m["domains"]) for m in managers) == [
        ("Ann", 1, 1),
        ("Bob", 2, 2),
    ]

    trend = (await client.get("/v1/stats/trend", headers=headers)).json()["sweeps"]
    rows = await _view(session_factory, 'SELECT * FROM v_sweep_trend ORDER BY "time"')
    assert [r["sweep_id"] for r in rows] == [p["sweep_id"] for p in trend] == [seeded.closed]
    for row, point in zip(rows, trend, strict=True):
        assert row["endpoints"] == point["counts"]["endpoints"]
        for name in ("legacy_tls", "tls10", "no_modern_tls", "plaintext_before_tls", "errors"):
            assert row[name] == point["counts"]["findings"][name], name

    sweep = (await client.get(f"/v1/sweeps/{seeded.open_sweep}", headers=headers)).json()
    (progress,) = await _view(session_factory, "SELECT * FROM v_sweep_progress")
    assert progress["sweep_id"] == seeded.open_sweep
    assert (progress["total"], progress["done"], progress["failed"]) == (
        sweep["progress"]["total"],
        sweep["progress"]["done"],
        sweep["progress"]["failed"],
    )

    async with session_factory() as session:
        findings = list(
            await session.scalars(select(Finding).where(Finding.sweep_id == seeded.closed))
        )
    assert findings
    severities = await _view(session_factory, "SELECT * FROM v_findings_by_severity")
    assert {r["sweep_id"] for r in severities} == {seeded.closed}
    assert {r["severity"]: r["findings"] for r in severities if r["findings"]} == {
        s: sum(1 for f in findings if f.severity == s) for s in {f.severity for f in findings}
    }

    notices = (await client.get("/v1/notices", headers=headers)).json()["items"]
    by_status = await _view(session_factory, "SELECT * FROM v_notices_by_status")
    assert {r["status"]: r["notices"] for r in by_status if r["notices"]} == {"notified": 1}
    assert [n["status"] for n in notices] == ["notified"]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _targets(kind: str) -> list[dict[str, Any]]:
    return [
        target
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == kind
    ]


def _grafana_sql(sql: str) -> str:
    """The panel's SQL with Grafana's macros replaced by plain SQL."""
    return re.sub(r"\$__timeFilter\(([^)]*)\)", r"\1 IS NOT NULL", sql)


async def test_every_sql_panel_runs_against_the_views(
    session_factory: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    del seeded
    queries = [t["rawSql"] for t in _targets("grafana-postgresql-datasource")]
    assert len(queries) >= len(VIEWS)
    # every view is on the dashboard
    assert {v for v in VIEWS if any(v in q for q in queries)} == set(VIEWS)
    for sql in queries:
        rows = await _view(session_factory, _grafana_sql(sql))
        assert rows, sql  # the seeded fleet gives every panel something to show


def _exported(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exposes, with each type's suffixes."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_every_prometheus_expression_names_an_exported_metric() -> None:
    exported = _exported(Metrics().registry) | _exported(WorkerMetrics().registry)
    expressions = [t["expr"] for t in _targets("prometheus")]
    assert expressions
    for expr in expressions:
        named = set(re.findall(r"\btlsfleet_[a-z0-9_]+", expr))
        assert named, expr
        assert named <= exported, (expr, named - exported)


def test_the_dashboard_is_importable_json() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "tlsfleet"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"].strip("${}") in variables, panel["title"]


async def test_metrics_export_the_fleet_gauges(client: httpx.AsyncClient, seeded: Seeded) -> None:
    headers = {"Authorization": f"Bearer {seeded.key}"}
    counts = (await client.get("/v1/stats", headers=headers)).json()["counts"]
    body = (await client.get("/metrics")).text
    assert f"tlsfleet_fleet_endpoints {float(counts['endpoints'])}" in body
    tls10 = float(counts["protocols"]["TLSv1.0"])
    assert f'tlsfleet_fleet_endpoints_by_protocol{{protocol="TLSv1.0"}} {tls10}' in body
    assert (
        f'tlsfleet_fleet_findings{{finding="legacy_tls"}} {float(counts["findings"]["legacy_tls"])}'
        in body
    )
    assert (
        f'tlsfleet_sweep_progress_endpoints{{state="done",sweep_id="{seeded.open_sweep}"}} 1.0'
        in body
    )
    assert f"tlsfleet_findings_sweep_id {float(seeded.closed)}" in body
    assert "tlsfleet_queue_depth " in body
    assert 'tlsfleet_sweeps{status="scanning"} 1.0' in body


@dataclass
class _App:
    metrics: WorkerMetrics


async def test_the_worker_records_jobs_scans_and_deliveries_and_serves_them() -> None:
    metrics = WorkerMetrics()
    ctx: dict[str, Any] = {"app": _App(metrics)}

    async def scan(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> str:
        del ctx, args, kwargs
        return "stored"

    async def deliver(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> str:
        del ctx, args, kwargs
        return "dead"

    async def broken(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> None:
        del ctx, args, kwargs
        raise RuntimeError("boom")

    timed = instrument(
        [
            func(scan, name=JobName.SCAN),
            func(deliver, name="webhook_deliver"),
            func(broken, name="sweep_close"),
        ]
    )
    assert [f.name for f in timed] == [JobName.SCAN, "webhook_deliver", "sweep_close"]
    assert await timed[0].coroutine(ctx, 7) == "stored"
    assert await timed[1].coroutine(ctx) == "dead"
    with pytest.raises(RuntimeError):
        await timed[2].coroutine(ctx)

    port = free_port()
    metrics.serve(port, "127.0.0.1")
    try:
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        metrics.close()
    assert 'tlsfleet_scan_duration_seconds_count{outcome="stored"} 1.0' in body
    assert 'tlsfleet_webhook_deliveries_total{outcome="dead"} 1.0' in body
    assert (
        'tlsfleet_worker_job_duration_seconds_count{job="sweep_close",outcome="error"} 1.0' in body
    )
