"""Ingest mail-server logs into the per-(day, account) counters: files and streams.

Guarantees (docs/logs.md says them for operators):

- **A file** is known by the SHA-256 of its first line (its *identity*: a copy, a
  rename or a move of the same file is the same file; a rotated one, whose first line
  differs, is a new one). Its checkpoint (``log_sources``: byte offset after the last
  counted line, and the Postfix connections still open there) moves forward in the
  transaction that adds those lines' counts. Ingesting it again starts at the offset,
  so nothing is counted twice, a file that grew is read on from where it was, and an
  ingest killed half-way loses nothing (it resumes at the last flush). A line is read
  once it ends with a newline (a writer's half-written last line waits).
- **A stream** (``-``: standard input) has no offsets: each connection that counts is
  recorded by its key (``log_seen_connections``, per day, kept
  ``TLSFLEET_LOG_DEDUPE_DAYS``) in the transaction that counts it, so the same lines
  piped twice count once, however the two runs cut them, within that time.
- A malformed line is counted and skipped. Memory is bounded: counters are flushed
  every ``flush_lines`` lines or ``flush_seconds`` seconds (streams), or as soon as
  ``flush_rows`` (day, account) counters (files) or completed connections (streams) are
  held; the open Postfix connections are at most ``max_open`` (the oldest is completed
  early) and any open for longer than an hour of log time is completed
  (:class:`~fleet.logs.join.Joiner`).

A file's completed connections are added to the counters as they complete, so a flush
carries one row per (day, account) of its window, however many lines and logins it
covers; the flush writes them in a few statements (:func:`fleet.repositories.clients.add_days`).
The counts stored do not depend on where flushes fall.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.logs.aggregate import AccountMap, Aggregator, DayCounts
from fleet.logs.join import MAX_OPEN, Connection, Joiner
from fleet.logs.parser import Clock, Kind, parse_line
from fleet.repositories import clients as repo

__all__ = ["IngestOptions", "IngestSummary", "Ingester", "SourceConflictError", "file_identity"]

#: Longest line read as one (longer ones are malformed; syslog lines are < 8 KiB).
MAX_LINE = 64 * 1024
#: Account ids remembered between flushes.
_ID_CACHE = 200_000
#: Completed connections of a file held before they are added to the counters.
_DRAIN = 1_024
#: (day, account) rows sent to the database per statement.
_CHUNK = 10_000


class SourceConflictError(RuntimeError):
    """Another ingest moved this file's checkpoint while we read it."""


@dataclass(frozen=True, slots=True)
class IngestOptions:
    accounts: AccountMap = field(default_factory=AccountMap)
    zone: str = "UTC"
    flush_lines: int = 1_000_000
    flush_seconds: float = 5.0
    flush_rows: int = 50_000
    max_open: int = MAX_OPEN
    dedupe_days: int = 14


@dataclass(slots=True)
class IngestSummary:
    """What an ingest read and counted."""

    files: int = 0
    lines: int = 0
    malformed: int = 0
    ignored: int = 0
    skipped_bytes: int = 0
    connections: int = 0
    logins: int = 0
    counted_logins: int = 0
    failed_logins: int = 0
    legacy_logins: int = 0
    plaintext_logins: int = 0
    duplicates: int = 0
    accounts: int = 0
    unmapped: int = 0
    account_ids: set[int] = field(default_factory=set, repr=False)

    def to_dict(self) -> dict[str, int]:
        return {
            "files": self.files,
            "lines": self.lines,
            "malformed": self.malformed,
            "ignored": self.ignored,
            "skipped_bytes": self.skipped_bytes,
            "connections": self.connections,
            "logins": self.logins,
            "counted_logins": self.counted_logins,
            "failed_logins": self.failed_logins,
            "legacy_logins": self.legacy_logins,
            "plaintext_logins": self.plaintext_logins,
            "duplicates": self.duplicates,
            "accounts": len(self.account_ids),
            "unmapped": self.unmapped,
        }


def file_identity(first_line: bytes) -> str:
    """A file's identity: the SHA-256 of its first line (newline included)."""
    return hashlib.sha256(first_line).hexdigest()


def _row(account_id: int, day: dt.date, c: DayCounts) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "day": day,
        "logins": c.logins,
        "legacy_logins": c.legacy_logins,
        "plaintext_logins": c.plaintext_logins,
        "unknown_logins": c.unknown_logins,
        "protocols": c.protocols,
        "ciphers": c.ciphers,
        "mechanisms": c.mechanisms,
        "services": c.services,
        # Every address, first seen first: add_days decides which find room.
        "client_ips": c.client_ips | c.more_ips if c.more_ips else c.client_ips,
        "client_ips_other": c.client_ips_other - sum(c.more_ips.values()) if c.more_ips else 0,
        "first_seen": c.first_seen,
        "last_seen": c.last_seen,
        "legacy_first": c.legacy_first,
        "legacy_last": c.legacy_last,
        "plaintext_first": c.plaintext_first,
        "plaintext_last": c.plaintext_last,
    }


class Ingester:
    """Reads lines, joins and counts them, and flushes the counts (one transaction per
    flush). One instance per command; :attr:`summary` adds up over every source."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        options: IngestOptions,
        *,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.sessions = sessions
        self.options = options
        self.summary = IngestSummary()
        self._now = now
        self._ids: dict[str, int] = {}

    # -- the shared core ----------------------------------------------------------------

    def _feed(self, raw: bytes, clock: Clock, joiner: Joiner) -> None:
        summary = self.summary
        summary.lines += 1
        if len(raw) > MAX_LINE:
            summary.malformed += 1
            return
        parsed = parse_line(raw.decode("utf-8", "replace"), clock)
        if parsed.kind is Kind.EVENT:
            assert parsed.event is not None
            joiner.feed(parsed.event)
        elif parsed.kind is Kind.MALFORMED:
            summary.malformed += 1
        else:
            summary.ignored += 1

    def _completed(self, joiner: Joiner) -> list[Connection]:
        """The connections completed since the last call, counted in the summary; those
        with a login of a known account."""
        done, joiner.done = joiner.done, []
        summary = self.summary
        summary.connections += len(done)
        logins = []
        for c in done:
            if c.authenticated:
                summary.logins += 1
                if c.account is not None:
                    logins.append(c)
            elif c.failed:
                summary.failed_logins += 1
        return logins

    def _aggregate(self, joiner: Joiner, aggregator: Aggregator) -> None:
        for c in self._completed(joiner):
            aggregator.add(c)

    async def _count(self, session: AsyncSession, aggregator: Aggregator) -> None:
        rows, domains = aggregator.take()
        missing = {a: d for a, d in domains.items() if a not in self._ids}
        if missing:
            if len(self._ids) + len(missing) > _ID_CACHE:
                self._ids.clear()
                missing = domains  # every account of these rows needs its id again
            self._ids.update(await repo.upsert_accounts(session, missing))
        ids = self._ids
        summary = self.summary
        for (_, account), counts in rows.items():
            summary.account_ids.add(ids[account])
            summary.counted_logins += counts.logins
            summary.legacy_logins += counts.legacy_logins
            summary.plaintext_logins += counts.plaintext_logins
        # In chunks, each counter dropped once sent: a flush holds its counters and
        # one chunk's rows, not a second copy of everything.
        while rows:
            chunk = [rows.popitem() for _ in range(min(_CHUNK, len(rows)))]
            await repo.add_days(
                session, [_row(ids[account], day, counts) for (day, account), counts in chunk]
            )

    async def finish(self) -> IngestSummary:
        """Count the unmapped accounts among those seen; the summary."""
        async with self.sessions() as session:
            self.summary.unmapped = await repo.unmapped_among(
                session, sorted(self.summary.account_ids)
            )
        self.summary.accounts = len(self.summary.account_ids)
        return self.summary

    # -- files ---------------------------------------------------------------------------

    async def ingest_file(self, path: Path, progress: Callable[[int], None] | None = None) -> None:
        """Ingest one file from its checkpoint on (see the module's guarantees)."""
        with path.open("rb") as handle:
            first = handle.readline(MAX_LINE)
            if not first.endswith(b"\n"):
                return  # empty, or its first line is not complete yet
            identity = file_identity(first)
            size = os.fstat(handle.fileno()).st_size
            async with self.sessions() as session:
                source = await repo.open_source(session, identity, str(path))
                source_id, offset, lines, saved = (
                    source.id,
                    source.offset,
                    source.lines,
                    list(source.state),
                )
                if offset > size:  # same first line, shorter: rewritten in place
                    offset, lines, saved = 0, 0, []
                await session.commit()
            self.summary.files += 1
            self.summary.skipped_bytes += offset
            if progress is not None and offset:
                progress(offset)
            handle.seek(offset)
            mtime = dt.datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime, dt.UTC)
            clock = Clock(mtime, self.options.zone)
            joiner = Joiner(self.options.max_open)
            joiner.restore(saved)
            await self._read_file(handle, source_id, offset, lines, clock, joiner, path, progress)

    async def _read_file(
        self,
        handle: BinaryIO,
        source_id: int,
        offset: int,
        lines: int,
        clock: Clock,
        joiner: Joiner,
        path: Path,
        progress: Callable[[int], None] | None,
    ) -> None:
        expected = offset
        pending = 0
        reported = offset
        flush_lines, flush_rows = self.options.flush_lines, self.options.flush_rows
        aggregator = Aggregator(self.options.accounts)
        counters = aggregator.rows
        while True:
            raw = handle.readline(MAX_LINE + 1)
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_LINE:  # an overlong line: skip to its end
                    offset += len(raw)
                    self.summary.lines += 1
                    self.summary.malformed += 1
                    while raw and not raw.endswith(b"\n"):
                        raw = handle.readline(MAX_LINE + 1)
                        offset += len(raw)
                    continue
                break  # end of file, or a line still being written
            offset += len(raw)
            lines += 1
            pending += 1
            self._feed(raw, clock, joiner)
            if len(joiner.done) >= _DRAIN:
                self._aggregate(joiner, aggregator)
            if pending >= flush_lines or len(counters) >= flush_rows:
                expected = await self._flush_file(
                    source_id, expected, offset, lines, joiner, aggregator, path
                )
                counters = aggregator.rows
                pending = 0
                if progress is not None:
                    progress(offset - reported)
                    reported = offset
        await self._flush_file(source_id, expected, offset, lines, joiner, aggregator, path)
        if progress is not None:
            progress(offset - reported)

    async def _flush_file(
        self,
        source_id: int,
        expected: int,
        offset: int,
        lines: int,
        joiner: Joiner,
        aggregator: Aggregator,
        path: Path,
    ) -> int:
        self._aggregate(joiner, aggregator)
        async with self.sessions() as session:
            source = await repo.lock_source(session, source_id)
            if source is None or source.offset != expected:
                raise SourceConflictError(
                    f"{path}: another ingest of this file moved its checkpoint; stopped"
                )
            await self._count(session, aggregator)
            await repo.save_source(
                session, source, offset=offset, lines=lines, state=joiner.state(), name=str(path)
            )
            await session.commit()
        return offset

    # -- streams -------------------------------------------------------------------------

    async def ingest_stream(self, fd: int) -> None:
        """Ingest a stream (standard input: ``fd`` 0) until it ends, flushing every
        ``flush_lines`` lines or ``flush_seconds`` seconds, also while it is quiet."""
        options = self.options
        async with self.sessions() as session:
            today = self._now().date()
            await repo.prune_seen(session, today - dt.timedelta(days=options.dedupe_days))
            await session.commit()
        clock = Clock(self._now(), options.zone)
        joiner = Joiner(options.max_open)
        buffer = b""
        pending = 0
        last_flush = time.monotonic()
        ended = False
        while not ended:
            wait = max(0.0, options.flush_seconds - (time.monotonic() - last_flush))
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                chunk = os.read(fd, 1 << 16)
                ended = not chunk
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_LINE:
                    self.summary.lines += 1
                    self.summary.malformed += 1
                    buffer = b""
                clock.advance(self._now())
                for raw in complete:
                    self._feed(raw + b"\n", clock, joiner)
                pending += len(complete)
            due = time.monotonic() - last_flush >= options.flush_seconds
            full = pending >= options.flush_lines or len(joiner.done) >= options.flush_rows
            if ended or full or (due and pending):
                if ended:
                    if buffer.strip():
                        self._feed(buffer, clock, joiner)
                    joiner.close()
                await self._flush_stream(joiner)
                pending = 0
                last_flush = time.monotonic()
            elif due:
                last_flush = time.monotonic()

    async def _flush_stream(self, joiner: Joiner) -> None:
        logins = self._completed(joiner)
        unique: dict[tuple[dt.date, bytes], Connection] = {}
        for c in logins:
            key = (c.time.date(), c.key)
            if key in unique:
                self.summary.duplicates += 1
            else:
                unique[key] = c
        async with self.sessions() as session:
            new = await repo.claim_connections(session, list(unique))
            self.summary.duplicates += len(unique) - len(new)
            aggregator = Aggregator(self.options.accounts)
            for k, c in unique.items():
                if k in new:
                    aggregator.add(c)
            await self._count(session, aggregator)
            await session.commit()
