"""The sweep schedule: a five-field cron expression turned into arq's ``cron(...)``.

``TLSFLEET_NIGHTLY_CRON`` is written the way operators know it (``0 2 * * *``: minute,
hour, day of month, month, day of week), evaluated in ``TLSFLEET_TIMEZONE``. arq wants
keyword arguments instead (``minute=0, hour=2``), with Python's weekday numbers
(Monday = 0); :func:`parse_cron` translates, and refuses what arq cannot express.

Supported per field: ``*``, numbers, names (``mon``, ``jan``), lists (``1,15``),
ranges (``1-5``), steps (``*/15``, ``0-30/10``). Not supported: restricting both the
day of month and the day of week (cron ORs them, arq ANDs them), ``L``, ``W``, ``#``
and ``@daily``-style shortcuts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronError", "CronSpec", "parse_cron", "parse_timezone"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class CronError(ValueError):
    """A schedule that is not a valid (or not a supported) cron expression."""


@dataclass(frozen=True, slots=True)
class CronSpec:
    """arq's ``cron()`` keyword arguments; None means "every"."""

    minute: set[int] | None = None
    hour: set[int] | None = None
    day: set[int] | None = None
    month: set[int] | None = None
    #: Python's numbering: Monday = 0 … Sunday = 6.
    weekday: set[int] | None = None


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...] | None) -> int:
    lowered = text.lower()
    if names is not None and lowered in names:
        return names.index(lowered) + (1 if names is _MONTHS else 0)
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{name}: {number} is outside {low}-{high}")
    return number


def _field(
    text: str, name: str, low: int, high: int, names: tuple[str, ...] | None = None
) -> set[int] | None:
    if text == "*":
        return None
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name}: empty list item in {text!r}")
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{name}: invalid step in {part!r}")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first = _value(start, name, low, high, names)
            last = _value(end, name, low, high, names)
            if first > last:
                raise CronError(f"{name}: range {span!r} runs backwards")
        else:
            first = _value(span, name, low, high, names)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return values


def parse_cron(expression: str) -> CronSpec:
    """``"0 2 * * *"`` → ``CronSpec(minute={0}, hour={2})``; bad input raises
    :class:`CronError` saying which field is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(
            f"cron expression {expression!r} needs 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    minute, hour, day, month, weekday = fields
    days = _field(day, "day of month", 1, 31)
    # Cron numbers Sunday 0 (or 7); Python's weekday() numbers Monday 0.
    cron_days = _field(weekday, "day of week", 0, 7, _DAYS)
    if days is not None and cron_days is not None:
        raise CronError(
            "restricting both the day of month and the day of week is not supported "
            "(cron would run on either, the scheduler on both)"
        )
    return CronSpec(
        minute=_field(minute, "minute", 0, 59),
        hour=_field(hour, "hour", 0, 23),
        day=days,
        month=_field(month, "month", 1, 12, _MONTHS),
        weekday=None if cron_days is None else {(d - 1) % 7 for d in cron_days},
    )


def parse_timezone(name: str) -> tzinfo:
    """An IANA time zone (``Europe/Berlin``, ``UTC``); unknown names raise CronError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from None
