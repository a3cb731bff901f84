"""Mail-log ingestion benchmark: lines per second and peak memory of ``tlsfleet logs
ingest`` on a generated syslog file.

What it does, all on this machine:

* **generates** ``--lines`` syslog lines (RFC 3164, one host) to a temporary file: about
  60 % Postfix smtpd (each connection: connect, TLS established on 85 %, a queue id with
  the SASL user on authenticated ones, disconnect; interleaved across 40 smtpd
  processes), 35 % Dovecot login-process lines (logins over TLS 1.0 to 1.3 or without
  TLS, failed logins, disconnects without a login), 5 % other programs; ``--accounts``
  accounts in ``--accounts / 10`` domains, 5 % of the accounts on TLS 1.0/1.1, 2 % without
  TLS, client addresses from a pool per account, over 21 days (the file dated by its
  last line);
* **ingests** it into a database of its own (``tlsfleet_bench_logs`` on the server of
  ``--database-url``, else ``TLSFLEET_DATABASE_URL``'s, else 127.0.0.1:5432; created,
  migrated, dropped at the end) with the production :class:`fleet.logs.ingest.Ingester`
  (the file path, with checkpoints), then ingests it again (which must count nothing);
* **reports** lines/s, peak RSS (``resource.getrusage``, the process's maximum), the
  counts, the stored rows, and the machine's load average, as JSON with ``--json``.

    python bench/bench_logs.py                    # 5,000,000 lines
    python bench/bench_logs.py --lines 200000     # a quick check

Exit status 1 when a check fails: the second ingest counted something, or a line was
malformed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from fleet.db.migrate import upgrade
from fleet.db.session import async_url, create_engine, create_sessionmaker, sync_url
from fleet.logs.ingest import Ingester, IngestOptions

DATABASE = "tlsfleet_bench_logs"
START = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
CIPHERS = {
    "TLSv1": "ECDHE-RSA-AES256-SHA",
    "TLSv1.1": "ECDHE-RSA-AES256-SHA",
    "TLSv1.2": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLSv1.3": "TLS_AES_256_GCM_SHA384",
}


def _stamp(moment: dt.datetime) -> str:
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"


def generate(path: Path, lines: int, accounts: int, seed: int = 7) -> int:
    """Write ``lines`` (about) syslog lines; the number written."""
    rng = random.Random(seed)
    names = [f"user{n}@domain{n % max(accounts // 10, 1)}.example" for n in range(accounts)]
    habit: list[str | None] = []
    for _ in names:
        r = rng.random()
        habit.append("TLSv1" if r < 0.04 else "TLSv1.1" if r < 0.05 else None if r < 0.07 else "")
    step = dt.timedelta(days=7) / lines
    written = 0
    moment = START
    smtpd: dict[int, list[str]] = {}
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        while written < lines:
            moment += step * 3
            stamp = _stamp(moment)
            kind = rng.random()
            n = rng.randrange(accounts)
            account, usual = names[n], habit[n]
            version = usual if usual else rng.choice(("TLSv1.2", "TLSv1.2", "TLSv1.3"))
            ip = f"198.51.{n % 250}.{rng.randrange(1, 4)}"
            if kind < 0.6:
                pid = rng.randrange(1000, 1040)
                pending = smtpd.get(pid)
                prefix = f"{stamp} mx1 postfix/submission/smtpd[{pid}]: "
                if pending:
                    out.write(prefix + pending.pop(0) + "\n")
                    if not pending:
                        del smtpd[pid]
                    written += 1
                    continue
                host = f"unknown[{ip}]"
                steps = []
                if usual is not None and rng.random() < 0.85:
                    cipher = CIPHERS[version]
                    steps.append(
                        f"Anonymous TLS connection established from {host}: {version} with "
                        f"cipher {cipher} (256/256 bits)"
                    )
                authenticated = rng.random() < 0.8
                if authenticated:
                    qid = f"{rng.getrandbits(48):012X}"
                    steps.append(
                        f"{qid}: client={host}, sasl_method=PLAIN, sasl_username={account}"
                    )
                steps.append(f"disconnect from {host} ehlo=1 auth={int(authenticated)} quit=1")
                smtpd[pid] = steps
                out.write(prefix + f"connect from {host}\n")
            elif kind < 0.95:
                service = rng.choice(("imap", "imap", "pop3"))
                r = rng.random()
                if r < 0.8:
                    tls = (
                        ""
                        if usual is None
                        else f", TLS, {version} with cipher {CIPHERS[version]} (256/256 bits)"
                    )
                    out.write(
                        f"{stamp} mx1 dovecot: {service}-login: Login: user=<{account}>, "
                        f"method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={rng.randrange(1 << 20)}"
                        f"{tls}, session=<{rng.getrandbits(64):016x}>\n"
                    )
                elif r < 0.9:
                    out.write(
                        f"{stamp} mx1 dovecot: {service}-login: Disconnected (auth failed, 1 "
                        f"attempts in 2 secs): user=<{account}>, method=PLAIN, rip={ip}, "
                        f"lip=192.0.2.1, TLS, session=<{rng.getrandbits(64):016x}>\n"
                    )
                else:
                    out.write(
                        f"{stamp} mx1 dovecot: {service}-login: Disconnected (no auth attempts "
                        f"in 0 secs): user=<>, rip={ip}, lip=192.0.2.1, session=<x>\n"
                    )
            else:
                out.write(f"{stamp} mx1 CRON[{rng.randrange(9999)}]: (root) CMD (run-parts)\n")
            written += 1
    # Syslog lines have no year: the ingest takes it from the file's modification time,
    # and a line more than a day after it belongs to the year before. Dated by its last
    # line, the file reads as one year, whenever the benchmark runs.
    os.utime(path, (moment.timestamp(), moment.timestamp()))
    return written


def _admin_url(given: str | None) -> str:
    url = (
        given
        or os.environ.get("TLSFLEET_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    return sync_url(make_url(url).set(database="postgres").render_as_string(hide_password=False))


async def _ingest(url: str, path: Path) -> tuple[dict[str, int], float]:
    engine = create_engine(url, pool_size=2)
    try:
        ingester = Ingester(create_sessionmaker(engine), IngestOptions())
        began = time.perf_counter()
        await ingester.ingest_file(path)
        summary = await ingester.finish()
        return summary.to_dict(), time.perf_counter() - began
    finally:
        await engine.dispose()


def _rows(url: str) -> dict[str, int]:
    with psycopg.connect(sync_url(url)) as connection:
        return {
            table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in ("mail_accounts", "mail_client_days")
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5_000_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--database-url")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)

    admin = _admin_url(args.database_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = async_url(make_url(admin).set(database=DATABASE)).render_as_string(hide_password=False)
    try:
        upgrade(url)
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "mail.log"
            began = time.perf_counter()
            lines = generate(path, args.lines, args.accounts)
            generated = time.perf_counter() - began
            first, seconds = asyncio.run(_ingest(url, path))
            again, again_seconds = asyncio.run(_ingest(url, path))
            size = path.stat().st_size
        rows = _rows(url)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
            )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {
        "lines": lines,
        "bytes": size,
        "generate_seconds": round(generated, 1),
        "ingest_seconds": round(seconds, 1),
        "lines_per_second": round(lines / seconds),
        "peak_rss_mib": round(peak_mib, 1),
        "summary": first,
        "again": {"seconds": round(again_seconds, 2), **again},
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before_and_after": os.getloadavg(),
        },
    }
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    failures = []
    if again["counted_logins"] or again["lines"]:
        failures.append("the second ingest counted lines again")
    if first["malformed"]:
        failures.append(f"{first['malformed']} malformed lines")
    for failure in failures:
        sys.stderr.write(f"FAIL: {failure}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
