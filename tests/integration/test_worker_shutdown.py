"""A ``tlsfleet worker`` stopped with SIGTERM while jobs come and go exits cleanly.

arq cancels the running jobs on SIGTERM. A job cancelled inside its function goes back
to the queue; one cancelled in the steps around it (our ``on_job_start`` and
``after_job_end`` hooks, arq's Redis round trips) used to let ``CancelledError`` out of
its task, and the worker then exited 1 without closing its pools (seen once in CI).
Real worker processes are stopped at different moments of a stream of short jobs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from arq.connections import RedisSettings

from fleet import jobs
from tests.integration.test_sweep_harness import BOUND, WorkerProcess, worker_env

#: Workers started together and stopped one by one, after this many jobs finished.
STOP_AFTER = (5, 15, 30)


async def test_workers_stopped_among_running_jobs_exit_0_and_leave_nothing_running(
    database_url: str, redis_url: str, arq_redis_settings: RedisSettings, tmp_path: Path
) -> None:
    env = worker_env(database_url, redis_url, "127.0.0.1:9", TLSFLEET_WORKER_MAX_JOBS="8")
    pool = await jobs.create_job_pool(arq_redis_settings)
    started: list[WorkerProcess] = []
    try:
        # Given a queue of short jobs (reconciliations with nothing to do)
        for n in range(600):
            await pool.enqueue_job(jobs.JobName.RECONCILE, _job_id=f"stop:{n}")
        started = [WorkerProcess(env, tmp_path / f"worker{n}.log") for n in range(len(STOP_AFTER))]
        for worker, finished in zip(started, STOP_AFTER, strict=True):
            # When each worker is stopped among its jobs (it has finished one itself: a
            # process stopped before it set up its signal handlers dies of SIGTERM, as any
            # would), after more jobs have finished in all than the last time
            async with asyncio.timeout(BOUND):
                while (
                    "← stop:" not in worker.output()
                    or sum(w.output().count("← stop:") for w in started) < finished
                ):
                    assert worker.proc.poll() is None, worker.output()
                    await asyncio.sleep(0.01)
            returncode = worker.stop()
            # Then it exits 0 after its shutdown, whatever it was doing
            output = worker.output()
            assert returncode == 0, output
            assert "shutdown on SIGTERM" in output, output
            assert "Traceback" not in output, output
        # and no job is left marked as running
        assert await pool.keys("arq:in-progress:*") == []
    finally:
        for worker in started:
            worker.stop()
        await pool.aclose()
