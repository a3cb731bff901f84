"""Connections → counters per (day, account); accounts → domains. Pure.

Only connections with a login and a known account count here (the summary counts the
rest). A day is the UTC date of the connection. Each (day, account) keeps: logins; those
over TLS 1.0/1.1 (or SSL), without TLS, and whose transport the logs left unknown;
counts per protocol version, per cipher suite (``"TLSv1.0 ECDHE-RSA-AES256-SHA"``), per
mechanism and per service; up to :data:`MAX_CLIENT_IPS` client addresses with counts
(logins from further addresses are counted in ``client_ips_other``; which addresses
they were is kept until the counts are stored, where the stored day's addresses come
first); first and last login, and first and last legacy and plaintext login.

The account map (``TLSFLEET_LOG_ACCOUNT_MAP``): a CSV file with a header ``match,domain``;
``match`` is an account (case-insensitive) or, between slashes, a regular expression
the whole account must match (``/^info-.*$/``). Exact matches win, then patterns in file
order; accounts the map does not name belong to the domain after their last ``@``;
others (``tester``) have none and count as unmapped.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fleet.logs.join import Connection
from fleet.logs.parser import LEGACY_PROTOCOLS

__all__ = ["MAX_CLIENT_IPS", "AccountMap", "Aggregator", "DayCounts", "normalise_domain"]

#: Client addresses kept per account and day.
MAX_CLIENT_IPS = 20
_DOMAIN_CACHE = 100_000


def normalise_domain(name: str) -> str | None:
    """A domain as the inventory spells it: lower case A-labels, no trailing dot."""
    name = name.strip().rstrip(".").lower()
    if not name:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return name if len(name) <= 253 else None


class AccountMap:
    """Which domain an account belongs to."""

    def __init__(
        self,
        exact: dict[str, str] | None = None,
        patterns: list[tuple[re.Pattern[str], str]] | None = None,
    ) -> None:
        self.exact = dict(exact or {})
        self.patterns = list(patterns or [])
        self._cache: dict[str, str | None] = {}

    @classmethod
    def load(cls, path: Path) -> AccountMap:
        """Read a ``match,domain`` CSV file; ValueError naming the line of a bad row."""
        exact: dict[str, str] = {}
        patterns: list[tuple[re.Pattern[str], str]] = []
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or {"match", "domain"} - set(reader.fieldnames):
                raise ValueError(f"{path}: the header must name the columns match,domain")
            for row in reader:
                line = reader.line_num
                match, domain = (row.get("match") or "").strip(), row.get("domain") or ""
                target = normalise_domain(domain)
                if not match or target is None:
                    raise ValueError(f"{path}:{line}: needs a match and a domain")
                if len(match) >= 2 and match.startswith("/") and match.endswith("/"):
                    try:
                        patterns.append((re.compile(match[1:-1], re.IGNORECASE), target))
                    except re.error as exc:
                        raise ValueError(f"{path}:{line}: bad pattern: {exc}") from None
                else:
                    exact[match.lower()] = target
        return cls(exact, patterns)

    def domain(self, account: str) -> str | None:
        """The domain of ``account`` (lower case), or None."""
        cached = self._cache.get(account, "")
        if cached != "":
            return cached
        found = self.exact.get(account)
        if found is None:
            found = next((d for p, d in self.patterns if p.fullmatch(account)), None)
        if found is None and "@" in account:
            found = normalise_domain(account.rsplit("@", 1)[1])
        if len(self._cache) >= _DOMAIN_CACHE:
            self._cache.clear()
        self._cache[account] = found
        return found


def _earliest(a: dt.datetime | None, b: dt.datetime) -> dt.datetime:
    return b if a is None or b < a else a


def _latest(a: dt.datetime | None, b: dt.datetime) -> dt.datetime:
    return b if a is None or b > a else a


@dataclass(slots=True)
class DayCounts:
    """One account's logins on one day."""

    first_seen: dt.datetime
    last_seen: dt.datetime
    logins: int = 0
    legacy_logins: int = 0
    plaintext_logins: int = 0
    unknown_logins: int = 0
    protocols: Counter[str] = field(default_factory=Counter)
    ciphers: Counter[str] = field(default_factory=Counter)
    mechanisms: Counter[str] = field(default_factory=Counter)
    services: Counter[str] = field(default_factory=Counter)
    client_ips: dict[str, int] = field(default_factory=dict)
    client_ips_other: int = 0
    #: The addresses counted in ``client_ips_other``, first seen first (only while the
    #: counts are held: merging with stored ones must see which addresses they were).
    more_ips: dict[str, int] | None = None
    legacy_first: dt.datetime | None = None
    legacy_last: dt.datetime | None = None
    plaintext_first: dt.datetime | None = None
    plaintext_last: dt.datetime | None = None

    def add(self, c: Connection) -> None:
        time = c.time
        self.first_seen = _earliest(self.first_seen, time)
        self.last_seen = _latest(self.last_seen, time)
        self.logins += 1
        self.services[c.service] += 1
        if c.method:
            self.mechanisms[c.method] += 1
        if c.transport == "tls":
            protocol = c.protocol or "unknown"
            self.protocols[protocol] += 1
            if c.cipher:
                self.ciphers[f"{protocol} {c.cipher}"] += 1
            if protocol in LEGACY_PROTOCOLS:
                self.legacy_logins += 1
                self.legacy_first = _earliest(self.legacy_first, time)
                self.legacy_last = _latest(self.legacy_last, time)
        elif c.transport == "plaintext":
            self.protocols["none"] += 1
            self.plaintext_logins += 1
            self.plaintext_first = _earliest(self.plaintext_first, time)
            self.plaintext_last = _latest(self.plaintext_last, time)
        elif c.transport == "secured":
            self.protocols["secured"] += 1
        else:
            self.unknown_logins += 1
        if c.client_ip:
            if c.client_ip in self.client_ips or len(self.client_ips) < MAX_CLIENT_IPS:
                self.client_ips[c.client_ip] = self.client_ips.get(c.client_ip, 0) + 1
            else:
                self.client_ips_other += 1
                if self.more_ips is None:
                    self.more_ips = {}
                self.more_ips[c.client_ip] = self.more_ips.get(c.client_ip, 0) + 1


class Aggregator:
    """Collects (day, account) counters until :meth:`take`; bounded by the caller's
    flushing (its size is at most the accounts seen since the last flush)."""

    def __init__(self, accounts: AccountMap | None = None) -> None:
        self.accounts = accounts or AccountMap()
        self.rows: dict[tuple[dt.date, str], DayCounts] = {}
        self.domains: dict[str, str | None] = {}

    def add(self, c: Connection) -> bool:
        """Count a connection; False when it is no login of a known account."""
        if not c.authenticated or c.account is None:
            return False
        account = c.account[:320]
        key = (c.time.date(), account)
        counts = self.rows.get(key)
        if counts is None:
            counts = self.rows[key] = DayCounts(first_seen=c.time, last_seen=c.time)
            if account not in self.domains:
                self.domains[account] = self.accounts.domain(account)
        counts.add(c)
        return True

    def take(self) -> tuple[dict[tuple[dt.date, str], DayCounts], dict[str, str | None]]:
        """Everything collected since the last take, and start afresh."""
        rows, domains = self.rows, self.domains
        self.rows, self.domains = {}, {}
        return rows, domains
