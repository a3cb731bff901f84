"""The worker's Prometheus metrics: job durations and outcomes, scan durations, webhook
delivery outcomes.

The worker is a process of its own, so it serves its own ``/metrics`` when
``TLSFLEET_WORKER_METRICS_PORT`` is set (off by default): a small HTTP server on a
thread (``prometheus_client.start_http_server``) over this process's registry. What
every worker shares — fleet gauges, sweep progress, queue depth — the API's
``/metrics`` reads from PostgreSQL and Redis instead (api/metrics.py).

Jobs are timed by wrapping their arq functions (:func:`instrument`): the wrapper
finds the registry through the job's typed context, so nothing is global.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from arq.worker import Function, Retry
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from fleet.deliveries import DELIVER_JOB
from fleet.jobs import JobName

__all__ = ["WorkerMetrics", "instrument"]

log = logging.getLogger(__name__)

_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SCAN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class WorkerMetrics:
    """One worker's metrics and its registry (nothing global: several workers in one
    process, as in tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.job_duration = Histogram(
            "tlsfleet_worker_job_duration_seconds",
            "arq job run time by job and outcome (ok, retry, error, cancelled)",
            ["job", "outcome"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.scan_duration = Histogram(
            "tlsfleet_scan_duration_seconds",
            "endpoint scan jobs' run time (probe, store, advance) by outcome",
            ["outcome"],
            buckets=_SCAN_BUCKETS,
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "tlsfleet_webhook_deliveries_total",
            "webhook delivery attempts by outcome (delivered, pending: will retry, dead)",
            ["outcome"],
            registry=self.registry,
        )
        self._server: Any = None

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``port`` (a daemon thread) until :meth:`close`."""
        self._server, _ = start_http_server(port, addr=address, registry=self.registry)
        log.info("worker metrics on port %d", port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def observe(self, job: str, outcome: str, seconds: float, result: object) -> None:
        """Record one finished job run (and what a scan or a delivery came to)."""
        self.job_duration.labels(job, outcome).observe(seconds)
        if job == JobName.SCAN:
            self.scan_duration.labels(str(result) if outcome == "ok" else outcome).observe(seconds)
        elif job == DELIVER_JOB and outcome == "ok":
            self.webhook_deliveries.labels(str(result)).inc()


def _metrics_of(ctx: dict[str, Any]) -> WorkerMetrics | None:
    app = ctx.get("app")
    found = getattr(app, "metrics", None)
    return found if isinstance(found, WorkerMetrics) else None


def _timed(
    name: str, coroutine: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(coroutine)
    async def timed(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        outcome, result = "error", None
        try:
            result = await coroutine(ctx, *args, **kwargs)
            outcome = "ok"
            return result
        except Retry:
            outcome = "retry"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            metrics = _metrics_of(ctx)
            if metrics is not None:
                metrics.observe(name, outcome, time.perf_counter() - started, result)

    return timed


def instrument(functions: Sequence[Function]) -> list[Function]:
    """The same arq functions, each timed into its worker's :class:`WorkerMetrics`."""
    return [dataclasses.replace(f, coroutine=_timed(f.name, f.coroutine)) for f in functions]
