"""Sweeps: the orchestration the worker's jobs (and the CLI, and the API) share.

A sweep goes::

    start_sweep ──▶ [discover job] discover_sweep: DNS for every domain in scope,
                    the deduplicated endpoint plan, stored in one transaction,
                    then one scan job per endpoint without a result
                ──▶ [scan jobs]    scan_endpoint: scan one (ip, port, service) and the
                    certificate of every further SNI name; store the result once
                ──▶ [close job]    close: when every endpoint has its result, the sweep
                    is closed and its diff against the previous one stored
    reconcile (cron, worker start-up): for every open sweep, enqueue whatever is
                    missing — discovery, scans without a result, the close
    cancel (CLI, API): an open sweep becomes ``cancelled`` (final); its queued jobs
                    are taken off the queue, running ones find it final and store nothing

PostgreSQL is the source of truth and Redis only carries jobs: every step reads the
state it acts on from the database, and jobs are enqueued after the commit that made
their rows visible. A step that runs twice (arq delivers at least once; the reconciler
re-enqueues after a flush) changes nothing the first run stored: results are
insert-once per (sweep, endpoint), status moves are compare-and-set, and job ids
derived from (sweep, endpoint) keep the queue free of duplicates while one is pending.

Infrastructure failures (PostgreSQL or Redis unreachable, the shared limiter
unavailable) propagate as exceptions for the job to retry; whatever an endpoint does
is a result. Nothing here builds engines, pools or scanners: :class:`SweepRuntime`
is built by the worker's start-up and passed in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import deliveries, jobs, notices, webhooks
from fleet.limiter import LimiterUnavailable, is_limiter_failure
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories import webhooks as webhook_repo
from fleet.repositories.diff import SweepDiff
from fleet.repositories.endpoints import get_targets
from fleet.repositories.inventory import domains_in_scope
from fleet.repositories.results import get_result, record_certificates, record_result
from fleet.repositories.sweeps import CancelOutcome, SweepKind, SweepProgress, sweep_progress
from scanner.discovery import PortProfile, discover, normalise_domain, plan_endpoints
from scanner.dns import Resolver
from scanner.engine import Scanner, ScanOptions
from scanner.errors import TargetError
from scanner.models import CertificateInfo, Discovery, EndpointResult, ErrorInfo, Target
from scanner.net import ConnectionLimiter

__all__ = [
    "CancelReport",
    "ReconcileReport",
    "ScanOutcome",
    "SweepOptions",
    "SweepRuntime",
    "cancel",
    "close",
    "discover_sweep",
    "enqueue_missing",
    "progress",
    "reconcile",
    "scan_endpoint",
    "start_nightly",
    "start_sweep",
]

log = logging.getLogger(__name__)

#: How long a result that could not be stored is kept in Redis for the retry.
_STASH_TTL = 24 * 3600


@dataclass(frozen=True, slots=True)
class SweepOptions:
    """How a sweep scans, stored with it (``sweeps.options``) so that every job of the
    sweep — on any worker, after any restart — scans the same way.

    ``quick``: versions, suites and STARTTLS facts only (no certificates). ``profile``:
    which services to probe on the discovered hosts; None → the default
    :class:`~scanner.discovery.PortProfile` (SMTP on MX hosts, SRV records, HTTPS).
    """

    quick: bool = False
    profile: PortProfile | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"quick": self.quick}
        if self.profile is not None:
            p = self.profile
            data["profile"] = {
                "mx": list(p.mx),
                "srv": p.srv,
                "provider_hosts": list(p.provider_hosts),
                "provider": list(p.provider),
                "web": list(p.web),
            }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepOptions:
        """The options stored with a sweep; ValueError (or TargetError, a ValueError's
        cousin for bad port-profile entries) for anything malformed."""
        unknown = set(data) - {"quick", "profile"}
        if unknown:
            raise ValueError(f"unknown sweep options: {', '.join(sorted(unknown))}")
        quick = data.get("quick", False)
        if not isinstance(quick, bool):
            raise ValueError("sweep option 'quick' must be true or false")
        raw = data.get("profile")
        if raw is None:
            return cls(quick=quick)
        if not isinstance(raw, Mapping):
            raise ValueError("sweep option 'profile' must be an object")
        allowed = {"mx", "srv", "provider_hosts", "provider", "web"}
        if set(raw) - allowed:
            raise ValueError(
                f"unknown port-profile fields: {', '.join(sorted(set(raw) - allowed))}"
            )
        fields: dict[str, Any] = {}
        for name in ("mx", "provider_hosts", "provider", "web"):
            if name in raw:
                value = raw[name]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"port-profile field {name!r} must be a list of strings")
                fields[name] = tuple(value)
        if "srv" in raw:
            if not isinstance(raw["srv"], bool):
                raise ValueError("port-profile field 'srv' must be true or false")
            fields["srv"] = raw["srv"]
        return cls(quick=quick, profile=PortProfile(**fields))


@dataclass(slots=True)
class SweepRuntime:
    """What the sweep steps need, built once per worker process by its start-up.

    ``scan_options``: the base options (timeouts, CA file, EHLO name) from the settings;
    a quick sweep uses their ``.quick`` form. ``new_resolver`` builds one resolver per
    discovery run (a resolver's cache lives for one run by design). ``scan_deadline``:
    seconds one endpoint's scan (with its extra certificates) may take before it is
    stored as a ``timeout`` error, kept below the job timeout so that a pathological
    endpoint ends as a result instead of a job that times out for ever.
    """

    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    scan_options: ScanOptions
    limiter: ConnectionLimiter
    new_resolver: Callable[[], Resolver]
    allow_private: bool = False
    scan_deadline: float = 240.0
    discovery_deadline: float = 240.0
    _scanners: dict[bool, Scanner] = field(default_factory=dict, repr=False)

    def scanner(self, quick: bool) -> Scanner:
        """The (shared, per-process) scanner for full or quick sweeps."""
        if quick not in self._scanners:
            options = self.scan_options.quick if quick else self.scan_options
            self._scanners[quick] = Scanner(options, limiter=self.limiter)
        return self._scanners[quick]


# -- starting ----------------------------------------------------------------------------


async def start_sweep(
    sessions: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    *,
    kind: SweepKind = "adhoc",
    scope: Mapping[str, Any],
    options: SweepOptions | None = None,
) -> int:
    """Create a sweep and queue its discovery; its id.

    ValueError for a bad scope. The sweep row is committed before the job is queued; if
    Redis fails in between, the sweep waits as ``pending`` for the reconciler.
    """
    async with sessions() as session:
        sweep = await sweep_repo.create_sweep(
            session, kind=kind, scope=scope, options=(options or SweepOptions()).to_dict()
        )
        sweep_id = sweep.id
        await session.commit()
    await jobs.enqueue_discover(redis, sweep_id)
    return sweep_id


async def start_nightly(
    sessions: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    options: SweepOptions,
    *,
    scheduled_for: dt.datetime | None = None,
) -> int | None:
    """Start the scheduled sweep of the whole fleet, unless one is still open (a sweep
    that overran its night must not be doubled by the next) or one was already started
    for the same ``scheduled_for`` tick; its id, or None.

    Safe with several schedulers: the check and the insert happen under one PostgreSQL
    advisory lock, and ``sweeps.scheduled_for`` is unique, so two schedulers firing the
    same tick (at the same second, or one late after the other's sweep closed) start
    one sweep.
    """
    async with sessions() as session:
        await sweep_repo.lock_nightly_start(session)
        if scheduled_for is not None:
            done = await sweep_repo.scheduled_sweep(session, scheduled_for)
            if done is not None:
                log.info(
                    "nightly sweep for %s already started as sweep %s",
                    scheduled_for.isoformat(),
                    done.id,
                )
                return None
        running = [s.id for s in await sweep_repo.open_sweeps(session) if s.kind == "nightly"]
        if running:
            log.warning("nightly sweep not started: sweep %s is still open", running[0])
            return None
        sweep = await sweep_repo.create_sweep(
            session,
            kind="nightly",
            scope={"all": True},
            options=options.to_dict(),
            scheduled_for=scheduled_for,
        )
        sweep_id = sweep.id
        await session.commit()
    await jobs.enqueue_discover(redis, sweep_id)
    return sweep_id


# -- discovery ---------------------------------------------------------------------------


#: Domains discovered at once. Starting thousands together stalls the event loop until
#: the first queries time out (and holds every answer in memory at once): 0.25 % of a
#: 10,000-domain sweep came back as DNS errors and the worker peaked at 764 MB.
DISCOVERIES_IN_FLIGHT = 200


async def _discover_one(
    name: str, resolver: Resolver, slots: asyncio.Semaphore, profile: PortProfile
) -> Discovery:
    try:
        async with slots:
            return await discover(name, resolver, **profile.looks_up)
    except TargetError as exc:  # a name the inventory let through but DNS cannot take
        error = ErrorInfo(kind=exc.kind, phase=exc.phase, message=exc.message)
        return Discovery(domain=name.strip(), status="error", errors=(error,))


async def _discover_all(
    names: Sequence[str], resolver: Resolver, deadline: float, profile: PortProfile
) -> list[Discovery]:
    """Every domain's discovery; those DNS could not finish by ``deadline`` seconds are
    ``error`` discoveries saying so, so that a sweep goes on (and finishes) regardless."""
    slots = asyncio.Semaphore(DISCOVERIES_IN_FLIGHT)
    tasks = [asyncio.ensure_future(_discover_one(name, resolver, slots, profile)) for name in names]
    if not tasks:
        return []
    _, late = await asyncio.wait(tasks, timeout=deadline)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    discoveries: list[Discovery] = []
    for name, task in zip(names, tasks, strict=True):
        if task in late:
            message = f"discovery did not finish within {deadline:g} s"
            error = ErrorInfo(kind="timeout", phase="dns", message=message)
            discoveries.append(Discovery(domain=_domain_key(name), status="error", errors=(error,)))
        else:
            discoveries.append(task.result())
    return discoveries


def _domain_key(name: str) -> str:
    try:
        return normalise_domain(name)
    except TargetError:
        return name.strip()


async def discover_sweep(rt: SweepRuntime, sweep_id: int) -> int:
    """Discover a sweep's domains, store the plan and queue its scans; how many queued.

    Idempotent: a sweep already past discovery only gets its missing scans queued, and
    of two discoveries racing (a re-queued job next to a running one) only the first
    to lock the sweep stores its plan.
    """
    async with rt.sessions() as session:
        sweep = await sweep_repo.get_sweep(session, sweep_id)
        if sweep is None or sweep.status in sweep_repo.FINAL_STATUSES:
            return 0
        if sweep.status in ("scanning", "closing"):
            return await enqueue_missing(rt, sweep_id)
        if not await sweep_repo.set_sweep_status(
            session, sweep_id, "discovering", expected=("pending", "discovering")
        ):
            return 0  # cancelled since it was read
        options = SweepOptions.from_dict(sweep.options)
        domains = await domains_in_scope(session, sweep.scope)
        await session.commit()

    profile = options.profile or PortProfile()
    discoveries = await _discover_all(
        [d.name for d in domains], rt.new_resolver(), rt.discovery_deadline, profile
    )
    plan = plan_endpoints(discoveries, profile, allow_private=rt.allow_private)
    domain_ids = {_domain_key(d.name): d.id for d in domains}

    async with rt.sessions() as session:
        locked = await sweep_repo.get_sweep(session, sweep_id, for_update=True)
        if locked is None or locked.status in sweep_repo.FINAL_STATUSES:
            return 0  # cancelled while DNS ran: the plan is not stored, nothing queued
        if locked.status == "discovering":
            record = await sweep_repo.record_discovery(session, sweep_id, plan, domain_ids)
            await sweep_repo.set_sweep_status(
                session, sweep_id, "scanning", expected=("discovering",)
            )
            await session.commit()
            log.info(
                "sweep %s: %d domains, %d endpoints to scan, %d rejected",
                sweep_id,
                len(domains),
                len(record.to_scan),
                len(record.rejected),
            )
    return await enqueue_missing(rt, sweep_id)


async def enqueue_missing(rt: SweepRuntime, sweep_id: int) -> int:
    """Queue a scan for every endpoint of the sweep without a result (jobs pending
    under the same id are not doubled), or its close when none is missing; how many
    scans were queued anew."""
    async with rt.sessions() as session:
        missing = await sweep_repo.unfinished_endpoints(session, sweep_id)
    if not missing:
        await jobs.enqueue_close(rt.redis, sweep_id)
        return 0
    return await jobs.enqueue_scans(rt.redis, sweep_id, missing)


# -- scanning ----------------------------------------------------------------------------

ScanOutcome = Literal["stored", "duplicate", "skipped"]


def _stash_key(sweep_id: int, endpoint_id: int) -> str:
    return f"tlsfleet:stash:{jobs.scan_job_id(sweep_id, endpoint_id)}"


#: Further names' certificates of one endpoint fetched at once (a web host serves a
#: hundred names and more); the per-IP limit still bounds the connections.
CERTIFICATES_IN_FLIGHT = 4


async def _further_certificates(
    scanner: Scanner, target: Target, names: Sequence[str]
) -> dict[str, CertificateInfo | None]:
    """The certificate served for each of ``names`` on ``target``'s endpoint."""
    slots = asyncio.Semaphore(CERTIFICATES_IN_FLIGHT)

    async def fetch(name: str) -> tuple[str, CertificateInfo | None]:
        async with slots:
            return name, await scanner.certificate(replace(target, host=name, sni=name))

    return dict(await asyncio.gather(*map(fetch, names)))


async def _scan(
    rt: SweepRuntime, scanner: Scanner, names: Sequence[str], sweep_id: int, endpoint_id: int
) -> tuple[EndpointResult | dict[str, Any], dict[str, CertificateInfo | None]]:
    async with rt.sessions() as session:
        target = (await get_targets(session, [endpoint_id])).get(endpoint_id)
    if target is None:
        raise LookupError(f"sweep {sweep_id}: no endpoint {endpoint_id}")
    if names:
        # The plan scans under the first name (alphabetically) that leads there.
        target = replace(target, host=names[0], sni=names[0])
    certificates: dict[str, CertificateInfo | None] = {}
    try:
        async with asyncio.timeout(rt.scan_deadline):
            result = await scanner.scan(target)
            if is_limiter_failure(result):
                raise LimiterUnavailable(result.error.message if result.error else "")
            if scanner.options.certificate and result.status == "ok":
                certificates = await _further_certificates(scanner, target, names[1:])
    except TimeoutError:
        message = f"the scan did not finish within {rt.scan_deadline:g} s"
        result = EndpointResult(
            target=target, status="error", error=ErrorInfo("timeout", "scan", message)
        )
    return result, certificates


async def scan_endpoint(rt: SweepRuntime, sweep_id: int, endpoint_id: int) -> ScanOutcome:
    """Scan one endpoint for a sweep and store its result, exactly once.

    ``skipped``: the sweep is gone or final (also when it was cancelled while this
    run scanned: the result is then dropped, never stored into a final sweep), or the
    result was already stored (a retried job); ``duplicate``: another run stored it
    first while this one scanned; ``stored``: this run's result is the sweep's. A
    result that could not be stored (PostgreSQL down) is kept in Redis for the retry,
    so the endpoint is not scanned twice; the exception propagates for the job to retry.
    """
    async with rt.sessions() as session:
        sweep = await sweep_repo.get_sweep(session, sweep_id)
        if sweep is None or sweep.status in sweep_repo.FINAL_STATUSES:
            return "skipped"
        if await _has_result(session, sweep_id, endpoint_id):
            # A retry of a job whose result is in: only the close may still be missing.
            await _maybe_close(rt, sweep_id, await sweep_progress(session, sweep_id))
            return "skipped"
        names = await sweep_repo.endpoint_host_names(session, sweep_id, endpoint_id)
        options = SweepOptions.from_dict(sweep.options)

    stash = _stash_key(sweep_id, endpoint_id)
    stashed = await rt.redis.get(stash)
    if stashed is not None:
        data = json.loads(stashed)
        result: EndpointResult | dict[str, Any] = data["result"]
        certificates: Mapping[str, CertificateInfo | dict[str, Any] | None] = data["certificates"]
    else:
        result, certificates = await _scan(
            rt, rt.scanner(options.quick), names, sweep_id, endpoint_id
        )

    committed = False
    try:
        async with rt.sessions() as session:
            # The sweep row is held (FOR SHARE) until the commit: a cancel waits for
            # this result, or came first and this run stores nothing.
            still_open = await sweep_repo.hold_open(session, sweep_id)
            new = still_open and await record_result(session, sweep_id, endpoint_id, result)
            if new and certificates:
                await record_certificates(session, sweep_id, endpoint_id, dict(certificates))
            await session.commit()
            committed = True
            after = await sweep_progress(session, sweep_id)
    except Exception:
        if not committed and stashed is None:
            await _stash(rt, stash, result, certificates)
        raise
    if stashed is not None:
        await rt.redis.delete(stash)
    if not still_open:
        log.info("sweep %s is final: the result of endpoint %s is dropped", sweep_id, endpoint_id)
        return "skipped"
    await _maybe_close(rt, sweep_id, after)
    return "stored" if new else "duplicate"


async def _stash(
    rt: SweepRuntime,
    key: str,
    result: EndpointResult | dict[str, Any],
    certificates: Mapping[str, CertificateInfo | dict[str, Any] | None],
) -> None:
    document = result.to_dict() if isinstance(result, EndpointResult) else result
    certs = {
        name: cert.to_dict() if isinstance(cert, CertificateInfo) else cert
        for name, cert in certificates.items()
    }
    try:
        await rt.redis.set(
            key, json.dumps({"result": document, "certificates": certs}), ex=_STASH_TTL
        )
    except RedisError as exc:  # the retry will scan again: slower, not wrong
        log.warning("could not keep the result of %s for the retry: %s", key, exc)


async def _has_result(session: AsyncSession, sweep_id: int, endpoint_id: int) -> bool:
    return await get_result(session, sweep_id, endpoint_id) is not None


async def _maybe_close(rt: SweepRuntime, sweep_id: int, now: SweepProgress | None) -> None:
    # Every scan checks after its own commit: the last of them to commit sees all in.
    if now is not None and now.status == "scanning" and now.total and now.done >= now.total:
        await jobs.enqueue_close(rt.redis, sweep_id)


# -- closing and reconciling -------------------------------------------------------------


async def close(rt: SweepRuntime, sweep_id: int) -> bool:
    """Close the sweep if every result is in (storing its diff); True if this call did.

    When results are missing (a stale close), it queues them instead.
    """
    async with rt.sessions() as session:
        diff = await sweep_repo.close_sweep(session, sweep_id)
        due = await _announce(session, sweep_id, diff) if diff is not None else []
        await session.commit()
        sweep = await sweep_repo.get_sweep(session, sweep_id)
    if diff is not None:
        counts = diff.to_dict()["counts"]
        log.info("sweep %s closed; diff %s", sweep_id, counts)
        try:
            await deliveries.enqueue_deliveries(rt.redis, due)
            # Findings and notices as a job of their own, after the commit: judging
            # every document of the sweep stays out of the closing transaction.
            await notices.enqueue_evaluate(rt.redis, sweep_id)
        except RedisError as exc:  # stored: the reconciler wakes them
            log.warning("sweep %s: webhook deliveries not queued yet: %s", sweep_id, exc)
        return True
    if sweep is not None and sweep.status in ("scanning", "closing"):
        await enqueue_missing(rt, sweep_id)
    return False


async def _announce(session: AsyncSession, sweep_id: int, diff: SweepDiff) -> list[int]:
    """In the closing transaction: the ``sweep.completed`` event for every subscription
    that wants it, and the sweep's digests released; the deliveries now due."""
    summary = diff.to_dict()
    event = webhooks.Event(
        id=webhooks.event_id("sweep.completed", sweep_id),
        type="sweep.completed",
        created_at=dt.datetime.now(dt.UTC),
        data={
            "sweep_id": sweep_id,
            "previous_sweep_id": summary.get("previous_sweep_id"),
            "counts": summary["counts"],
        },
    )
    due = await webhook_repo.emit(session, event, account_manager_id=None, everyone=True)
    return due + await webhook_repo.release_digests(session, sweep_id)


@dataclass(slots=True)
class ReconcileReport:
    """What one reconciliation did."""

    sweeps: int = 0
    discoveries: int = 0
    scans: int = 0
    closes: int = 0
    #: Jobs freed from workers that died running them.
    released: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "sweeps": self.sweeps,
            "discoveries": self.discoveries,
            "scans": self.scans,
            "closes": self.closes,
            "released": self.released,
        }


async def reconcile(rt: SweepRuntime) -> ReconcileReport:
    """Bring the queue back in line with PostgreSQL: for every open sweep, queue its
    discovery (pending, discovering), its missing scans, or its close (scanning); and
    free those of its jobs that a dead worker was running (:func:`jobs.release_orphans`).

    Safe to run at any time and on several workers at once: job ids keep what is
    already queued or running from being queued again, and every job re-checks the
    database before it acts.
    """
    report = ReconcileReport()
    async with rt.sessions() as session:
        open_sweeps = [(s.id, s.status) for s in await sweep_repo.open_sweeps(session)]
    for sweep_id, status in open_sweeps:
        report.sweeps += 1
        if status in ("pending", "discovering"):
            report.released += await jobs.release_orphans(
                rt.redis, [jobs.discover_job_id(sweep_id)]
            )
            report.discoveries += await jobs.enqueue_discover(rt.redis, sweep_id)
            continue
        async with rt.sessions() as session:
            missing = await sweep_repo.unfinished_endpoints(session, sweep_id)
        if missing:
            report.released += await jobs.release_orphans(
                rt.redis, [jobs.scan_job_id(sweep_id, e) for e in missing]
            )
            report.scans += await jobs.enqueue_scans(rt.redis, sweep_id, missing)
        else:
            report.released += await jobs.release_orphans(rt.redis, [jobs.close_job_id(sweep_id)])
            report.closes += await jobs.enqueue_close(rt.redis, sweep_id)
    if report.discoveries or report.scans or report.closes or report.released:
        log.info("reconciled: %s", report.to_dict())
    return report


# -- cancelling --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelReport:
    """What :func:`cancel` did. ``outcome``: see
    :data:`~fleet.repositories.sweeps.CancelOutcome`. ``removed_jobs``: queued jobs of
    the sweep taken off the queue; None when the queue was not reachable (the jobs
    left there find the sweep cancelled and do nothing)."""

    sweep_id: int
    outcome: CancelOutcome
    removed_jobs: int | None = 0


async def cancel(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis | None, sweep_id: int
) -> CancelReport:
    """Cancel an open sweep and take its queued jobs off the queue.

    The status move is committed first (PostgreSQL is the source of truth); then the
    sweep's discovery, close and the scans of endpoints without a result are removed
    from the queue where they are still waiting. Jobs already running, or queued after
    the removal (a discovery that committed its plan just before the cancel), see the
    final status and store nothing. Cancelling a cancelled sweep again changes nothing
    but retries the removal (``already``); a done or failed sweep is left alone
    (``final``), as is an unknown id (``unknown``).
    """
    async with sessions() as session:
        outcome = await sweep_repo.cancel_sweep(session, sweep_id)
        missing: list[int] = []
        if outcome in ("cancelled", "already"):
            missing = await sweep_repo.unfinished_endpoints(session, sweep_id)
        await session.commit()
    if outcome not in ("cancelled", "already"):
        return CancelReport(sweep_id, outcome)
    if outcome == "cancelled":
        log.info("sweep %s cancelled", sweep_id)
    if redis is None:
        return CancelReport(sweep_id, outcome, None)
    job_ids = [
        jobs.discover_job_id(sweep_id),
        jobs.close_job_id(sweep_id),
        *(jobs.scan_job_id(sweep_id, endpoint_id) for endpoint_id in missing),
    ]
    try:
        removed: int | None = await jobs.remove_queued(redis, job_ids)
    except RedisError as exc:
        log.warning("sweep %s cancelled; its queued jobs stay (they will skip): %s", sweep_id, exc)
        removed = None
    return CancelReport(sweep_id, outcome, removed)


async def progress(session: AsyncSession, sweep_id: int) -> SweepProgress | None:
    """A sweep's progress (total, done, failed, rate, ETA) while it runs and after; None
    for an unknown sweep. What ``tlsfleet sweep status`` and the API show."""
    return await sweep_progress(session, sweep_id)
