"""The inventory in PostgreSQL: idempotent upserts with honest counts, the export, and
``tlsfleet inventory import/export`` as a real process."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from fleet.db.models import AccountManager, Customer, Domain
from fleet.db.session import async_url, sync_url
from fleet.inventory import InventoryRecord
from fleet.repositories.inventory import UpsertCounts, iter_inventory, upsert_inventory

ANNA = ("Anna Berg", "anna@provider.example")
BOB = ("Bob Li", "bob@provider.example")


def _record(
    domain: str, customer: str, manager: tuple[str, str] | None = None, *tags: str
) -> InventoryRecord:
    name, email = manager if manager else (None, None)
    return InventoryRecord(domain, customer, name, email, tuple(sorted(tags)))


async def _export(session: AsyncSession, **options: bool) -> list[InventoryRecord]:
    return [r async for batch in iter_inventory(session, **options) for r in batch]


async def test_import_creates_then_changes_nothing(session: AsyncSession) -> None:
    records = [
        _record("a.example", "A", ANNA, "vip"),
        _record("b.example", "A"),
        _record("c.example", "C", BOB),
    ]

    first = await upsert_inventory(session, records)
    again = await upsert_inventory(session, records)

    assert first == UpsertCounts(created=3)
    assert again == UpsertCounts(unchanged=3)
    assert await _export(session) == [
        _record("a.example", "A", ANNA, "vip"),
        # a row without a manager shows its customer's
        _record("b.example", "A", ANNA),
        _record("c.example", "C", BOB),
    ]


async def test_changes_are_counted_per_row(session: AsyncSession) -> None:
    await upsert_inventory(
        session,
        [
            _record("a.example", "A", ANNA),
            _record("b.example", "A", ANNA),
            _record("c.example", "C", BOB),
            _record("d.example", "D"),
        ],
    )

    counts = await upsert_inventory(
        session,
        [
            _record("a.example", "A", ANNA, "new-tag"),  # tags changed
            _record("b.example", "A", ANNA),  # the same
            _record("c.example", "A", ANNA),  # moved to another customer
            _record("d.example", "D", ("Dora", "dora@provider.example")),  # got a manager
            _record("e.example", "E"),  # new
        ],
    )

    assert counts == UpsertCounts(created=1, updated=3, unchanged=1)
    managers = await session.scalars(select(AccountManager.email).order_by(AccountManager.email))
    assert list(managers) == [
        "anna@provider.example",
        "bob@provider.example",
        "dora@provider.example",
    ]


async def test_renaming_a_manager_updates_their_customers_rows(session: AsyncSession) -> None:
    await upsert_inventory(session, [_record("a.example", "A", ANNA), _record("b.example", "A")])

    counts = await upsert_inventory(
        session, [_record("a.example", "A", ("Anna Berg-Lund", ANNA[1]))]
    )

    assert counts == UpsertCounts(updated=1)
    exported = await _export(session)
    assert {r.account_manager for r in exported} == {"Anna Berg-Lund"}


async def test_a_row_without_a_manager_keeps_the_customers(session: AsyncSession) -> None:
    await upsert_inventory(session, [_record("a.example", "A", ANNA)])

    counts = await upsert_inventory(session, [_record("a.example", "A")])

    assert counts == UpsertCounts(unchanged=1)
    manager = await session.scalar(select(Customer.account_manager_id).where(Customer.name == "A"))
    assert manager is not None


async def test_an_inactive_domain_listed_again_is_active(session: AsyncSession) -> None:
    await upsert_inventory(session, [_record("a.example", "A"), _record("b.example", "A")])
    await session.execute(update(Domain).where(Domain.name == "a.example").values(active=False))

    assert [r.domain for r in await _export(session)] == ["b.example"]
    assert len(await _export(session, include_inactive=True)) == 2
    counts = await upsert_inventory(session, [_record("a.example", "A")])

    assert counts == UpsertCounts(updated=1)
    assert [r.domain for r in await _export(session)] == ["a.example", "b.example"]


async def test_batches_split_large_imports(session: AsyncSession) -> None:
    records = [
        _record(f"d{n:05d}.example", f"Customer {n % 7}", ANNA if n % 2 else None)
        for n in range(2500)
    ]

    counts = await upsert_inventory(session, records, batch_size=400)

    assert counts == UpsertCounts(created=2500)
    batches = [len(b) async for b in iter_inventory(session, batch_size=1000)]
    assert sum(batches) == 2500
    assert max(batches) <= 1000


# -- the CLI, as a real process ---------------------------------------------------------------

HEADER = "domain,customer,account_manager,account_manager_email,tags\n"


def _tlsfleet(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_env(engine: AsyncEngine, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a ``tlsfleet`` process on this run's database (which the
    ``engine`` fixture empties after the test: the process commits)."""
    assert engine is not None
    return {**os.environ, "TLSFLEET_DATABASE_URL": database_url, "TLSFLEET_REDIS_URL": redis_url}


def test_cli_import_reports_bad_rows_and_keeps_the_good(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "inventory.csv"
    path.write_text(
        HEADER + "a.example,A,Anna,anna@provider.example,vip\n"
        "not a domain,A,,,\n"
        "bücher.example,B,,,\n"
        "c.example,C,Carl,carl@,\n"
    )

    first = _tlsfleet(cli_env, "inventory", "import", str(path))
    again = _tlsfleet(cli_env, "inventory", "import", str(path), "--json")

    assert first.returncode == 1
    assert first.stdout == "4 rows: 2 created, 0 updated, 0 unchanged, 2 errors\n"
    assert first.stderr.splitlines() == [
        "error: row 2 (line 3): domain: host name 'not a domain' contains white space",
        "error: row 4 (line 5): account_manager_email: 'carl@' is not an e-mail address",
    ]
    report = json.loads(again.stdout)
    assert again.returncode == 1
    assert (report["created"], report["unchanged"]) == (0, 2)
    assert [(e["row"], e["line"], e["domain"]) for e in report["errors"]] == [
        (2, 3, "not a domain"),
        (4, 5, "c.example"),
    ]


def test_cli_export_imports_back_unchanged(cli_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "inventory.json"
    source.write_text(
        json.dumps(
            [
                {"domain": "a.example", "customer": "A", "tags": ["x", "y"]},
                {
                    "domain": "bücher.example",
                    "customer": "Bücher GmbH",
                    "account_manager": "Anna",
                    "account_manager_email": "anna@provider.example",
                },
            ]
        )
    )
    assert _tlsfleet(cli_env, "inventory", "import", str(source)).returncode == 0

    as_csv = _tlsfleet(cli_env, "inventory", "export")
    as_json = _tlsfleet(cli_env, "inventory", "export", "--format", "json")

    assert as_csv.returncode == as_json.returncode == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["domain"], r["tags"]) for r in rows] == [
        ("a.example", "x;y"),
        ("xn--bcher-kva.example", ""),
    ]
    assert json.loads(as_json.stdout)[1]["customer"] == "Bücher GmbH"
    for name, text in (("export.csv", as_csv.stdout), ("export.json", as_json.stdout)):
        (tmp_path / name).write_text(text)
        back = _tlsfleet(cli_env, "inventory", "import", str(tmp_path / name))
        assert (back.returncode, back.stdout) == (
            0,
            "2 rows: 0 created, 0 updated, 2 unchanged, 0 errors\n",
        )


def test_cli_unreadable_file_exits_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("domain,owner\nexample.com,A\n")

    missing = _tlsfleet(cli_env, "inventory", "import", str(tmp_path / "nope.csv"))
    wrong = _tlsfleet(cli_env, "inventory", "import", str(bad))

    assert (missing.returncode, wrong.returncode) == (2, 2)
    assert "no such file" in missing.stderr
    assert "missing column(s) customer" in wrong.stderr


@pytest.fixture
def unmigrated_url(_pg_admin_url: str) -> Iterator[str]:
    name = f"tlsfleet_empty_{uuid.uuid4().hex[:12]}"
    admin = sync_url(_pg_admin_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield async_url(make_url(_pg_admin_url).set(database=name)).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_cli_refuses_an_unmigrated_database(
    unmigrated_url: str, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "inventory.csv"
    path.write_text(HEADER + "a.example,A,,,\n")
    env = {**os.environ, "TLSFLEET_DATABASE_URL": unmigrated_url, "TLSFLEET_REDIS_URL": redis_url}

    done = _tlsfleet(env, "inventory", "import", str(path))

    assert done.returncode == 2
    assert "run `tlsfleet migrate`" in done.stderr


def test_cli_imports_100k_rows(cli_env: dict[str, str], tmp_path: Path) -> None:
    # Given a 100,000-row inventory: 2,000 customers, 50 account managers, 3 bad rows
    path = tmp_path / "large.csv"
    with path.open("w") as out:
        out.write(HEADER)
        for n in range(100_000):
            customer = n % 2000
            manager = customer % 50
            domain = f"d{n:06d}.example" if n not in (10, 50_000, 99_999) else f"bad domain {n}"
            out.write(
                f"{domain},Customer {customer},AM {manager},am{manager}@provider.example,t{n % 3}\n"
            )

    # When it is imported (and then again)
    started = time.monotonic()
    first = _tlsfleet(cli_env, "inventory", "import", str(path), timeout=300)
    first_seconds = time.monotonic() - started
    again = _tlsfleet(cli_env, "inventory", "import", str(path), timeout=300)

    # Then every good row is in, once, and the bad ones are reported by row
    assert first.returncode == again.returncode == 1, first.stderr[-500:]
    assert first.stdout == "100000 rows: 99997 created, 0 updated, 0 unchanged, 3 errors\n"
    assert again.stdout == "100000 rows: 0 created, 0 updated, 99997 unchanged, 3 errors\n"
    assert [line.split(":")[1] for line in first.stderr.splitlines()] == [
        " row 11 (line 12)",
        " row 50001 (line 50002)",
        " row 100000 (line 100001)",
    ]
    exported = _tlsfleet(cli_env, "inventory", "export", timeout=300)
    assert exported.stdout.count("\n") == 1 + 99_997
    # Not a benchmark: a generous bound that still catches row-at-a-time SQL.
    assert first_seconds < 120
