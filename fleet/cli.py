"""The ``tlsfleet`` command line."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fleet import scan_cli
from fleet.console import err, error_line, fail
from fleet.inventory import (
    InventoryFileError,
    InventoryFormat,
    InventoryRecord,
    InventoryWriter,
    read_inventory,
    validate_rows,
)
from fleet.runtime import run
from fleet.settings import load_settings

if TYPE_CHECKING:
    from fleet.embedded import ResolvedServices
    from fleet.repositories.inventory import UpsertCounts

app = typer.Typer(
    name="tlsfleet",
    help="Scan mail and web endpoints for old TLS, weak suites, bad certificates and "
    "passwords before TLS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

scan_cli.register(app)


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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
