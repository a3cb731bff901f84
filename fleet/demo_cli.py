"""``tlsfleet demo``: the whole service on this machine, from the inventory to the summary.

1. the fleet's PostgreSQL and Redis: the configured ones, or the embedded ones under
   ``TLSFLEET_DATA_DIR`` (migrated here, and stopped at the end; the data is kept, so
   a second run reuses it);
2. the demo fleet (:mod:`fleet.demo.fleet`): DNS and some thirty TLS servers on
   ``127.77.0.0/16``, and a throw-away CA;
3. its inventory, written to a CSV file and imported the way ``tlsfleet inventory
   import`` does it (an idempotent upsert: a second run changes nothing);
4. a sweep of the demo's domains with the demo's port profile, run by an arq worker in
   this process, with a live progress bar from the sweep's progress query;
5. the fleet summary (:mod:`fleet.demo.summary`), as tables or ``--json``.

The worker is the production one (:func:`worker.settings.worker_settings`) with three
changes that keep it on the demo: its own queue, no cron jobs (no nightly sweep, no
reconciler) and a reconcile job that does nothing — the reconciler would otherwise
scan every open sweep of the database, with the demo's resolver and with private
targets allowed. Its settings point the resolver at the demo's DNS, trust the demo
CA and allow private targets; nothing outside the loopback addresses is contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fleet.console import err, fail
from fleet.runtime import run
from fleet.settings import Settings, load_settings

if TYPE_CHECKING:
    from arq.worker import Worker
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from fleet.demo.fleet import RunningFleet
    from fleet.demo.summary import FleetSummary
    from fleet.embedded import ResolvedServices
    from worker.context import WorkerConfig
    from worker.options import WorkerOptions

__all__ = ["demo", "register"]

#: Longest the demo's sweep may take before the demo gives up on it.
SWEEP_BOUND = 180.0
#: What ends ``--keep``.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def register(app: typer.Typer) -> None:
    """Add the demo command to ``app``."""
    app.command()(demo)


def demo(
    json_out: Annotated[
        bool, typer.Option("--json", help="print the summary as one JSON document")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(help="keep the demo fleet (and the embedded services) running until Ctrl-C"),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show the worker's log")] = False,
) -> None:
    """Run the whole service on a local demo fleet and print the fleet summary.

    Starts the embedded PostgreSQL and Redis (unless TLSFLEET_DATABASE_URL and
    TLSFLEET_REDIS_URL are set), a demo fleet of 40 customer domains on loopback
    addresses 127.77.x.x (DNS and TLS servers of many configurations), imports its
    inventory, sweeps it with a worker and prints what it found. Nothing outside this
    machine is touched. Exit status: 0 the sweep finished, 1 it did not, 2 bad setup.
    """
    from pydantic import ValidationError

    from fleet.demo.fleet import demo_fleet
    from fleet.embedded import services
    from worker.options import WorkerOptions

    settings = load_settings()
    try:
        # The environment may tune the worker (TLSFLEET_WORKER_*); the demo polls fast.
        options = WorkerOptions(poll_delay=0.05)
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = "_".join(str(part) for part in problem["loc"]).upper()
        raise fail(f"TLSFLEET_WORKER_{name}: {problem['msg']}") from None
    if verbose:
        _worker_logging()
    timings = _Timings()
    outcome: _Outcome | None = None
    with contextlib.ExitStack() as stack:
        _say(_services_line(settings), json_out)
        resolved = stack.enter_context(services(settings))
        _ready_database(resolved)
        timings.mark("services")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlsfleet-demo-")))
        try:
            fleet = stack.enter_context(demo_fleet(workdir))
        except OSError as exc:
            raise fail(f"cannot start the demo fleet: {exc.strerror or exc}") from None
        timings.mark("fleet")
        _say(
            f"Demo fleet up: {len(fleet.endpoints)} servers on 127.77.x.x, DNS at "
            f"{fleet.nameserver}",
            json_out,
        )
        demo_settings = settings.model_copy(
            update={
                "resolvers": [fleet.nameserver],
                "allow_private_targets": True,
                "ca_file": fleet.ca_file,
            }
        )
        try:
            outcome = run(
                _demo(resolved, fleet, demo_settings, options, workdir, timings, json_out)
            )
        except (KeyboardInterrupt, asyncio.CancelledError):
            err.print("interrupted: stopping the demo fleet and the services", highlight=False)
            raise typer.Exit(130) from None
        except TimeoutError:
            raise fail(f"the demo's sweep did not finish within {SWEEP_BOUND:g} s", 1) from None
        except Exception as exc:  # Redis or PostgreSQL gone, the worker failed: one line
            if verbose:
                raise
            raise fail(
                f"the demo failed: {type(exc).__name__}: {exc} (--verbose shows more)", 1
            ) from None
        if not keep:
            _print(outcome, json_out)
        else:
            with _stop_signals() as stop:  # before the summary: a script may stop us after it
                _print(outcome, json_out)
                _keep_running(fleet, outcome.sweep_id, stop)
    raise typer.Exit(0 if outcome is not None and outcome.status == "done" else 1)


def _ready_database(resolved: ResolvedServices) -> None:
    """Migrate the embedded database; refuse a configured one that is not at head
    (as every other command does)."""
    from fleet.db.migrate import current_revision, head_revision, upgrade

    if resolved.embedded_database:
        upgrade(resolved.database_url)
        return
    try:
        current = current_revision(resolved.database_url)
    except Exception as exc:  # the driver's errors vary; one line
        raise fail(f"cannot reach the database: {exc}") from None
    if current != head_revision():
        raise fail(
            f"the database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `tlsfleet migrate`"
        )


def _services_line(settings: Settings) -> str:
    if settings.database_url is not None and settings.redis_url is not None:
        return "Using TLSFLEET_DATABASE_URL and TLSFLEET_REDIS_URL"
    embedded = [
        name
        for name, url in (("PostgreSQL", settings.database_url), ("Redis", settings.redis_url))
        if url is None
    ]
    data_dir = settings.data_dir.expanduser().resolve()
    return f"Starting the embedded {' and '.join(embedded)} under {data_dir}"


def _say(message: str, quiet: bool) -> None:
    if not quiet or err.is_terminal:
        err.print(escape(message), highlight=False)


def _worker_logging() -> None:
    import logging.config

    from arq.logs import default_log_config

    config = default_log_config(True)
    for name in ("fleet", "worker"):
        config["loggers"][name] = dict(config["loggers"]["arq"])
    logging.config.dictConfig(config)


@dataclass
class _Timings:
    """Seconds each step took, for the JSON document and the report."""

    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    steps: dict[str, float] = field(default_factory=dict)

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self.last, 2)
        self.last = now

    def to_dict(self) -> dict[str, float]:
        return {**self.steps, "total": round(time.monotonic() - self.started, 2)}


@dataclass
class _Outcome:
    """How the demo's sweep ended, and its summary (document: the JSON form)."""

    sweep_id: int
    status: str
    document: dict[str, Any]
    summary: FleetSummary


async def _demo(
    resolved: ResolvedServices,
    fleet: RunningFleet,
    settings: Settings,
    options: WorkerOptions,
    workdir: Path,
    timings: _Timings,
    quiet: bool,
) -> _Outcome:
    from arq.connections import create_pool

    from fleet import jobs, sweeps
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.demo.fleet import DOMAINS
    from worker.context import WorkerConfig

    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    if this is not None:  # SIGTERM ends the demo as Ctrl-C does: everything is stopped
        loop.add_signal_handler(signal.SIGTERM, this.cancel)
    engine = create_engine(resolved.database_url, pool_size=2)
    sessions = create_sessionmaker(engine)
    queue = f"arq:tlsfleet-demo:{uuid.uuid4().hex[:12]}"
    sweep_id: int | None = None
    status = "pending"
    try:
        imported = await _import_inventory(sessions, workdir)
        timings.mark("import")
        pool = await create_pool(
            resolved.arq_settings,
            job_serializer=jobs.serialize,
            job_deserializer=jobs.deserialize,
            default_queue_name=queue,
        )
        try:
            sweep_id = await sweeps.start_sweep(
                sessions,
                pool,
                scope={"domains": sorted(d.name for d in DOMAINS)},
                options=sweeps.SweepOptions(profile=fleet.profile),
            )
        finally:
            await pool.aclose()
        config = WorkerConfig(
            settings=settings,
            database_url=resolved.database_url,
            redis_settings=resolved.arq_settings,
            options=options,
        )
        worker = _demo_worker(config, queue)
        running = asyncio.create_task(worker.main(), name="demo-worker")
        worker.main_task = running
        try:
            status = await _follow(sessions, sweep_id, running, quiet=quiet)
        finally:
            await _stop_worker(worker, running)
        timings.mark("sweep")
        document, summary = await _summary(sessions, sweep_id, imported, fleet, timings)
        return _Outcome(sweep_id, status, document, summary)
    finally:
        if sweep_id is not None and status not in ("done", "failed", "cancelled"):
            await _abandon(sessions, sweep_id)
        await engine.dispose()
        loop.remove_signal_handler(signal.SIGTERM)


async def _import_inventory(
    sessions: async_sessionmaker[AsyncSession], workdir: Path
) -> dict[str, int]:
    """Write the demo's inventory as a CSV file and import it through the code of
    ``tlsfleet inventory import`` (read, validate, upsert, commit once)."""
    from fleet.demo.fleet import inventory_records
    from fleet.inventory import read_inventory, validate_rows, write_inventory
    from fleet.repositories.inventory import upsert_inventory

    path = workdir / "inventory.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        write_inventory(inventory_records(), out)
    checked = validate_rows(read_inventory(path))
    async with sessions() as session:
        counts = await upsert_inventory(session, checked.records)
        await session.commit()
    return {
        "rows": checked.rows,
        "created": counts.created,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "errors": len(checked.errors),
    }


async def _skip_reconcile(ctx: dict[str, Any]) -> dict[str, int]:  # noqa: ARG001 - arq's signature
    """The demo worker's reconcile job: nothing. It runs once at the worker's start-up
    (``worker.context.startup`` queues it) and must not touch sweeps outside the demo."""
    return {}


def _demo_worker(config: WorkerConfig, queue: str) -> Worker:
    """The production worker, kept to the demo's sweep (see the module docstring)."""
    from arq.worker import Function, Worker, func

    from fleet.jobs import JobName
    from worker.settings import worker_settings

    settings = worker_settings(config)
    functions: list[Function] = [f for f in settings["functions"] if f.name != JobName.RECONCILE]
    functions.append(func(_skip_reconcile, name=JobName.RECONCILE))
    return Worker(
        **{
            **settings,
            "functions": functions,
            "cron_jobs": [],
            "queue_name": queue,
            "handle_signals": False,
        }
    )


async def _stop_worker(worker: Worker, running: asyncio.Task[None]) -> None:
    """Let running jobs end (a few seconds at most), then stop the worker: its
    ``on_shutdown`` stops the heartbeat, hands back limiter slots, closes its pools."""
    busy = [task for task in worker.tasks.values() if not task.done()]
    if busy:
        await asyncio.wait(busy, timeout=10)
    try:
        await worker.close()
    except asyncio.CancelledError:
        # close() gathers the job tasks it has just cancelled; only a cancellation of
        # this task itself is to be passed on.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    await asyncio.wait([running])


async def _abandon(sessions: async_sessionmaker[AsyncSession], sweep_id: int) -> None:
    """Mark the demo's sweep cancelled when the demo stops before it finished, so that
    no worker picks it up later for servers that are gone."""
    from fleet.repositories.sweeps import set_sweep_status

    with contextlib.suppress(Exception):  # best effort on the way out
        async with sessions() as session:
            await set_sweep_status(session, sweep_id, "cancelled", error="the demo was stopped")
            await session.commit()


async def _follow(
    sessions: async_sessionmaker[AsyncSession],
    sweep_id: int,
    running: asyncio.Task[None],
    *,
    quiet: bool,
) -> str:
    """Show the sweep's progress (done/total, rate, ETA from the sweep's progress
    query) on standard error until it is final; its final status."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from fleet import sweeps
    from fleet.repositories.sweeps import FINAL_STATUSES

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "{task.fields[rate]}",
        "{task.fields[eta]}",
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(f"sweep {sweep_id}", total=None, rate="", eta="")
        async with asyncio.timeout(SWEEP_BOUND):
            while True:
                async with sessions() as session:
                    progress = await sweeps.progress(session, sweep_id)
                if progress is None:
                    return "gone"
                bar.update(
                    task,
                    description=f"sweep {sweep_id} {progress.status}",
                    total=progress.total or None,
                    completed=progress.done,
                    rate=f"{progress.rate:.1f}/s" if progress.rate else "",
                    eta=f"ETA {progress.eta_seconds:.0f} s"
                    if progress.eta_seconds is not None and progress.status == "scanning"
                    else "",
                )
                if progress.status in FINAL_STATUSES:
                    break
                if running.done():
                    running.result()  # the worker's failure, raised here
                    raise RuntimeError("the demo's worker stopped before the sweep finished")
                await asyncio.sleep(0.2)
    if not err.is_terminal and not quiet:
        err.print(
            f"sweep {sweep_id} {progress.status}: {progress.done} of {progress.total} "
            f"endpoints in {progress.elapsed_seconds or 0:.1f} s",
            highlight=False,
        )
    return progress.status


async def _summary(
    sessions: async_sessionmaker[AsyncSession],
    sweep_id: int,
    imported: dict[str, int],
    fleet: RunningFleet,
    timings: _Timings,
) -> tuple[dict[str, Any], FleetSummary]:
    from fleet import sweeps
    from fleet.demo.summary import summarise, sweep_exposure, sweep_owners
    from fleet.repositories.sweeps import get_sweep

    async with sessions() as session:
        sweep = await get_sweep(session, sweep_id)
        progress = await sweeps.progress(session, sweep_id)
        owners = await sweep_owners(session, sweep_id)
        exposure = await sweep_exposure(session, sweep_id)
    if sweep is None or progress is None:
        raise RuntimeError(f"the demo's sweep {sweep_id} vanished from the database")
    summary = summarise(owners, exposure)
    diff = sweep.diff or {}
    timings.mark("summary")
    document = {
        "sweep": {
            **progress.to_dict(),
            "previous_sweep_id": diff.get("previous_sweep_id"),
            "diff": diff.get("counts"),
            "error": sweep.error,
        },
        "import": imported,
        **summary.to_dict(),
        "demo": {
            "nameserver": fleet.nameserver,
            "ports": dict(fleet.ports),
            "seconds": timings.to_dict(),
        },
        "next": {
            "status": f"tlsfleet sweep status {sweep_id}",
            "json": f"tlsfleet sweep status {sweep_id} --json",
        },
    }
    return document, summary


# -- output ---------------------------------------------------------------------------------


def _print(outcome: _Outcome, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(json.dumps(outcome.document) + "\n")
        sys.stdout.flush()
        return
    _render(Console(width=None if sys.stdout.isatty() else 160), outcome)


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def _render(out: Console, outcome: _Outcome) -> None:
    """The summary as a few lines and two tables."""
    document, summary = outcome.document, outcome.summary
    sweep = document["sweep"]
    imported = document["import"]
    out.print(
        f"\n[bold]Fleet summary[/] · sweep {outcome.sweep_id} {sweep['status']} in "
        f"{sweep['elapsed_seconds'] or 0:.1f} s ({sweep['total']} endpoints, "
        f"{sweep['failed']} of them errors)",
        highlight=False,
    )
    out.print(
        f"{summary.domains} domains of {summary.customers} customers "
        f"({summary.managers} account managers) → {summary.uses} uses of "
        f"{summary.endpoints} endpoints, each scanned once\n"
        f"inventory import: {imported['created']} created, {imported['updated']} updated, "
        f"{imported['unchanged']} unchanged",
        highlight=False,
    )
    facts = Table.grid(padding=(0, 2))
    facts.add_row("domains by DNS status", _counts(dict(summary.discovery)))
    facts.add_row("endpoints by service", _counts(dict(summary.by_service)))
    facts.add_row("endpoints by protocol", _counts(dict(summary.protocols)))
    facts.add_row("scan errors", _counts(dict(summary.errors)))
    facts.add_row("certificate problems", _counts(dict(summary.certificates)))
    out.print(facts)

    findings = Table(title="\nFindings", title_justify="left")
    for column in ("finding", "endpoints", "domains", "customers", "account managers"):
        findings.add_column(
            column, justify="right" if column in ("endpoints", "domains") else "left"
        )
    for f in summary.findings:
        findings.add_row(
            f.title,
            str(len(f.endpoints)),
            str(len(f.domains)),
            ", ".join(f.customers) or "-",
            ", ".join(f.managers) or "-",
        )
    out.print(findings)

    labels = {f.id: f.label for f in summary.findings}
    managers = Table(title="\nBy account manager", title_justify="left")
    for column in ("account manager", "customer", "domains", "findings"):
        managers.add_column(column, justify="right" if column == "domains" else "left")
    for manager in summary.by_manager:
        for index, customer in enumerate(manager.customers):
            managers.add_row(
                (manager.name or "(none)") if index == 0 else "",
                customer.name,
                str(customer.domains),
                ", ".join(labels[f] for f in customer.findings) or "[green]none[/]",
            )
    out.print(managers)

    diff = sweep["diff"]
    if sweep["previous_sweep_id"] is None:
        out.print("First demo sweep in this database: every endpoint is new.", highlight=False)
    elif diff is not None:
        from fleet.repositories.diff import CATEGORIES

        changes = {c.replace("_", " "): diff[c] for c in CATEGORIES if diff.get(c)}
        out.print(
            f"Changes since sweep {sweep['previous_sweep_id']}: {_counts(changes)}",
            highlight=False,
        )
    out.print(
        f"More: [bold]tlsfleet sweep status {outcome.sweep_id}[/] (add --json for the "
        "document), [bold]tlsfleet demo --json[/] for this summary as JSON.",
        highlight=False,
    )


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set (instead of raising), for ``--keep``."""
    stop = threading.Event()
    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _keep_running(fleet: RunningFleet, sweep_id: int, stop: threading.Event) -> None:
    """Leave the fleet up for exploring until ``stop`` is set (Ctrl-C, SIGTERM)."""
    ports = fleet.ports
    resolver = fleet.nameserver
    ca = fleet.ca_file
    scan = "tlsfleet scan --allow-private"
    err.print(
        "\n[bold]The demo fleet keeps running[/] until Ctrl-C. In another terminal, try:\n"
        f"  dig @{resolver.split(':')[0]} -p {ports['dns']} baltic-freight.test MX\n"
        f"  {scan} --ca-file {ca} --sni mx-legacy.provider.test 127.77.1.11:{ports['smtp']}"
        " --service smtp\n"
        f"  {scan} --ca-file {ca} --sni mail.provider.test 127.77.1.3:{ports['imaps']}"
        " --service imaps\n"
        f"  {scan} --ca-file {ca} --resolver {resolver} fjord-outdoor.test"
        "   (SRV records carry the demo's ports; MX and web are on"
        f" {ports['smtp']}/{ports['https']}, not 25/443)\n"
        f"  tlsfleet sweep status {sweep_id} --json",
        highlight=False,
        soft_wrap=True,
    )
    while not stop.wait(0.5):
        pass
    err.print("stopping the demo fleet", highlight=False)
