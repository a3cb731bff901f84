"""``tlsfleet logs``: ingest Dovecot and Postfix logs (docs/logs.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fleet.console import err, fail
from fleet.runtime import run
from fleet.settings import Settings, load_settings

if TYPE_CHECKING:
    from fleet.logs.ingest import IngestOptions

__all__ = ["register"]

logs_app = typer.Typer(
    help="Mail-server log telemetry: which accounts still log in with TLS 1.0/1.1 or without TLS.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``logs`` command group to the ``tlsfleet`` app."""
    app.add_typer(logs_app, name="logs")


def _options(settings: Settings, flush_lines: int, flush_seconds: float) -> IngestOptions:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from fleet.logs.aggregate import AccountMap
    from fleet.logs.ingest import IngestOptions

    try:
        ZoneInfo(settings.log_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"TLSFLEET_LOG_TIMEZONE: unknown time zone {settings.log_timezone!r}") from None
    accounts = AccountMap()
    if settings.log_account_map is not None:
        try:
            accounts = AccountMap.load(settings.log_account_map)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise fail(f"TLSFLEET_LOG_ACCOUNT_MAP: {exc}") from None
    return IngestOptions(
        accounts=accounts,
        zone=settings.log_timezone,
        flush_lines=flush_lines,
        flush_seconds=flush_seconds,
        dedupe_days=settings.log_dedupe_days,
    )


@logs_app.command("ingest")
def ingest(
    files: Annotated[
        list[str],
        typer.Argument(help="log files to read; '-' reads standard input until it ends"),
    ],
    flush_lines: Annotated[
        int, typer.Option(min=1, max=10_000_000, help="flush the counts every N lines")
    ] = 1_000_000,
    flush_seconds: Annotated[
        float, typer.Option(min=0.1, max=3600, help="… and at least every S seconds (stdin)")
    ] = 5.0,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Count logins per account and day from Dovecot 2.3 and Postfix 3.x logs
    (syslog, journald short-iso, or the daemons' own log files).

    Ingesting a file again counts nothing twice (its checkpoint is stored); standard
    input is deduplicated per connection. A malformed line is counted and skipped.
    Examples: `tlsfleet logs ingest /var/log/mail.log`,
    `journalctl -f -o short-iso -u postfix -u dovecot | tlsfleet logs ingest -`.
    Exit status: 0 done, 2 bad arguments or settings.
    """
    settings = load_settings()
    paths: list[Path | None] = []
    for name in files:
        if name == "-":
            paths.append(None)
            continue
        path = Path(name)
        if not path.is_file():
            raise fail(f"{name}: not a readable file")
        paths.append(path)
    if paths.count(None) > 1:
        raise fail("'-' (standard input) can be given once")
    options = _options(settings, flush_lines, flush_seconds)
    from fleet.embedded import services

    with services(settings) as resolved:
        from fleet.cli import _ready_database

        _ready_database(resolved)
        summary = run(_ingest(resolved.database_url, paths, options))
    if json_out:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        sys.stdout.write(
            f"{summary['lines']} lines ({summary['malformed']} malformed, "
            f"{summary['ignored']} not about logins), {summary['connections']} connections, "
            f"{summary['logins']} logins ({summary['counted_logins']} counted: "
            f"{summary['legacy_logins']} TLS 1.0/1.1, {summary['plaintext_logins']} "
            f"without TLS; {summary['duplicates']} duplicates), {summary['accounts']} "
            f"accounts, {summary['unmapped']} unmapped\n"
        )


async def _ingest(
    database_url: str, paths: list[Path | None], options: IngestOptions
) -> dict[str, int]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.logs.ingest import Ingester, SourceConflictError

    engine = create_engine(database_url, pool_size=2)
    ingester = Ingester(create_sessionmaker(engine), options)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
        ) as bar:
            for path in paths:
                if path is None:
                    await ingester.ingest_stream(sys.stdin.fileno())
                    continue
                task = bar.add_task(path.name, total=path.stat().st_size)

                def advance(n: int, task: TaskID = task) -> None:
                    bar.advance(task, n)

                try:
                    await ingester.ingest_file(path, advance)
                except SourceConflictError as exc:
                    err.print(f"warning: {exc}", highlight=False)
        summary = await ingester.finish()
    finally:
        await engine.dispose()
    return summary.to_dict()
