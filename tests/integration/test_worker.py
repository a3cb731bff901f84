"""Sweeps run by an arq worker in this process (burst mode): the whole pipeline on real
PostgreSQL, Redis, DNS and TLS endpoints, and each step's idempotency.

The multi-process and fault tests are in ``test_sweep.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Retry
from pydantic import SecretStr
from sqlalchemy import exc as sa_errors
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import jobs, sweeps
from fleet.inventory import InventoryRecord
from fleet.jobs import JobName
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories.results import get_result, sweep_results
from fleet.repositories.sweep_jobs import customer_ids, sweep_certificates, sweep_discoveries
from fleet.settings import Settings
from fleet.sweeps import SweepOptions
from scanner.discovery import PortProfile
from tests.integration.dnsserver import DnsServer
from tests.integration.servers import Pki, SmtpServer, TlsProfile, running
from tests.integration.test_sweep_harness import (
    SRV_ONLY,
    LocalFleet,
    assert_one_result_per_endpoint,
    import_inventory,
    local_fleet,
)
from worker import jobs as worker_jobs
from worker.context import WorkerConfig, context, shutdown, startup
from worker.options import WorkerOptions
from worker.settings import create_worker

BOUND = 60.0


@pytest.fixture
def fleet() -> Iterator[LocalFleet]:
    with local_fleet("127.92.0") as running:
        yield running


def _config(
    database_url: str, redis: RedisSettings, fleet: LocalFleet, **settings: object
) -> WorkerConfig:
    values: dict[str, object] = {
        "database_url": SecretStr(database_url),
        "resolvers": [fleet.nameserver],
        "allow_private_targets": True,
        "per_ip_limit": 2,
        "timeout": 2.0,
        "greeting_timeout": 2.0,
        # Notices re-scan endpoints: these tests count each endpoint's connections once.
        "notices_enabled": False,
        **settings,
    }
    return WorkerConfig(
        settings=Settings.model_validate(values),
        database_url=database_url,
        redis_settings=redis,
        options=WorkerOptions(job_timeout=20, poll_delay=0.05, retry_delay=0.05, max_tries=3),
        nightly=SRV_ONLY,
    )


@pytest.fixture
def config(database_url: str, arq_redis_settings: RedisSettings, fleet: LocalFleet) -> WorkerConfig:
    return _config(database_url, arq_redis_settings, fleet)


@pytest.fixture
async def ctx(
    config: WorkerConfig, session_factory: async_sessionmaker[AsyncSession], fleet: LocalFleet
) -> AsyncIterator[dict[str, object]]:
    """A started worker context (as on_startup builds it), the inventory imported."""
    await import_inventory(session_factory, fleet.records)
    redis = await jobs.create_job_pool(config.redis_settings)
    state: dict[str, object] = {"config": config, "redis": redis}
    await startup(state)
    try:
        yield state
    finally:
        await shutdown(state)
        await redis.aclose()


async def run_burst(config: WorkerConfig) -> None:
    """Run a worker in this process until the queue is empty."""
    worker = create_worker(config, burst=True, handle_signals=False)
    try:
        async with asyncio.timeout(BOUND):
            await worker.main()
    finally:
        await worker.close()


async def queued(redis: ArqRedis) -> set[str | None]:
    return {job.job_id for job in await redis.queued_jobs()}


async def test_a_sweep_runs_from_start_to_diff(
    ctx: dict[str, object],
    config: WorkerConfig,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    app = context(ctx)
    # Given the fleet's inventory, when a sweep over all of it starts and a worker runs
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"all": True}, options=SRV_ONLY
    )
    assert jobs.discover_job_id(sweep_id) in await queued(app.redis)
    await run_burst(config)
    # Then every endpoint has exactly one result, the sweep is closed with a diff
    await assert_one_result_per_endpoint(session_factory, sweep_id, fleet)
    async with session_factory() as session:
        sweep = await sweep_repo.get_sweep(session, sweep_id)
        progress = await sweeps.progress(session, sweep_id)
        results = await sweep_results(session, sweep_id)
    assert sweep is not None
    assert sweep.status == "done"
    assert sweep.diff is not None
    assert sweep.diff["previous_sweep_id"] is None
    assert sweep.diff["counts"]["new_endpoints"] == len(fleet.endpoints)
    # … the refused endpoint is a stored failure with its kind, the others succeeded
    assert progress is not None
    assert progress.failed == 1
    by_port = {r.document["target"]["port"]: r for r in results.values()}
    assert by_port.pop(fleet.refused[1]).error_kind == "refused"
    assert {r.error_kind for r in by_port.values()} == {None}
    # … and each endpoint was scanned once: the servers saw exactly the results' connections
    assert fleet.connections() == sum(r.connections for r in by_port.values())
    # … and discovery asked DNS only what the profile probes: SRV records, no www host
    for domain in fleet.domains:
        assert fleet.dns.count(f"_imaps._tcp.{domain}", "SRV") == 1
        assert fleet.dns.count(f"www.{domain}") == 0


async def test_a_sweep_without_srv_asks_dns_for_no_srv_records(
    ctx: dict[str, object],
    config: WorkerConfig,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    app = context(ctx)
    # Given a port profile that probes only MX hosts' SMTP (SRV targets not wanted)
    mx_only = SweepOptions(quick=True, profile=PortProfile(mx=("smtp",), web=(), srv=False))
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"all": True}, options=mx_only
    )
    # When the sweep runs
    await run_burst(config)
    # Then discovery asked for every domain's MX and no SRV record at all
    assert all(fleet.dns.count(domain, "MX") == 1 for domain in fleet.domains)
    assert not [key for key in fleet.dns.queries if key[1] == "SRV"]
    async with session_factory() as session:
        sweep = await sweep_repo.get_sweep(session, sweep_id)
    assert sweep is not None
    assert sweep.status == "done"


async def test_a_second_sweep_diffs_against_the_first(
    ctx: dict[str, object],
    config: WorkerConfig,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    app = context(ctx)
    async with session_factory() as session:
        ids = await customer_ids(session, ["Customer 1"])
    scope = {"customers": [ids["Customer 1"]]}
    first = await sweeps.start_sweep(session_factory, app.redis, scope=scope, options=SRV_ONLY)
    await run_burst(config)
    # When the same scope is swept again with nothing changed
    second = await sweeps.start_sweep(session_factory, app.redis, scope=scope, options=SRV_ONLY)
    await run_burst(config)
    async with session_factory() as session:
        sweep = await sweep_repo.get_sweep(session, second)
    # Then the diff is against the first sweep, and empty
    assert sweep is not None
    assert sweep.status == "done"
    assert sweep.diff is not None
    assert sweep.diff["previous_sweep_id"] == first
    assert set(sweep.diff["counts"].values()) == {0}


async def test_a_scan_job_run_twice_stores_one_result(
    ctx: dict[str, object], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    app = context(ctx)
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"domains": ["d1.sweep.test"]}, options=SRV_ONLY
    )
    # Given a discovered sweep (scans queued, not run)
    queued_scans = await sweeps.discover_sweep(app.runtime, sweep_id)
    async with session_factory() as session:
        endpoint_id = (await sweep_repo.sweep_endpoint_ids(session, sweep_id))[0]
    assert queued_scans == 2
    # When one endpoint's job runs twice at once, and then once more (a retry)
    outcomes = await asyncio.gather(
        sweeps.scan_endpoint(app.runtime, sweep_id, endpoint_id),
        sweeps.scan_endpoint(app.runtime, sweep_id, endpoint_id),
    )
    again = await sweeps.scan_endpoint(app.runtime, sweep_id, endpoint_id)
    # Then one run stored the result and the others changed nothing
    assert sorted(outcomes) in (["duplicate", "stored"], ["skipped", "stored"])
    assert again == "skipped"
    async with session_factory() as session:
        result = await get_result(session, sweep_id, endpoint_id)
        progress = await sweeps.progress(session, sweep_id)
    assert result is not None
    assert progress is not None
    assert progress.done == 1


async def test_reconcile_rebuilds_a_lost_queue(
    ctx: dict[str, object],
    config: WorkerConfig,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    app = context(ctx)
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"all": True}, options=SRV_ONLY
    )
    await sweeps.discover_sweep(app.runtime, sweep_id)
    # Given a discovered sweep whose queued scans Redis lost
    await app.redis.flushdb()
    assert await queued(app.redis) == set()
    # When the reconciler runs
    report = await sweeps.reconcile(app.runtime)
    # Then every endpoint without a result is queued again, under its own job id …
    async with session_factory() as session:
        missing = await sweep_repo.unfinished_endpoints(session, sweep_id)
    assert report.scans == len(missing) == len(fleet.endpoints)
    assert await queued(app.redis) == {jobs.scan_job_id(sweep_id, e) for e in missing}
    # … a second reconciliation queues nothing twice …
    assert (await sweeps.reconcile(app.runtime)).scans == 0
    # … and the sweep completes
    await run_burst(config)
    await assert_one_result_per_endpoint(session_factory, sweep_id, fleet)


async def test_reconcile_restarts_a_sweep_whose_discovery_was_lost(
    ctx: dict[str, object],
    config: WorkerConfig,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    app = context(ctx)
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"all": True}, options=SRV_ONLY
    )
    await app.redis.flushdb()  # the discovery job is gone; the sweep waits as pending
    report = await sweeps.reconcile(app.runtime)
    assert report.discoveries == 1
    await run_burst(config)
    await assert_one_result_per_endpoint(session_factory, sweep_id, fleet)


async def test_reconcile_closes_a_complete_sweep_whose_close_was_lost(
    ctx: dict[str, object], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    app = context(ctx)
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"domains": ["d2.sweep.test"]}, options=SRV_ONLY
    )
    await sweeps.discover_sweep(app.runtime, sweep_id)
    async with session_factory() as session:
        endpoint_ids = await sweep_repo.sweep_endpoint_ids(session, sweep_id)
    for endpoint_id in endpoint_ids:
        await sweeps.scan_endpoint(app.runtime, sweep_id, endpoint_id)
    # Given every result stored, and the queued close lost
    assert jobs.close_job_id(sweep_id) in await queued(app.redis)
    await app.redis.flushdb()
    # When the reconciler runs, then it queues the close, which closes the sweep
    assert (await sweeps.reconcile(app.runtime)).closes == 1
    assert await sweeps.close(app.runtime, sweep_id)
    assert not await sweeps.close(app.runtime, sweep_id)  # closing twice is harmless
    async with session_factory() as session:
        sweep = await sweep_repo.get_sweep(session, sweep_id)
    assert sweep is not None
    assert sweep.status == "done"


async def test_private_endpoints_are_refused_and_the_sweep_still_finishes(
    database_url: str,
    arq_redis_settings: RedisSettings,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    # Given a worker that may not scan private or loopback addresses (the default)
    config = _config(database_url, arq_redis_settings, fleet, allow_private_targets=False)
    await import_inventory(session_factory, fleet.records)
    redis = await jobs.create_job_pool(arq_redis_settings)
    try:
        sweep_id = await sweeps.start_sweep(
            session_factory, redis, scope={"all": True}, options=SRV_ONLY
        )
    finally:
        await redis.aclose()
    await run_burst(config)
    # Then every endpoint is a private_target error, nothing was scanned, and it is done
    async with session_factory() as session:
        sweep = await sweep_repo.get_sweep(session, sweep_id)
        results = await sweep_results(session, sweep_id)
    assert sweep is not None
    assert sweep.status == "done"
    assert len(results) == len(fleet.endpoints)
    assert {r.error_kind for r in results.values()} == {"private_target"}
    assert fleet.connections() == 0


async def test_database_outage_makes_jobs_retry(
    ctx: dict[str, object], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    app = context(ctx)
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"domains": ["d3.sweep.test"]}, options=SRV_ONLY
    )
    # Given a worker whose database is unreachable (nothing listens there)
    from fleet.db.session import create_engine, create_sessionmaker

    dead = create_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1)
    app.runtime.sessions = create_sessionmaker(dead)
    ctx.update(job_try=1, job_id="test")
    try:
        # Then its jobs ask arq to retry them later, instead of failing
        with pytest.raises(Retry):
            await worker_jobs.sweep_discover(ctx, sweep_id)
        with pytest.raises(Retry):
            await worker_jobs.sweep_scan_endpoint(ctx, sweep_id, 1)
    finally:
        await dead.dispose()


async def test_a_result_that_could_not_be_stored_is_not_scanned_again(
    ctx: dict[str, object], session_factory: async_sessionmaker[AsyncSession], fleet: LocalFleet
) -> None:
    app = context(ctx)
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"domains": ["d4.sweep.test"]}, options=SRV_ONLY
    )
    await sweeps.discover_sweep(app.runtime, sweep_id)
    async with session_factory() as session:
        endpoint_id = (await sweep_repo.sweep_endpoint_ids(session, sweep_id))[0]
    # Given a scan whose result cannot be stored (the database went away after the
    # job read its endpoint: the sessions fail from the fourth one on)
    from fleet.db.session import create_engine, create_sessionmaker

    good = app.runtime.sessions
    dead = create_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1)
    calls = 0

    def flaky() -> AsyncSession:
        nonlocal calls
        calls += 1
        return good() if calls <= 2 else create_sessionmaker(dead)()

    app.runtime.sessions = flaky  # type: ignore[assignment]
    try:
        with pytest.raises(sa_errors.OperationalError):
            await sweeps.scan_endpoint(app.runtime, sweep_id, endpoint_id)
    finally:
        app.runtime.sessions = good
        await dead.dispose()
    scanned = fleet.connections()
    assert scanned > 0
    # When the job is retried with the database back
    assert await sweeps.scan_endpoint(app.runtime, sweep_id, endpoint_id) == "stored"
    # Then the kept result was stored without scanning the endpoint again
    assert fleet.connections() == scanned


async def test_the_nightly_sweep_is_not_doubled_while_one_is_open(
    ctx: dict[str, object],
) -> None:
    app = context(ctx)
    first = await worker_jobs.sweep_nightly(ctx)
    assert first is not None
    assert await worker_jobs.sweep_nightly(ctx) is None
    async with app.runtime.sessions() as session:
        sweep = await sweep_repo.get_sweep(session, first)
    assert sweep is not None
    assert (sweep.kind, sweep.scope) == ("nightly", {"all": True})
    assert SweepOptions.from_dict(sweep.options) == SRV_ONLY


async def test_worker_start_up_queues_a_reconciliation(ctx: dict[str, object]) -> None:
    app = context(ctx)
    assert jobs.RECONCILE_JOB_ID in await queued(app.redis)
    job = next(j for j in await app.redis.queued_jobs() if j.job_id == jobs.RECONCILE_JOB_ID)
    assert job.function == JobName.RECONCILE


def test_sweep_options_round_trip_and_refuse_garbage() -> None:
    assert SweepOptions.from_dict(SRV_ONLY.to_dict()) == SRV_ONLY
    assert SweepOptions.from_dict({}) == SweepOptions()
    for bad in ({"quick": "yes"}, {"deep": True}, {"profile": {"mx": "smtp"}}, {"profile": 1}):
        with pytest.raises(ValueError):  # noqa: PT011 — the messages differ per field
            SweepOptions.from_dict(bad)


async def test_a_full_sweep_stores_a_certificate_per_further_name(
    database_url: str,
    arq_redis_settings: RedisSettings,
    session_factory: async_sessionmaker[AsyncSession],
    pki: Pki,
    fleet: LocalFleet,
) -> None:
    # Given a real OpenSSL SMTP server (STARTTLS on submission) that six domains reach
    # under six names (more than are fetched at once), its certificate valid for all
    names = tuple(f"{label}.certs.test" for label in ("alias", "mail", "mx", "smtp", "x", "y"))
    domains = [f"d{n}.certs.test" for n in range(len(names))]
    context_ = pki.server_context(TlsProfile(hostnames=names))
    with running(SmtpServer(context_, ip="127.92.1.1")) as server:
        zone = "".join(f"{n.split('.')[0]} A {server.ip}\n" for n in names) + "".join(
            f"_submission._tcp.{domain.split('.')[0]} SRV 0 0 {server.port} {name}.\n"
            for domain, name in zip(domains, names, strict=True)
        )
        with DnsServer({"certs.test": zone}, host="127.0.0.1") as dns:
            records = [InventoryRecord(domain=d, customer="Certs") for d in domains]
            await import_inventory(session_factory, records)
            config = _config(database_url, arq_redis_settings, fleet, ca_file=pki.ca_file)
            config = replace(
                config,
                settings=config.settings.model_copy(update={"resolvers": [dns.nameserver]}),
            )
            async with session_factory() as session:
                customer = await customer_ids(session, ["Certs"])
            redis = await jobs.create_job_pool(arq_redis_settings)
            try:
                options = replace(SRV_ONLY, quick=False)
                sweep_id = await sweeps.start_sweep(
                    session_factory,
                    redis,
                    scope={"customers": [customer["Certs"]]},
                    options=options,
                )
            finally:
                await redis.aclose()
            # When a full (not quick) sweep runs
            await run_burst(config)
    # Then the endpoint was scanned under the first name, with its certificate, and
    # the certificate for each other name was fetched and stored on its own
    async with session_factory() as session:
        results = await sweep_results(session, sweep_id)
        (endpoint_id, result), *others = results.items()
        extra = await sweep_certificates(session, sweep_id, endpoint_id)
    assert others == []
    assert result.status == "ok"
    assert result.document["target"]["sni"] == names[0]
    assert result.cert_status == "valid"
    assert sorted(extra) == list(names[1:])
    for certificate in extra.values():
        assert certificate is not None
        assert certificate["status"] == "valid"
        assert certificate["hostname_match"] is True


async def test_release_orphans_frees_only_jobs_of_dead_workers(ctx: dict[str, object]) -> None:
    app = context(ctx)
    redis = app.redis
    # Given three running jobs (arq's in-progress marks): one owned by a worker whose
    # heartbeat is gone, one by a live worker, one whose owner is not recorded yet
    for job_id in ("dead-job", "live-job", "new-job"):
        await redis.set(f"arq:in-progress:{job_id}", b"1")
    await jobs.claim(redis, "dead-job", "dead-worker", 60)
    await jobs.claim(redis, "live-job", app.worker_id, 60)
    # When the reconciler looks at them
    released = await jobs.release_orphans(redis, ["dead-job", "live-job", "new-job", "none"])
    # Then only the dead worker's job is freed for another worker to run
    assert released == 1
    assert not await redis.exists("arq:in-progress:dead-job")
    assert await redis.exists("arq:in-progress:live-job", "arq:in-progress:new-job") == 2


async def test_discovery_that_cannot_finish_in_time_still_lets_the_sweep_finish(
    ctx: dict[str, object],
    config: WorkerConfig,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    app = context(ctx)
    # Given a domain whose DNS never answers, and a discovery deadline of 1 s
    fleet.dns.add_fault("_pop3s._tcp.d0.sweep.test", "drop")
    app.runtime.discovery_deadline = 1.0
    sweep_id = await sweeps.start_sweep(
        session_factory, app.redis, scope={"all": True}, options=SRV_ONLY
    )
    # When the sweep is discovered and run
    await sweeps.discover_sweep(app.runtime, sweep_id)
    await run_burst(config)
    # Then that domain's discovery is an error saying why, and the sweep is done
    async with session_factory() as session:
        found = await sweep_discoveries(session, sweep_id)
        sweep = await sweep_repo.get_sweep(session, sweep_id)
    assert found["d0.sweep.test"]["status"] == "error"
    assert found["d0.sweep.test"]["errors"][0]["kind"] == "timeout"
    # (the others have SRV records but no MX or address of their own: "no_mail")
    assert {found[d]["status"] for d in fleet.domains[1:]} == {"no_mail"}
    assert sweep is not None
    assert sweep.status == "done"
    assert sweep.total_endpoints == len(fleet.endpoints) - 1  # d0's own endpoint is unknown
