"""arq's worker settings, built from the fleet's settings when a worker starts.

arq reads its settings from a class whose attributes would be evaluated at import
time; the fleet's Redis (configured or embedded) is only known once the process has
started, so :func:`worker_settings` builds the same keyword arguments as a dict, and
:func:`run_worker` (``tlsfleet worker``) runs them.

Roles (``tlsfleet worker`` and ``tlsfleet scheduler``): by default a worker runs the
jobs *and* the cron schedule (the nightly sweep and the reconciler), which suits one
machine and ``tlsfleet demo``. With many workers, run them with ``--no-cron``
(``TLSFLEET_WORKER_CRON=false``) and one ``tlsfleet scheduler``: it runs only the cron
jobs, through a queue of its own (:data:`SCHEDULER_QUEUE`, so that it never takes the
workers' jobs), and the sweeps it starts go to the workers' queue.

Every job function shares one timeout: arq keeps a running job's "in progress" marker
for the longest timeout of any function plus 10 s, and a killed worker's jobs run
again only after that marker expires — so no job may have a longer timeout than a scan
needs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Literal

from arq.constants import in_progress_key_prefix
from arq.cron import cron
from arq.worker import Worker, func

from fleet import deliveries, jobs, notices
from fleet.jobs import SCHEDULER_QUEUE, JobName
from fleet.runtime import loop_factory
from worker import jobs as worker_jobs
from worker.context import WorkerConfig, job_ended, job_started, shutdown, startup
from worker.metrics import instrument
from worker.schedule import parse_cron, parse_timezone

__all__ = [
    "RECONCILE_CRON",
    "SCHEDULER_QUEUE",
    "Role",
    "create_worker",
    "run_worker",
    "worker_settings",
]

#: The reconciler's cron entry (named apart from the job the workers enqueue at start-up,
#: so that arq treats the two separately).
RECONCILE_CRON = f"cron:{JobName.RECONCILE}"


_log = logging.getLogger(__name__)


class _Worker(Worker):
    """arq's worker with a shutdown that survives jobs cancelled between steps.

    On SIGTERM arq cancels the running jobs. A job cancelled inside its function is
    put back in the queue; one cancelled in the steps around it (our ``on_job_start``
    and ``after_job_end`` hooks, arq's own Redis round trips) lets ``CancelledError``
    out of its task, and arq's ``close`` then raised it: the worker exited 1 without
    running its shutdown, and the job stayed marked as running until the mark expired
    (the job timeout plus 10 s). Here such jobs lose their mark at once, so the next
    worker runs them again (jobs are idempotent), and the shutdown runs in any case.
    """

    async def close(self) -> None:
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        running = dict(self.tasks)
        outcomes = await asyncio.gather(*running.values(), return_exceptions=True)
        interrupted = [
            job_id
            for job_id, outcome in zip(running, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        ]
        self.tasks.clear()
        if interrupted:
            _log.info(
                "jobs stopped between steps (run again unless they had finished): %s",
                ", ".join(interrupted),
            )
            await self.pool.delete(*(in_progress_key_prefix + job_id for job_id in interrupted))
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None


#: ``all``: jobs and the cron schedule (the default worker); ``worker``: jobs only
#: (``--no-cron``); ``scheduler``: the cron schedule only.
Role = Literal["all", "worker", "scheduler"]


def worker_settings(config: WorkerConfig, role: Role = "all") -> dict[str, Any]:
    """Keyword arguments for :class:`arq.worker.Worker` in ``role``; CronError for a bad
    schedule."""
    settings, options = config.settings, config.options
    nightly = parse_cron(settings.nightly_cron)
    timezone = parse_timezone(settings.timezone)
    every = options.reconcile_every
    reconcile_seconds = set(range(0, 60, every)) if every < 60 else {0}

    def job(coroutine: Any, name: JobName) -> Any:
        return func(coroutine, name=name, timeout=options.job_timeout, max_tries=options.max_tries)

    functions = [
        job(worker_jobs.sweep_discover, JobName.DISCOVER),
        job(worker_jobs.sweep_scan_endpoint, JobName.SCAN),
        job(worker_jobs.sweep_close, JobName.CLOSE),
        job(worker_jobs.sweep_reconcile, JobName.RECONCILE),
        func(
            worker_jobs.findings_evaluate,
            name=notices.EVALUATE_JOB,
            timeout=options.job_timeout,
            max_tries=options.max_tries,
        ),
        func(
            worker_jobs.notice_confirm,
            name=notices.CONFIRM_JOB,
            timeout=options.job_timeout,
            max_tries=options.max_tries,
        ),
        func(
            worker_jobs.webhook_deliver,
            name=deliveries.DELIVER_JOB,
            timeout=options.job_timeout,
            max_tries=options.max_tries,
        ),
    ]
    cron_jobs = [
        cron(
            worker_jobs.sweep_nightly,
            name=JobName.NIGHTLY,
            timeout=options.job_timeout,
            month=nightly.month,
            day=nightly.day,
            weekday=nightly.weekday,
            hour=nightly.hour,
            minute=nightly.minute,
        ),
        cron(
            worker_jobs.sweep_reconcile,
            name=RECONCILE_CRON,
            second=reconcile_seconds,
            timeout=options.job_timeout,
        ),
    ]
    return {
        "functions": [] if role == "scheduler" else instrument(functions),
        "cron_jobs": [] if role == "worker" else cron_jobs,
        **({"queue_name": SCHEDULER_QUEUE} if role == "scheduler" else {}),
        "redis_settings": config.redis_settings,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "on_job_start": job_started,
        "after_job_end": job_ended,
        "ctx": {"config": config},
        "max_jobs": options.max_jobs,
        "job_timeout": options.job_timeout,
        "max_tries": options.max_tries,
        # PostgreSQL holds every result; arq's result keys would only block re-enqueueing.
        "keep_result": 0,
        "poll_delay": options.poll_delay,
        "job_serializer": jobs.serialize,
        "job_deserializer": jobs.deserialize,
        "timezone": timezone,
        "health_check_interval": 60,
    }


def create_worker(config: WorkerConfig, *, role: Role = "all", **overrides: Any) -> Worker:
    """An arq worker for ``config`` in ``role`` (``burst=True``, ``handle_signals=False``
    … for tests)."""
    return _Worker(**{**worker_settings(config, role), **overrides})


def run_worker(config: WorkerConfig, *, burst: bool = False, role: Role = "all") -> None:
    """Run a worker (or the scheduler) until SIGINT/SIGTERM (or, with ``burst``, until
    the queue is empty).

    On uvloop when installed, like the rest of the CLI. A stopped worker's running jobs
    are cancelled and go back to the queue (arq retries cancelled jobs).
    """
    factory = loop_factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        create_worker(config, role=role, burst=burst).run()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
