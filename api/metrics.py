"""Prometheus metrics: request counts and latencies per route, sweeps per status, and
the fleet as it stands (read from PostgreSQL and Redis when scraped).

Fleet gauges (endpoints per accepted protocol, findings of the current state and of the
latest judged sweep per severity) come from the statistics cache (api/cache.py: one
count per state version and minute, shared with ``/v1/stats``); sweep progress reads
only open sweeps; the queue depth is one ``ZCARD``. The worker's own numbers — job and
scan durations, webhook delivery outcomes — are on the worker's ``/metrics``
(worker/metrics.py, ``TLSFLEET_WORKER_METRICS_PORT``). docs/dashboard.md lists them all.

Each application has its own registry (nothing global, so several apps in one process —
tests — do not collide). Route labels are templates (``/v1/domains/{domain_id}``), never
raw paths, to keep the label set small.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from arq.constants import default_queue_name
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response

from api.runtime import ApiRuntime
from fleet.db.models import SWEEP_STATUSES
from fleet.repositories import dashboard as dashboard_repo
from fleet.repositories import reports
from fleet.repositories import sweeps as sweep_repo
from policy import Severity

log = logging.getLogger(__name__)

#: Seconds the scrape waits for Redis' queue length.
_QUEUE_TIMEOUT = 2.0


class Metrics:
    """The application's metrics and its registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tlsfleet_http_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tlsfleet_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.sweeps = Gauge(
            "tlsfleet_sweeps",
            "sweeps by status (read from PostgreSQL when scraped)",
            ["status"],
            registry=self.registry,
        )
        self.endpoints = Gauge(
            "tlsfleet_fleet_endpoints",
            "endpoints with a result (the current state)",
            registry=self.registry,
        )
        self.protocols = Gauge(
            "tlsfleet_fleet_endpoints_by_protocol",
            "endpoints accepting each protocol version (their latest result)",
            ["protocol"],
            registry=self.registry,
        )
        self.findings = Gauge(
            "tlsfleet_fleet_findings",
            "endpoints with each finding of /v1/stats (legacy_tls, no_modern_tls, …)",
            ["finding"],
            registry=self.registry,
        )
        self.severity = Gauge(
            "tlsfleet_findings_by_severity",
            "findings of the latest judged sweep per severity",
            ["severity"],
            registry=self.registry,
        )
        self.judged_sweep = Gauge(
            "tlsfleet_findings_sweep_id",
            "the latest judged sweep (the one tlsfleet_findings_by_severity counts)",
            registry=self.registry,
        )
        self.sweep_progress = Gauge(
            "tlsfleet_sweep_progress_endpoints",
            "open sweeps' endpoints: total, done (results stored), failed (of done)",
            ["sweep_id", "state"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tlsfleet_queue_depth",
            "jobs waiting in the arq queue",
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "tlsfleet_metrics_scrape_errors_total",
            "parts of a scrape that could not be read (database, redis)",
            ["part"],
            registry=self.registry,
        )

    async def refresh(self, runtime: ApiRuntime) -> None:
        """Read the gauges anew (each part on its own: one failing leaves the others)."""
        try:
            await self._refresh_database(runtime)
        except Exception as exc:  # metrics must still answer when the database does not
            log.warning("metrics: database numbers unavailable (%s)", type(exc).__name__)
            self.scrape_errors.labels("database").inc()
        try:
            queue = await asyncio.wait_for(runtime.queue(), _QUEUE_TIMEOUT)
            depth = await asyncio.wait_for(queue.zcard(default_queue_name), _QUEUE_TIMEOUT)
        except Exception as exc:  # Redis down: the gauge keeps its last value
            log.warning("metrics: queue depth unavailable (%s)", type(exc).__name__)
            self.scrape_errors.labels("redis").inc()
        else:
            self.queue_depth.set(depth)

    async def _refresh_database(self, runtime: ApiRuntime) -> None:
        async with runtime.sessions() as session:
            counts = await sweep_repo.sweep_counts(session)
            version = await reports.state_version(session)

            async def compute() -> reports.FleetCounts:
                fleet, _ = await reports.fleet_stats(
                    session, reports.ResultFilter(), per_manager=False
                )
                return fleet

            fleet = await runtime.stats_cache.get(("metrics",), version, compute)
            judged, severities = await dashboard_repo.findings_by_severity(session)
            progress = [
                await sweep_repo.sweep_progress(session, s.id)
                for s in await sweep_repo.open_sweeps(session)
            ]
        for status in SWEEP_STATUSES:
            self.sweeps.labels(status).set(counts.get(status, 0))
        self.endpoints.set(fleet.endpoints)
        for protocol, n in fleet.protocols.items():
            self.protocols.labels(protocol).set(n)
        for finding, n in fleet.findings.items():
            self.findings.labels(finding).set(n)
        for severity in Severity:
            self.severity.labels(severity.value).set(severities.get(severity.value, 0))
        self.judged_sweep.set(judged or 0)
        self.sweep_progress.clear()  # closed sweeps leave the series
        for p in progress:
            if p is not None:
                for state, n in (("total", p.total), ("done", p.done), ("failed", p.failed)):
                    self.sweep_progress.labels(str(p.sweep_id), state).set(n)

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Count and time every request."""
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            self.requests.labels(request.method, route, str(status)).inc()
            self.latency.labels(request.method, route).observe(time.perf_counter() - started)
