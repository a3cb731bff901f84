"""Job names, job ids and typed enqueue helpers: what the CLI, the API and the worker
share about the queue.

Everything that enqueues goes through these helpers, so a job's name, its arguments
and its id are spelled in one place. Job ids are derived from what the job is about
(``sweep:12:scan:345``): arq refuses a second job with an id that is still queued or
running, so the reconciler, a retried discovery and a second worker can all "enqueue
everything that is missing" without doubling the work.

Jobs are serialised as JSON, not pickle: whoever can write to Redis must not be able
to run code in the workers. Arguments are therefore ints and strings only.

A worker that dies mid-job (SIGKILL, OOM) leaves arq's "in progress" mark on its jobs,
and arq runs them again only when the mark expires (the job timeout plus 10 s). To do
better, every worker keeps a heartbeat key alive and records itself as the owner of
each job it starts; :func:`release_orphans` (called by the reconciler) deletes the mark
of jobs whose owner's heartbeat is gone, and the next poll of any worker runs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix

__all__ = [
    "SCHEDULER_QUEUE",
    "JobName",
    "beat",
    "claim",
    "close_job_id",
    "create_job_pool",
    "deserialize",
    "discover_job_id",
    "enqueue_close",
    "enqueue_discover",
    "enqueue_reconcile",
    "enqueue_scans",
    "release",
    "release_orphans",
    "remove_queued",
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

#: The scheduler's own queue (``tlsfleet scheduler``): its cron jobs go through it, so
#: that a scheduler never takes (and, lacking the function, fails) a job meant for the
#: workers; what its cron jobs start goes to the workers' queue.
SCHEDULER_QUEUE = "tlsfleet:scheduler"


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


# Takes queued jobs off the queue, leaving running ones alone. KEYS: the queue, then an
# (in-progress key, job key) pair per job; ARGV: the job ids. Atomic on the server, so a
# worker either started a job before (it runs, and finds its sweep final) or never will.
_REMOVE_QUEUED = """
local removed = 0
for i, job_id in ipairs(ARGV) do
    local in_progress = KEYS[2 * i]
    local job = KEYS[2 * i + 1]
    if redis.call('EXISTS', in_progress) == 0 and redis.call('ZREM', KEYS[1], job_id) == 1 then
        redis.call('DEL', job)
        removed = removed + 1
    end
end
return removed
"""

#: Job ids per script call: a sweep's scans may be tens of thousands.
_REMOVE_CHUNK = 500


async def remove_queued(redis: ArqRedis, job_ids: Iterable[str]) -> int:
    """Take the jobs among ``job_ids`` that are queued and not yet running off the
    queue (a cancelled sweep's discovery, scans and close); returns how many.

    Running jobs are left to finish: every sweep job re-reads its sweep's status from
    PostgreSQL and does nothing to a final one. Unknown ids are ignored.
    """
    ids = list(dict.fromkeys(job_ids))
    script = redis.register_script(_REMOVE_QUEUED)
    removed = 0
    for start in range(0, len(ids), _REMOVE_CHUNK):
        chunk = ids[start : start + _REMOVE_CHUNK]
        keys = [redis.default_queue_name]
        for job_id in chunk:
            keys += [in_progress_key_prefix + job_id, job_key_prefix + job_id]
        removed += int(await script(keys=keys, args=chunk))
    return removed


# -- owners of running jobs --------------------------------------------------------------

_WORKER_KEY = "tlsfleet:worker:{}"
_OWNER_KEY = "tlsfleet:job-owner:{}"


async def beat(redis: ArqRedis, worker_id: str, ttl: float) -> None:
    """Say that ``worker_id`` is alive for ``ttl`` more seconds."""
    await redis.set(_WORKER_KEY.format(worker_id), b"1", px=max(1, int(ttl * 1000)))


async def claim(redis: ArqRedis, job_id: str, worker_id: str, ttl: float) -> None:
    """Record ``worker_id`` as running ``job_id`` (for at most ``ttl`` seconds)."""
    await redis.set(_OWNER_KEY.format(job_id), worker_id, px=max(1, int(ttl * 1000)))


async def release(redis: ArqRedis, job_id: str) -> None:
    """Forget who ran ``job_id`` (it has ended)."""
    await redis.delete(_OWNER_KEY.format(job_id))


async def release_orphans(redis: ArqRedis, job_ids: Iterable[str]) -> int:
    """Free the jobs among ``job_ids`` whose worker died while running them: their
    in-progress marks are deleted, so that another worker runs them at its next poll;
    returns how many.

    Only a job with a recorded owner whose heartbeat has expired counts as orphaned:
    a job just starting (no owner yet) or one whose owner is alive is left alone. A
    worker that was only stalled past its heartbeat may then see its job run twice,
    which jobs are built to survive (results are stored once).
    """
    ids = list(job_ids)
    if not ids:
        return 0
    owners = await redis.mget([_OWNER_KEY.format(job_id) for job_id in ids])
    owned = [(job_id, owner) for job_id, owner in zip(ids, owners, strict=True) if owner]
    if not owned:
        return 0
    alive = await redis.mget([_WORKER_KEY.format(owner.decode()) for _, owner in owned])
    dead = [job_id for (job_id, _), beat_ in zip(owned, alive, strict=True) if beat_ is None]
    if dead:
        await redis.delete(
            *(in_progress_key_prefix + job_id for job_id in dead),
            *(_OWNER_KEY.format(job_id) for job_id in dead),
        )
    return len(dead)
