"""Job names, job ids and typed enqueue helpers: what the CLI, the API and the worker
share about the queue.

Everything that enqueues goes through these helpers, so a job's name, its arguments
and its id are spelled in one place. Job ids are derived from what the job is about
(``sweep:12:scan:345``): arq refuses a second job with an id that is still queued or
running, so the reconciler, a retried discovery and a second worker can all "enqueue
everything that is missing" without doubling the work.

Jobs are serialised as JSON, not pickle: whoever can write to Redis must not be able
to run code in the workers. Arguments are therefore ints and strings only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool

__all__ = [
    "JobName",
    "close_job_id",
    "create_job_pool",
    "deserialize",
    "discover_job_id",
    "enqueue_close",
    "enqueue_discover",
    "enqueue_reconcile",
    "enqueue_scans",
    "scan_job_id",
    "serialize",
]


class JobName(StrEnum):
    """The worker's functions, by the name arq registers them under."""

    #: Discover a sweep's domains, persist the plan, enqueue one scan per endpoint.
    DISCOVER = "sweep_discover"
    #: Scan one endpoint for one sweep and store its result (once).
    SCAN = "sweep_scan_endpoint"
    #: Close a sweep whose results are all in and store its diff.
    CLOSE = "sweep_close"
    #: Re-enqueue what open sweeps still miss; close the complete ones (cron, start-up).
    RECONCILE = "sweep_reconcile"
    #: The scheduled sweep of the whole fleet (cron).
    NIGHTLY = "sweep_nightly"


def discover_job_id(sweep_id: int) -> str:
    """The id of a sweep's discovery job."""
    return f"sweep:{sweep_id}:discover"


def scan_job_id(sweep_id: int, endpoint_id: int) -> str:
    """The id of the job scanning ``endpoint_id`` for ``sweep_id``."""
    return f"sweep:{sweep_id}:scan:{endpoint_id}"


def close_job_id(sweep_id: int) -> str:
    """The id of a sweep's closing job."""
    return f"sweep:{sweep_id}:close"


#: Start-up reconciliations of several workers starting together collapse into one.
RECONCILE_JOB_ID = "sweeps:reconcile"


def serialize(data: dict[str, Any]) -> bytes:
    """arq's job (and result) record as JSON; anything not JSON becomes its ``repr``."""
    return json.dumps(data, separators=(",", ":"), default=repr).encode()


def deserialize(raw: bytes) -> dict[str, Any]:
    """The inverse of :func:`serialize`."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("job record is not a JSON object")
    # arq unpacks the arguments with *args: JSON gave it a list, which is fine.
    return data


async def create_job_pool(settings: RedisSettings) -> ArqRedis:
    """An arq Redis pool that enqueues jobs the way the worker reads them (JSON)."""
    return await create_pool(settings, job_serializer=serialize, job_deserializer=deserialize)


async def enqueue_discover(redis: ArqRedis, sweep_id: int) -> bool:
    """Queue the discovery of ``sweep_id``; False if it is already queued or running."""
    job = await redis.enqueue_job(JobName.DISCOVER, sweep_id, _job_id=discover_job_id(sweep_id))
    return job is not None


async def enqueue_scans(redis: ArqRedis, sweep_id: int, endpoint_ids: Iterable[int]) -> int:
    """Queue one scan per endpoint of ``sweep_id``; returns how many were new.

    Call only after the commit that made the sweep's endpoints visible: a worker may
    start on a job before this function returns.
    """
    queued = 0
    for endpoint_id in endpoint_ids:
        job = await redis.enqueue_job(
            JobName.SCAN, sweep_id, endpoint_id, _job_id=scan_job_id(sweep_id, endpoint_id)
        )
        queued += job is not None
    return queued


async def enqueue_close(redis: ArqRedis, sweep_id: int) -> bool:
    """Queue the closing of ``sweep_id``; False if it is already queued or running."""
    job = await redis.enqueue_job(JobName.CLOSE, sweep_id, _job_id=close_job_id(sweep_id))
    return job is not None


async def enqueue_reconcile(redis: ArqRedis) -> bool:
    """Queue one reconciliation now (workers do at start-up); False if one is pending."""
    job = await redis.enqueue_job(JobName.RECONCILE, _job_id=RECONCILE_JOB_ID)
    return job is not None
