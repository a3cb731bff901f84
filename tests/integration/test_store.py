"""The store's repositories against a real PostgreSQL: each test in a rolled-back
transaction (the ``session`` fixture). The builders at the top serve the other store
tests too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import (
    DomainEndpoint,
    Endpoint,
    ScanCertificate,
    ScanResult,
    Sweep,
    SweepDomain,
)
from fleet.inventory import InventoryRecord
from fleet.repositories.endpoints import ensure_endpoints, get_targets
from fleet.repositories.inventory import domains_in_scope, upsert_inventory, validate_scope
from fleet.repositories.results import (
    get_result,
    latest_results,
    record_certificates,
    record_result,
    record_results,
    sweep_results,
)
from fleet.repositories.sweeps import (
    close_sweep,
    create_sweep,
    endpoint_host_names,
    get_sweep,
    open_sweeps,
    previous_closed_sweep,
    record_discovery,
    set_sweep_status,
    sweep_endpoint_ids,
    sweep_progress,
    unfinished_endpoints,
)
from scanner.discovery import EndpointKey, EndpointPlan, PortProfile, plan_endpoints
from scanner.models import (
    PROTOCOLS,
    AuthInfo,
    CertificateInfo,
    Discovery,
    EndpointResult,
    ErrorInfo,
    HostAddresses,
    MxRecord,
    StarttlsInfo,
    Target,
)
from scanner.services import service_named

# -- builders (the other store tests import them) ---------------------------------------

#: SMTP on MX hosts only: one endpoint per MX address.
SMTP_ONLY = PortProfile(mx=("smtp",), srv=False, web=())

MODERN = {"TLSv1.2": True, "TLSv1.3": True}
LEGACY = {"TLSv1.0": True, "TLSv1.1": True, "TLSv1.2": True}


async def add_domains(
    session: AsyncSession, names: Iterable[str], customer: str = "Customer"
) -> dict[str, int]:
    """Import ``names`` for one customer; their ids by name."""
    await upsert_inventory(session, [InventoryRecord(name, customer) for name in names])
    return {ref.name: ref.id for ref in await domains_in_scope(session, {"all": True})}


def mail_discovery(domain: str, mx_host: str, *ips: str) -> Discovery:
    """A domain whose one MX host has ``ips``."""
    return Discovery(domain, "ok", mx=(MxRecord(10, HostAddresses(mx_host, tuple(ips))),))


def plan(
    mx: Mapping[str, tuple[str, tuple[str, ...]]], *, allow_private: bool = True
) -> EndpointPlan:
    """A plan from ``{domain: (mx_host, (ips…))}``, SMTP only."""
    discoveries = [mail_discovery(d, host, *ips) for d, (host, ips) in mx.items()]
    return plan_endpoints(discoveries, SMTP_ONLY, allow_private=allow_private)


def smtp_target(ip: str, host: str = "mx.example.net") -> Target:
    service = service_named("smtp")
    return Target(host, ip, 25, service.name, service.tls_mode, host)


def key(ip: str) -> EndpointKey:
    return EndpointKey(ip, 25, "smtp")


def certificate(
    status: str = "valid", not_after: str = "2027-03-01T00:00:00+00:00"
) -> CertificateInfo:
    return CertificateInfo(
        subject="CN=mx.example.net",
        san=("mx.example.net",),
        issuer="CN=Test CA",
        not_before="2026-01-01T00:00:00+00:00",
        not_after=not_after,
        days_left=93,
        key="EC secp256r1",
        signature="ecdsa-with-SHA256",
        trusted=status == "valid",
        hostname_match=True,
        status=status,  # type: ignore[arg-type]
        fingerprint_sha256="00" * 32,
        chain_length=2,
    )


def ok_result(
    ip: str,
    protocols: Mapping[str, bool] = MODERN,
    *,
    plaintext: bool = False,
    offered: bool = True,
    cert: CertificateInfo | None = None,
    scanned_at: str = "",
) -> EndpointResult:
    """An ``ok`` SMTP result accepting ``protocols`` (every other version refused)."""
    return EndpointResult(
        target=smtp_target(ip),
        status="ok",
        protocols={p: protocols.get(p, False) for p in PROTOCOLS},
        starttls=StarttlsInfo(offered=offered),
        auth=AuthInfo(
            before_tls=("PLAIN", "LOGIN") if plaintext else (),
            after_tls=("PLAIN", "LOGIN"),
            plaintext_before_tls=plaintext,
        ),
        certificate=cert,
        connections=12,
        duration_ms=340,
        scanned_at=scanned_at,
    )


def error_result(ip: str, kind: str = "timeout") -> EndpointResult:
    return EndpointResult(
        target=smtp_target(ip),
        status="error",
        error=ErrorInfo(kind, "connect", f"{kind} talking to {ip}"),
        connections=1,
    )


# Two domains share a two-address MX cluster; a third has its own MX.
SHARED = {
    "a.example": ("mx.cluster.example", ("10.0.0.1", "10.0.0.2")),
    "b.example": ("mx.cluster.example", ("10.0.0.1", "10.0.0.2")),
    "c.example": ("mx.c.example", ("10.0.0.3",)),
}


async def _count(session: AsyncSession, model: type[object], **where: object) -> int:
    stmt = select(func.count()).select_from(model)
    for column, value in where.items():
        stmt = stmt.where(getattr(model, column) == value)
    return int(await session.scalar(stmt) or 0)


# -- endpoints ------------------------------------------------------------------------------


async def test_ensure_endpoints_is_get_or_create(session: AsyncSession) -> None:
    first = await ensure_endpoints(
        session, {key("10.0.0.1"): "mx1.example", key("10.0.0.2"): "mx2.example"}
    )
    again = await ensure_endpoints(
        session, {key("10.0.0.1"): "mx1-new.example", key("10.0.0.9"): "mx9.example"}
    )

    assert again[key("10.0.0.1")] == first[key("10.0.0.1")]
    assert await _count(session, Endpoint) == 3
    targets = await get_targets(session, [first[key("10.0.0.1")]])
    # The latest discovery's name is the one scanned (and sent as SNI).
    (target,) = targets.values()
    assert (target.host, target.sni, target.ip, target.port) == (
        "mx1-new.example",
        "mx1-new.example",
        "10.0.0.1",
        25,
    )
    assert target.tls_mode == "starttls"


async def test_ensure_endpoints_with_nothing_to_do(session: AsyncSession) -> None:
    assert await ensure_endpoints(session, {}) == {}
    assert await get_targets(session, []) == {}


# -- sweeps and discovery --------------------------------------------------------------------


async def test_create_sweep_validates_scope_and_kind(session: AsyncSession) -> None:
    sweep = await create_sweep(
        session, kind="adhoc", scope={"domains": ["b.example", "a.example", "a.example"]}
    )
    assert sweep.id is not None
    assert sweep.status == "pending"
    assert sweep.scope == {"domains": ["a.example", "b.example"]}
    with pytest.raises(ValueError, match="scope"):
        await create_sweep(session, kind="adhoc", scope={"everything": True})
    with pytest.raises(ValueError, match="kind"):
        await create_sweep(session, kind="weekly", scope={"all": True})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "scope",
    [
        {},
        {"all": False},
        {"customers": []},
        {"customers": ["1"]},
        {"domains": [""]},
        {"all": True, "domains": ["x"]},
    ],
)
def test_bad_scopes_are_refused(scope: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="scope"):
        validate_scope(scope)


async def test_domains_in_scope(session: AsyncSession) -> None:
    ids = await add_domains(session, ["a.example", "b.example"], customer="A")
    await add_domains(session, ["c.example"], customer="B")
    customer_a = (await domains_in_scope(session, {"domains": ["a.example"]}))[0].customer_id

    everything = await domains_in_scope(session, {"all": True})
    by_customer = await domains_in_scope(session, {"customers": [customer_a]})
    by_name = await domains_in_scope(session, {"domains": ["b.example", "unknown.example"]})

    assert [d.name for d in everything] == ["a.example", "b.example", "c.example"]
    assert [d.name for d in by_customer] == ["a.example", "b.example"]
    assert [(d.id, d.name) for d in by_name] == [(ids["b.example"], "b.example")]


async def test_record_discovery_stores_domains_endpoints_and_uses(session: AsyncSession) -> None:
    ids = await add_domains(session, SHARED)
    sweep = await create_sweep(session, kind="nightly", scope={"all": True})

    record = await record_discovery(session, sweep.id, plan(SHARED), ids)

    # Three unique endpoints, five uses (two domains × two addresses, plus one).
    assert record.total_endpoints == 3
    assert sorted(record.to_scan) == sorted(record.endpoint_ids.values())
    assert record.rejected == []
    assert await _count(session, SweepDomain, sweep_id=sweep.id) == 3
    assert await _count(session, DomainEndpoint, sweep_id=sweep.id) == 5
    assert await sweep_endpoint_ids(session, sweep.id) == sorted(record.endpoint_ids.values())
    refreshed = await get_sweep(session, sweep.id)
    assert refreshed is not None
    assert refreshed.total_endpoints == 3
    stored = await session.scalar(
        select(SweepDomain.discovery).where(SweepDomain.domain_id == ids["c.example"])
    )
    assert stored is not None
    assert stored["mx"][0]["host"] == "mx.c.example"
    cluster = record.endpoint_ids[key("10.0.0.1")]
    assert await endpoint_host_names(session, sweep.id, cluster) == ["mx.cluster.example"]


async def test_record_discovery_is_idempotent_and_additive(session: AsyncSession) -> None:
    ids = await add_domains(session, [*SHARED, "d.example"])
    sweep = await create_sweep(session, kind="nightly", scope={"all": True})
    first = await record_discovery(session, sweep.id, plan(SHARED), ids)

    again = await record_discovery(session, sweep.id, plan(SHARED), ids)
    more = await record_discovery(
        session, sweep.id, plan({"d.example": ("mx.d.example", ("10.0.0.4",))}), ids
    )

    assert again.endpoint_ids == first.endpoint_ids
    assert again.total_endpoints == 3
    assert more.total_endpoints == 4
    assert await _count(session, DomainEndpoint, sweep_id=sweep.id) == 6


async def test_rejected_endpoints_get_their_error_result(session: AsyncSession) -> None:
    # Given a domain whose MX has a private and a public address, and the default policy
    ids = await add_domains(session, ["p.example"])
    sweep = await create_sweep(session, kind="adhoc", scope={"domains": ["p.example"]})
    mixed = {"p.example": ("mx.p.example", ("10.1.2.3", "8.8.8.8"))}

    record = await record_discovery(session, sweep.id, plan(mixed, allow_private=False), ids)

    # Then the private one is not to be scanned but already has a private_target result
    private, public = record.endpoint_ids[key("10.1.2.3")], record.endpoint_ids[key("8.8.8.8")]
    assert record.to_scan == [public]
    assert record.rejected == [private]
    result = await get_result(session, sweep.id, private)
    assert result is not None
    assert (result.status, result.error_kind) == ("error", "private_target")
    assert await unfinished_endpoints(session, sweep.id) == [public]


async def test_discovery_needs_every_domain_id(session: AsyncSession) -> None:
    sweep = await create_sweep(session, kind="adhoc", scope={"all": True})
    with pytest.raises(KeyError, match=r"a\.example"):
        await record_discovery(session, sweep.id, plan(SHARED), {})


async def test_status_moves_are_compare_and_set(session: AsyncSession) -> None:
    sweep = await create_sweep(session, kind="nightly", scope={"all": True})

    assert await set_sweep_status(session, sweep.id, "discovering", expected=["pending"])
    assert not await set_sweep_status(session, sweep.id, "discovering", expected=["pending"])
    assert await set_sweep_status(session, sweep.id, "scanning")
    assert await set_sweep_status(session, sweep.id, "failed", error="discovery crashed")
    # A final status is never left.
    assert not await set_sweep_status(session, sweep.id, "scanning")

    stored = await get_sweep(session, sweep.id)
    assert stored is not None
    assert stored.status == "failed"
    assert stored.error == "discovery crashed"
    assert stored.started_at is not None
    assert stored.finished_at is not None
    with pytest.raises(ValueError, match="status"):
        await set_sweep_status(session, sweep.id, "paused")  # type: ignore[arg-type]


async def test_open_sweeps_lists_the_unfinished(session: AsyncSession) -> None:
    running = await create_sweep(session, kind="nightly", scope={"all": True})
    finished = await create_sweep(session, kind="nightly", scope={"all": True})
    await set_sweep_status(session, running.id, "scanning")
    await set_sweep_status(session, finished.id, "cancelled")

    assert [s.id for s in await open_sweeps(session)] == [running.id]
    assert [s.id for s in await open_sweeps(session, ["cancelled"])] == [finished.id]


# -- results ----------------------------------------------------------------------------------


async def _scanning_sweep(session: AsyncSession) -> tuple[Sweep, dict[str, int]]:
    ids = await add_domains(session, SHARED)
    sweep = await create_sweep(session, kind="nightly", scope={"all": True})
    await set_sweep_status(session, sweep.id, "scanning")
    record = await record_discovery(session, sweep.id, plan(SHARED), ids)
    return sweep, {k.ip: v for k, v in record.endpoint_ids.items()}


async def test_a_result_is_stored_once(session: AsyncSession) -> None:
    sweep, endpoints = await _scanning_sweep(session)
    endpoint = endpoints["10.0.0.1"]

    first = await record_result(session, sweep.id, endpoint, ok_result("10.0.0.1", LEGACY))
    retry = await record_result(session, sweep.id, endpoint, error_result("10.0.0.1"))

    assert (first, retry) == (True, False)
    stored = await get_result(session, sweep.id, endpoint)
    assert stored is not None
    # The first result stays: a retried job changes nothing.
    assert stored.status == "ok"
    assert stored.document["protocols"]["TLSv1.0"] is True
    assert await _count(session, ScanResult, sweep_id=sweep.id) == 1


async def test_derived_columns_come_from_the_document(session: AsyncSession) -> None:
    sweep, endpoints = await _scanning_sweep(session)
    result = ok_result(
        "10.0.0.1",
        LEGACY,
        plaintext=True,
        cert=certificate("expired", "2026-01-02T03:04:05+00:00"),
        scanned_at="2026-11-28T01:00:00+00:00",
    )

    await record_result(session, sweep.id, endpoints["10.0.0.1"], result.to_dict())

    row = await get_result(session, sweep.id, endpoints["10.0.0.1"])
    assert row is not None
    assert (row.ssl2, row.ssl3, row.tls10, row.tls11, row.tls12, row.tls13) == (
        False,
        False,
        True,
        True,
        True,
        False,
    )
    assert (row.lowest_protocol, row.highest_protocol) == (2, 4)
    assert row.plaintext_before_tls is True
    assert row.starttls_offered is True
    assert row.cert_status == "expired"
    assert row.cert_not_after == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert (row.connections, row.duration_ms) == (12, 340)
    assert row.scanned_at == dt.datetime(2026, 11, 28, 1, 0, tzinfo=dt.UTC)
    assert row.error_kind is None


async def test_bulk_results_report_what_was_new(session: AsyncSession) -> None:
    sweep, endpoints = await _scanning_sweep(session)
    await record_result(session, sweep.id, endpoints["10.0.0.1"], ok_result("10.0.0.1"))

    new = await record_results(
        session,
        sweep.id,
        {
            endpoints["10.0.0.1"]: ok_result("10.0.0.1"),
            endpoints["10.0.0.2"]: ok_result("10.0.0.2", scanned_at="2026-11-28T01:00:00Z"),
            endpoints["10.0.0.3"]: error_result("10.0.0.3"),
        },
    )

    assert new == {endpoints["10.0.0.2"], endpoints["10.0.0.3"]}
    assert set(await sweep_results(session, sweep.id)) == set(endpoints.values())
    assert await record_results(session, sweep.id, {}) == set()


async def test_progress_counts_rate_and_eta(session: AsyncSession) -> None:
    sweep, endpoints = await _scanning_sweep(session)
    await record_result(session, sweep.id, endpoints["10.0.0.1"], ok_result("10.0.0.1"))
    await record_result(session, sweep.id, endpoints["10.0.0.2"], error_result("10.0.0.2"))

    progress = await sweep_progress(session, sweep.id)

    assert progress is not None
    assert (progress.status, progress.total, progress.done, progress.failed) == (
        "scanning",
        3,
        2,
        1,
    )
    assert progress.remaining == 1
    assert progress.started_at is not None
    assert progress.finished_at is None
    assert progress.rate is not None
    assert progress.rate > 0
    assert progress.eta_seconds is not None
    assert progress.eta_seconds > 0
    assert progress.to_dict()["remaining"] == 1

    await record_result(session, sweep.id, endpoints["10.0.0.3"], ok_result("10.0.0.3"))
    finished = await sweep_progress(session, sweep.id)
    assert finished is not None
    assert finished.eta_seconds == 0.0


async def test_progress_before_the_start_and_of_nothing(session: AsyncSession) -> None:
    sweep = await create_sweep(session, kind="adhoc", scope={"all": True})
    progress = await sweep_progress(session, sweep.id)
    assert progress is not None
    assert (progress.total, progress.done, progress.rate, progress.eta_seconds) == (
        0,
        0,
        None,
        None,
    )
    assert await sweep_progress(session, sweep.id + 1000) is None


async def test_unfinished_endpoints_are_those_without_a_result(session: AsyncSession) -> None:
    sweep, endpoints = await _scanning_sweep(session)
    await record_result(session, sweep.id, endpoints["10.0.0.2"], ok_result("10.0.0.2"))

    missing = await unfinished_endpoints(session, sweep.id)

    assert missing == sorted([endpoints["10.0.0.1"], endpoints["10.0.0.3"]])
    assert len(await unfinished_endpoints(session, sweep.id, limit=1)) == 1


async def test_certificates_are_stored_once_per_name(session: AsyncSession) -> None:
    sweep, endpoints = await _scanning_sweep(session)
    endpoint = endpoints["10.0.0.1"]

    first = await record_certificates(
        session, sweep.id, endpoint, {"a.example": certificate(), "b.example": None}
    )
    again = await record_certificates(
        session,
        sweep.id,
        endpoint,
        {"a.example": certificate("expired"), "c.example": certificate()},
    )

    assert (first, again) == (2, 1)
    stored = await session.scalar(
        select(ScanCertificate.certificate).where(ScanCertificate.sni == "a.example")
    )
    assert stored is not None
    assert stored["status"] == "valid"
    assert await record_certificates(session, sweep.id, endpoint, {}) == 0


async def test_latest_result_per_endpoint(session: AsyncSession) -> None:
    old, endpoints = await _scanning_sweep(session)
    new = await create_sweep(session, kind="nightly", scope={"all": True})
    ip1, ip2 = endpoints["10.0.0.1"], endpoints["10.0.0.2"]
    await record_result(
        session, old.id, ip1, ok_result("10.0.0.1", LEGACY, scanned_at="2026-11-01T00:00:00Z")
    )
    await record_result(
        session, old.id, ip2, ok_result("10.0.0.2", LEGACY, scanned_at="2026-11-01T00:00:00Z")
    )
    await record_result(
        session, new.id, ip1, ok_result("10.0.0.1", MODERN, scanned_at="2026-11-02T00:00:00Z")
    )

    latest = await latest_results(session)
    only_one = await latest_results(session, [ip2])

    assert latest[ip1].sweep_id == new.id
    assert latest[ip1].tls10 is False
    assert latest[ip2].sweep_id == old.id
    assert list(only_one) == [ip2]


# -- closing and the diff ----------------------------------------------------------------------


async def test_previous_closed_sweep_has_the_same_scope(session: AsyncSession) -> None:
    full = await create_sweep(session, kind="nightly", scope={"all": True})
    partial = await create_sweep(session, kind="adhoc", scope={"domains": ["a.example"]})
    unfinished = await create_sweep(session, kind="nightly", scope={"all": True})
    current = await create_sweep(session, kind="nightly", scope={"all": True})
    for sweep in (full, partial):
        await set_sweep_status(session, sweep.id, "done")
    await set_sweep_status(session, unfinished.id, "scanning")

    previous = await previous_closed_sweep(session, current.id)

    assert previous is not None
    assert previous.id == full.id
    assert await previous_closed_sweep(session, full.id) is None


async def test_close_waits_for_every_result(session: AsyncSession) -> None:
    sweep, endpoints = await _scanning_sweep(session)
    await record_result(session, sweep.id, endpoints["10.0.0.1"], ok_result("10.0.0.1"))

    assert await close_sweep(session, sweep.id) is None
    still = await get_sweep(session, sweep.id)
    assert still is not None
    assert still.status == "scanning"

    forced = await close_sweep(session, sweep.id, force=True)
    assert forced is not None
    assert forced.previous_sweep_id is None
    assert len(forced["new_endpoints"]) == 3
    with pytest.raises(LookupError):
        await close_sweep(session, sweep.id + 1000)


async def test_close_computes_the_diff_against_the_previous_sweep(session: AsyncSession) -> None:
    # Given a closed sweep and a new one over changed endpoints:
    #   .1 accepted TLS 1.0/1.1, now only 1.2+         → fixed_legacy_tls
    #   .2 took passwords before TLS, no longer        → fixed_plaintext_login
    #   .3 was modern, now TLS 1.0 and plaintext login → newly_legacy_tls, newly_plaintext_login
    #   .4 failed before, now legacy                   → in neither (unknown before)
    #   .5 vanished, .6 is new
    before = {
        "a.example": ("mx.cluster.example", ("10.0.0.1", "10.0.0.2")),
        "b.example": ("mx.b.example", ("10.0.0.3", "10.0.0.4", "10.0.0.5")),
    }
    after = {
        "a.example": ("mx.cluster.example", ("10.0.0.1", "10.0.0.2")),
        "b.example": ("mx.b.example", ("10.0.0.3", "10.0.0.4", "10.0.0.6")),
    }
    ids = await add_domains(session, before)
    old = await create_sweep(session, kind="nightly", scope={"all": True})
    old_ids = (await record_discovery(session, old.id, plan(before), ids)).endpoint_ids
    await record_results(
        session,
        old.id,
        {
            old_ids[key("10.0.0.1")]: ok_result("10.0.0.1", LEGACY),
            old_ids[key("10.0.0.2")]: ok_result("10.0.0.2", plaintext=True),
            old_ids[key("10.0.0.3")]: ok_result("10.0.0.3"),
            old_ids[key("10.0.0.4")]: error_result("10.0.0.4"),
            old_ids[key("10.0.0.5")]: ok_result("10.0.0.5"),
        },
    )
    assert await close_sweep(session, old.id) is not None
    new = await create_sweep(session, kind="nightly", scope={"all": True})
    new_ids = (await record_discovery(session, new.id, plan(after), ids)).endpoint_ids
    await record_results(
        session,
        new.id,
        {
            new_ids[key("10.0.0.1")]: ok_result("10.0.0.1"),
            new_ids[key("10.0.0.2")]: ok_result("10.0.0.2"),
            new_ids[key("10.0.0.3")]: ok_result("10.0.0.3", LEGACY, plaintext=True),
            new_ids[key("10.0.0.4")]: ok_result("10.0.0.4", LEGACY),
            new_ids[key("10.0.0.6")]: ok_result("10.0.0.6", LEGACY),
        },
    )

    # When it closes
    diff = await close_sweep(session, new.id)

    # Then
    assert diff is not None
    assert diff.previous_sweep_id == old.id
    ips = {category: [e.ip for e in diff[category]] for category in diff.to_dict()["counts"]}
    assert ips == {
        "newly_legacy_tls": ["10.0.0.3"],
        "fixed_legacy_tls": ["10.0.0.1"],
        "newly_plaintext_login": ["10.0.0.3"],
        "fixed_plaintext_login": ["10.0.0.2"],
        "new_endpoints": ["10.0.0.6"],
        "vanished_endpoints": ["10.0.0.5"],
    }
    assert diff.domains("newly_legacy_tls") == ["b.example"]
    assert diff.domains("fixed_plaintext_login") == ["a.example"]
    (new_endpoint,) = diff["new_endpoints"]
    assert (new_endpoint.legacy_tls, new_endpoint.plaintext_login) == (True, False)
    stored = await get_sweep(session, new.id)
    assert stored is not None
    assert stored.status == "done"
    assert stored.finished_at is not None
    assert stored.diff is not None
    assert stored.diff["counts"]["newly_legacy_tls"] == 1
    assert stored.diff["vanished_endpoints"][0]["domains"] == ["b.example"]
    # Closing twice does nothing the second time.
    assert await close_sweep(session, new.id) is None
