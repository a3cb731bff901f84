"""What changed between two sweeps, computed in one SQL statement.

Categories (each a list of endpoints with the domains that use them):

- ``new_endpoints`` / ``vanished_endpoints``: in this sweep's discovery and not in the
  previous one's, and the other way round (domains as of the sweep that had them);
- ``newly_legacy_tls`` / ``fixed_legacy_tls``: the endpoint now accepts a protocol
  older than TLS 1.2 (SSLv2, SSLv3, TLS 1.0 or 1.1: ``lowest_protocol <= 3``) and did
  not before, or the reverse;
- ``newly_plaintext_login`` / ``fixed_plaintext_login``: a password can now be sent
  before TLS and could not before, or the reverse.

The legacy and plaintext categories compare endpoints with an ``ok`` result in both
sweeps: an endpoint that failed in either sweep is neither newly broken nor fixed.
A new endpoint's own state is in its entry (``legacy_tls``, ``plaintext_login``).

A closed sweep stores its diff against the previous closed sweep of the same scope
(``sweeps.diff``, :meth:`SweepDiff.to_dict`; read back with :meth:`SweepDiff.from_dict`);
:func:`sweep_diff` compares any two sweeps on demand (the API's ``?against=``), with
whatever results they hold at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["CATEGORIES", "DiffEntry", "SweepDiff", "sweep_diff"]

CATEGORIES: tuple[str, ...] = (
    "newly_legacy_tls",
    "fixed_legacy_tls",
    "newly_plaintext_login",
    "fixed_plaintext_login",
    "new_endpoints",
    "vanished_endpoints",
)

#: ``lowest_protocol`` ranks up to this one are legacy: 0 SSLv2 … 3 TLS 1.1.
LEGACY_MAX_RANK = 3


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """One endpoint in one diff category, with the domains that use it."""

    endpoint_id: int
    ip: str
    port: int
    service: str
    host: str
    domains: tuple[str, ...]
    #: The endpoint's state in this sweep (None: no ok result, or a vanished endpoint).
    legacy_tls: bool | None = None
    plaintext_login: bool | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiffEntry:
        """The inverse of :meth:`to_dict`."""
        return cls(
            endpoint_id=int(data["endpoint_id"]),
            ip=str(data["ip"]),
            port=int(data["port"]),
            service=str(data["service"]),
            host=str(data["host"]),
            domains=tuple(str(d) for d in data.get("domains", ())),
            legacy_tls=data.get("legacy_tls"),
            plaintext_login=data.get("plaintext_login"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint_id": self.endpoint_id,
            "ip": self.ip,
            "port": self.port,
            "service": self.service,
            "host": self.host,
            "domains": list(self.domains),
            "legacy_tls": self.legacy_tls,
            "plaintext_login": self.plaintext_login,
        }


@dataclass(frozen=True, slots=True)
class SweepDiff:
    """The diff of a sweep against the previous closed one (None: there was none, and
    every endpoint is new)."""

    sweep_id: int
    previous_sweep_id: int | None
    entries: dict[str, tuple[DiffEntry, ...]] = field(default_factory=dict)

    def __getitem__(self, category: str) -> tuple[DiffEntry, ...]:
        if category not in CATEGORIES:
            raise KeyError(category)
        return self.entries.get(category, ())

    def domains(self, category: str) -> list[str]:
        """Every domain affected by one category, sorted."""
        return sorted({d for entry in self[category] for d in entry.domains})

    def counts(self) -> dict[str, int]:
        """Entries per category (every category, zeros included)."""
        return {c: len(self[c]) for c in CATEGORIES}

    def listing(self, category: str | None = None) -> list[tuple[str, DiffEntry]]:
        """Every (category, entry), or one category's, in a stable order: by category
        (in :data:`CATEGORIES` order), then endpoint id."""
        chosen = CATEGORIES if category is None else (category,)
        return [
            (c, entry) for c in chosen for entry in sorted(self[c], key=lambda e: e.endpoint_id)
        ]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepDiff:
        """A diff as stored in ``sweeps.diff`` (categories it lacks are empty)."""
        previous = data.get("previous_sweep_id")
        return cls(
            sweep_id=int(data["sweep_id"]),
            previous_sweep_id=int(previous) if previous is not None else None,
            entries={
                c: tuple(DiffEntry.from_dict(entry) for entry in data.get(c) or ())
                for c in CATEGORIES
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """The form stored in ``sweeps.diff``."""
        return {
            "sweep_id": self.sweep_id,
            "previous_sweep_id": self.previous_sweep_id,
            "counts": self.counts(),
            **{c: [entry.to_dict() for entry in self[c]] for c in CATEGORIES},
        }


_DIFF_SQL = text(
    """
    WITH cur AS (
        SELECT DISTINCT endpoint_id FROM domain_endpoints WHERE sweep_id = :cur
    ), prev AS (
        SELECT DISTINCT endpoint_id FROM domain_endpoints WHERE sweep_id = :prev
    ), both_ok AS (
        SELECT c.endpoint_id,
               coalesce(c.lowest_protocol <= :legacy, false) AS legacy_now,
               coalesce(p.lowest_protocol <= :legacy, false) AS legacy_before,
               c.plaintext_before_tls AS plaintext_now,
               p.plaintext_before_tls AS plaintext_before
        FROM scan_results AS c
        JOIN scan_results AS p
          ON p.endpoint_id = c.endpoint_id AND p.sweep_id = :prev AND p.status = 'ok'
        WHERE c.sweep_id = :cur AND c.status = 'ok'
    ), changes AS (
        SELECT 'new_endpoints' AS category, endpoint_id, CAST(:cur AS integer) AS sweep_id
        FROM (SELECT endpoint_id FROM cur EXCEPT SELECT endpoint_id FROM prev) AS n
        UNION ALL
        SELECT 'vanished_endpoints', endpoint_id, CAST(:prev AS integer)
        FROM (SELECT endpoint_id FROM prev EXCEPT SELECT endpoint_id FROM cur) AS v
        UNION ALL
        SELECT 'newly_legacy_tls', endpoint_id, :cur FROM both_ok
        WHERE legacy_now AND NOT legacy_before
        UNION ALL
        SELECT 'fixed_legacy_tls', endpoint_id, :cur FROM both_ok
        WHERE legacy_before AND NOT legacy_now
        UNION ALL
        SELECT 'newly_plaintext_login', endpoint_id, :cur FROM both_ok
        WHERE plaintext_now AND NOT coalesce(plaintext_before, false)
        UNION ALL
        SELECT 'fixed_plaintext_login', endpoint_id, :cur FROM both_ok
        WHERE plaintext_before AND plaintext_now IS false
    )
    SELECT ch.category, e.id, e.ip, e.port, e.service, e.host,
           ARRAY(
               SELECT DISTINCT d.name
               FROM domain_endpoints AS de JOIN domains AS d ON d.id = de.domain_id
               WHERE de.sweep_id = ch.sweep_id AND de.endpoint_id = ch.endpoint_id
               ORDER BY d.name
           ) AS domains,
           CASE WHEN r.status = 'ok' THEN coalesce(r.lowest_protocol <= :legacy, false) END
               AS legacy_tls,
           CASE WHEN r.status = 'ok' THEN r.plaintext_before_tls END AS plaintext_login
    FROM changes AS ch
    JOIN endpoints AS e ON e.id = ch.endpoint_id
    LEFT JOIN scan_results AS r ON r.sweep_id = :cur AND r.endpoint_id = ch.endpoint_id
    ORDER BY ch.category, e.ip, e.port, e.service
    """
)


async def sweep_diff(session: AsyncSession, sweep_id: int, previous_id: int | None) -> SweepDiff:
    """The diff of sweep ``sweep_id`` against ``previous_id`` (None: no previous sweep),
    from what both hold now. Any two sweeps compare, whatever their order or status:
    ``previous_id`` is the baseline. One SQL statement."""
    rows = await session.execute(
        _DIFF_SQL, {"cur": sweep_id, "prev": previous_id, "legacy": LEGACY_MAX_RANK}
    )
    found: dict[str, list[DiffEntry]] = {c: [] for c in CATEGORIES}
    for row in rows:
        found[row.category].append(
            DiffEntry(
                endpoint_id=row.id,
                ip=row.ip,
                port=row.port,
                service=row.service,
                host=row.host,
                domains=tuple(row.domains),
                legacy_tls=row.legacy_tls,
                plaintext_login=row.plaintext_login,
            )
        )
    return SweepDiff(
        sweep_id=sweep_id,
        previous_sweep_id=previous_id,
        entries={c: tuple(entries) for c, entries in found.items()},
    )
