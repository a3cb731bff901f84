"""``/v1/sweeps``: start an ad-hoc sweep, show one with its progress, list them; and
``/v1/domains/{id}/results``: the latest result per endpoint of a domain."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, status

from api import queries
from api.deps import Reader, RuntimeDep, ScopedReader, SessionDep, Writer
from api.errors import Invalid, NotFound
from api.pagination import CursorQuery, LimitQuery, decode_cursor, next_link
from api.schemas.common import Page, problems
from api.schemas.sweeps import (
    DomainResults,
    EndpointRead,
    EndpointResultRead,
    SweepCreate,
    SweepProgressRead,
    SweepRead,
)
from fleet import sweeps
from fleet.db.models import Sweep
from fleet.repositories import results as result_repo
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories.sweeps import SweepProgress
from fleet.repositories.sweeps import get_sweep as load_sweep
from scanner.discovery import normalise_domain
from scanner.errors import TargetError

router = APIRouter(prefix="/v1", tags=["sweeps and results"], responses=problems(401, 403, 422))
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


@router.get("/sweeps", summary="List sweeps")
async def list_sweeps(
    request: Request,
    session: SessionDep,
    _caller: Reader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[SweepRead]:
    """Sweeps, newest first (without progress; show one sweep for that)."""
    rows = await sweep_repo.sweep_page(session, before=decode_cursor(cursor), limit=limit)
    items, link = next_link(request, rows, limit)
    return Page(items=[_read(s) for s in items], next=link)


@router.get("/sweeps/{sweep_id}", summary="Show a sweep and its progress", responses=problems(404))
async def get_sweep(sweep_id: int, session: SessionDep, _caller: Reader) -> SweepRead:
    """A sweep with its progress: results stored, failed, remaining, rate and ETA."""
    sweep = await load_sweep(session, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    return _read(sweep, await sweeps.progress(session, sweep_id))


@router.get(
    "/domains/{domain_id}/results",
    summary="Latest results of a domain's endpoints",
    responses=problems(404),
)
async def domain_results(
    domain_id: int, session: SessionDep, caller: ScopedReader
) -> DomainResults:
    """For each endpoint the domain used in its latest sweep, the latest result document
    (docs/result-document.md). Account managers see only their customers' domains."""
    domain = await queries.get_domain(session, domain_id, manager=caller.scope)
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
