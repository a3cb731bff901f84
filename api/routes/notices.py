"""``/v1/notices`` and ``/v1/findings``: deprecation notices, their rendering and
lifecycle moves, and the stored findings of a sweep.

Readers (admin, operator, viewer) see everything; an account manager's key sees only
its customers' notices and findings (another manager's ids are 404, never 403).
Acknowledging and accepting a risk: admin, operator, and the customer's own account
manager.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import RuntimeDep, ScopedReader, ScopedWriter, SessionDep, SettingsDep
from api.errors import Conflict, Invalid, NotFound
from api.export import FormatQuery, csv_responses, page_or_csv, schema_columns
from api.pagination import CursorQuery, LimitQuery, decode_cursor
from api.schemas.common import MAX_ID, IdPath, Page, problems
from api.schemas.notices import (
    EndpointRef,
    ExceptionCreate,
    FindingRead,
    Language,
    NoticeDetail,
    NoticeRead,
    NoticeStatus,
    RenderFormat,
    SeverityName,
)
from fleet import notices
from fleet.db.models import Endpoint, Finding, Notice
from fleet.findings import SEVERITY_RANK, profile_for
from fleet.repositories import findings as finding_repo
from fleet.repositories import inventory
from fleet.repositories import notices as repo
from fleet.settings import Settings

NOTICE_COLUMNS = schema_columns(NoticeRead)
FINDING_COLUMNS = schema_columns(FindingRead)

router = APIRouter(prefix="/v1", tags=["notices"], responses=problems(401, 429, 403, 422))
log = logging.getLogger(__name__)

IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]


async def _own(session: AsyncSession, notice_id: int, scope: int | None) -> Notice:
    found = await repo.get_notice(session, notice_id, manager=scope)
    if found is None:
        raise NotFound(f"no notice {notice_id}")
    return found


async def _check_filters(
    session: AsyncSession, scope: int | None, customer_id: int | None, manager_id: int | None
) -> None:
    """Another manager's customer or manager id in a filter is a 404 for an account
    manager's key, as its own path would be."""
    if scope is None:
        return
    if manager_id is not None and manager_id != scope:
        raise NotFound(f"no account manager {manager_id}")
    if (
        customer_id is not None
        and await inventory.get_customer(session, customer_id, manager=scope) is None
    ):
        raise NotFound(f"no customer {customer_id}")


def _finding(finding: Finding, endpoint: Endpoint) -> FindingRead:
    return FindingRead(
        id=finding.id,
        sweep_id=finding.sweep_id,
        endpoint_id=finding.endpoint_id,
        endpoint=EndpointRef(
            host=endpoint.host, ip=endpoint.ip, port=endpoint.port, service=endpoint.service
        ),
        code=finding.code,
        severity=finding.severity,  # type: ignore[arg-type]  # checked by the table
        port_class=finding.port_class,
        title=finding.title,
        detail=finding.detail,
        evidence=list(finding.evidence),
        rules_version=finding.rules_version,
        profile=finding.profile,
    )


def _config(settings: Settings) -> notices.NoticeConfig:
    return notices.NoticeConfig.from_settings(settings, profile_for(settings))


class _Row:
    """A finding's API form with the id the page's cursor is made of."""

    def __init__(self, finding: Finding, endpoint: Endpoint) -> None:
        self.id = finding.id
        self.read = _finding(finding, endpoint)


@router.get(
    "/notices",
    summary="List notices",
    response_model=Page[NoticeRead],
    responses={
        **csv_responses(NOTICE_COLUMNS, ",".join(c.name for c in NOTICE_COLUMNS) + "\r\n"),
        **problems(404),
    },
)
async def list_notices(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status: Annotated[NoticeStatus | None, Query(description="only notices in this state")] = None,
    customer_id: IdQuery = None,
    account_manager_id: IdQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """Notices in id order, optionally of one status, customer or account manager (an
    account manager's key sees only its customers'); `format=csv` streams them all."""
    await _check_filters(session, caller.scope, customer_id, account_manager_id)

    def fetch(s: AsyncSession, after: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return repo.list_notices(
            s,
            after=after,
            limit=n,
            manager=caller.scope,
            status=status,
            customer_id=customer_id,
            account_manager_id=account_manager_id,
        )

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        NoticeRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename="notices.csv",
    )


@router.get("/notices/{notice_id}", summary="Show a notice", responses=problems(404))
async def get_notice(notice_id: IdPath, session: SessionDep, caller: ScopedReader) -> NoticeDetail:
    """One notice with its problem set, what the confirming re-scan showed, and the
    findings of its sweep behind its problems."""
    notice = await _own(session, notice_id, caller.scope)
    keys = {(int(p["endpoint_id"]), str(p["code"])) for p in notice.problems if "endpoint_id" in p}
    found = await finding_repo.sweep_findings(
        session, notice.sweep_id, sorted({e for e, _ in keys})
    )
    endpoints = await repo.endpoints_by_id(session, {f.endpoint_id for f in found})
    return NoticeDetail(
        **NoticeRead.model_validate(notice).model_dump(),
        confirmed=notice.confirmed,
        findings=[
            _finding(f, endpoints[f.endpoint_id])
            for f in found
            if (f.endpoint_id, f.code) in keys and f.endpoint_id in endpoints
        ],
    )


_RENDER_EXAMPLES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the rendered notice",
        "content": {
            "text/plain": {"example": "Notice 7 for Example GmbH: TLS and mail login changes …"},
            "text/html": {"example": '<!DOCTYPE html><html lang="en">…</html>'},
            "text/markdown": {"example": "# Notice 7 for Example GmbH …"},
        },
    },
}


@router.get(
    "/notices/{notice_id}/render",
    summary="Render a notice",
    response_class=Response,
    responses={**_RENDER_EXAMPLES, **problems(404)},
)
async def render_notice(
    notice_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    caller: ScopedReader,
    fmt: Annotated[
        RenderFormat, Query(alias="format", description="text, html or markdown")
    ] = "text",
    lang: Annotated[Language, Query(description="the notice's language")] = "en",
) -> Response:
    """The notice as the customer reads it: plain text, HTML (escaped) or Markdown, in
    English or German, from the deployment's templates where it has its own."""
    notice = await _own(session, notice_id, caller.scope)
    config = _config(settings)
    view = await notices.build_view(session, notice, config)
    body = notices.render(view, fmt, lang, templates_dir=config.templates_dir)
    return Response(content=body, media_type=notices.FORMATS[fmt][1])


@router.post(
    "/notices/{notice_id}/acknowledge",
    summary="Acknowledge a notice",
    responses=problems(404, 409),
)
async def acknowledge(notice_id: IdPath, session: SessionDep, caller: ScopedWriter) -> NoticeRead:
    """Record that the customer has seen a notified notice (``acknowledged``); again on
    an acknowledged one changes nothing; any other status is a 409."""
    notice = await _own(session, notice_id, caller.scope)
    await repo.lock_customer(session, notice.customer_id)
    await session.refresh(notice)
    try:
        await notices.acknowledge(session, notice)
    except notices.NoticeError as exc:
        raise Conflict(str(exc)) from None
    await session.commit()
    await session.refresh(notice)
    log.info("notice %s acknowledged by key %s", notice_id, caller.prefix)
    return NoticeRead.model_validate(notice)


@router.post(
    "/notices/{notice_id}/exception",
    summary="Accept a notice's risk until a date",
    responses=problems(404, 409),
)
async def set_exception(
    notice_id: IdPath, body: ExceptionCreate, session: SessionDep, caller: ScopedWriter
) -> NoticeRead:
    """Put an active notice into ``exception`` (accepted risk) with a reason, until a
    date after today; when that date has passed it opens again (re-scanned, then sent).
    A sweep that shows the problems fixed resolves it as usual. Resolved or dismissed
    notices are a 409."""
    notice = await _own(session, notice_id, caller.scope)
    await repo.lock_customer(session, notice.customer_id)
    await session.refresh(notice)
    try:
        await notices.set_exception(
            session, notice, body.reason, body.until, dt.datetime.now(dt.UTC).date()
        )
    except notices.NoticeError as exc:
        raise Conflict(str(exc)) from None
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    await session.commit()
    await session.refresh(notice)
    log.info("notice %s: exception until %s by key %s", notice_id, body.until, caller.prefix)
    return NoticeRead.model_validate(notice)


@router.get(
    "/findings",
    summary="List a sweep's findings",
    response_model=Page[FindingRead],
    responses={
        **csv_responses(FINDING_COLUMNS, ",".join(c.name for c in FINDING_COLUMNS) + "\r\n"),
        **problems(404),
    },
)
async def list_findings(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    sweep_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_ID, description="the sweep (default: the latest judged one)"),
    ] = None,
    severity: Annotated[
        SeverityName | None, Query(description="only findings at least this severe")
    ] = None,
    code: Annotated[str | None, Query(max_length=40, description="only this rule")] = None,
    customer_id: IdQuery = None,
    account_manager_id: IdQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """Findings of one closed sweep (by default the latest whose findings are stored)
    in id order, filtered by minimum severity, rule code, customer or account manager
    (an account manager's key sees only its customers' endpoints)."""
    await _check_filters(session, caller.scope, customer_id, account_manager_id)
    sweep = sweep_id if sweep_id is not None else await finding_repo.latest_judged_sweep(session)
    judged: int = sweep or 0

    async def fetch(s: AsyncSession, after: int | None, n: int) -> Sequence[_Row]:
        if sweep is None:  # no sweep judged yet: nothing to list
            return []
        rows = await finding_repo.list_findings(
            s,
            sweep_id=judged,
            after=after,
            limit=n,
            min_rank=SEVERITY_RANK[severity] if severity is not None else None,
            code=code,
            customer_id=customer_id,
            account_manager_id=caller.scope if caller.scope is not None else account_manager_id,
        )
        return [_Row(f, e) for f, e in rows]

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        FindingRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename=f"findings-sweep-{judged}.csv",
        convert=lambda row: row.read,
    )
