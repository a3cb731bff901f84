"""Deprecation notices: one per customer per problem set, confirmed by a re-scan before
it goes out, followed until a sweep shows it fixed.

The flow (docs/notices.md has the diagram)::

    sweep closes ──▶ [findings_evaluate job] findings stored (fleet.findings), then
                     sync_sweep: per customer in the sweep, its problem set — findings
                     of at least TLSFLEET_NOTICE_MIN_SEVERITY plus the certificate-expiry
                     steps reached — against its notices:
                       an active notice none of whose problems show any more → resolved
                         (notice.resolved if it had gone out);
                       problems no active notice covers → a new ``open`` notice, or a
                         resolved one with that set reopened (finding.regressed);
                       a certificate step reached for the first time → certificate.expiring
                ──▶ [notice_confirm job] the notice's endpoints are scanned again and
                     judged again; only problems the re-scan shows stay; none → the notice
                     is ``dismissed`` (never sent), else ``notified`` + notice.opened

Every event is recorded (fleet.repositories.webhooks.emit) in the transaction that makes
the change, and woken after its commit. Each step is idempotent: a sweep's sync runs
once (``finding_runs.notices_synced_at``), a confirmation acts only on an ``open``
notice, certificate steps are insert-once, and event ids derive from the notice and its
generation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import jinja2
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import webhooks
from fleet.db.models import NOTICE_ACTIVE, Customer, Endpoint, Notice
from fleet.repositories import clients as client_repo
from fleet.repositories import findings as finding_repo
from fleet.repositories import notices as repo
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories import webhooks as webhook_repo
from fleet.repositories.endpoints import get_targets
from fleet.repositories.inventory import get_manager
from fleet.repositories.results import sweep_results
from fleet.settings import Settings
from policy import (
    Assessment,
    Profile,
    Severity,
    assess,
    customer_rollup,
    evaluate,
)
from scanner.models import EndpointResult, ErrorInfo

__all__ = [
    "CERT_STEP",
    "CLIENT_SEVERITY",
    "CONFIRM_JOB",
    "EVALUATE_JOB",
    "FORMATS",
    "LANGUAGES",
    "ClientAccountView",
    "ConfirmReport",
    "NoticeConfig",
    "NoticeError",
    "NoticeView",
    "SyncReport",
    "acknowledge",
    "build_view",
    "cert_step",
    "confirm_notice",
    "enqueue_confirms",
    "enqueue_evaluate",
    "environment",
    "expire_exceptions",
    "is_account_problem",
    "problem_hash",
    "reconcile",
    "render",
    "set_exception",
    "skip_sync",
    "sync_clients",
    "sync_sweep",
    "view_from_assessments",
]

log = logging.getLogger(__name__)

#: The worker functions: judge a closed sweep (and sync its notices); confirm a notice.
EVALUATE_JOB = "findings_evaluate"
CONFIRM_JOB = "notice_confirm"
#: The code of a certificate-expiry step in a problem set (``step``: the days).
CERT_STEP = "cert.expiry_step"
#: The severity a mailbox problem (``clients.legacy_tls``, ``clients.plaintext_login``)
#: counts with against TLSFLEET_NOTICE_MIN_SEVERITY: a mail program that stops working
#: at the cut-off is what ``tls.legacy_version`` is on a mail-client port — high.
CLIENT_SEVERITY = Severity.HIGH

Format = Literal["text", "html", "markdown"]
FORMATS: dict[str, tuple[str, str]] = {
    "text": ("txt", "text/plain; charset=utf-8"),
    "html": ("html", "text/html; charset=utf-8"),
    "markdown": ("md", "text/markdown; charset=utf-8"),
}
LANGUAGES = ("en", "de")


class NoticeError(ValueError):
    """A lifecycle move that the notice's status does not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class NoticeConfig:
    """How notices are made (from the settings; tests pass their own)."""

    profile: Profile
    min_severity: Severity = Severity.HIGH
    #: Days before expiry at which a certificate warns, largest first.
    cert_steps: tuple[int, ...] = (60, 14, 4)
    templates_dir: Path | None = None
    #: Days of mail-log telemetry behind the notice's list of mailboxes.
    client_window_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings, profile: Profile) -> NoticeConfig:
        return cls(
            profile=profile,
            min_severity=Severity(settings.notice_min_severity),
            cert_steps=tuple(sorted(set(settings.certificate_warning_days), reverse=True)),
            templates_dir=settings.templates_dir,
            client_window_days=settings.client_window_days,
        )


# -- problem sets -----------------------------------------------------------------------


def cert_step(days_left: int, steps: Sequence[int]) -> int | None:
    """The step a certificate with ``days_left`` has reached: the smallest step not
    below it (None when it is further away than every step)."""
    reached = [s for s in steps if days_left <= s]
    return min(reached) if reached else None


def _days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    return (not_after - now) // dt.timedelta(days=1)


def _problem(endpoint_id: int, code: str, step: int | None = None) -> dict[str, Any]:
    return {"endpoint_id": endpoint_id, "code": code, "step": step}


def _account_problem(account: str, code: str) -> dict[str, Any]:
    return {"account": account, "code": code}


def is_account_problem(problem: Mapping[str, Any]) -> bool:
    """Whether a problem is a mailbox's (mail-log telemetry: ``{"account", "code"}``)
    rather than an endpoint's (``{"endpoint_id", "code", "step"}``)."""
    return problem.get("account") is not None


def _key(problem: Mapping[str, Any]) -> tuple[int, str]:
    """An endpoint problem's (endpoint id, code)."""
    return int(problem["endpoint_id"]), str(problem["code"])


#: A problem's identity in a set: (endpoint id, "", code) for an endpoint's,
#: (0, account, code) for a mailbox's (endpoint ids start at 1).
Ident = tuple[int, str, str]


def _ident(problem: Mapping[str, Any]) -> Ident:
    if is_account_problem(problem):
        return 0, str(problem["account"]), str(problem["code"])
    return int(problem["endpoint_id"]), "", str(problem["code"])


def _endpoint_problems(problems: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(p) for p in problems if not is_account_problem(p)]


def _account_problems(problems: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(p) for p in problems if is_account_problem(p)]


def _sorted(problems: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted((dict(p) for p in problems), key=lambda p: (*_ident(p), p.get("step") or 0))


def problem_hash(problems: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of a problem set (order does not matter; a certificate's step does).

    An endpoint problem hashes as ``[endpoint_id, code, step]`` (as before mailboxes
    joined the set, so stored hashes stay valid), a mailbox's as ``[account, code]``."""
    canonical: list[list[Any]] = [
        [str(p["account"]), str(p["code"])] if is_account_problem(p) else [*_key(p), p.get("step")]
        for p in _sorted(problems)
    ]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


# -- events -----------------------------------------------------------------------------


def _endpoint_data(endpoint: Endpoint | None) -> dict[str, Any]:
    if endpoint is None:
        return {}
    return {
        "host": endpoint.host,
        "ip": endpoint.ip,
        "port": endpoint.port,
        "service": endpoint.service,
    }


async def _problems_data(
    session: AsyncSession, problems: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    endpoints = await repo.endpoints_by_id(
        session, {_key(p)[0] for p in _endpoint_problems(problems)}
    )
    return [
        {"account": p["account"], "code": p["code"]}
        if is_account_problem(p)
        else {
            "endpoint_id": p["endpoint_id"],
            "endpoint": _endpoint_data(endpoints.get(int(p["endpoint_id"]))),
            "code": p["code"],
            "step": p.get("step"),
        }
        for p in _sorted(problems)
    ]


async def _emit(
    session: AsyncSession,
    kind: str,
    identity: Sequence[object],
    notice: Notice | None,
    customer: Customer,
    data: Mapping[str, Any],
) -> list[int]:
    """Record one notice event for the customer's manager (and global subscribers).

    Notice events happen after the sweep's digests went out, so they are sent on their
    own (no ``sweep_id``): a digest of a completed sweep takes no more events."""
    event = webhooks.Event(
        id=webhooks.event_id(kind, *identity),
        type=kind,
        created_at=dt.datetime.now(dt.UTC),
        data={
            "notice_id": notice.id if notice is not None else None,
            "customer_id": customer.id,
            "customer": customer.name,
            "account_manager_id": customer.account_manager_id,
            **data,
        },
    )
    return await webhook_repo.emit(session, event, account_manager_id=customer.account_manager_id)


# -- syncing a closed sweep ---------------------------------------------------------------


@dataclass(slots=True)
class SyncReport:
    """What :func:`sync_sweep` did; ``confirm``: notices to re-scan, ``due``: webhook
    deliveries to wake (both after the commit)."""

    sweep_id: int
    opened: int = 0
    resolved: int = 0
    regressed: int = 0
    certificate_warnings: int = 0
    confirm: list[int] = field(default_factory=list)
    due: list[int] = field(default_factory=list)


async def sync_sweep(
    sessions: async_sessionmaker[AsyncSession], config: NoticeConfig, sweep_id: int
) -> SyncReport | None:
    """Bring the notices of the sweep's customers up to date with its findings and the
    mail-log telemetry, once.

    None when the sweep's findings are not stored (yet). In one transaction, with each
    customer's row locked (in id order) while its notices change. Customers with no
    domain in the sweep but with mailbox problems (or an active notice about
    mailboxes) get the telemetry part (:func:`sync_clients`).
    """
    report = SyncReport(sweep_id)
    async with sessions() as session:
        run = await finding_repo.get_run(session, sweep_id)
        if run is None:
            return None
        if run.notices_synced_at is not None:
            return report
        judged_at = run.judged_at
        pairs = await repo.problem_pairs(session, sweep_id, config.min_severity.rank)
        horizon = judged_at + dt.timedelta(days=max(config.cert_steps, default=0) + 1)
        certificates = await repo.certificate_dates(session, sweep_id, horizon)
        swept = {c.id for c in await repo.customers_in_sweep(session, sweep_id)}
        clients = await _client_problems(session, config)
        others = (set(clients) | await repo.customers_with_account_notices(session)) - swept
        for customer_id in sorted(swept | others):
            locked = await repo.lock_customer(session, customer_id)
            if locked is None:
                continue
            if customer_id not in swept:
                await _sync_telemetry(
                    session, report, config, locked, sweep_id, clients.get(customer_id, [])
                )
                continue
            if await repo.newer_synced_sweep(session, sweep_id, customer_id):
                continue
            problems = [_problem(e, code) for e, code in sorted(pairs.get(customer_id, ()))]
            steps: dict[int, tuple[dt.datetime, int]] = {}
            for endpoint_id, not_after in sorted(certificates.get(customer_id, {}).items()):
                if not_after <= judged_at:
                    continue  # expired: cert.expired says it
                step = cert_step(_days_left(not_after, judged_at), config.cert_steps)
                if step is not None:
                    steps[endpoint_id] = (not_after, step)
                    problems.append(_problem(endpoint_id, CERT_STEP, step))
            problems += clients.get(customer_id, [])
            await _sync_customer(session, report, config, locked, sweep_id, problems)
            await _warn_certificates(session, report, locked, sweep_id, steps, judged_at)
        await repo.mark_synced(session, sweep_id)
        await session.commit()
    return report


async def sync_clients(
    sessions: async_sessionmaker[AsyncSession], config: NoticeConfig
) -> SyncReport | None:
    """Bring every customer's notices up to date with the mail-log telemetry alone
    (after ``tlsfleet logs ingest``): mailboxes that newly use TLS 1.0/1.1 or log in
    without TLS open (or reopen) a notice, sent at once; a notice whose mailboxes all
    stopped (and that has no endpoint problem) is resolved. Endpoint problems stay as
    the last sweep left them. Idempotent: an unchanged telemetry changes nothing.

    None before the first sweep's notices were synced: a notice records a sweep, the
    newest synced one (``report.sweep_id``). One transaction, customers locked in id
    order.
    """
    async with sessions() as session:
        anchor = await repo.latest_synced_sweep(session)
        if anchor is None:
            return None
        report = SyncReport(anchor)
        clients = await _client_problems(session, config)
        wanted = set(clients) | await repo.customers_with_account_notices(session)
        for customer_id in sorted(wanted):
            locked = await repo.lock_customer(session, customer_id)
            if locked is not None:
                await _sync_telemetry(
                    session, report, config, locked, anchor, clients.get(customer_id, [])
                )
        await session.commit()
    return report


async def _client_problems(
    session: AsyncSession, config: NoticeConfig
) -> dict[int, list[dict[str, Any]]]:
    """Per customer: its mailbox problems in the telemetry window ending today (none
    when the notice threshold is above their severity)."""
    if CLIENT_SEVERITY.rank < config.min_severity.rank:
        return {}
    today = dt.datetime.now(dt.UTC).date()
    since = client_repo.window_start(today, config.client_window_days)
    found = await repo.mailbox_problems(session, since)
    return {
        customer_id: [_account_problem(account, code) for account, code in sorted(pairs)]
        for customer_id, pairs in found.items()
    }


async def _sync_telemetry(
    session: AsyncSession,
    report: SyncReport,
    config: NoticeConfig,
    customer: Customer,
    sweep_id: int,
    accounts: list[dict[str, Any]],
) -> None:
    """The telemetry part of a customer's sync: its endpoint problems are those its
    active notices hold (no sweep judged them now), its mailbox problems are new."""
    kept: dict[Ident, dict[str, Any]] = {}
    for notice in await repo.customer_notices(session, customer.id):
        if notice.status in NOTICE_ACTIVE:
            kept.update((_ident(p), p) for p in _endpoint_problems(notice.problems))
    await _sync_customer(
        session, report, config, customer, sweep_id, [*kept.values(), *accounts], judged=False
    )


async def _sync_customer(
    session: AsyncSession,
    report: SyncReport,
    config: NoticeConfig,
    customer: Customer,
    sweep_id: int,
    problems: list[dict[str, Any]],
    *,
    judged: bool = True,
) -> None:
    """``judged``: a sweep judged the endpoint problems now (else only the telemetry
    changed: the notices' ``last_sweep_id`` stays)."""
    current = {_ident(p): p for p in problems}
    notices = await repo.customer_notices(session, customer.id)
    covered: set[Ident] = set()
    now = dt.datetime.now(dt.UTC)
    for notice in notices:
        if notice.status not in NOTICE_ACTIVE:
            continue
        keys = {_ident(p) for p in notice.problems}
        if not keys & set(current):
            await _resolve(session, report, notice, customer, sweep_id)
            continue
        covered |= keys
        if judged:
            notice.last_sweep_id = sweep_id
        # A certificate that moved to a nearer step: the set's hash follows it (its
        # certificate.expiring event is sent by _warn_certificates).
        moved = [
            {**p, "step": current[_ident(p)].get("step")}
            if _ident(p) in current and not is_account_problem(p)
            else p
            for p in notice.problems
        ]
        if moved != notice.problems:
            notice.problems = moved
            notice.problem_hash = problem_hash(moved)
            notice.updated_at = now
        if notice.status == "exception" and _exception_over(notice, now.date()):
            notice.status = "open"
            notice.updated_at = now
            report.confirm.append(notice.id)
    new = [p for key, p in current.items() if key not in covered]
    if not new:
        return
    digest = problem_hash(new)
    keys = {_ident(p) for p in new}
    earlier = next((n for n in notices if n.problem_hash == digest), None) or next(
        (n for n in notices if n.status == "resolved" and keys <= {_ident(p) for p in n.problems}),
        None,
    )
    if earlier is not None and earlier.status in ("resolved", "dismissed"):
        regression = earlier.status == "resolved" and earlier.notified_at is not None
        earlier.status = "open"
        earlier.problems = _sorted(new)
        earlier.problem_hash = digest
        earlier.confirmed = None
        earlier.sweep_id = sweep_id
        earlier.last_sweep_id = sweep_id
        earlier.generation += 1
        earlier.resolved_at = None
        earlier.acknowledged_at = None
        earlier.exception_reason = None
        earlier.exception_until = None
        earlier.account_manager_id = customer.account_manager_id
        earlier.updated_at = now
        if regression:
            earlier.regressions += 1
            report.regressed += 1
            report.due += await _emit(
                session,
                "finding.regressed",
                (earlier.id, earlier.generation),
                earlier,
                customer,
                {"sweep_id": sweep_id, "problems": await _problems_data(session, new)},
            )
        await session.flush()
        await _open(session, report, config, earlier, customer)
        return
    notice = Notice(
        customer_id=customer.id,
        account_manager_id=customer.account_manager_id,
        status="open",
        problem_hash=digest,
        problems=_sorted(new),
        sweep_id=sweep_id,
        last_sweep_id=sweep_id,
        generation=1,
        regressions=0,
    )
    session.add(notice)
    await session.flush()
    report.opened += 1
    await _open(session, report, config, notice, customer)


async def _open(
    session: AsyncSession,
    report: SyncReport,
    config: NoticeConfig,
    notice: Notice,
    customer: Customer,
) -> None:
    """An ``open`` notice waits for the re-scan of its endpoints; one about mailboxes
    alone goes out now (the mail servers observed them: nothing to confirm)."""
    if _endpoint_problems(notice.problems):
        report.confirm.append(notice.id)
        return
    notice.confirmed = _sorted(notice.problems)
    report.due += await _send(session, config, notice, customer, notice.confirmed, [])


async def _send(
    session: AsyncSession,
    config: NoticeConfig,
    notice: Notice,
    customer: Customer,
    kept: Sequence[Mapping[str, Any]],
    endpoint_ids: Sequence[int],
) -> list[int]:
    """The notice goes out: ``notified`` and ``notice.opened`` with the problems it
    keeps; the deliveries to wake after the commit."""
    now = dt.datetime.now(dt.UTC)
    notice.status = "notified"
    notice.notified_at = now
    notice.updated_at = now
    notice.account_manager_id = customer.account_manager_id
    domains = await repo.domains_by_endpoint(session, notice.sweep_id, customer.id, endpoint_ids)
    return await _emit(
        session,
        "notice.opened",
        (notice.id, notice.generation),
        notice,
        customer,
        {
            "sweep_id": notice.sweep_id,
            "generation": notice.generation,
            "problem_hash": notice.problem_hash,
            "problems": await _problems_data(session, kept),
            "domains": sorted({d for names_ in domains.values() for d in names_}),
            "cutoff": config.profile.cutoff.isoformat(),
        },
    )


def _exception_over(notice: Notice, today: dt.date) -> bool:
    return notice.exception_until is not None and notice.exception_until < today


async def _resolve(
    session: AsyncSession,
    report: SyncReport,
    notice: Notice,
    customer: Customer,
    sweep_id: int,
) -> None:
    notice.status = "resolved"
    notice.resolved_at = dt.datetime.now(dt.UTC)
    notice.updated_at = notice.resolved_at
    notice.last_sweep_id = sweep_id
    report.resolved += 1
    if notice.notified_at is not None:
        report.due += await _emit(
            session,
            "notice.resolved",
            (notice.id, notice.generation),
            notice,
            customer,
            {"sweep_id": sweep_id, "problems": await _problems_data(session, notice.problems)},
        )


async def _warn_certificates(
    session: AsyncSession,
    report: SyncReport,
    customer: Customer,
    sweep_id: int,
    steps: Mapping[int, tuple[dt.datetime, int]],
    judged_at: dt.datetime,
) -> None:
    if not steps:
        return
    active = await repo.customer_notices(session, customer.id)
    endpoints = await repo.endpoints_by_id(session, list(steps))
    for endpoint_id, (not_after, step) in sorted(steps.items()):
        notice = next(
            (
                n
                for n in active
                if n.status in NOTICE_ACTIVE
                and (endpoint_id, "", CERT_STEP) in map(_ident, n.problems)
            ),
            None,
        )
        new = await repo.record_certificate_warning(
            session,
            customer_id=customer.id,
            endpoint_id=endpoint_id,
            not_after=not_after,
            step=step,
            notice_id=notice.id if notice else None,
            sweep_id=sweep_id,
        )
        if not new:
            continue
        report.certificate_warnings += 1
        report.due += await _emit(
            session,
            "certificate.expiring",
            (customer.id, endpoint_id, not_after.isoformat(), step),
            notice,
            customer,
            {
                "sweep_id": sweep_id,
                "endpoint_id": endpoint_id,
                "endpoint": _endpoint_data(endpoints.get(endpoint_id)),
                "not_after": not_after.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                "days_left": _days_left(not_after, judged_at),
                "step": step,
            },
        )


async def skip_sync(sessions: async_sessionmaker[AsyncSession], sweep_id: int) -> None:
    """Mark a sweep's notices as done without changing any (notices switched off by
    TLSFLEET_NOTICES_ENABLED=false: findings only)."""
    async with sessions() as session:
        await repo.mark_synced(session, sweep_id)
        await session.commit()


# -- the confirming re-scan ---------------------------------------------------------------

ConfirmOutcome = Literal["notified", "dismissed", "skipped"]


@dataclass(frozen=True, slots=True)
class ConfirmReport:
    """What :func:`confirm_notice` did, and the deliveries to wake after its commit."""

    notice_id: int
    outcome: ConfirmOutcome
    confirmed: int = 0
    due: list[int] = field(default_factory=list)


class _Rescanner:
    """What a confirmation needs of the sweep runtime: a scanner and a deadline."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    async def scan(self, quick: bool, target: Any) -> dict[str, Any]:
        scanner = self.runtime.scanner(quick)
        try:
            async with asyncio.timeout(self.runtime.scan_deadline):
                result: EndpointResult = await scanner.scan(target)
        except TimeoutError:
            result = EndpointResult(
                target=target,
                status="error",
                error=ErrorInfo("timeout", "scan", "the confirming re-scan did not finish"),
            )
        return result.to_dict()


def _confirmed(
    problems: Sequence[Mapping[str, Any]],
    documents: Mapping[int, Mapping[str, Any]],
    config: NoticeConfig,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The problems the re-scan documents show again."""
    fired: dict[int, set[str]] = {
        endpoint_id: {f.code for f in evaluate(doc, config.profile, now)}
        for endpoint_id, doc in documents.items()
    }
    kept = []
    for problem in problems:
        endpoint_id, code = _key(problem)
        doc = documents.get(endpoint_id)
        if doc is None:
            continue
        if code == CERT_STEP:
            not_after = _not_after(doc)
            if not_after is None or not_after <= now:
                continue
            step = cert_step(_days_left(not_after, now), config.cert_steps)
            if step is not None:
                kept.append({**problem, "step": min(step, problem.get("step") or step)})
        elif code in fired.get(endpoint_id, set()):
            kept.append(dict(problem))
    return _sorted(kept)


def _not_after(document: Mapping[str, Any]) -> dt.datetime | None:
    certificate = document.get("certificate")
    value = certificate.get("not_after") if isinstance(certificate, Mapping) else None
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def confirm_notice(runtime: Any, config: NoticeConfig, notice_id: int) -> ConfirmReport:
    """Re-scan an ``open`` notice's endpoints, judge them again, and send the notice
    with the problems the re-scan shows (``notified`` + notice.opened), or dismiss it
    when it shows none. Mailbox problems (mail-log telemetry) are observed facts: they
    are kept without a re-scan, so a notice with one always goes out. ``runtime`` is
    the worker's :class:`fleet.sweeps.SweepRuntime` (its sessions, scanner and scan
    deadline)."""
    sessions: async_sessionmaker[AsyncSession] = runtime.sessions
    async with sessions() as session:
        notice = await repo.get_notice(session, notice_id)
        if notice is None or notice.status != "open":
            return ConfirmReport(notice_id, "skipped")
        problems = _endpoint_problems(notice.problems)
        observed = _account_problems(notice.problems)
        generation = notice.generation
        endpoint_ids = sorted({_key(p)[0] for p in problems})
        targets = await get_targets(session, endpoint_ids)
        names = {
            e: await sweep_repo.endpoint_host_names(session, notice.sweep_id, e)
            for e in endpoint_ids
        }
        sweep = await sweep_repo.get_sweep(session, notice.sweep_id)
        quick = bool(sweep is not None and sweep.options.get("quick"))
        if any(p["code"] == CERT_STEP for p in problems):
            quick = False  # a certificate step needs the certificate

    rescanner = _Rescanner(runtime)
    documents: dict[int, dict[str, Any]] = {}
    for endpoint_id, target in sorted(targets.items()):
        if names.get(endpoint_id):
            name = names[endpoint_id][0]
            target = replace(target, host=name, sni=name)
        documents[endpoint_id] = await rescanner.scan(quick, target)
    now = dt.datetime.now(dt.UTC)
    rescanned = _confirmed(problems, documents, config, now)
    kept = _sorted([*observed, *rescanned])

    async with sessions() as session:
        notice = await repo.get_notice(session, notice_id)
        if notice is None:
            return ConfirmReport(notice_id, "skipped")
        customer = await repo.lock_customer(session, notice.customer_id)
        await session.refresh(notice)
        if customer is None or notice.status != "open" or notice.generation != generation:
            return ConfirmReport(notice_id, "skipped")
        notice.confirmed = [
            p
            if is_account_problem(p)
            else {**p, "rescanned_at": documents[_key(p)[0]].get("scanned_at")}
            for p in kept
        ]
        notice.updated_at = now
        due: list[int] = []
        if not kept:
            notice.status = "dismissed"
            outcome: ConfirmOutcome = "dismissed"
        else:
            outcome = "notified"
            due = await _send(session, config, notice, customer, kept, endpoint_ids)
        await session.commit()
    log.info(
        "notice %s: %s (%d of %d confirmed)",
        notice_id,
        outcome,
        len(kept),
        len(problems) + len(observed),
    )
    return ConfirmReport(notice_id, outcome, len(kept), due)


# -- the API's moves ----------------------------------------------------------------------


async def acknowledge(session: AsyncSession, notice: Notice) -> None:
    """The customer (or its manager) has seen it: ``notified → acknowledged`` (again on
    an acknowledged one changes nothing). NoticeError otherwise."""
    if notice.status == "acknowledged":
        return
    if notice.status != "notified":
        raise NoticeError(f"notice {notice.id} is {notice.status}: only a notified one")
    now = dt.datetime.now(dt.UTC)
    notice.status = "acknowledged"
    notice.acknowledged_at = now
    notice.updated_at = now
    await session.flush()


async def set_exception(
    session: AsyncSession, notice: Notice, reason: str, until: dt.date, today: dt.date
) -> None:
    """Accepted risk until ``until`` (after ``today``): the notice stays quiet and is
    reopened when the date has passed (or resolved when a sweep shows it fixed)."""
    if notice.status not in NOTICE_ACTIVE:
        raise NoticeError(f"notice {notice.id} is {notice.status}: only an active one")
    if until <= today:
        raise ValueError(f"until: must be after today ({today.isoformat()})")
    if not reason.strip():
        raise ValueError("reason: must not be empty")
    notice.status = "exception"
    notice.exception_reason = reason.strip()
    notice.exception_until = until
    notice.updated_at = dt.datetime.now(dt.UTC)
    await session.flush()


async def expire_exceptions(
    sessions: async_sessionmaker[AsyncSession], today: dt.date
) -> list[int]:
    """Exceptions past their date go back to ``open``; their ids (to confirm)."""
    async with sessions() as session:
        ids = await repo.expire_exceptions(session, today)
        await session.commit()
    return ids


# -- queueing -----------------------------------------------------------------------------


def evaluate_job_id(sweep_id: int) -> str:
    return f"sweep:{sweep_id}:findings"


def confirm_job_id(notice_id: int) -> str:
    return f"notice:{notice_id}:confirm"


async def enqueue_evaluate(redis: ArqRedis, sweep_id: int) -> bool:
    """Queue the judging of a closed sweep (after the commit that closed it)."""
    job = await redis.enqueue_job(EVALUATE_JOB, sweep_id, _job_id=evaluate_job_id(sweep_id))
    return job is not None


async def enqueue_confirms(redis: ArqRedis, notice_ids: Iterable[int]) -> int:
    """Queue the confirming re-scan of each notice; how many were new."""
    queued = 0
    for notice_id in notice_ids:
        job = await redis.enqueue_job(CONFIRM_JOB, notice_id, _job_id=confirm_job_id(notice_id))
        queued += job is not None
    return queued


async def reconcile(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis) -> dict[str, int]:
    """What the reconciler adds for notices: closed sweeps whose findings job was lost,
    exceptions past their date, and open notices without their confirmation job."""
    expired = await expire_exceptions(sessions, dt.datetime.now(dt.UTC).date())
    async with sessions() as session:
        sweeps = await repo.unsynced_sweeps(session)
        waiting = await repo.notices_due_for_confirmation(session)
    evaluations = 0
    for sweep_id in sweeps:
        evaluations += await enqueue_evaluate(redis, sweep_id)
    confirms = await enqueue_confirms(redis, sorted({*expired, *waiting}))
    return {"evaluations": evaluations, "confirmations": confirms, "expired": len(expired)}


# -- rendering ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FindingView:
    code: str
    severity: str
    title: str
    detail: str
    remedy: str


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One affected endpoint, as a notice shows it."""

    host: str
    ip: str
    port: int
    service: str
    domains: tuple[str, ...]
    outcome: str
    impacts: tuple[str, ...]
    findings: tuple[FindingView, ...]
    certificate_expires: dt.date | None = None
    certificate_days_left: int | None = None


@dataclass(frozen=True, slots=True)
class ClientAccountView:
    """A mailbox whose mail program logged in over TLS 1.0/1.1 or without TLS (mail-log
    telemetry, docs/logs.md): ``used`` lists what stops working (``TLSv1.0``,
    ``TLSv1.1``, ``none`` for no TLS), ``since`` its first such login in the window."""

    account: str
    used: tuple[str, ...]
    since: dt.date
    last_seen: dt.date
    client_ips: tuple[str, ...]

    @classmethod
    def from_account(cls, account: client_repo.ClientAccount) -> ClientAccountView:
        legacy = sorted(p for p in account.protocols if p.startswith(("SSL", "TLSv1.0", "TLSv1.1")))
        used = (*legacy, "none") if account.plaintext_logins else tuple(legacy)
        firsts = [t for t in (account.legacy_first, account.plaintext_first) if t is not None]
        lasts = [t for t in (account.legacy_last, account.plaintext_last) if t is not None]
        return cls(
            account=account.account,
            used=used,
            since=min(firsts or [account.first_seen]).date(),
            last_seen=max(lasts or [account.last_seen]).date(),
            client_ips=tuple(account.client_ips),
        )


@dataclass(frozen=True, slots=True)
class NoticeView:
    """Everything a notice template sees (pure data: rendering needs no database)."""

    notice_id: int
    status: str
    customer: str
    account_manager: str | None
    cutoff: dt.date
    judged_at: dt.date
    summary: str
    endpoints: tuple[EndpointView, ...]
    client_accounts: tuple[ClientAccountView, ...] = ()
    client_window_days: int = 30

    @property
    def domains(self) -> list[str]:
        return sorted({d for e in self.endpoints for d in e.domains})

    @property
    def breaking(self) -> list[EndpointView]:
        return [e for e in self.endpoints if e.outcome == "breaks"]


def view_from_assessments(
    *,
    notice_id: int,
    status: str,
    customer: str,
    account_manager: str | None,
    profile: Profile,
    judged_at: dt.datetime,
    problems: Sequence[Mapping[str, Any]],
    assessments: Mapping[int, Assessment],
    domains: Mapping[int, Sequence[str]],
    certificates: Mapping[int, dt.datetime] | None = None,
    client_accounts: Sequence[ClientAccountView] = (),
    client_window_days: int = 30,
) -> NoticeView:
    """The view of a notice from its problems and its endpoints' assessments (by
    endpoint id): the findings shown are the notice's problems; the cut-off view and
    the summary are the policy's (``endpoint_future``, ``customer_rollup``)."""
    codes: dict[int, set[str]] = {}
    for p in _endpoint_problems(problems):
        endpoint_id, code = _key(p)
        codes.setdefault(endpoint_id, set()).add(code)
    endpoints = []
    for endpoint_id in sorted(codes, key=lambda e: _order(assessments.get(e), e)):
        assessment = assessments.get(endpoint_id)
        if assessment is None:
            continue
        ref = assessment.endpoint
        not_after = (certificates or {}).get(endpoint_id)
        shown = CERT_STEP in codes[endpoint_id] and not_after is not None
        endpoints.append(
            EndpointView(
                host=ref.host or ref.ip or "?",
                ip=ref.ip or "?",
                port=ref.port or 0,
                service=ref.service or "?",
                domains=tuple(domains.get(endpoint_id, ())),
                outcome=assessment.future.outcome,
                impacts=tuple(i.message for i in assessment.future.impacts),
                findings=tuple(
                    FindingView(f.code, f.severity.value, f.title, f.detail, f.remedy)
                    for f in assessment.findings
                    if f.code in codes[endpoint_id]
                ),
                certificate_expires=not_after.date() if shown and not_after else None,
                certificate_days_left=(
                    _days_left(not_after, judged_at) if shown and not_after else None
                ),
            )
        )
    rollup = customer_rollup([assessments[e] for e in codes if e in assessments], profile)
    return NoticeView(
        notice_id=notice_id,
        status=status,
        customer=customer,
        account_manager=account_manager,
        cutoff=profile.cutoff,
        judged_at=judged_at.date(),
        summary=rollup.summary,
        endpoints=tuple(endpoints),
        client_accounts=tuple(client_accounts),
        client_window_days=client_window_days,
    )


def _order(assessment: Assessment | None, endpoint_id: int) -> tuple[str, int, int]:
    if assessment is None:
        return ("", 0, endpoint_id)
    ref = assessment.endpoint
    return (ref.host or "", ref.port or 0, endpoint_id)


async def build_view(session: AsyncSession, notice: Notice, config: NoticeConfig) -> NoticeView:
    """The view of a stored notice: its problems judged on the documents of the last
    sweep that saw them."""
    customer = await session.get(Customer, notice.customer_id)
    assert customer is not None  # the notice's foreign key
    manager = (
        await get_manager(session, customer.account_manager_id)
        if customer.account_manager_id is not None
        else None
    )
    problems = notice.confirmed if notice.confirmed else notice.problems
    endpoint_ids = sorted({_key(p)[0] for p in _endpoint_problems(problems)})
    sweep_id = notice.sweep_id
    run = await finding_repo.get_run(session, sweep_id)
    judged_at = run.judged_at if run is not None else notice.created_at
    results = await sweep_results(session, sweep_id, endpoint_ids)
    assessments = {e: assess(r.document, config.profile, judged_at) for e, r in results.items()}
    certificates = {e: r.cert_not_after for e, r in results.items() if r.cert_not_after is not None}
    domains = await repo.domains_by_endpoint(session, sweep_id, customer.id, endpoint_ids)
    since = client_repo.window_start(dt.datetime.now(dt.UTC).date(), config.client_window_days)
    accounts = await client_repo.customer_accounts(session, customer.id, since)
    return view_from_assessments(
        notice_id=notice.id,
        status=notice.status,
        customer=customer.name,
        account_manager=manager.name if manager is not None else None,
        profile=config.profile,
        judged_at=judged_at,
        problems=problems,
        assessments=assessments,
        domains=domains,
        certificates=certificates,
        client_accounts=[ClientAccountView.from_account(a) for a in accounts],
        client_window_days=config.client_window_days,
    )


def _markdown(value: object) -> str:
    """Escape what Markdown would read as markup in a value (host names, details)."""
    text = str(value)
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text


def environment(templates_dir: Path | None = None) -> jinja2.Environment:
    """The notice templates: the deployment's ``templates_dir`` first (any template
    there replaces the shipped one of the same name), then the package's own. HTML
    templates (``*.html.j2``) are autoescaped; Markdown ones use the ``md`` filter."""
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders.append(jinja2.PackageLoader("fleet.notices_templates", "."))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = _markdown
    return env


def render(
    view: NoticeView,
    fmt: str = "text",
    lang: str = "en",
    *,
    templates_dir: Path | None = None,
    env: jinja2.Environment | None = None,
) -> str:
    """The notice as plain text, HTML or Markdown in ``lang`` (template
    ``<lang>/notice.<txt|html|md>.j2``). ValueError for an unknown format or language."""
    if fmt not in FORMATS:
        raise ValueError(f"format: one of {', '.join(FORMATS)}, not {fmt!r}")
    if lang not in LANGUAGES:
        raise ValueError(f"lang: one of {', '.join(LANGUAGES)}, not {lang!r}")
    env = env or environment(templates_dir)
    template = env.get_template(f"{lang}/notice.{FORMATS[fmt][0]}.j2")
    return template.render(notice=view)
