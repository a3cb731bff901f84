"""The inventory file: reading, validating and writing CSV and JSON (no database here).

A file lists one hosted domain per row with its customer, the customer's account
manager (name and e-mail, optional) and optional tags::

    domain,customer,account_manager,account_manager_email,tags
    example.com,Example Ltd,Anna Berg,anna.berg@provider.example,vip;mail-only
    bücher.example,Bücher GmbH,,,

JSON is a list of objects with the same keys (``tags`` a list of strings or one
semicolon-separated string). :func:`read_inventory` yields raw rows (an unreadable file
raises :class:`InventoryFileError`), :func:`validate_rows` turns them into
:class:`InventoryRecord` values and a :class:`RowError` per bad row — a bad row never
costs the good ones — and :class:`InventoryWriter` writes the export (CSV or JSON).
The database side is :mod:`fleet.repositories.inventory`.
"""

from __future__ import annotations

import csv
import functools
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from scanner.discovery import normalise_domain
from scanner.errors import TargetError
from scanner.targets import normalise_hostname

__all__ = [
    "FIELDS",
    "InventoryFileError",
    "InventoryFormat",
    "InventoryRecord",
    "InventoryWriter",
    "RawRow",
    "RowError",
    "Validated",
    "iter_chunks",
    "parse_tags",
    "read_inventory",
    "validate_email",
    "validate_rows",
    "write_inventory",
]

#: The columns (CSV header) and keys (JSON objects), in export order.
FIELDS: tuple[str, ...] = ("domain", "customer", "account_manager", "account_manager_email", "tags")
REQUIRED: tuple[str, ...] = ("domain", "customer")

InventoryFormat = Literal["csv", "json"]

#: Lengths of the database columns (fleet.db.models) and of e-mail parts (RFC 5321).
MAX_NAME = 200
MAX_EMAIL = 320
MAX_LOCAL_PART = 64
MAX_TAG = 64
MAX_TAGS = 50

#: Names idna would return unchanged (lower-case LDH labels, no "--" at positions 3-4,
#: which IDNA reserves): checking them by regex keeps 100k-row imports fast.
_LABEL = r"(?!..--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InventoryFileError(Exception):
    """The file cannot be read as an inventory at all (missing, not UTF-8, bad JSON,
    wrong columns): nothing in it is imported."""


@dataclass(frozen=True, slots=True)
class InventoryRecord:
    """One validated inventory row: A-label domain, names, lower-case e-mail, sorted tags.

    ``account_manager`` and ``account_manager_email`` are both set or both None (None:
    the row says nothing about the customer's account manager).
    """

    domain: str
    customer: str
    account_manager: str | None = None
    account_manager_email: str | None = None
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON export form (tags as a list)."""
        return {
            "domain": self.domain,
            "customer": self.customer,
            "account_manager": self.account_manager,
            "account_manager_email": self.account_manager_email,
            "tags": list(self.tags),
        }


@dataclass(frozen=True, slots=True)
class RawRow:
    """A row as read: ``row`` counts data rows from 1 (after the CSV header; the first
    JSON object is row 1); ``line`` is the CSV line it starts on (None for JSON)."""

    row: int
    values: Mapping[str, Any]
    line: int | None = None
    #: Set when the row cannot be read as a row at all (not an object, too many cells).
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row was rejected."""

    row: int
    reason: str
    line: int | None = None
    domain: str | None = None

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}: {self.reason}"


@dataclass(slots=True)
class Validated:
    """The outcome of :func:`validate_rows`: the good records and the bad rows."""

    records: list[InventoryRecord] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.records) + len(self.errors)


# -- reading ------------------------------------------------------------------------------


def _header_key(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def _detect_format(path: Path, head: str) -> InventoryFormat:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".csv":
        return "csv"
    return "json" if head.lstrip().startswith(("[", "{")) else "csv"


def read_inventory(path: Path, file_format: InventoryFormat | None = None) -> list[RawRow]:
    """The raw rows of an inventory file (CSV or JSON, from the suffix or the content).

    Raises :class:`InventoryFileError` when the file cannot be read, is not UTF-8, is not
    valid JSON (or not a list), or its CSV header lacks a required column or has an
    unknown one (a misspelt column would silently drop data).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InventoryFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InventoryFileError(f"{path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise InventoryFileError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise InventoryFileError(f"{path}: {exc.strerror or exc}") from None
    chosen = file_format or _detect_format(path, text[:100])
    return _read_json(path, text) if chosen == "json" else _read_csv(path, text)


def _read_json(path: Path, text: str) -> list[RawRow]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryFileError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, list):
        raise InventoryFileError(f"{path}: a JSON inventory is a list of objects")
    return [
        RawRow(row=number, values=item)
        if isinstance(item, dict)
        else RawRow(row=number, values={}, problem="not an object")
        for number, item in enumerate(data, start=1)
    ]


def _read_csv(path: Path, text: str) -> list[RawRow]:
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InventoryFileError(f"{path}: line 1: {exc}") from None
    if header is None or not any(cell.strip() for cell in header):
        raise InventoryFileError(f"{path}: empty file (expected a header: {','.join(FIELDS)})")
    keys = [_header_key(cell) for cell in header]
    unknown = [cell for cell, key in zip(header, keys, strict=True) if key not in FIELDS]
    missing = [name for name in REQUIRED if name not in keys]
    if unknown or missing:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(repr(u) for u in unknown)}")
        raise InventoryFileError(
            f"{path}: bad header: {'; '.join(problems)} (expected {','.join(FIELDS)})"
        )
    if len(set(keys)) != len(keys):
        raise InventoryFileError(f"{path}: a column appears twice in the header")
    rows: list[RawRow] = []
    number = 0
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InventoryFileError(f"{path}: line {line}: {exc}") from None
        if not any(cell.strip() for cell in cells):
            continue  # blank lines are not rows
        number += 1
        if len(cells) > len(keys):
            rows.append(RawRow(number, {}, line, problem="more cells than columns"))
        else:
            rows.append(RawRow(number, dict(zip(keys, cells, strict=False)), line))
    return rows


# -- validating ---------------------------------------------------------------------------


class _Invalid(Exception):
    pass


def _text(values: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = values.get(key)
    if value is None:
        if required:
            raise _Invalid(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{key} must be a string, not {type(value).__name__}")
    value = " ".join(value.split())
    if not value:
        if required:
            raise _Invalid(f"{key} is required")
        return None
    return value


def _name(values: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = _text(values, key, required=required)
    if value is not None:
        if len(value) > MAX_NAME:
            raise _Invalid(f"{key} is longer than {MAX_NAME} characters")
        if _CONTROL.search(value):
            raise _Invalid(f"{key} contains control characters")
    return value


def _domain_name(name: str) -> str:
    """:func:`scanner.discovery.normalise_domain`, with a fast path for names that are
    plainly valid already (idna takes ~50 µs a name)."""
    text = name.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    if len(text) <= 253 and _PLAIN_NAME.fullmatch(text):
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return text
    return normalise_domain(name)


@functools.lru_cache(maxsize=4096)
def _mail_domain(name: str) -> str:
    # Few distinct domains in a file's e-mail addresses: cache them.
    return normalise_hostname(name)


def validate_email(address: str) -> str:
    """A syntactically valid e-mail address, lower-cased, with an A-label domain part;
    raises ValueError saying what is wrong."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{address!r} is not an e-mail address")
    if len(local) > MAX_LOCAL_PART or not _LOCAL_PART.fullmatch(local):
        raise ValueError(f"{address!r}: invalid local part")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(f"{address!r}: invalid dots in the local part")
    try:
        ascii_domain = _mail_domain(domain)
    except TargetError as exc:
        raise ValueError(f"{address!r}: {exc.message}") from None
    if "." not in ascii_domain:
        raise ValueError(f"{address!r}: the domain part needs a dot")
    result = f"{local.lower()}@{ascii_domain}"
    if len(result) > MAX_EMAIL:
        raise ValueError(f"{address!r} is longer than {MAX_EMAIL} characters")
    return result


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags from ``"a; b"`` or ``["a", "b"]``: trimmed, de-duplicated, sorted; ValueError
    for a tag that is too long, contains ``;`` or a control character, or too many."""
    if value is None:
        return ()
    if isinstance(value, str):
        parts = value.split(";")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
        if any(";" in v for v in parts):
            raise ValueError("a tag must not contain ';'")
    else:
        raise ValueError("tags must be a semicolon-separated string or a list of strings")
    tags = sorted({" ".join(p.split()) for p in parts} - {""})
    for tag in tags:
        if len(tag) > MAX_TAG:
            raise ValueError(f"tag {tag[:20]!r}… is longer than {MAX_TAG} characters")
        if _CONTROL.search(tag):
            raise ValueError(f"tag {tag!r} contains control characters")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"more than {MAX_TAGS} tags")
    return tuple(tags)


def _record(values: Mapping[str, Any]) -> InventoryRecord:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise _Invalid(f"unknown field(s) {', '.join(unknown)}")
    raw_domain = _text(values, "domain", required=True)
    assert raw_domain is not None
    try:
        domain = _domain_name(raw_domain)
    except TargetError as exc:
        raise _Invalid(f"domain: {exc.message}") from None
    customer = _name(values, "customer", required=True)
    assert customer is not None
    manager = _name(values, "account_manager", required=False)
    email_text = _text(values, "account_manager_email", required=False)
    if (manager is None) != (email_text is None):
        raise _Invalid(
            "account_manager and account_manager_email go together: give both or neither"
        )
    email = None
    if email_text is not None:
        try:
            email = validate_email(email_text)
        except ValueError as exc:
            raise _Invalid(f"account_manager_email: {exc}") from None
    try:
        tags = parse_tags(values.get("tags"))
    except ValueError as exc:
        raise _Invalid(f"tags: {exc}") from None
    return InventoryRecord(domain, customer, manager, email, tags)


def validate_rows(rows: Iterable[RawRow]) -> Validated:
    """Validate every row; a bad row becomes a :class:`RowError`, the rest are kept.

    Besides each row on its own: a domain listed twice (the later row is rejected), an
    e-mail address given two different names, and a customer given two different
    account managers (the later row is rejected; rows without one never conflict).
    """
    result = Validated()
    seen_domain: dict[str, int] = {}
    manager_name: dict[str, tuple[str, int]] = {}
    customer_manager: dict[str, tuple[str, int]] = {}
    for raw in rows:
        try:
            if raw.problem is not None:
                raise _Invalid(raw.problem)
            record = _record(raw.values)
            first = seen_domain.get(record.domain)
            if first is not None:
                raise _Invalid(f"domain {record.domain} already listed in row {first}")
            if record.account_manager_email is not None:
                assert record.account_manager is not None
                known = manager_name.get(record.account_manager_email)
                if known is not None and known[0] != record.account_manager:
                    raise _Invalid(
                        f"account manager {record.account_manager_email} is named "
                        f"{known[0]!r} in row {known[1]}"
                    )
                owner = customer_manager.get(record.customer)
                if owner is not None and owner[0] != record.account_manager_email:
                    raise _Invalid(
                        f"customer {record.customer!r} has account manager {owner[0]} "
                        f"in row {owner[1]}"
                    )
                manager_name.setdefault(
                    record.account_manager_email, (record.account_manager, raw.row)
                )
                customer_manager.setdefault(
                    record.customer, (record.account_manager_email, raw.row)
                )
        except _Invalid as exc:
            domain = raw.values.get("domain")
            result.errors.append(
                RowError(raw.row, str(exc), raw.line, domain if isinstance(domain, str) else None)
            )
            continue
        seen_domain[record.domain] = raw.row
        result.records.append(record)
    return result


# -- writing ------------------------------------------------------------------------------


class InventoryWriter:
    """Writes an export in batches (the database streams it): CSV with its header, or a
    JSON list with one object per line. Call :meth:`close` to finish the document."""

    def __init__(self, out: TextIO, file_format: InventoryFormat = "csv") -> None:
        self.out = out
        self.format = file_format
        self.count = 0
        self._csv = csv.writer(out, lineterminator="\n")
        if file_format == "csv":
            self._csv.writerow(FIELDS)
        else:
            out.write("[")

    def write(self, records: Iterable[InventoryRecord]) -> None:
        """Append records."""
        for record in records:
            if self.format == "csv":
                self._csv.writerow(
                    (
                        record.domain,
                        record.customer,
                        record.account_manager or "",
                        record.account_manager_email or "",
                        ";".join(record.tags),
                    )
                )
            else:
                self.out.write(",\n" if self.count else "\n")
                self.out.write(json.dumps(record.to_dict(), ensure_ascii=False))
            self.count += 1

    def close(self) -> None:
        """End the document (the JSON list); CSV needs nothing."""
        if self.format == "json":
            self.out.write("\n]\n" if self.count else "]\n")


def write_inventory(
    records: Iterable[InventoryRecord], out: TextIO, file_format: InventoryFormat = "csv"
) -> int:
    """Write a whole export; the number of records written."""
    writer = InventoryWriter(out, file_format)
    writer.write(records)
    writer.close()
    return writer.count


def iter_chunks(records: Iterable[InventoryRecord], size: int) -> Iterator[list[InventoryRecord]]:
    """``records`` in lists of at most ``size``."""
    chunk: list[InventoryRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
