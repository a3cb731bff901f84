"""The dashboard's pages under ``/dashboard``: log-in and log-out, the fleet overview,
live sweep progress, worst offenders with the per-account-manager breakdown, a
customer and a domain.

Numbers come from the same functions as the API: the overview and the breakdown call
the ``/v1/stats`` and ``/v1/stats/trend`` route functions (their cache included), the
customer page the cut-off view's; everything else reads repositories. A key sees what
it sees through the API: an account manager only its own customers and domains (others
are 404), and the sweeps page needs a reader's key (403 otherwise).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from api.auth import READERS, Principal
from api.dashboard import session as auth
from api.dashboard.render import PageError, page
from api.deps import RuntimeDep, SessionDep, SettingsDep, client_address
from api.errors import Invalid, NotFound, TooManyRequests
from api.routes import clients as client_routes
from api.routes import results as results_routes
from api.schemas.clients import ClientKind, ImpactRead
from api.schemas.common import IdPath
from api.schemas.results import StatsRead, TrendRead
from api.throttle import AuthThrottle
from fleet.db.models import Notice
from fleet.notices import ClientAccountView
from fleet.repositories import apikeys
from fleet.repositories import clients as client_repo
from fleet.repositories import dashboard as repo
from fleet.repositories import findings as finding_repo
from fleet.repositories import inventory as inventory_repo
from fleet.repositories import notices as notice_repo
from fleet.repositories import results as result_repo
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories.reports import DEFAULT_EXPIRING_DAYS, ResultFilter
from scanner.models import PROTOCOLS

__all__ = ["TREND_SERIES", "router"]

router = APIRouter(prefix=auth.PREFIX, include_in_schema=False)

#: Seconds the log-in page's form token lives.
_LOGIN_TOKEN_SECONDS = 3600
#: Sweeps shown in the trend charts.
TREND_SWEEPS = 20
#: The trend charts: (title, [(series name, finding)]).
TREND_SERIES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Legacy TLS accepted", (("TLS 1.0", "tls10"), ("TLS 1.1", "tls11"), ("SSL", "ssl"))),
    ("Break at the cut-off date", (("no TLS 1.2+", "no_modern_tls"),)),
    ("Passwords before TLS", (("plaintext login", "plaintext_before_tls"),)),
    ("STARTTLS missing", (("not offered", "starttls_missing"),)),
    (
        "Certificates",
        (("expiring", "cert_expiring"), ("expired", "cert_expired")),
    ),
    ("Scan errors", (("errors", "errors"),)),
)


async def _stats(
    session: SessionDep, runtime: RuntimeDep, caller: Principal, *, per_manager: bool = False
) -> StatsRead:
    return await results_routes.stats(
        session,
        runtime,
        caller,
        ResultFilter(),  # the route adds the caller's scope, as for GET /v1/stats
        expiring_days=DEFAULT_EXPIRING_DAYS,
        by_account_manager=per_manager,
    )


async def _impact(
    session: SessionDep, settings: SettingsDep, caller: Principal, kind: ClientKind
) -> ImpactRead:
    """``GET /v1/clients/impact?kind=…`` for the caller (its scope included)."""
    return await client_routes.client_impact(
        session,
        settings,
        caller,
        days=None,
        kind=kind,
        customer_id=None,
        account_manager_id=None,
    )


#: Mailboxes listed on a customer's page (most legacy and plaintext logins first).
CUSTOMER_MAILBOXES = 100


# -- log-in, log-out ----------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The log-in form: paste an API key."""
    token = auth.new_login_token()
    response = page(
        request,
        "login.html.j2",
        {"csrf": token, "next": auth.safe_next(request.query_params.get("next")), "error": None},
    )
    auth.set_cookie(request, response, auth.LOGIN_COOKIE, token, _LOGIN_TOKEN_SECONDS)
    return response


def _login_again(
    request: Request,
    target: str,
    error: str,
    status: int,
    headers: dict[str, str] | None = None,
) -> Response:
    """The log-in form again, saying what went wrong (a fresh form token)."""
    token = auth.new_login_token()
    response = page(
        request, "login.html.j2", {"csrf": token, "next": target, "error": error}, status=status
    )
    response.headers.update(headers or {})
    auth.set_cookie(request, response, auth.LOGIN_COOKIE, token, _LOGIN_TOKEN_SECONDS)
    return response


@router.post("/login")
async def login(
    request: Request, session: SessionDep, settings: SettingsDep, runtime: RuntimeDep
) -> Response:
    """Check the key; open a session and go on, or show the form again (401)."""
    fields = await auth.form(request)
    auth.check_csrf(request.cookies.get(auth.LOGIN_COOKIE), fields.get("csrf"))
    target = auth.safe_next(fields.get("next"))
    throttle, client = AuthThrottle.from_settings(settings), client_address(request)
    try:
        await throttle.check(runtime, client)
    except TooManyRequests as refused:
        return _login_again(request, target, refused.detail, 429, refused.headers)
    key = await apikeys.authenticate(session, fields.get("key", "").strip())
    if key is None:
        await throttle.failed(runtime, client)
        return _login_again(request, target, "That key is unknown or revoked.", 401)
    response: Response
    lifetime = dt.timedelta(hours=settings.dashboard_session_hours)
    opened = await repo.open_session(session, key.id, lifetime=lifetime)
    await session.commit()
    response = RedirectResponse(target, status_code=303)
    auth.set_cookie(
        request, response, auth.SESSION_COOKIE, opened.token, int(lifetime.total_seconds())
    )
    response.delete_cookie(auth.LOGIN_COOKIE, path=auth.PREFIX)
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, viewer: auth.ViewerDep) -> Response:
    """End the session (its row is deleted) and go back to the log-in page."""
    fields = await auth.form(request)
    auth.check_csrf(viewer.csrf_token, fields.get("csrf"))
    await repo.close_session(session, viewer.session_token)
    await session.commit()
    response = RedirectResponse(f"{auth.PREFIX}/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.PREFIX)
    return response


# -- pages --------------------------------------------------------------------------------------


def _trend_charts(trend: TrendRead) -> list[dict[str, Any]]:
    labels = [f"#{p.sweep_id}" for p in trend.sweeps]
    return [
        {
            "title": title,
            "labels": labels,
            "series": [
                {"name": name, "key": key, "values": [p.counts.findings[key] for p in trend.sweeps]}
                for name, key in series
            ],
        }
        for title, series in TREND_SERIES
    ]


@router.get("/")
async def overview(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    viewer: auth.ViewerDep,
) -> Response:
    """The fleet now (the caller's part of it), its mailboxes on TLS 1.0/1.1 or without
    TLS with the impact of the cut-off on them, and its trend across sweeps."""
    stats = await _stats(session, runtime, viewer.principal)
    legacy = await _impact(session, settings, viewer.principal, "legacy")
    plaintext = await _impact(session, settings, viewer.principal, "plaintext")
    trend = await results_routes.trend(session, runtime, viewer.principal, sweeps=TREND_SWEEPS)
    counts = stats.counts
    protocols = {
        "labels": list(PROTOCOLS),
        "series": [
            {"name": "lowest accepted", "values": [counts.lowest_protocol[p] for p in PROTOCOLS]},
            {"name": "highest accepted", "values": [counts.highest_protocol[p] for p in PROTOCOLS]},
        ],
    }
    return page(
        request,
        "overview.html.j2",
        {
            "stats": stats,
            "counts": counts,
            "protocols": protocols,
            "charts": _trend_charts(trend),
            "trend": trend,
            "legacy": legacy,
            "plaintext": plaintext,
        },
    )


@router.get("/sweeps")
async def sweeps_page(request: Request, session: SessionDep, viewer: auth.ViewerDep) -> Response:
    """Open sweeps (or the latest one) with progress, rate, ETA and errors by kind."""
    if viewer.principal.role not in READERS:
        raise PageError(403, f"a {viewer.principal.role} key may not see sweeps")
    recent = await sweep_repo.sweep_page(session, before=None, limit=9)
    shown = [s for s in recent if s.status in sweep_repo.OPEN_STATUSES] or recent[:1]
    progress = []
    for sweep in shown:
        state = await sweep_repo.sweep_progress(session, sweep.id)
        assert state is not None
        progress.append(
            {"sweep": sweep, "p": state, "errors": await repo.sweep_errors(session, sweep.id)}
        )
    running = any(s.status in sweep_repo.OPEN_STATUSES for s in shown)
    return page(
        request,
        "sweeps.html.j2",
        {"progress": progress, "recent": recent[:10], "refresh": 10 if running else 60},
    )


@router.get("/offenders")
async def offenders_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, viewer: auth.ViewerDep
) -> Response:
    """Customers with the most problems, and the counts per account manager."""
    worst = await repo.worst_offenders(session, manager=viewer.principal.scope, limit=25)
    stats = await _stats(session, runtime, viewer.principal, per_manager=True)
    return page(request, "offenders.html.j2", {"worst": worst, "stats": stats})


def _notice_rows(found: list[Notice]) -> list[Notice]:
    return sorted(found, key=lambda n: n.id, reverse=True)


@router.get("/customers/{customer_id}")
async def customer_page(
    request: Request,
    customer_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    viewer: auth.ViewerDep,
) -> Response:
    """A customer: what breaks at the cut-off, its domains, its mailboxes still on TLS
    1.0/1.1 or without TLS, its notices."""
    try:
        cutoff = await results_routes.customer_cutoff(
            customer_id, session, settings, viewer.principal
        )
    except NotFound:
        raise PageError(404, f"no customer {customer_id}") from None
    except Invalid as exc:
        raise PageError(500, exc.detail) from None
    domains = await repo.customer_domains(session, customer_id)
    found = await notice_repo.list_notices(
        session, after=None, limit=100, manager=viewer.principal.scope, customer_id=customer_id
    )
    days = settings.client_window_days
    since = client_repo.window_start(dt.datetime.now(dt.UTC).date(), days)
    accounts = await client_repo.customer_accounts(
        session, customer_id, since, limit=CUSTOMER_MAILBOXES + 1
    )
    return page(
        request,
        "customer.html.j2",
        {
            "cutoff": cutoff,
            "domains": domains,
            "notices": _notice_rows(found),
            "mailboxes": [ClientAccountView.from_account(a) for a in accounts],
            "mailbox_limit": CUSTOMER_MAILBOXES,
            "client_days": days,
        },
    )


def _matrix(document: dict[str, Any]) -> list[bool | None]:
    protocols = document.get("protocols") or {}
    return [protocols.get(p) for p in PROTOCOLS]


@router.get("/domains/{domain_id}")
async def domain_page(
    request: Request, domain_id: IdPath, session: SessionDep, viewer: auth.ViewerDep
) -> Response:
    """A domain: its endpoints, protocol matrix, suites, certificates, findings of the
    latest judged sweep, history and notices."""
    scope = viewer.principal.scope
    domain = await inventory_repo.get_domain(session, domain_id, manager=scope)
    if domain is None:
        raise PageError(404, f"no domain {domain_id}")
    customer = await inventory_repo.get_customer(session, domain.customer_id)
    pairs = await result_repo.domain_results(session, domain_id)
    endpoint_ids = {e.id for e, _ in pairs}
    judged = await finding_repo.latest_judged_sweep(session)
    findings = (
        await finding_repo.sweep_findings(session, judged, endpoint_ids)
        if judged is not None and endpoint_ids
        else []
    )
    hosts = {e.id: f"{e.host}:{e.port}" for e, _ in pairs}
    history = await repo.domain_history(session, domain_id)
    found = await notice_repo.list_notices(
        session, after=None, limit=100, manager=scope, customer_id=domain.customer_id
    )
    mine = [n for n in found if any(p.get("endpoint_id") in endpoint_ids for p in n.problems or [])]
    return page(
        request,
        "domain.html.j2",
        {
            "domain": domain,
            "customer": customer,
            "endpoints": [
                {"e": e, "r": r, "d": r.document, "matrix": _matrix(r.document)} for e, r in pairs
            ],
            "protocols": PROTOCOLS,
            "findings": sorted(findings, key=lambda f: (-f.severity_rank, f.code)),
            "judged": judged,
            "hosts": hosts,
            "history": history,
            "notices": _notice_rows(mine),
        },
    )
