"""Scan results: exactly one per (sweep, endpoint), plus extra certificates.

:func:`result_columns` is *the* mapping from a result document to the filterable
columns of ``scan_results``; nothing else derives them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from fleet.db.models import DomainEndpoint, Endpoint, ScanCertificate, ScanResult
from fleet.repositories._sql import any_int, table_of
from fleet.repositories.reports import advance_latest
from scanner.models import PROTOCOLS, CertificateInfo, EndpointResult

__all__ = [
    "PROTOCOL_COLUMNS",
    "domain_results",
    "get_result",
    "latest_results",
    "record_certificates",
    "record_result",
    "record_results",
    "result_columns",
    "sweep_results",
]

#: Document protocol name → (column, rank). Rank orders versions: 0 SSLv2 … 5 TLS 1.3.
PROTOCOL_COLUMNS: dict[str, tuple[str, int]] = {
    name: (column, rank)
    for rank, (name, column) in enumerate(
        zip(PROTOCOLS, ("ssl2", "ssl3", "tls10", "tls11", "tls12", "tls13"), strict=True)
    )
}

Document = Mapping[str, Any]
#: A result as the scanner returns it, or its document (``EndpointResult.to_dict()``).
AnyResult = EndpointResult | Document


def _document(result: EndpointResult | Document) -> dict[str, Any]:
    return result.to_dict() if isinstance(result, EndpointResult) else dict(result)


def _timestamp(value: Any) -> dt.datetime | None:
    """An ISO 8601 timestamp from a document, as an aware datetime (naive → UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def result_columns(document: Document) -> dict[str, Any]:
    """The derived columns of ``scan_results`` for one result document.

    ``status`` and the error kind; one nullable flag per protocol version (None where
    the scan could not decide); the rank of the lowest and highest accepted version;
    ``plaintext_before_tls`` and ``starttls_offered`` (None where the service has no
    such thing or the scan did not get that far); the certificate's status and expiry;
    connections and duration. ``scanned_at`` is included only when the document has a
    valid timestamp (the column's default, ``now()``, applies otherwise).
    Raises ValueError for a document without a valid ``status``.
    """
    status = document.get("status")
    if status not in ("ok", "error"):
        raise ValueError(f"result document status must be 'ok' or 'error', not {status!r}")
    error = document.get("error") or {}
    protocols = document.get("protocols") or {}
    auth = document.get("auth") or {}
    starttls = document.get("starttls") or {}
    certificate = document.get("certificate") or {}
    columns: dict[str, Any] = {
        "status": status,
        "error_kind": error.get("kind"),
    }
    accepted: list[int] = []
    for name, (column, rank) in PROTOCOL_COLUMNS.items():
        value = protocols.get(name)
        columns[column] = value if isinstance(value, bool) else None
        if value is True:
            accepted.append(rank)
    columns["lowest_protocol"] = min(accepted) if accepted else None
    columns["highest_protocol"] = max(accepted) if accepted else None
    plaintext = auth.get("plaintext_before_tls")
    columns["plaintext_before_tls"] = plaintext if isinstance(plaintext, bool) else None
    offered = starttls.get("offered")
    columns["starttls_offered"] = offered if isinstance(offered, bool) else None
    columns["cert_status"] = certificate.get("status")
    columns["cert_not_after"] = _timestamp(certificate.get("not_after"))
    columns["connections"] = int(document.get("connections") or 0)
    columns["duration_ms"] = int(document.get("duration_ms") or 0)
    scanned_at = _timestamp(document.get("scanned_at"))
    if scanned_at is not None:
        columns["scanned_at"] = scanned_at
    return columns


def _row(sweep_id: int, endpoint_id: int, result: EndpointResult | Document) -> dict[str, Any]:
    document = _document(result)
    columns = result_columns(document)
    # Every row carries every column, so that one cached statement serves them all.
    columns.setdefault("scanned_at", dt.datetime.now(dt.UTC))
    return {"sweep_id": sweep_id, "endpoint_id": endpoint_id, "document": document, **columns}


def _insert_result() -> ReturningInsert[int]:
    table = table_of(ScanResult)
    return (
        insert(table)
        .on_conflict_do_nothing(constraint="uq_scan_results_sweep_endpoint")
        .returning(table.c.endpoint_id)
    )


def _insert_certificate() -> ReturningInsert[str]:
    table = table_of(ScanCertificate)
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=["sweep_id", "endpoint_id", "sni"])
        .returning(table.c.sni)
    )


# Built once: ON CONFLICT DO NOTHING RETURNING reports only the rows stored anew.
_INSERT_RESULT = _insert_result()
_INSERT_CERTIFICATE = _insert_certificate()


async def record_result(
    session: AsyncSession,
    sweep_id: int,
    endpoint_id: int,
    result: EndpointResult | Document,
) -> bool:
    """Store an endpoint's result in a sweep unless one is already there; True if new.

    ``INSERT … ON CONFLICT (sweep_id, endpoint_id) DO NOTHING``: the first result
    stored wins and a retried job changes nothing, so results are exactly-once however
    often a job runs. ``scanned_at`` comes from the document (now if it has none).
    A new result also moves the current state forward (:func:`~fleet.repositories.
    reports.advance_latest`).
    """
    stored = await session.execute(_INSERT_RESULT, _row(sweep_id, endpoint_id, result))
    new = stored.scalar_one_or_none() is not None
    if new:
        await advance_latest(session, sweep_id, [endpoint_id])
    return new


async def record_results(
    session: AsyncSession,
    sweep_id: int,
    results: Mapping[int, AnyResult] | Iterable[tuple[int, AnyResult]],
) -> set[int]:
    """:func:`record_result` in bulk (``{endpoint_id: result}``); the ids stored anew."""
    pairs = dict(results.items() if isinstance(results, Mapping) else results)
    if not pairs:
        return set()
    rows = [_row(sweep_id, eid, result) for eid, result in sorted(pairs.items())]
    stored = {row[0] for row in await session.execute(_INSERT_RESULT, rows)}
    await advance_latest(session, sweep_id, stored)
    return stored


async def record_certificates(
    session: AsyncSession,
    sweep_id: int,
    endpoint_id: int,
    certificates: Mapping[str, CertificateInfo | Document | None],
) -> int:
    """Store the certificates an endpoint sent for further SNI names; how many were new.

    ``{sni: certificate}``; None records that no handshake succeeded for that name.
    Insert-once per (sweep, endpoint, sni), like results.
    """
    if not certificates:
        return 0
    rows = [
        {
            "sweep_id": sweep_id,
            "endpoint_id": endpoint_id,
            "sni": sni,
            "certificate": (
                cert.to_dict()
                if isinstance(cert, CertificateInfo)
                else (dict(cert) if cert is not None else None)
            ),
        }
        for sni, cert in sorted(certificates.items())
    ]
    return len((await session.scalars(_INSERT_CERTIFICATE, rows)).all())


async def get_result(session: AsyncSession, sweep_id: int, endpoint_id: int) -> ScanResult | None:
    """The result of one endpoint in one sweep, if stored."""
    return await session.scalar(
        select(ScanResult).where(
            ScanResult.sweep_id == sweep_id, ScanResult.endpoint_id == endpoint_id
        )
    )


async def sweep_results(
    session: AsyncSession, sweep_id: int, endpoint_ids: Collection[int] | None = None
) -> dict[int, ScanResult]:
    """The results stored for a sweep, by endpoint id (optionally only some endpoints)."""
    stmt = select(ScanResult).where(ScanResult.sweep_id == sweep_id)
    if endpoint_ids is not None:
        stmt = stmt.where(any_int(ScanResult.endpoint_id, endpoint_ids))
    return {result.endpoint_id: result for result in await session.scalars(stmt)}


async def latest_results(
    session: AsyncSession, endpoint_ids: Collection[int] | None = None
) -> dict[int, ScanResult]:
    """The most recent result of every endpoint (or of the given ones), by endpoint id.

    ``DISTINCT ON (endpoint_id)`` ordered by ``scanned_at`` descending: served by the
    ``(endpoint_id, scanned_at)`` index.
    """
    stmt = select(ScanResult).ext(distinct_on(ScanResult.endpoint_id))
    if endpoint_ids is not None:
        stmt = stmt.where(any_int(ScanResult.endpoint_id, endpoint_ids))
    stmt = stmt.order_by(ScanResult.endpoint_id, ScanResult.scanned_at.desc(), ScanResult.id.desc())
    return {result.endpoint_id: result for result in await session.scalars(stmt)}


async def domain_results(
    session: AsyncSession, domain_id: int
) -> list[tuple[Endpoint, ScanResult]]:
    """The endpoints the domain used in its latest sweep, each with its latest result
    (endpoints without a result yet are left out), in (host, port) order."""
    latest = await session.scalar(
        select(func.max(DomainEndpoint.sweep_id)).where(DomainEndpoint.domain_id == domain_id)
    )
    if latest is None:
        return []
    endpoints = (
        await session.scalars(
            select(Endpoint)
            .where(
                Endpoint.id.in_(
                    select(DomainEndpoint.endpoint_id).where(
                        DomainEndpoint.domain_id == domain_id, DomainEndpoint.sweep_id == latest
                    )
                )
            )
            .order_by(Endpoint.host, Endpoint.port, Endpoint.ip)
        )
    ).all()
    results = await latest_results(session, [e.id for e in endpoints])
    return [(e, results[e.id]) for e in endpoints if e.id in results]
