"""The ``tlsfleet`` command line."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet import api_cli, scan_cli
from fleet.console import err, error_line, fail
from fleet.inventory import (
    InventoryFileError,
    InventoryFormat,
    InventoryRecord,
    InventoryWriter,
    read_inventory,
    validate_rows,
)
from fleet.logs import cli as logs_cli
from fleet.runtime import run
from fleet.settings import load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from fleet.embedded import ResolvedServices
    from fleet.notices import SyncReport
    from fleet.repositories.inventory import UpsertCounts
    from fleet.settings import Settings

app = typer.Typer(
    name="tlsfleet",
    help="Scan mail and web endpoints for old TLS, weak suites, bad certificates and "
    "passwords before TLS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

scan_cli.register(app)
api_cli.register(app)
logs_cli.register(app)


# -- after an ingest: notices from the mail-log telemetry ----------------------------------


def _after_logs(value: object) -> object:
    """``tlsfleet logs ingest`` always ends by bringing the notices up to date with the
    telemetry (docs/logs.md), unless TLSFLEET_NOTICES_ENABLED=false: idempotent, so a
    second ingest of the same logs changes nothing."""
    import click

    if click.get_current_context().invoked_subcommand == "ingest":
        _sync_client_notices()
    return value


logs_cli.logs_app.info.result_callback = _after_logs


def _sync_client_notices() -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from fleet.embedded import services

    settings = load_settings()
    if not settings.notices_enabled:
        return
    try:
        with services(settings) as resolved:
            report = run(_sync_clients(resolved, settings))
    except (SQLAlchemyError, OSError, ValueError) as exc:
        raise fail(f"the counts are stored, but syncing the notices failed: {exc}") from None
    if report is None:
        err.print("notices: not synced (no sweep judged yet)", highlight=False)
        return
    err.print(
        f"notices: {report.opened} opened, {report.resolved} resolved, "
        f"{report.regressed} regressed (mail-log telemetry)",
        highlight=False,
    )


async def _sync_clients(resolved: ResolvedServices, settings: Settings) -> SyncReport | None:
    from redis.exceptions import RedisError

    from fleet import deliveries, findings, notices
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.jobs import create_job_pool

    config = notices.NoticeConfig.from_settings(settings, findings.profile_for(settings))
    engine = create_engine(resolved.database_url, pool_size=1)
    try:
        report = await notices.sync_clients(create_sessionmaker(engine), config)
    finally:
        await engine.dispose()
    if report is not None and (report.due or report.confirm):
        try:
            redis = await create_job_pool(resolved.arq_settings)
            try:
                await deliveries.enqueue_deliveries(redis, report.due)
                await notices.enqueue_confirms(redis, report.confirm)
            finally:
                await redis.aclose()
        except (RedisError, OSError) as exc:  # committed: the reconciler wakes them
            err.print(f"warning: webhooks are sent by the reconciler: {exc}", highlight=False)
    return report


# -- the store: migrations and the inventory -------------------------------------------------

inventory_app = typer.Typer(
    help="Import and export the inventory: domains, customers, account managers, tags.",
    no_args_is_help=True,
)
app.add_typer(inventory_app, name="inventory")


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Alembic revision to upgrade to")] = "head",
) -> None:
    """Upgrade the database schema (TLSFLEET_DATABASE_URL, or the embedded PostgreSQL)."""
    from fleet.db.migrate import current_revision, upgrade
    from fleet.embedded import embedded_postgres

    settings = load_settings()
    with contextlib.ExitStack() as stack:
        if settings.database_url is not None:
            url = settings.database_url.get_secret_value()
        else:
            url = stack.enter_context(embedded_postgres(settings))
        try:
            upgrade(url, revision)
            err.print(f"database at revision {current_revision(url)}", highlight=False)
        except Exception as exc:  # the driver's and Alembic's errors vary; one line each
            raise fail(f"migration failed: {exc}") from None


def _ready_database(services: ResolvedServices) -> None:
    """Refuse to work on a database that is not migrated to head; the embedded one is
    ours, so it is migrated here instead."""
    from fleet.db.migrate import current_revision, head_revision, upgrade

    if services.embedded_database:
        upgrade(services.database_url)
        return
    try:
        current = current_revision(services.database_url)
    except Exception as exc:
        raise fail(f"cannot reach the database: {exc}") from None
    if current != head_revision():
        raise fail(
            f"the database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `tlsfleet migrate`"
        )


@inventory_app.command("import")
def inventory_import(
    file: Annotated[Path, typer.Argument(help="CSV (with a header) or JSON (a list of objects)")],
    file_format: Annotated[
        InventoryFormat | None,
        typer.Option("--format", help="csv or json (default: from the suffix or content)"),
    ] = None,
    json_report: Annotated[
        bool, typer.Option("--json", help="print the report as one JSON object")
    ] = False,
) -> None:
    """Create or update domains, customers and account managers from FILE.

    Columns/keys: domain, customer, account_manager, account_manager_email, tags
    (semicolon-separated). Every row is checked; bad rows are reported (row number and
    reason) and skipped, good rows are imported. Importing the same file twice changes
    nothing. Exit status: 0 all rows imported, 1 some rows rejected, 2 unreadable file.
    """
    settings = load_settings()
    try:
        rows = read_inventory(file, file_format)
    except InventoryFileError as exc:
        raise fail(str(exc)) from None
    checked = validate_rows(rows)
    from fleet.embedded import services

    with services(settings) as resolved:
        _ready_database(resolved)
        counts = run(_import_inventory(resolved.database_url, checked.records))
    if json_report:
        report = {
            "rows": checked.rows,
            "created": counts.created,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "errors": [
                {"row": e.row, "line": e.line, "domain": e.domain, "reason": e.reason}
                for e in checked.errors
            ],
        }
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for error in checked.errors:
            error_line(str(error))
        sys.stdout.write(
            f"{checked.rows} rows: {counts.created} created, {counts.updated} updated, "
            f"{counts.unchanged} unchanged, {len(checked.errors)} errors\n"
        )
    raise typer.Exit(1 if checked.errors else 0)


async def _import_inventory(database_url: str, records: Sequence[InventoryRecord]) -> UpsertCounts:
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.repositories.inventory import upsert_inventory

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            counts = await upsert_inventory(session, records)
            await session.commit()
            return counts
    finally:
        await engine.dispose()


@inventory_app.command("export")
def inventory_export(
    file_format: Annotated[InventoryFormat, typer.Option("--format", help="csv or json")] = "csv",
    include_inactive: Annotated[
        bool, typer.Option(help="also list domains marked inactive")
    ] = False,
) -> None:
    """Write the inventory to standard output, in the format `inventory import` reads."""
    from fleet.embedded import services

    settings = load_settings()
    with services(settings) as resolved:
        _ready_database(resolved)
        run(_export_inventory(resolved.database_url, file_format, include_inactive))


async def _export_inventory(
    database_url: str, file_format: InventoryFormat, include_inactive: bool
) -> None:
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.repositories.inventory import iter_inventory

    engine = create_engine(database_url)
    writer = InventoryWriter(sys.stdout, file_format)
    try:
        async with create_sessionmaker(engine)() as session:
            async for batch in iter_inventory(session, include_inactive=include_inactive):
                writer.write(batch)
    finally:
        writer.close()
        sys.stdout.flush()
        await engine.dispose()


# -- the worker and sweeps -------------------------------------------------------------------

sweep_app = typer.Typer(
    help="Sweeps: scan the fleet, or some domains or customers, on the workers.",
    no_args_is_help=True,
)
app.add_typer(sweep_app, name="sweep")


def _settings_error(exc: Exception) -> typer.Exit:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = [
            f"TLSFLEET_WORKER_{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        ]
        return fail("; ".join(problems))
    return fail(str(exc))


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit once the queue is empty")] = False,
    cron: Annotated[
        bool | None,
        typer.Option(
            "--cron/--no-cron",
            help="also run the cron schedule (default: TLSFLEET_WORKER_CRON, true); "
            "--no-cron when one `tlsfleet scheduler` runs it",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run a worker: sweep discovery, endpoint scans, closing, notices and webhooks; and,
    unless --no-cron, the reconciler and the nightly sweep (TLSFLEET_NIGHTLY_CRON in
    TLSFLEET_TIMEZONE).

    Uses TLSFLEET_DATABASE_URL and TLSFLEET_REDIS_URL, or the embedded services. Run as
    many as you like, on any machines: they share the queue and the per-IP limit. Stop
    with Ctrl-C or SIGTERM (running jobs go back to the queue). Tuning: the
    TLSFLEET_WORKER_* variables (docs/sweeps.md).
    """
    _run_worker(burst=burst, verbose=verbose, cron=cron, scheduler=False)


@app.command()
def scheduler(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run the cron schedule only: the nightly sweep (TLSFLEET_NIGHTLY_CRON in
    TLSFLEET_TIMEZONE) and the reconciler; the jobs they start run on the workers
    (`tlsfleet worker --no-cron`).

    One is enough; two never start the same nightly sweep twice (docs/operations.md).
    """
    _run_worker(burst=False, verbose=verbose, cron=True, scheduler=True)


def _run_worker(*, burst: bool, verbose: bool, cron: bool | None, scheduler: bool) -> None:
    import logging.config

    from arq.logs import default_log_config
    from pydantic import ValidationError

    from fleet.embedded import services
    from worker.context import WorkerConfig
    from worker.options import WorkerOptions
    from worker.schedule import CronError, parse_cron, parse_timezone
    from worker.settings import Role, run_worker

    settings = load_settings()
    try:
        options = WorkerOptions()
        parse_cron(settings.nightly_cron)
        parse_timezone(settings.timezone)
    except (ValidationError, CronError) as exc:
        raise _settings_error(exc) from None
    role: Role = "scheduler" if scheduler else "all"
    if not scheduler and not (options.cron if cron is None else cron):
        role = "worker"
    log_config = default_log_config(verbose)
    for name in ("fleet", "worker"):
        log_config["loggers"][name] = dict(log_config["loggers"]["arq"])
    logging.config.dictConfig(log_config)
    with services(settings) as resolved:
        _ready_database(resolved)
        config = WorkerConfig(
            settings=settings,
            database_url=resolved.database_url,
            redis_settings=resolved.arq_settings,
            options=options,
        )
        run_worker(config, burst=burst, role=role)


@sweep_app.command("start")
def sweep_start(
    domain: Annotated[
        list[str] | None, typer.Option("--domain", "-d", help="a domain to sweep; repeatable")
    ] = None,
    customer: Annotated[
        list[str] | None,
        typer.Option("--customer", "-c", help="a customer (by name) to sweep; repeatable"),
    ] = None,
    all_domains: Annotated[bool, typer.Option("--all", help="every active domain")] = False,
    quick: Annotated[
        bool, typer.Option(help="versions, suites and STARTTLS facts only (no certificates)")
    ] = False,
    wait: Annotated[
        bool, typer.Option(help="follow the sweep's progress until it is finished")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Start a sweep of some domains, some customers' domains, or the whole fleet.

    The sweep is queued for the workers (`tlsfleet worker`) and its id printed. Exit
    status: 0 started (with --wait: finished), 1 with --wait: the sweep did not finish
    as done, 2 bad input (unknown domain or customer, no scope or two).
    """
    from scanner.discovery import normalise_domain
    from scanner.errors import TargetError

    chosen = [bool(domain), bool(customer), all_domains]
    if sum(chosen) != 1:
        raise fail("name the sweep's scope: --domain …, --customer … or --all (one of them)")
    names: list[str] = []
    for raw in domain or ():
        try:
            names.append(normalise_domain(raw))
        except TargetError as exc:
            raise fail(exc.message) from None
    from fleet.embedded import services

    settings = load_settings()
    with services(settings) as resolved:
        _ready_database(resolved)
        code = run(
            _sweep_start(
                resolved,
                names=names,
                customers=list(customer or ()),
                quick=quick,
                wait=wait,
                json_out=json_out,
            )
        )
    raise typer.Exit(code)


async def _sweep_start(
    resolved: ResolvedServices,
    *,
    names: list[str],
    customers: list[str],
    quick: bool,
    wait: bool,
    json_out: bool,
) -> int:
    from fleet import sweeps
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.jobs import create_job_pool
    from fleet.repositories.sweep_jobs import customer_ids, known_domains

    engine = create_engine(resolved.database_url, pool_size=2)
    sessions = create_sessionmaker(engine)
    try:
        scope: dict[str, Any] = {"all": True}
        async with sessions() as session:
            if names:
                unknown = sorted(set(names) - await known_domains(session, names))
                if unknown:
                    error_line(f"not in the inventory (or inactive): {', '.join(unknown)}")
                    return 2
                scope = {"domains": names}
            elif customers:
                ids = await customer_ids(session, customers)
                unknown = sorted(set(customers) - set(ids))
                if unknown:
                    error_line(f"no such customer: {', '.join(unknown)}")
                    return 2
                scope = {"customers": sorted(ids.values())}
        redis = await create_job_pool(resolved.arq_settings)
        try:
            sweep_id = await sweeps.start_sweep(
                sessions, redis, scope=scope, options=sweeps.SweepOptions(quick=quick)
            )
        finally:
            await redis.aclose()
        if not wait:
            if json_out:
                sys.stdout.write(json.dumps({"sweep_id": sweep_id, "scope": scope}) + "\n")
            else:
                sys.stdout.write(f"sweep {sweep_id} queued\n")
            return 0
        err.print(f"sweep {sweep_id} queued; waiting for the workers…", highlight=False)
        status = await _follow(sessions, sweep_id)
        await _print_status(sessions, sweep_id, json_out=json_out)
        return 0 if status == "done" else 1
    finally:
        await engine.dispose()


async def _follow(sessions: async_sessionmaker[AsyncSession], sweep_id: int) -> str:
    """Show a sweep's progress on standard error until it is final; its last status."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from fleet import sweeps
    from fleet.repositories.sweeps import FINAL_STATUSES

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "{task.fields[extra]}",
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(f"sweep {sweep_id}", total=None, extra="")
        while True:
            async with sessions() as session:
                progress = await sweeps.progress(session, sweep_id)
            if progress is None:
                return "gone"
            extra = f"{progress.failed} failed"
            if progress.rate:
                extra += f" · {progress.rate:.1f}/s"
            if progress.eta_seconds is not None and progress.status == "scanning":
                extra += f" · ETA {progress.eta_seconds:.0f} s"
            bar.update(
                task,
                description=f"sweep {sweep_id} {progress.status}",
                total=progress.total or None,
                completed=progress.done,
                extra=extra,
            )
            if progress.status in FINAL_STATUSES:
                return progress.status
            await asyncio.sleep(0.5)


async def _print_status(
    sessions: async_sessionmaker[AsyncSession], sweep_id: int, *, json_out: bool
) -> bool:
    from fleet import sweeps
    from fleet.repositories.sweeps import get_sweep

    async with sessions() as session:
        sweep = await get_sweep(session, sweep_id)
        progress = await sweeps.progress(session, sweep_id)
    if sweep is None or progress is None:
        error_line(f"no sweep {sweep_id}")
        return False
    counts = (sweep.diff or {}).get("counts")
    if json_out:
        document = {
            **progress.to_dict(),
            "kind": sweep.kind,
            "scope": sweep.scope,
            "options": sweep.options,
            "error": sweep.error,
            "diff": counts,
        }
        sys.stdout.write(json.dumps(document) + "\n")
        return True
    lines = [
        f"sweep {sweep_id} ({sweep.kind}, {json.dumps(sweep.scope)}): {progress.status}",
        f"  endpoints: {progress.done} of {progress.total} done, {progress.failed} failed, "
        f"{progress.remaining} to go",
    ]
    timing = []
    if progress.rate:
        timing.append(f"{progress.rate:.1f} results/s")
    if progress.eta_seconds is not None and progress.remaining:
        timing.append(f"ETA {progress.eta_seconds:.0f} s")
    if progress.elapsed_seconds is not None:
        timing.append(f"{progress.elapsed_seconds:.0f} s elapsed")
    if timing:
        lines.append("  " + " · ".join(timing))
    if counts:
        from fleet.repositories.diff import CATEGORIES

        shown = (f"{c.replace('_', ' ')} {counts[c]}" for c in CATEGORIES if c in counts)
        lines.append("  diff: " + ", ".join(shown))
    if sweep.error:
        lines.append(f"  error: {sweep.error}")
    sys.stdout.write("\n".join(lines) + "\n")
    return True


@sweep_app.command("status")
def sweep_status(
    sweep_id: Annotated[int, typer.Argument(help="the sweep's id")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """A sweep's progress: total, done, failed, rate, ETA; its diff once closed."""
    from fleet.embedded import services

    settings = load_settings()
    with services(settings) as resolved:
        _ready_database(resolved)
        found = run(_sweep_status(resolved.database_url, sweep_id, json_out=json_out))
    raise typer.Exit(0 if found else 2)


async def _sweep_status(database_url: str, sweep_id: int, *, json_out: bool) -> bool:
    from fleet.db.session import create_engine, create_sessionmaker

    engine = create_engine(database_url, pool_size=1)
    try:
        return await _print_status(create_sessionmaker(engine), sweep_id, json_out=json_out)
    finally:
        await engine.dispose()


@sweep_app.command("cancel")
def sweep_cancel(
    sweep_id: Annotated[int, typer.Argument(help="the sweep's id")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Cancel an open sweep: it becomes `cancelled`, its queued jobs leave the queue, and
    running ones store nothing more. Its results so far stay.

    Exit status: 0 cancelled (or already cancelled), 1 the sweep is already done or
    failed, 2 no such sweep.
    """
    from fleet.embedded import services

    settings = load_settings()
    with services(settings) as resolved:
        _ready_database(resolved)
        code = run(_sweep_cancel(resolved, sweep_id, json_out=json_out))
    raise typer.Exit(code)


async def _sweep_cancel(resolved: ResolvedServices, sweep_id: int, *, json_out: bool) -> int:
    from redis.exceptions import RedisError

    from fleet import sweeps
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.jobs import create_job_pool
    from fleet.repositories.sweeps import get_sweep

    engine = create_engine(resolved.database_url, pool_size=1)
    sessions = create_sessionmaker(engine)
    try:
        try:
            redis = await create_job_pool(resolved.arq_settings)
        except (RedisError, OSError) as exc:  # the cancel stands; queued jobs will skip
            err.print(f"the job queue is not reachable ({exc}); cancelling anyway")
            redis = None
        try:
            report = await sweeps.cancel(sessions, redis, sweep_id)
        finally:
            if redis is not None:
                await redis.aclose()
        async with sessions() as session:
            sweep = await get_sweep(session, sweep_id)
    finally:
        await engine.dispose()
    if report.outcome == "unknown" or sweep is None:
        error_line(f"no sweep {sweep_id}")
        return 2
    if report.outcome == "final":
        error_line(f"sweep {sweep_id} is {sweep.status}: only an open sweep can be cancelled")
        return 1
    if json_out:
        document = {
            "sweep_id": sweep_id,
            "status": sweep.status,
            "outcome": report.outcome,
            "removed_jobs": report.removed_jobs,
        }
        sys.stdout.write(json.dumps(document) + "\n")
    elif report.outcome == "already":
        sys.stdout.write(f"sweep {sweep_id} was already cancelled\n")
    else:
        removed = "?" if report.removed_jobs is None else str(report.removed_jobs)
        sys.stdout.write(f"sweep {sweep_id} cancelled; {removed} queued jobs removed\n")
    return 0


@sweep_app.command("list")
def sweep_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many, newest first")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines, one sweep each")] = False,
) -> None:
    """The latest sweeps with their status and counts."""
    from fleet.embedded import services

    settings = load_settings()
    with services(settings) as resolved:
        _ready_database(resolved)
        run(_sweep_list(resolved.database_url, limit, json_out=json_out))


async def _sweep_list(database_url: str, limit: int, *, json_out: bool) -> None:
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.repositories.sweep_jobs import list_sweeps

    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            summaries = await list_sweeps(session, limit=limit)
    finally:
        await engine.dispose()
    if json_out:
        for summary in summaries:
            sys.stdout.write(json.dumps(summary.to_dict()) + "\n")
        return
    sys.stdout.write(f"{'id':>6}  {'kind':<7} {'status':<11} {'done':>13} {'failed':>6}  created\n")
    for s in summaries:
        done = f"{s.done}/{s.total}"
        created = s.created_at.strftime("%Y-%m-%d %H:%M")
        sys.stdout.write(
            f"{s.id:>6}  {s.kind:<7} {s.status:<11} {done:>13} {s.failed:>6}  {created}\n"
        )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
