"""``/v1/sweeps``: start an ad-hoc sweep, show one with its progress, list them, cancel
one, its diff (stored, or against any other sweep); ``/v1/domains/{id}/results``: the
latest result per endpoint of a domain; ``/v1/endpoints/{id}``: an endpoint, the
domains that use it, and its results across sweeps."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Reader, RuntimeDep, ScopedReader, SessionDep, Writer
from api.errors import Conflict, Invalid, NotFound
from api.export import FormatQuery, csv_responses, page_or_csv, schema_columns
from api.pagination import CursorQuery, LimitQuery, decode_cursor, next_link
from api.schemas.common import MAX_ID, IdPath, Page, problems
from api.schemas.sweeps import (
    DiffCategory,
    DiffEntryRead,
    DomainResults,
    EndpointDetailRead,
    EndpointHistoryRead,
    EndpointRead,
    EndpointResultRead,
    EndpointUseRead,
    SweepCreate,
    SweepDiffPage,
    SweepProgressRead,
    SweepRead,
)
from fleet import sweeps
from fleet.db.models import Sweep
from fleet.repositories import endpoints as endpoint_repo
from fleet.repositories import results as result_repo
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories.diff import DiffEntry, SweepDiff, sweep_diff
from fleet.repositories.inventory import get_domain
from fleet.repositories.sweeps import SweepProgress
from fleet.repositories.sweeps import get_sweep as load_sweep
from scanner.discovery import normalise_domain
from scanner.errors import TargetError

SWEEP_COLUMNS = schema_columns(SweepRead)
HISTORY_COLUMNS = schema_columns(EndpointHistoryRead)

router = APIRouter(
    prefix="/v1", tags=["sweeps and results"], responses=problems(401, 429, 403, 422)
)
log = logging.getLogger(__name__)


def _read(sweep: Sweep, progress: SweepProgress | None = None) -> SweepRead:
    return SweepRead(
        id=sweep.id,
        kind=sweep.kind,
        status=sweep.status,
        scope=sweep.scope,
        options=sweep.options,
        created_at=sweep.created_at,
        started_at=sweep.started_at,
        finished_at=sweep.finished_at,
        progress=None
        if progress is None
        else SweepProgressRead(
            total=progress.total,
            done=progress.done,
            failed=progress.failed,
            remaining=progress.remaining,
            elapsed_seconds=progress.elapsed_seconds,
            rate=progress.rate,
            eta_seconds=progress.eta_seconds,
        ),
    )


@router.post(
    "/sweeps",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start an ad-hoc sweep",
    responses=problems(503),
)
async def start_sweep(
    body: SweepCreate, session: SessionDep, runtime: RuntimeDep, caller: Writer
) -> SweepRead:
    """Queue a sweep of the whole fleet, some customers (ids) or some domains (names)
    for the workers. Domains not in the inventory are left out of the sweep. 503 when
    the job queue is unreachable (the sweep then waits for the reconciler)."""
    if body.all:
        scope: dict[str, object] = {"all": True}
    elif body.customers is not None:
        scope = {"customers": body.customers}
    else:
        assert body.domains is not None
        try:
            scope = {"domains": [normalise_domain(n) for n in body.domains]}
        except TargetError as exc:
            raise Invalid(f"domains: {exc.message}") from None
    queue = await runtime.queue()
    try:
        sweep_id = await sweeps.start_sweep(
            runtime.sessions, queue, scope=scope, options=sweeps.SweepOptions(quick=body.quick)
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    log.info("sweep %s started by key %s: %s", sweep_id, caller.prefix, sorted(scope))
    sweep = await load_sweep(session, sweep_id)
    assert sweep is not None
    return _read(sweep, await sweeps.progress(session, sweep_id))


@router.get(
    "/sweeps",
    summary="List sweeps",
    response_model=Page[SweepRead],
    responses=csv_responses(
        SWEEP_COLUMNS,
        "id,kind,status,scope,options,created_at,started_at,finished_at,progress\r\n"
        '12,nightly,done,"{""all"":true}","{""quick"":true}",2026-11-28T02:00:00+00:00,'
        "2026-11-28T02:00:01+00:00,2026-11-28T02:04:10+00:00,\r\n",
    ),
)
async def list_sweeps(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: Reader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """Sweeps, newest first (without progress; show one sweep for that); `format=csv`
    streams them all as CSV."""

    def fetch(s: AsyncSession, before: int | None, n: int) -> Awaitable[Sequence[Sweep]]:
        return sweep_repo.sweep_page(s, before=before, limit=n)

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        SweepRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename="sweeps.csv",
        convert=_read,
    )


@router.get("/sweeps/{sweep_id}", summary="Show a sweep and its progress", responses=problems(404))
async def get_sweep(sweep_id: IdPath, session: SessionDep, _caller: Reader) -> SweepRead:
    """A sweep with its progress: results stored, failed, remaining, rate and ETA."""
    sweep = await load_sweep(session, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    return _read(sweep, await sweeps.progress(session, sweep_id))


@router.post(
    "/sweeps/{sweep_id}/cancel",
    summary="Cancel an open sweep",
    responses=problems(404, 409),
)
async def cancel_sweep(
    sweep_id: IdPath, session: SessionDep, runtime: RuntimeDep, caller: Writer
) -> SweepRead:
    """Move an open sweep (pending, discovering, scanning, closing) to ``cancelled``:
    its queued jobs leave the queue, jobs already running store nothing more, its
    results so far stay. Cancelling a cancelled sweep again changes nothing (200); a
    done or failed sweep is a 409. Works while the job queue is unreachable (the jobs
    left in it do nothing when they run)."""
    try:
        queue = await runtime.queue()
    except (RedisError, OSError):
        queue = None
    report = await sweeps.cancel(runtime.sessions, queue, sweep_id)
    if report.outcome == "unknown":
        raise NotFound(f"no sweep {sweep_id}")
    sweep = await load_sweep(session, sweep_id)
    assert sweep is not None
    if report.outcome == "final":
        raise Conflict(
            f"sweep {sweep_id} is {sweep.status}: only an open sweep (pending, "
            "discovering, scanning, closing) can be cancelled"
        )
    if report.outcome == "cancelled":
        log.info(
            "sweep %s cancelled by key %s (%s queued jobs removed)",
            sweep_id,
            caller.prefix,
            report.removed_jobs,
        )
    return _read(sweep, await sweeps.progress(session, sweep_id))


@dataclass(frozen=True, slots=True)
class _Placed:
    """A diff entry with its place in the listing, from 1 (the cursor's ``id``): a
    diff between final sweeps never changes, so its positions are stable."""

    id: int
    category: str
    entry: DiffEntry


@router.get(
    "/sweeps/{sweep_id}/diff",
    summary="What changed since another sweep",
    responses=problems(404, 409),
)
async def get_sweep_diff(
    request: Request,
    sweep_id: IdPath,
    session: SessionDep,
    _caller: Reader,
    against: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="the baseline sweep: compare with it now, whatever its status",
        ),
    ] = None,
    category: Annotated[DiffCategory | None, Query(description="only this category")] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> SweepDiffPage:
    """Without ``against``: the diff stored when the sweep closed, against the previous
    closed sweep of the same scope (409 while the sweep is not closed, or if it closed
    without one). With ``against``: the diff between the two sweeps, computed now from
    what both hold (the sweep against the baseline ``against``; 422 for the sweep
    itself). Entries are paged by category (in a fixed order), then endpoint id;
    ``counts`` always covers the whole diff. Comparing sweeps that are still open, a
    page may shift as their results come in."""
    sweep = await load_sweep(session, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    if against is not None:
        if against == sweep_id:
            raise Invalid("against: a sweep cannot be compared with itself")
        if await load_sweep(session, against) is None:
            raise NotFound(f"no sweep {against}")
        diff = await sweep_diff(session, sweep_id, against)
    elif sweep.diff is None:
        raise Conflict(
            f"sweep {sweep_id} is {sweep.status} and has no stored diff (a sweep stores "
            "its diff when it closes); compare it now with ?against=<sweep id>"
        )
    else:
        diff = SweepDiff.from_dict(sweep.diff)
    after = decode_cursor(cursor) or 0
    listing = diff.listing(category)
    rows = [
        _Placed(place + 1, *listing[place])
        for place in range(after, min(after + limit + 1, len(listing)))
    ]
    items, link = next_link(request, rows, limit)
    return SweepDiffPage(
        sweep_id=sweep_id,
        previous_sweep_id=diff.previous_sweep_id,
        stored=against is None,
        counts=diff.counts(),
        items=[DiffEntryRead(category=k.category, **k.entry.to_dict()) for k in items],
        next=link,
    )


@router.get(
    "/domains/{domain_id}/results",
    summary="Latest results of a domain's endpoints",
    responses=problems(404),
)
async def domain_results(
    domain_id: IdPath, session: SessionDep, caller: ScopedReader
) -> DomainResults:
    """For each endpoint the domain used in its latest sweep, the latest result document
    (docs/result-document.md). Account managers see only their customers' domains."""
    domain = await get_domain(session, domain_id, manager=caller.scope)
    if domain is None:
        raise NotFound(f"no domain {domain_id}")
    pairs = await result_repo.domain_results(session, domain_id)
    return DomainResults(
        domain=domain.name,
        results=[
            EndpointResultRead(
                endpoint=EndpointRead(
                    id=e.id, ip=e.ip, port=e.port, service=e.service, host=e.host
                ),
                sweep_id=r.sweep_id,
                scanned_at=r.scanned_at,
                status=r.status,
                document=r.document,
            )
            for e, r in pairs
        ],
    )


@router.get("/endpoints/{endpoint_id}", summary="Show an endpoint", responses=problems(404))
async def get_endpoint(
    endpoint_id: IdPath, session: SessionDep, caller: ScopedReader
) -> EndpointDetailRead:
    """An endpoint (ip, port, service, the host name it is scanned under) and every
    domain that used it in its latest sweep, with the name and the way each reached it.
    Account managers see an endpoint only if one of their customers' domains used it in
    some sweep, and only their own domains."""
    endpoint = await endpoint_repo.get_endpoint(session, endpoint_id, manager=caller.scope)
    if endpoint is None:
        raise NotFound(f"no endpoint {endpoint_id}")
    latest, uses = await endpoint_repo.endpoint_uses(session, endpoint_id, manager=caller.scope)
    return EndpointDetailRead(
        id=endpoint.id,
        ip=endpoint.ip,
        port=endpoint.port,
        service=endpoint.service,
        host=endpoint.host,
        first_seen=endpoint.first_seen,
        last_seen=endpoint.last_seen,
        latest_sweep_id=latest,
        domains=[
            EndpointUseRead(domain_id=u.domain_id, domain=u.domain, host=u.host, how=u.how)
            for u in uses
        ],
    )


@router.get(
    "/endpoints/{endpoint_id}/results",
    summary="An endpoint's results across sweeps",
    response_model=Page[EndpointHistoryRead],
    responses={
        **csv_responses(HISTORY_COLUMNS, "id,sweep_id,scanned_at,status,error_kind,document\r\n"),
        **problems(404),
    },
)
async def endpoint_history(
    request: Request,
    endpoint_id: IdPath,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    documents: Annotated[
        bool, Query(description="include the result documents (false: status only)")
    ] = True,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """The endpoint's results, one per sweep that scanned it, newest (last stored)
    first: sweep id, time, status, error kind and the result document. Scoped like
    ``GET /v1/endpoints/{id}``. `format=csv` streams the whole history (documents as
    JSON cells unless ``documents=false``)."""
    if await endpoint_repo.get_endpoint(session, endpoint_id, manager=caller.scope) is None:
        raise NotFound(f"no endpoint {endpoint_id}")

    def fetch(s: AsyncSession, before: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return endpoint_repo.endpoint_results(
            s, endpoint_id, before=before, limit=n, documents=documents
        )

    def convert(r: Any) -> EndpointHistoryRead:
        return EndpointHistoryRead(
            id=r.id,
            sweep_id=r.sweep_id,
            scanned_at=r.scanned_at,
            status=r.status,
            error_kind=r.error_kind,
            document=r.document if documents else None,
        )

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        EndpointHistoryRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename=f"endpoint-{endpoint_id}-results.csv",
        convert=convert,
    )
