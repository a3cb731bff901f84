"""Sweeps: creation, status, discovery records, progress, the reconciler's query, closing.

A sweep's endpoints are the distinct ``endpoint_id`` of its ``domain_endpoints`` rows
(written by :func:`record_discovery`); it is complete when each has a ``scan_results``
row. Status moves ``pending → discovering → scanning → closing → done`` (or
``cancelled`` / ``failed``); :func:`set_sweep_status` does it as a compare-and-set, so
that several workers racing to move a sweep on do it exactly once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import case, func, select, text, update
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import SWEEP_STATUSES, DomainEndpoint, ScanResult, Sweep, SweepDomain
from fleet.repositories import reports
from fleet.repositories._sql import table_of
from fleet.repositories.diff import SweepDiff, sweep_diff
from fleet.repositories.endpoints import ensure_endpoints
from fleet.repositories.inventory import validate_scope
from fleet.repositories.results import record_results
from scanner.discovery import EndpointKey, EndpointPlan
from scanner.errors import PrivateTargetError
from scanner.models import EndpointResult, ErrorInfo, Target
from scanner.services import service_named

__all__ = [
    "FINAL_STATUSES",
    "OPEN_STATUSES",
    "CancelOutcome",
    "DiscoveryRecord",
    "SweepKind",
    "SweepProgress",
    "SweepStatus",
    "cancel_sweep",
    "close_sweep",
    "create_sweep",
    "endpoint_host_names",
    "get_sweep",
    "hold_open",
    "lock_nightly_start",
    "open_sweeps",
    "previous_closed_sweep",
    "record_discovery",
    "scheduled_sweep",
    "set_sweep_status",
    "sweep_counts",
    "sweep_endpoint_ids",
    "sweep_page",
    "sweep_progress",
    "unfinished_endpoints",
]

SweepKind = Literal["nightly", "adhoc"]
SweepStatus = Literal[
    "pending", "discovering", "scanning", "closing", "done", "cancelled", "failed"
]

#: Sweeps a worker may still have to act on (the reconciler looks at these).
OPEN_STATUSES: tuple[str, ...] = ("pending", "discovering", "scanning", "closing")
#: Statuses a sweep never leaves.
FINAL_STATUSES: tuple[str, ...] = ("done", "cancelled", "failed")

#: What :func:`cancel_sweep` found: ``cancelled`` (this call moved it), ``already``
#: (it was cancelled before), ``final`` (done or failed: it cannot be cancelled),
#: ``unknown`` (no such sweep).
CancelOutcome = Literal["cancelled", "already", "final", "unknown"]


@dataclass(frozen=True, slots=True)
class DiscoveryRecord:
    """What :func:`record_discovery` stored: every endpoint's id, those to scan, and
    those rejected by the address policy (which already have their error result)."""

    endpoint_ids: dict[EndpointKey, int]
    to_scan: list[int]
    rejected: list[int]
    total_endpoints: int


@dataclass(frozen=True, slots=True)
class SweepProgress:
    """How far a sweep is. ``done`` counts stored results (``failed`` of them errors);
    ``rate`` is results per second since the sweep started; ``eta_seconds`` is None
    until there is a rate (and 0 when nothing remains)."""

    sweep_id: int
    status: str
    total: int
    done: int
    failed: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    elapsed_seconds: float | None
    rate: float | None
    eta_seconds: float | None

    @property
    def remaining(self) -> int:
        return max(self.total - self.done, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "remaining": self.remaining,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "elapsed_seconds": self.elapsed_seconds,
            "rate": self.rate,
            "eta_seconds": self.eta_seconds,
        }


async def create_sweep(
    session: AsyncSession,
    *,
    kind: SweepKind,
    scope: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    scheduled_for: dt.datetime | None = None,
) -> Sweep:
    """A new ``pending`` sweep (flushed: its id is set). ValueError for a bad scope or
    kind (see :func:`fleet.repositories.inventory.validate_scope`). ``scheduled_for``:
    the schedule tick a nightly sweep was started for (unique: a second sweep for the
    same tick fails with an IntegrityError)."""
    if kind not in ("nightly", "adhoc"):
        raise ValueError(f"unknown sweep kind {kind!r}")
    sweep = Sweep(
        kind=kind,
        status="pending",
        scope=validate_scope(scope),
        options=dict(options or {}),
        total_endpoints=0,
        scheduled_for=scheduled_for,
    )
    session.add(sweep)
    await session.flush()
    return sweep


#: The key of the transaction-level advisory lock that serialises starting nightly
#: sweeps (an arbitrary constant: "tlsf" in ASCII, then 1).
_NIGHTLY_LOCK = 0x746C7366_0001


async def lock_nightly_start(session: AsyncSession) -> None:
    """Wait for, and hold until the transaction ends, the lock every scheduler takes
    before it checks for an open nightly sweep and creates the next one — so that two
    schedulers cannot both pass the check."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _NIGHTLY_LOCK})


async def scheduled_sweep(session: AsyncSession, scheduled_for: dt.datetime) -> Sweep | None:
    """The sweep started for this schedule tick, if any."""
    return await session.scalar(select(Sweep).where(Sweep.scheduled_for == scheduled_for))


async def get_sweep(
    session: AsyncSession, sweep_id: int, *, for_update: bool = False
) -> Sweep | None:
    """The sweep, fresh from the database; ``for_update`` locks its row until the
    transaction ends (to serialise workers acting on the same sweep)."""
    stmt = select(Sweep).where(Sweep.id == sweep_id).execution_options(populate_existing=True)
    if for_update:
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


async def set_sweep_status(
    session: AsyncSession,
    sweep_id: int,
    status: SweepStatus,
    *,
    expected: Collection[str] | None = None,
    error: str | None = None,
) -> bool:
    """Move a sweep to ``status`` if its current status is one of ``expected`` (any
    non-final status when None); True if this call moved it.

    ``started_at`` is set on the first move to ``discovering`` or ``scanning``,
    ``finished_at`` on a move to a final status; ``error`` is stored when given.
    A ``Sweep`` already loaded in the session is not refreshed: reload it with
    :func:`get_sweep`.
    """
    if status not in SWEEP_STATUSES:
        raise ValueError(f"unknown sweep status {status!r}")
    allowed = list(expected) if expected is not None else list(OPEN_STATUSES)
    values: dict[str, Any] = {"status": status}
    if status in ("discovering", "scanning"):
        values["started_at"] = func.coalesce(Sweep.started_at, func.now())
    if status in FINAL_STATUSES:
        values["finished_at"] = func.now()
    if error is not None:
        values["error"] = error
    stmt = (
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status.in_(allowed))
        .values(**values)
        .returning(Sweep.id)
        .execution_options(synchronize_session=False)
    )
    moved = (await session.execute(stmt)).scalar_one_or_none() is not None
    return moved


async def cancel_sweep(session: AsyncSession, sweep_id: int) -> CancelOutcome:
    """Move an open sweep (pending, discovering, scanning, closing) to ``cancelled``.

    A compare-and-set: of a cancel racing a close, the first to lock the sweep row wins
    and the other finds it final. A cancelled sweep is final: the reconciler leaves it
    alone, jobs that start later skip it, and no result is stored into it afterwards
    (:func:`hold_open`). Its results stored so far, its discovery and its progress stay.
    """
    if await set_sweep_status(session, sweep_id, "cancelled", expected=OPEN_STATUSES):
        return "cancelled"
    status = await session.scalar(select(Sweep.status).where(Sweep.id == sweep_id))
    if status is None:
        return "unknown"
    return "already" if status == "cancelled" else "final"


async def hold_open(session: AsyncSession, sweep_id: int) -> bool:
    """Whether the sweep is still open, holding it so until the transaction ends.

    ``SELECT … FOR SHARE`` on the sweep row: writers of results take it before they
    insert, so a cancel (or a close, which locks the row for update) waits for their
    commit, and a writer that comes after the cancel sees it and stores nothing. Writers
    do not block each other.
    """
    status = await session.scalar(
        select(Sweep.status).where(Sweep.id == sweep_id).with_for_update(read=True)
    )
    return status in OPEN_STATUSES


async def open_sweeps(
    session: AsyncSession, statuses: Collection[str] = OPEN_STATUSES
) -> list[Sweep]:
    """Sweeps in one of ``statuses`` (by default every non-final one), oldest first."""
    rows = await session.scalars(
        select(Sweep)
        .where(Sweep.status.in_(list(statuses)))
        .order_by(Sweep.id)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def sweep_page(session: AsyncSession, *, before: int | None, limit: int) -> list[Sweep]:
    """A page of sweeps, newest first: up to ``limit + 1`` (one more tells the caller
    there is a next page), of ids below ``before`` (the last id of the previous page)."""
    stmt = select(Sweep)
    if before is not None:
        stmt = stmt.where(Sweep.id < before)
    return list((await session.scalars(stmt.order_by(Sweep.id.desc()).limit(limit + 1))).all())


async def sweep_counts(session: AsyncSession) -> dict[str, int]:
    """How many sweeps are in each status (statuses without a sweep are left out)."""
    rows = await session.execute(select(Sweep.status, func.count()).group_by(Sweep.status))
    return {str(status): int(count) for status, count in rows.all()}


def _rejected_result(target: Target, reason: str) -> EndpointResult:
    error = PrivateTargetError(f"{target.host} ({target.ip}): {reason}", phase="plan")
    return EndpointResult(
        target=target,
        status="error",
        error=ErrorInfo(kind=error.kind, phase=error.phase, message=error.message),
    )


def _inserts() -> tuple[Insert, Insert]:
    """The discovery's bulk inserts, built once (each runs as one executemany)."""
    sweep_domain = insert(table_of(SweepDomain)).on_conflict_do_nothing(
        index_elements=["sweep_id", "domain_id"]
    )
    domain_endpoint = insert(table_of(DomainEndpoint)).on_conflict_do_nothing(
        constraint="uq_domain_endpoints_use"
    )
    return sweep_domain, domain_endpoint


_INSERT_SWEEP_DOMAIN, _INSERT_DOMAIN_ENDPOINT = _inserts()


async def record_discovery(
    session: AsyncSession,
    sweep_id: int,
    plan: EndpointPlan,
    domain_ids: Mapping[str, int],
) -> DiscoveryRecord:
    """Store a sweep's discovery: one ``sweep_domains`` row per discovered domain (with
    its Discovery document), the plan's endpoints (get-or-create), one
    ``domain_endpoints`` row per (domain, endpoint, host, how), and ``total_endpoints``.

    ``domain_ids`` maps every discovered (A-label) domain name to its id. Endpoints the
    plan rejected (private addresses) get their ``private_target`` error result here,
    so that the sweep can complete. Idempotent, and additive: a sweep discovered in
    several chunks calls this once per chunk; the total counts all of them.
    """
    discoveries = list(plan.discoveries)
    missing = [d.domain for d in discoveries if d.domain not in domain_ids]
    if missing:
        raise KeyError(f"no domain id for {', '.join(missing[:5])}")
    if discoveries:
        await session.execute(
            _INSERT_SWEEP_DOMAIN,
            [
                {
                    "sweep_id": sweep_id,
                    "domain_id": domain_ids[d.domain],
                    "status": d.status,
                    "discovery": d.to_dict(),
                }
                for d in sorted(discoveries, key=lambda d: domain_ids[d.domain])
            ],
        )

    hosts: dict[EndpointKey, str] = {}
    rejected_targets: dict[EndpointKey, Target] = {}
    for key in list(plan.keys()):
        if key in plan.rejected:
            name = min(use.host for use in plan.uses(key))
            service = service_named(key.service)
            rejected_targets[key] = Target(
                name, key.ip, key.port, service.name, service.tls_mode, name
            )
            hosts[key] = name
        else:
            hosts[key] = plan.target(key).host
    ids = await ensure_endpoints(session, hosts)

    uses = sorted(
        {
            (domain_ids[use.domain], ids[key], use.host, use.how)
            for key in hosts
            for use in plan.uses(key)
        }
    )
    if uses:
        await session.execute(
            _INSERT_DOMAIN_ENDPOINT,
            [
                {
                    "sweep_id": sweep_id,
                    "domain_id": domain_id,
                    "endpoint_id": endpoint_id,
                    "host": host,
                    "how": how,
                }
                for domain_id, endpoint_id, host, how in uses
            ],
        )

    if rejected_targets:
        await record_results(
            session,
            sweep_id,
            {
                ids[key]: _rejected_result(target, plan.rejected[key])
                for key, target in rejected_targets.items()
            },
        )
    total = await _count_endpoints(session, sweep_id)
    await session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(total_endpoints=total)
        .execution_options(synchronize_session=False)
    )
    return DiscoveryRecord(
        endpoint_ids=ids,
        to_scan=[ids[endpoint_key] for endpoint_key in hosts if endpoint_key not in plan.rejected],
        rejected=sorted(ids[key] for key in rejected_targets),
        total_endpoints=total,
    )


async def _count_endpoints(session: AsyncSession, sweep_id: int) -> int:
    count = await session.scalar(
        select(func.count(func.distinct(DomainEndpoint.endpoint_id))).where(
            DomainEndpoint.sweep_id == sweep_id
        )
    )
    return int(count or 0)


async def sweep_endpoint_ids(session: AsyncSession, sweep_id: int) -> list[int]:
    """Every endpoint of a sweep (from its discovery), by id."""
    rows = await session.scalars(
        select(DomainEndpoint.endpoint_id)
        .where(DomainEndpoint.sweep_id == sweep_id)
        .distinct()
        .order_by(DomainEndpoint.endpoint_id)
    )
    return list(rows)


async def endpoint_host_names(session: AsyncSession, sweep_id: int, endpoint_id: int) -> list[str]:
    """The distinct host names domains reach an endpoint by in a sweep (one SNI, and so
    one certificate, each), sorted."""
    rows = await session.scalars(
        select(DomainEndpoint.host)
        .where(DomainEndpoint.sweep_id == sweep_id, DomainEndpoint.endpoint_id == endpoint_id)
        .distinct()
        .order_by(DomainEndpoint.host)
    )
    return list(rows)


async def unfinished_endpoints(
    session: AsyncSession, sweep_id: int, *, limit: int | None = None
) -> list[int]:
    """The endpoints of a sweep that have no result yet (for the reconciler), by id."""
    stmt = text(
        """
        SELECT DISTINCT de.endpoint_id
        FROM domain_endpoints AS de
        WHERE de.sweep_id = :sweep_id
          AND NOT EXISTS (
              SELECT 1 FROM scan_results AS r
              WHERE r.sweep_id = de.sweep_id AND r.endpoint_id = de.endpoint_id
          )
        ORDER BY de.endpoint_id
        LIMIT :limit
        """
    )
    rows = await session.scalars(stmt, {"sweep_id": sweep_id, "limit": limit})
    return list(rows)


async def sweep_progress(session: AsyncSession, sweep_id: int) -> SweepProgress | None:
    """Progress of a sweep (None if there is no such sweep); one query."""
    done = (
        select(func.count()).where(ScanResult.sweep_id == Sweep.id).scalar_subquery().label("done")
    )
    failed = (
        select(func.count())
        .where(ScanResult.sweep_id == Sweep.id, ScanResult.status == "error")
        .scalar_subquery()
        .label("failed")
    )
    elapsed = func.extract(
        "epoch", func.coalesce(Sweep.finished_at, func.clock_timestamp()) - Sweep.started_at
    )
    row = (
        await session.execute(
            select(
                Sweep.status,
                Sweep.total_endpoints,
                Sweep.started_at,
                Sweep.finished_at,
                done,
                failed,
                case((Sweep.started_at.is_(None), None), else_=elapsed).label("elapsed"),
            ).where(Sweep.id == sweep_id)
        )
    ).one_or_none()
    if row is None:
        return None
    stored, total = int(row.done), int(row.total_endpoints)
    seconds = float(row.elapsed) if row.elapsed is not None else None
    rate = stored / seconds if seconds and seconds > 0 and stored else None
    remaining = max(total - stored, 0)
    eta = 0.0 if remaining == 0 and total else (remaining / rate if rate else None)
    return SweepProgress(
        sweep_id=sweep_id,
        status=row.status,
        total=total,
        done=stored,
        failed=int(row.failed),
        started_at=row.started_at,
        finished_at=row.finished_at,
        elapsed_seconds=seconds,
        rate=rate,
        eta_seconds=eta,
    )


async def previous_closed_sweep(session: AsyncSession, sweep_id: int) -> Sweep | None:
    """The latest ``done`` sweep created before this one with the same scope (nightly
    sweeps all have ``{"all": true}``), or None. Diffs compare against it."""
    current = select(Sweep.scope).where(Sweep.id == sweep_id).scalar_subquery()
    return await session.scalar(
        select(Sweep)
        .where(Sweep.id < sweep_id, Sweep.status == "done", Sweep.scope == current)
        .order_by(Sweep.id.desc())
        .limit(1)
    )


async def close_sweep(
    session: AsyncSession, sweep_id: int, *, force: bool = False
) -> SweepDiff | None:
    """Close a sweep once all its results are in: compute and store its diff against
    :func:`previous_closed_sweep`, set ``done`` and ``finished_at``; return the diff.

    Returns None, changing nothing, when the sweep is already final (another worker
    closed it: the row lock makes that race safe) or, unless ``force``, when some
    endpoints still lack a result.
    """
    sweep = await get_sweep(session, sweep_id, for_update=True)
    if sweep is None:
        raise LookupError(f"no sweep {sweep_id}")
    if sweep.status in FINAL_STATUSES:
        return None
    if not force and await unfinished_endpoints(session, sweep_id, limit=1):
        return None
    previous = await previous_closed_sweep(session, sweep_id)
    diff = await sweep_diff(session, sweep_id, previous.id if previous else None)
    await session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(
            status="done",
            diff=diff.to_dict(),
            finished_at=func.now(),
            started_at=func.coalesce(Sweep.started_at, func.now()),
        )
        .execution_options(synchronize_session=False)
    )
    await reports.settle_empty_domains(session, sweep_id)
    await reports.store_sweep_stats(session, sweep_id)
    await session.refresh(sweep)
    return diff
