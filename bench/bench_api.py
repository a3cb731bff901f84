"""API latency benchmark: the HTTP API over a database of a million stored results.

What it does, all on this machine:

* **seeds** a database of its own (``tlsfleet_bench`` on the PostgreSQL server of
  ``--database-url``, else ``TLSFLEET_DATABASE_URL``'s server, else 127.0.0.1:5432; it
  is created, and dropped at the end unless ``--keep``): ``--managers`` account
  managers, ``--domains`` domains of ``--domains / 10`` customers, ``--results /
  --sweeps`` endpoints each scanned in every one of ``--sweeps`` nightly sweeps (one
  result document of a few KB per endpoint and sweep), and each domain's use of three
  endpoints in every sweep (``domain_endpoints``, ``sweep_domains``). The schema is
  made by the project's Alembic migrations (``fleet.db.migrate``): the rows are COPYed
  (psycopg 3 ``cursor.copy``) into the tables as they stand at ``SEED_REVISION``, with
  their foreign keys and secondary indexes dropped during the load and rebuilt after
  it; then the database is upgraded to head, so that later migrations derive whatever
  they maintain from the stored results (the current-state tables backfill themselves)
  exactly as they would on a production database. A database kept with ``--keep`` is
  reused when its seed parameters (stored as the database's comment) match;
* **documents** vary as a fleet does: 70 % modern (TLS 1.2/1.3), 18 % legacy (TLS 1.0
  to 1.3), 4 % TLS 1.0/1.1 only, 3 % with SSLv3 as well, 5 % failed scans; a password
  can be sent before TLS on 12 % of the STARTTLS mail services, 4 % of them do not offer
  STARTTLS; certificates expire between 30 days ago and a year ahead (a few are
  self-signed or for another name); a tenth of the legacy endpoints were fixed halfway
  through the sweeps. So each filter selects its own fraction of the fleet;
* **serves** the API as a separate process: ``tlsfleet api`` with one worker, or
  uvicorn with ``--workers N`` processes on :func:`app_factory` (``tlsfleet api`` has
  no workers option), on 127.0.0.1 and a free port;
* **drives** it with ``wrk`` (Debian package ``wrk``) from another process, route by
  route from ``ROUTES`` below, as an admin and as an account manager (the manager of
  about 2 % of the fleet): ``--connections`` connections for ``--duration`` seconds per
  run, after a warm-up of a second; a Lua script adds the ``Authorization`` header and
  prints p50/p90/p99/max latency and requests/s as JSON. A route the API does not have
  (404 before the run) is reported as missing, not fatal; any non-2xx answer during a
  run is counted and reported.

Checks (exit status 1 when one fails; no latency threshold is asserted): every seeded
table has the expected row count; every route that exists answers 200 to a probe, and
no run sees a non-2xx answer or a socket error.

    python bench/bench_api.py                                   # 100,000 domains, 1,000,000 results
    python bench/bench_api.py --domains 10000 --results 100000  # a quick check
    python bench/bench_api.py --keep --workers 2 --json bench/results/bench_api.json

Needs ``wrk`` (``apt-get install wrk``; ``--install-wrk`` does it when run as root),
PostgreSQL whose role may ``CREATE DATABASE``, and Redis (``--redis-url``; the API only
opens it for sweeps, which this benchmark does not start).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from api.pagination import encode_cursor
from fleet.db.migrate import upgrade
from fleet.db.session import async_url, sync_url
from fleet.repositories.results import result_columns

ROOT = Path(__file__).resolve().parents[1]
console = Console(stderr=True, highlight=False)

#: The schema the rows are COPYed into (the inventory, sweeps and results tables as the
#: initial migrations made them, with API keys). Later migrations run after the load.
SEED_REVISION = "5e1c0a7f3b21"
DATABASE_NAME = "tlsfleet_bench"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- the routes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One measured request. ``path`` may name ``{domain}``, ``{endpoint}``,
    ``{customer}``, ``{manager}``, ``{sweep}``, ``{previous_sweep}``, ``{in_30_days}``,
    ``{deep_cursor}``: ids (or values) chosen from the seeded data so that they are
    visible to both keys."""

    name: str
    kind: str  # stats, listing, filter, detail
    path: str
    roles: tuple[str, ...] = ("admin", "account_manager")


ROUTES: tuple[Route, ...] = (
    Route("fleet statistics", "stats", "/v1/stats"),
    Route(
        "fleet statistics per account manager",
        "stats",
        "/v1/stats?by_account_manager=true",
        ("admin",),
    ),
    Route("statistics trend", "stats", "/v1/stats/trend"),
    Route("account managers", "listing", "/v1/account-managers"),
    Route("customers", "listing", "/v1/customers"),
    Route("domains", "listing", "/v1/domains"),
    Route("domains, a deep page", "listing", "/v1/domains?cursor={deep_cursor}"),
    Route("sweeps", "listing", "/v1/sweeps", ("admin",)),
    Route("latest results", "listing", "/v1/results/latest"),
    Route("results: TLS 1.0", "filter", "/v1/results/latest?protocol=tls1.0"),
    Route("results: legacy TLS", "filter", "/v1/results/latest?legacy=true"),
    Route(
        "results: password before TLS",
        "filter",
        "/v1/results/latest?plaintext_before_tls=true",
    ),
    Route(
        "results: cert expiring in 30 days",
        "filter",
        "/v1/results/latest?cert_expires_before={in_30_days}",
    ),
    Route("results: by customer", "filter", "/v1/results/latest?customer_id={customer}"),
    Route(
        "results: by account manager",
        "filter",
        "/v1/results/latest?account_manager_id={manager}",
    ),
    Route("results: TLS 1.0, CSV", "filter", "/v1/results/latest?protocol=tls1.0&format=csv"),
    Route("domain results", "detail", "/v1/domains/{domain}/results"),
    Route("endpoint history", "detail", "/v1/endpoints/{endpoint}/results"),
    Route("sweep", "detail", "/v1/sweeps/{sweep}", ("admin",)),
    Route("sweep diff (stored at close)", "detail", "/v1/sweeps/{sweep}/diff", ("admin",)),
    Route(
        "sweep diff against another (computed)",
        "detail",
        "/v1/sweeps/{sweep}/diff?against={previous_sweep}",
        ("admin",),
    ),
)

ROLES = ("admin", "account_manager")


# -- the seeded fleet ---------------------------------------------------------------------

#: (service, port, tls_mode) of the endpoints, in turn.
SERVICES: tuple[tuple[str, int, str], ...] = (
    ("smtp", 25, "starttls"),
    ("submission", 587, "starttls"),
    ("submissions", 465, "implicit"),
    ("imap", 143, "starttls"),
    ("imaps", 993, "implicit"),
    ("pop3", 110, "starttls"),
    ("pop3s", 995, "implicit"),
    ("https", 443, "implicit"),
)
#: Endpoints each domain uses in every sweep.
USES_PER_DOMAIN = 3

SUITES_12 = [
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA",
]
SUITES_MODERN_12 = SUITES_12[:3]
SUITES_OLD = [
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
]
SUITES_13 = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
VERSIONS = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
PROFILES: dict[str, tuple[str, ...]] = {
    "modern": ("TLSv1.2", "TLSv1.3"),
    "legacy": ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "old_only": ("TLSv1.0", "TLSv1.1"),
    "ssl3": ("SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2"),
}


def _bucket(*parts: int) -> int:
    """A stable pseudo-random number 0–9999 for these integers."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 10_000


def endpoint_ip(index: int) -> str:
    # 198.18.0.0/15 (RFC 2544, for benchmarks): rows only, nothing ever connects there.
    return f"198.{18 + index // 65_536 % 2}.{index // 256 % 256}.{index % 256}"


def endpoint_host(index: int) -> str:
    return f"{'web' if index % 8 == 7 else 'mx'}{index // 8}.hosting.bench"


def profile_of(endpoint: int, sweep: int, sweeps: int) -> str:
    """The endpoint's configuration in a sweep (0-based): a tenth of the legacy
    endpoints turn modern halfway through."""
    b = _bucket(endpoint)
    if b < 500:
        return "error"
    if b < 800:
        return "ssl3"
    if b < 1200:
        return "old_only"
    if b < 3000:
        return "modern" if b < 1380 and sweep >= sweeps // 2 else "legacy"
    return "modern"


def document(
    endpoint: int, sweep: int, sweeps: int, scanned_at: dt.datetime, now: dt.datetime
) -> dict[str, Any]:
    """A realistic result document (docs/result-document.md) of a few KB."""
    service, port, mode = SERVICES[endpoint % len(SERVICES)]
    host = endpoint_host(endpoint)
    profile = profile_of(endpoint, sweep, sweeps)
    b = _bucket(endpoint, 7)
    target = {
        "host": host,
        "ip": endpoint_ip(endpoint),
        "port": port,
        "service": service,
        "tls_mode": mode,
        "sni": host,
    }
    stamp = scanned_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if profile == "error":
        kind = ("timeout", "refused", "reset", "tls_alert")[b % 4]
        return {
            "schema_version": "1.0",
            "target": target,
            "status": "error",
            "error": {"kind": kind, "phase": "connect", "message": f"{kind} after 5.0 s"},
            "protocols": dict.fromkeys(VERSIONS),
            "cipher_suites": {},
            "server_preference": None,
            "tls13_groups": None,
            "starttls": None,
            "auth": None,
            "certificate": None,
            "deep": None,
            "partial_errors": [],
            "connections": 2,
            "duration_ms": 5003,
            "scanned_at": stamp,
        }
    accepted = PROFILES[profile]
    suites: dict[str, list[str]] = {}
    for version in accepted:
        if version == "TLSv1.3":
            suites[version] = list(SUITES_13)
        elif version == "TLSv1.2":
            suites[version] = list(SUITES_MODERN_12 if profile == "modern" else SUITES_12)
        else:
            suites[version] = list(SUITES_OLD)
    mail = service != "https"
    starttls = None
    auth = None
    if mode == "starttls":
        offered = b >= 400
        starttls = {"offered": offered, "injection_vulnerable": False if offered else None}
    if mail:
        plaintext = mode == "starttls" and (b < 1200 or not starttls or not starttls["offered"])
        before = ["PLAIN", "LOGIN"] if plaintext else []
        auth = {
            "before_tls": before + (["IMAP-LOGIN"] if plaintext and "imap" in service else []),
            "after_tls": ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"],
            "plaintext_before_tls": plaintext,
            "active_check": None,
        }
    not_after = now + dt.timedelta(days=(_bucket(endpoint, 11) % 395) - 30, hours=endpoint % 24)
    not_before = not_after - dt.timedelta(days=90)
    names = [host, *(f"alt{i}.{host}" for i in range(6 + b % 10))]
    status = "valid"
    if not_after < scanned_at:
        status = "expired"
    elif b % 50 == 0:
        status = "self_signed"
    elif b % 50 == 1:
        status = "hostname_mismatch"
    certificate = {
        "subject": f"CN={host}",
        "san": names,
        "issuer": "CN=R11,O=Let's Encrypt,C=US" if status != "self_signed" else f"CN={host}",
        "not_before": not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": (not_after - scanned_at).days,
        "key": "RSA 2048" if b % 3 else "ECDSA P-256",
        "signature": "sha256WithRSAEncryption",
        "trusted": status not in ("self_signed",),
        "hostname_match": status != "hostname_mismatch",
        "status": status,
        "fingerprint_sha256": hashlib.sha256(f"{endpoint}/{sweep // 3}".encode()).hexdigest(),
        "chain_length": 2,
        "verify_message": None,
    }
    return {
        "schema_version": "1.0",
        "target": target,
        "status": "ok",
        "error": None,
        "protocols": {v: v in accepted for v in VERSIONS},
        "cipher_suites": suites,
        "server_preference": b % 4 != 0,
        "tls13_groups": ["x25519", "secp256r1", "x448", "secp521r1", "secp384r1"]
        if "TLSv1.3" in accepted
        else None,
        "starttls": starttls,
        "auth": auth,
        "certificate": certificate,
        "deep": None,
        "partial_errors": [],
        "connections": sum(len(s) + 1 for s in suites.values()) + 3,
        "duration_ms": 180 + b % 900,
        "scanned_at": stamp,
    }


@dataclass(frozen=True, slots=True)
class SeedPlan:
    domains: int
    results: int
    sweeps: int
    managers: int

    @property
    def customers(self) -> int:
        return max(1, self.domains // 10)

    @property
    def endpoints(self) -> int:
        return max(1, self.results // self.sweeps)

    def key(self) -> str:
        return json.dumps({"bench_api": asdict(self)}, sort_keys=True)


def _copy_text(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy(
    connection: psycopg.Connection[Any],
    table: str,
    columns: Sequence[str],
    rows: Iterator[Sequence[Any]],
    batch: int = 2_000,
) -> int:
    """COPY ``rows`` into ``table`` in text format, written in batches; the row count."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    count = 0
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        buffer = io.StringIO()
        for row in rows:
            buffer.write("\t".join(_copy_text(v) for v in row))
            buffer.write("\n")
            count += 1
            if count % batch == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())
    return count


#: Tables the load goes into, whose foreign keys and secondary indexes are dropped
#: during it and rebuilt afterwards.
BULK_TABLES = ("domains", "customers", "scan_results", "domain_endpoints", "sweep_domains")


@contextlib.contextmanager
def bulk_load(connection: psycopg.Connection[Any]) -> Iterator[None]:
    """Drop the foreign keys, unique constraints and indexes (not primary keys) of
    ``BULK_TABLES`` for the load; recreate them, as they were, after it."""
    constraints = connection.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype
        FROM pg_constraint AS c
        WHERE c.conrelid::regclass::text = ANY(%s) AND c.contype IN ('f', 'u')
        ORDER BY c.contype DESC
        """,
        (list(BULK_TABLES),),
    ).fetchall()
    indexes = connection.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index AS i
        WHERE i.indrelid::regclass::text = ANY(%s) AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
        """,
        (list(BULK_TABLES),),
    ).fetchall()
    for table, name, _definition, _kind in constraints:
        connection.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
    for name, _definition in indexes:
        connection.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    connection.commit()
    yield
    connection.execute("SET maintenance_work_mem = '512MB'")
    for _name, definition in indexes:
        connection.execute(sql.SQL(definition))
    for table, name, definition, _kind in reversed(constraints):
        connection.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
            )
        )
    connection.commit()


def seed(database_url: str, plan: SeedPlan) -> dict[str, float]:
    """Migrate to ``SEED_REVISION``, COPY the fleet in, upgrade to head; seconds per step."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    upgrade(database_url, SEED_REVISION)
    timings["migrate to seed revision"] = time.perf_counter() - started
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first_sweep = now - dt.timedelta(days=plan.sweeps)
    with psycopg.connect(sync_url(database_url)) as connection:
        connection.execute("SET synchronous_commit = off")
        with bulk_load(connection):
            step = time.perf_counter()
            _copy(
                connection,
                "account_managers",
                ("id", "name", "email"),
                ((m, f"Manager {m}", f"am{m}@provider.bench") for m in range(1, plan.managers + 1)),
            )
            _copy(
                connection,
                "customers",
                ("id", "name", "account_manager_id"),
                (
                    (c, f"Customer {c}", (c - 1) % plan.managers + 1)
                    for c in range(1, plan.customers + 1)
                ),
            )
            _copy(
                connection,
                "domains",
                ("id", "name", "customer_id", "tags"),
                (
                    (d, f"d{d}.customers.bench", (d - 1) % plan.customers + 1, "{mail}")
                    for d in range(1, plan.domains + 1)
                ),
            )
            _copy(
                connection,
                "endpoints",
                ("id", "ip", "port", "service", "host"),
                (
                    (
                        e + 1,
                        endpoint_ip(e),
                        SERVICES[e % len(SERVICES)][1],
                        SERVICES[e % len(SERVICES)][0],
                        endpoint_host(e),
                    )
                    for e in range(plan.endpoints)
                ),
            )
            sweep_times = [first_sweep + dt.timedelta(days=s, hours=2) for s in range(plan.sweeps)]
            _copy(
                connection,
                "sweeps",
                (
                    "id",
                    "kind",
                    "status",
                    "scope",
                    "options",
                    "total_endpoints",
                    "created_at",
                    "started_at",
                    "finished_at",
                ),
                (
                    (
                        s + 1,
                        "nightly",
                        "done",
                        '{"all": true}',
                        '{"quick": false}',
                        plan.endpoints,
                        t,
                        t,
                        t + dt.timedelta(minutes=40),
                    )
                    for s, t in enumerate(sweep_times)
                ),
            )
            timings["copy inventory, endpoints, sweeps"] = time.perf_counter() - step

            step = time.perf_counter()
            result_columns_order = (
                "status",
                "error_kind",
                "ssl2",
                "ssl3",
                "tls10",
                "tls11",
                "tls12",
                "tls13",
                "lowest_protocol",
                "highest_protocol",
                "plaintext_before_tls",
                "starttls_offered",
                "cert_status",
                "cert_not_after",
                "connections",
                "duration_ms",
                "scanned_at",
            )

            def results() -> Iterator[list[Any]]:
                row_id = 0
                for s, started_at in enumerate(sweep_times):
                    for e in range(plan.endpoints):
                        row_id += 1
                        scanned = started_at + dt.timedelta(seconds=e * 2400 // plan.endpoints)
                        doc = document(e, s, plan.sweeps, scanned, now)
                        columns = result_columns(doc)
                        yield [
                            row_id,
                            s + 1,
                            e + 1,
                            *(columns.get(c) for c in result_columns_order),
                            json.dumps(doc, separators=(",", ":")),
                        ]

            rows = _copy(
                connection,
                "scan_results",
                ("id", "sweep_id", "endpoint_id", *result_columns_order, "document"),
                results(),
            )
            timings["copy scan_results"] = time.perf_counter() - step
            console.print(f"  {rows:,} results in {timings['copy scan_results']:.0f} s")

            step = time.perf_counter()

            def uses() -> Iterator[tuple[Any, ...]]:
                row_id = 0
                for s in range(plan.sweeps):
                    for d in range(1, plan.domains + 1):
                        for k in range(USES_PER_DOMAIN):
                            e = (d * USES_PER_DOMAIN + k) % plan.endpoints
                            row_id += 1
                            how = "web" if e % 8 == 7 else "mx"
                            yield (row_id, s + 1, d, e + 1, endpoint_host(e), how)

            _copy(
                connection,
                "domain_endpoints",
                ("id", "sweep_id", "domain_id", "endpoint_id", "host", "how"),
                uses(),
            )
            discovery = (
                '{"domain": "%s", "status": "ok", "mx": [{"host": "mx%d.hosting.bench", '
                '"preference": 10}], "implicit_mx": false, "null_mx": false, "srv": []}'
            )
            _copy(
                connection,
                "sweep_domains",
                ("sweep_id", "domain_id", "status", "discovery"),
                (
                    (s + 1, d, "ok", discovery % (f"d{d}.customers.bench", d % 1000))
                    for s in range(plan.sweeps)
                    for d in range(1, plan.domains + 1)
                ),
            )
            timings["copy domain_endpoints, sweep_domains"] = time.perf_counter() - step
            step = time.perf_counter()
        timings["rebuild indexes and foreign keys"] = time.perf_counter() - step
        for table in ("account_managers", "customers", "domains", "endpoints", "sweeps"):
            connection.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), max(id)) FROM {}").format(
                    sql.Literal(table), sql.Identifier(table)
                )
            )
        for table in ("scan_results", "domain_endpoints"):
            connection.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), max(id)) FROM {}").format(
                    sql.Literal(table), sql.Identifier(table)
                )
            )
        connection.commit()
    step = time.perf_counter()
    upgrade(database_url)
    timings["migrate to head (derived tables)"] = time.perf_counter() - step
    step = time.perf_counter()
    with psycopg.connect(sync_url(database_url), autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE)")
    timings["vacuum analyze"] = time.perf_counter() - step
    timings["total"] = time.perf_counter() - started
    return timings


def table_counts(database_url: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with psycopg.connect(sync_url(database_url)) as connection:
        tables = [
            r[0]
            for r in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        for table in tables:
            row = connection.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def check_counts(counts: dict[str, int], plan: SeedPlan) -> list[str]:
    expected = {
        "account_managers": plan.managers,
        "customers": plan.customers,
        "domains": plan.domains,
        "endpoints": plan.endpoints,
        "sweeps": plan.sweeps,
        "scan_results": plan.endpoints * plan.sweeps,
        "domain_endpoints": plan.domains * plan.sweeps * USES_PER_DOMAIN,
        "sweep_domains": plan.domains * plan.sweeps,
    }
    if "endpoint_latest" in counts:
        expected["endpoint_latest"] = plan.endpoints
    return [
        f"{table}: {counts.get(table, 0):,} rows, expected {n:,}"
        for table, n in expected.items()
        if counts.get(table, 0) != n
    ]


# -- the database ---------------------------------------------------------------------------


def server_url(configured: str | None) -> str:
    """A URL of the server, on its ``postgres`` database (for CREATE/DROP DATABASE)."""
    url = configured or os.environ.get("TLSFLEET_DATABASE_URL") or PG_DEFAULT
    return sync_url(make_url(url).set(database="postgres").render_as_string(hide_password=False))


@contextlib.contextmanager
def bench_database(
    admin_url: str, name: str, plan: SeedPlan, keep: bool
) -> Iterator[tuple[str, bool]]:
    """The benchmark's database and whether it is already seeded for ``plan``."""
    if name == "postgres":
        raise SystemExit("refusing to use the 'postgres' database")
    url = async_url(make_url(admin_url).set(database=name)).render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None and row[0] != plan.key():
            connection.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )
            row = None
        if row is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    seeded = row is not None
    try:
        yield url, seeded
        if keep:
            with psycopg.connect(admin_url, autocommit=True) as connection:
                connection.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(name), sql.Literal(plan.key())
                    )
                )
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as connection:
                connection.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def store_last_diff(database_url: str, plan: SeedPlan) -> float | None:
    """Store the last sweep's diff against the one before, with the function the
    sweep's close step uses (seconds taken; None when already stored)."""
    import asyncio

    from sqlalchemy import update

    from fleet.db.models import Sweep
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.repositories.diff import sweep_diff

    async def store() -> float | None:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                last = await session.get(Sweep, plan.sweeps)
                if last is None or last.diff is not None:
                    return None
                started = time.perf_counter()
                diff = await sweep_diff(session, plan.sweeps, plan.sweeps - 1 or None)
                await session.execute(
                    update(Sweep).where(Sweep.id == plan.sweeps).values(diff=diff.to_dict())
                )
                await session.commit()
                return time.perf_counter() - started
        finally:
            await engine.dispose()

    return asyncio.run(store())


def create_keys(database_url: str, manager: int) -> dict[str, str]:
    """An admin key and an account-manager key (for ``manager``), made by the
    repository's own ``create_key``."""
    import asyncio

    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.repositories import apikeys

    async def make() -> dict[str, str]:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                keys = {}
                for role in ROLES:
                    new = await apikeys.create_key(
                        session,
                        role=role,
                        name=f"bench {role}",
                        account_manager_id=manager if role == "account_manager" else None,
                    )
                    keys[role] = new.secret
                await session.commit()
                return keys
        finally:
            await engine.dispose()

    return asyncio.run(make())


def route_values(plan: SeedPlan, manager: int) -> dict[str, str]:
    """Ids and values for ``Route.path``: all visible to the account manager's key."""
    now = dt.datetime.now(dt.UTC)
    customer = manager  # customer c belongs to manager (c - 1) % managers + 1
    domain = customer  # domain d belongs to customer (d - 1) % customers + 1
    endpoint = (domain * USES_PER_DOMAIN) % plan.endpoints + 1
    return {
        "manager": str(manager),
        "customer": str(customer),
        "domain": str(domain),
        "endpoint": str(endpoint),
        "sweep": str(plan.sweeps),
        "previous_sweep": str(max(1, plan.sweeps - 1)),
        "in_30_days": (now + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "deep_cursor": encode_cursor(int(plan.domains * 0.9)),
    }


# -- the server -----------------------------------------------------------------------------


def app_factory() -> FastAPI:
    """The application from ``TLSFLEET_*`` settings: what uvicorn's ``--factory`` runs
    in each worker process when ``--workers`` is more than one."""
    from api.app import create_app
    from fleet.settings import load_settings

    return create_app(load_settings())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def api_server(
    database_url: str, redis_url: str, workers: int, log: Path
) -> Iterator[tuple[str, list[int]]]:
    """The API in its own process (group) on 127.0.0.1; its base URL and process ids."""
    port = free_port()
    env = {
        **os.environ,
        "TLSFLEET_DATABASE_URL": database_url,
        "TLSFLEET_REDIS_URL": redis_url,
    }
    if workers == 1:
        tlsfleet = shutil.which("tlsfleet", path=str(Path(sys.executable).parent)) or "tlsfleet"
        command = [tlsfleet, "api", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.bench_api:app_factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited ({process.returncode}): see {log}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(base + "/healthz", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer within 60 s: see {log}")
            time.sleep(0.2)
        yield base, [process.pid]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def probe(url: str, key: str) -> tuple[int, int]:
    """Status and body size of one request."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, len(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, len(exc.read())


# -- wrk ------------------------------------------------------------------------------------

LUA = """
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY")

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "non_2xx": %d, '
    .. '"socket_errors": %d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


@dataclass(slots=True)
class RunFigures:
    route: str
    kind: str
    role: str
    path: str
    status: int
    body_bytes: int = 0
    missing: bool = False
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    non_2xx: int = 0
    socket_errors: int = 0
    problems: list[str] = field(default_factory=list)


def run_wrk(
    url: str, key: str, script: Path, connections: int, threads: int, duration: float
) -> dict[str, Any]:
    env = {**os.environ, "BENCH_API_KEY": key}
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(x for x in reversed(output.splitlines()) if x.startswith("{"))
    figures: dict[str, Any] = json.loads(line)
    return figures


def measure(
    base: str,
    keys: dict[str, str],
    values: dict[str, str],
    args: argparse.Namespace,
    script: Path,
) -> list[RunFigures]:
    runs: list[RunFigures] = []
    for route in ROUTES:
        path = route.path.format(**values)
        for role in route.roles:
            if role not in args.roles:
                continue
            status, size = probe(base + path, keys[role])
            figures = RunFigures(route.name, route.kind, role, path, status, size)
            runs.append(figures)
            if status == 404 and probe(base + path, keys["admin"])[0] == 404:
                figures.missing = True
                console.print(f"  {route.name} ({role}): missing (404)")
                continue
            if status != 200:
                figures.problems.append(f"probe answered {status}")
                console.print(f"  {route.name} ({role}): [red]{status}[/red]")
                continue
            run_wrk(base + path, keys[role], script, args.connections, args.threads, 1)
            found = run_wrk(
                base + path, keys[role], script, args.connections, args.threads, args.duration
            )
            figures.requests = found["requests"]
            figures.rps = found["requests"] / (found["duration_us"] / 1e6)
            figures.p50_ms = found["p50_us"] / 1000
            figures.p90_ms = found["p90_us"] / 1000
            figures.p99_ms = found["p99_us"] / 1000
            figures.max_ms = found["max_us"] / 1000
            figures.non_2xx = found["non_2xx"]
            figures.socket_errors = found["socket_errors"]
            if figures.non_2xx or figures.socket_errors:
                figures.problems.append(
                    f"{figures.non_2xx} non-2xx answers, {figures.socket_errors} socket errors"
                )
            console.print(
                f"  {route.name} ({role}): p50 {figures.p50_ms:.1f} ms, "
                f"p99 {figures.p99_ms:.1f} ms, {figures.rps:.0f} req/s"
            )
    return runs


# -- report ---------------------------------------------------------------------------------


def machine_info(admin_url: str) -> dict[str, Any]:
    with psycopg.connect(admin_url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        settings: dict[str, str] = dict(
            connection.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings "
                "WHERE name IN ('shared_buffers', 'work_mem', 'effective_cache_size', "
                "'max_parallel_workers_per_gather')"
            ).fetchall()
        )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgresql": row[0] if row else None,
        "postgresql_settings": settings,
        "wrk": wrk.splitlines()[0] if wrk else None,
        "load_average": os.getloadavg(),
    }


def render(runs: Sequence[RunFigures]) -> None:
    table = Table(title="API latency per route")
    for name in ("route", "role", "status", "KB", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(name, justify="left" if name in ("route", "role") else "right")
    for r in runs:
        if r.missing:
            table.add_row(r.route, r.role, "missing", "", "", "", "", "", "")
            continue
        table.add_row(
            r.route,
            r.role,
            str(r.status),
            f"{r.body_bytes / 1024:.1f}",
            f"{r.rps:.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p90_ms:.1f}",
            f"[red]{r.p99_ms:.1f}[/red]" if r.p99_ms >= 100 else f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
        )
    Console(width=160).print(table)


def ensure_wrk(install: bool) -> None:
    if shutil.which("wrk"):
        return
    if install and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        return
    raise SystemExit("wrk is not installed: apt-get install wrk (or --install-wrk as root)")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=100_000, help="domains (100,000)")
    parser.add_argument("--results", type=int, default=1_000_000, help="results (1,000,000)")
    parser.add_argument("--sweeps", type=int, default=10, help="sweeps the results span (10)")
    parser.add_argument("--managers", type=int, default=50, help="account managers (50)")
    parser.add_argument("--database-url", help="a PostgreSQL server (its role may CREATE DATABASE)")
    parser.add_argument("--database-name", default=DATABASE_NAME, help="(tlsfleet_bench)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the seeded database")
    parser.add_argument("--seed-only", action="store_true", help="seed, then stop")
    parser.add_argument("--workers", type=int, default=1, help="API worker processes (1)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (4)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (10)")
    parser.add_argument(
        "--roles",
        default=",".join(ROLES),
        help="comma list of roles to run (admin,account_manager)",
    )
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk (root)")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    args = parser.parse_args(argv)
    args.roles = tuple(r for r in args.roles.split(",") if r)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    ensure_wrk(args.install_wrk)
    plan = SeedPlan(args.domains, args.results, args.sweeps, args.managers)
    admin_url = server_url(args.database_url)
    problems: list[str] = []
    report: dict[str, Any] = {"plan": asdict(plan), "machine": machine_info(admin_url)}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with bench_database(admin_url, args.database_name, plan, args.keep) as (url, seeded):
        if seeded:
            console.print(f"reusing the seeded database {args.database_name}")
            # Migrations added since it was seeded backfill from its results.
            upgrade(url)
        else:
            console.print(
                f"seeding {args.database_name}: {plan.domains:,} domains, "
                f"{plan.endpoints * plan.sweeps:,} results"
            )
            report["seed_seconds"] = seed(url, plan)
            for step, seconds in report["seed_seconds"].items():
                console.print(f"  {step}: {seconds:.1f} s")
        diff_seconds = store_last_diff(url, plan)
        if diff_seconds is not None:
            console.print(f"  the last sweep's diff stored in {diff_seconds:.1f} s")
            report["diff_seconds"] = diff_seconds
        counts = table_counts(url)
        report["rows"] = counts
        problems += check_counts(counts, plan)
        report["database_bytes"] = _database_size(admin_url, args.database_name)
        if args.seed_only:
            return _finish(report, problems, args.json)
        keys = create_keys(url, manager=1)
        values = route_values(plan, manager=1)
        with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
            script = Path(tmp) / "auth.lua"
            script.write_text(LUA)
            log = Path(tmp) / "api.log"
            with api_server(url, args.redis_url, args.workers, log) as (base, _pids):
                report["load_before"] = os.getloadavg()
                runs = measure(base, keys, values, args, script)
                report["load_after"] = os.getloadavg()
        report["runs"] = [asdict(r) for r in runs]
        report["settings"] = {
            "workers": args.workers,
            "connections": args.connections,
            "threads": args.threads,
            "duration": args.duration,
        }
        problems += [f"{r.route} ({r.role}): {p}" for r in runs for p in r.problems]
        render(runs)
    return _finish(report, problems, args.json)


def _database_size(admin_url: str, name: str) -> int:
    with psycopg.connect(admin_url) as connection:
        row = connection.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row else 0


def _finish(report: dict[str, Any], problems: list[str], path: Path | None) -> int:
    report["problems"] = problems
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    for problem in problems:
        console.print(f"[red]problem:[/red] {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
