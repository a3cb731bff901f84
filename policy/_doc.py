"""Tolerant, typed reads from a result document (``EndpointResult.to_dict()``).

Stored documents can be old, partial or hand-edited: every accessor returns None (or an
empty value) for a missing or mistyped field instead of raising, so that a judgement
never claims more than the document says and never crashes on what it lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Versions in the document's order, oldest first.
VERSIONS: tuple[str, ...] = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
LEGACY_TLS: tuple[str, ...] = ("TLSv1.0", "TLSv1.1")
SSL: tuple[str, ...] = ("SSLv2", "SSLv3")
MODERN_TLS: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")


def mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def sub(doc: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    return mapping(doc.get(key)) if doc is not None else None


def flag(doc: Mapping[str, Any] | None, key: str) -> bool | None:
    """A true/false field; None when missing, null or not a boolean."""
    if doc is None:
        return None
    value = doc.get(key)
    return value if isinstance(value, bool) else None


def text(doc: Mapping[str, Any] | None, key: str) -> str | None:
    if doc is None:
        return None
    value = doc.get(key)
    return value if isinstance(value, str) else None


def integer(doc: Mapping[str, Any] | None, key: str) -> int | None:
    if doc is None:
        return None
    value = doc.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def strings(value: object) -> tuple[str, ...] | None:
    """A list of strings (non-strings dropped); None when it is not a list at all."""
    if not isinstance(value, list | tuple):
        return None
    return tuple(v for v in value if isinstance(v, str))


def timestamp(value: object) -> datetime | None:
    """An ISO 8601 time (``2026-12-30T00:00:00Z``) as an aware UTC datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class EndpointRef:
    """Which endpoint a finding is about (from the document's ``target``)."""

    host: str | None
    ip: str | None
    port: int | None
    service: str | None
    sni: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ip": self.ip,
            "port": self.port,
            "service": self.service,
            "sni": self.sni,
        }

    def __str__(self) -> str:
        name = self.host or self.ip or "?"
        return f"{name}:{self.port if self.port is not None else '?'} ({self.service or '?'})"


def endpoint_ref(doc: Mapping[str, Any] | None) -> EndpointRef:
    target = sub(doc, "target")
    return EndpointRef(
        host=text(target, "host"),
        ip=text(target, "ip"),
        port=integer(target, "port"),
        service=text(target, "service"),
        sni=text(target, "sni"),
    )


def protocols(doc: Mapping[str, Any] | None) -> dict[str, bool | None]:
    """Every version with True/False, or None where the document does not decide it."""
    table = sub(doc, "protocols")
    return {v: flag(table, v) for v in VERSIONS}


def suites(doc: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Accepted suites per version; versions without a (list) entry are left out."""
    table = sub(doc, "cipher_suites")
    if table is None:
        return {}
    found: dict[str, tuple[str, ...]] = {}
    for version in VERSIONS:
        names = strings(table.get(version))
        if names is not None:
            found[version] = names
    return found


def is_ok(doc: Mapping[str, Any] | None) -> bool:
    return text(doc, "status") == "ok"
