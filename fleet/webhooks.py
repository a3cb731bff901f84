"""Webhooks: the event envelope, its signature, the retry schedule and the target rule.

What a receiver gets, per event (docs/webhooks.md has the schema and a verification
recipe)::

    POST <subscription URL>
    Content-Type: application/json
    Tlsfleet-Event: notice.opened
    Tlsfleet-Delivery: <idempotency key>
    Tlsfleet-Signature: t=1764300000,v1=<hex HMAC-SHA256>

    {"schema_version": "1", "id": "<idempotency key>", "type": "notice.opened",
     "created_at": "2026-11-28T02:00:00Z", "data": {…}}

The signature is HMAC-SHA256 with the subscription's secret over ``"<t>." + body``
(the raw body bytes, exactly as sent), hex-encoded. A receiver recomputes it, compares
in constant time, and refuses a timestamp more than :data:`REPLAY_WINDOW` seconds away
from its clock; it drops an ``id`` it has already processed (deliveries are at least
once: a retry after a lost answer sends the same id again).

Nothing here touches the database or the network except :func:`check_target`, which
resolves the URL's host to apply the same private-address rule as scan targets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from scanner.targets import is_public_address

__all__ = [
    "DELIVERY_HEADER",
    "DIGEST",
    "EVENT_HEADER",
    "EVENT_TYPES",
    "MAX_ATTEMPTS",
    "REPLAY_WINDOW",
    "SCHEMA_VERSION",
    "SIGNATURE_HEADER",
    "Event",
    "RetrySchedule",
    "SignatureError",
    "TargetRefused",
    "check_target",
    "digest_id",
    "encode",
    "event_id",
    "sign",
    "signature_header",
    "verify",
]

#: The version of the envelope and of every event's ``data`` (docs/webhooks.md).
SCHEMA_VERSION = "1"
EVENT_TYPES: tuple[str, ...] = (
    "notice.opened",
    "notice.resolved",
    "finding.regressed",
    "certificate.expiring",
    "sweep.completed",
)
#: The envelope type of a digest: one sweep's events for one subscription, in
#: ``data.events`` (each a whole envelope).
DIGEST = "digest"
SIGNATURE_HEADER = "Tlsfleet-Signature"
EVENT_HEADER = "Tlsfleet-Event"
DELIVERY_HEADER = "Tlsfleet-Delivery"
#: Seconds a signature's timestamp may be away from the receiver's clock.
REPLAY_WINDOW = 300
#: Attempts before a delivery is dead-lettered (about a day with the default schedule).
MAX_ATTEMPTS = 14

#: Namespace of the idempotency keys (UUID v5 of the event's identity).
_ID_NAMESPACE = uuid.UUID("6f1d5a3e-7c0b-5b8e-9d4a-2c1f0e7b9a10")


class SignatureError(ValueError):
    """A signature header that does not verify; the message says why."""


class TargetRefused(ValueError):
    """A webhook URL that tlsfleet will not deliver to; the message says why."""


def event_id(event_type: str, *identity: object) -> str:
    """The idempotency key of an event: the same type and identity (notice id and
    state, sweep id, …) always give the same key, so that an event emitted twice (a
    job that runs again) is one event for every receiver."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}")
    name = "/".join([event_type, *(str(part) for part in identity)])
    return str(uuid.uuid5(_ID_NAMESPACE, name))


def digest_id(subscription_id: int, sweep_id: int) -> str:
    """The idempotency key of one subscription's digest of one sweep."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{DIGEST}/{subscription_id}/{sweep_id}"))


@dataclass(frozen=True, slots=True)
class Event:
    """One event, as delivered to every subscription that wants its type."""

    id: str
    type: str
    created_at: dt.datetime
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in (*EVENT_TYPES, DIGEST):
            raise ValueError(f"unknown event type {self.type!r}")
        if self.created_at.tzinfo is None:
            raise ValueError("an event's created_at must be timezone-aware")

    def envelope(self) -> dict[str, Any]:
        """The JSON document a receiver gets."""
        when = self.created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "type": self.type,
            "created_at": when,
            "data": dict(self.data),
        }

    def body(self) -> bytes:
        """The envelope as the exact bytes that are sent and signed."""
        return encode(self.envelope())


def encode(document: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same document always gives the same bytes."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, now: float) -> str:
    """The ``Tlsfleet-Signature`` value for ``body`` sent at ``now`` (Unix seconds)."""
    timestamp = int(now)
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, now: float, tolerance: int = REPLAY_WINDOW
) -> int:
    """Check a ``Tlsfleet-Signature`` header against the raw body; its timestamp.

    SignatureError when the header is malformed, the timestamp is outside
    ``tolerance`` seconds of ``now``, or no ``v1`` signature matches (several ``v1``
    entries are allowed, for secret rotation).
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed signature header element {part.strip()!r}")
        if key == "t":
            if not value.isdigit():
                raise SignatureError("the signature timestamp is not a number")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("the signature header needs t=<timestamp> and v1=<signature>")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"the signature timestamp is {abs(now - timestamp):.0f} s away from now "
            f"(allowed: {tolerance} s); a replay?"
        )
    expected = sign(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("no signature matches the body")
    return timestamp


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff: ``base`` seconds after the first failure, doubling, capped
    at ``cap``; after ``max_attempts`` attempts in all the delivery is dead-lettered.
    The default spreads 14 attempts over about 20 hours."""

    base: float = 30.0
    factor: float = 2.0
    cap: float = 4 * 3600.0
    max_attempts: int = MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base or self.max_attempts < 1:
            raise ValueError(
                "a retry schedule needs base > 0, factor >= 1, cap >= base, attempts >= 1"
            )

    def delay(self, attempts: int) -> float | None:
        """Seconds to wait after the ``attempts``-th failed attempt; None: give up."""
        if attempts >= self.max_attempts:
            return None
        return min(self.cap, self.base * self.factor ** (attempts - 1))

    def total(self) -> float:
        """Seconds from the first attempt to the last."""
        return sum(self.delay(n) or 0.0 for n in range(1, self.max_attempts))


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse a webhook URL that is not http(s) with a host, or whose host resolves to a
    private, loopback or otherwise non-public address (unless ``allow_private``).

    Called when a subscription is created and again before every delivery (a name
    may start resolving elsewhere). TargetRefused says why.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"a webhook URL must be http:// or https://, not {parts.scheme!r}")
    if not parts.hostname:
        raise TargetRefused("a webhook URL needs a host")
    if parts.username or parts.password:
        raise TargetRefused("a webhook URL must not carry credentials; use the secret")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the webhook URL's port is not a number from 1 to 65535") from None
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise TargetRefused(f"{parts.hostname} does not resolve: {exc}") from None
    for info in infos:
        address = str(info[4][0])
        if not is_public_address(address):
            raise TargetRefused(
                f"{parts.hostname} resolves to the non-public address {address}; webhooks to "
                "private and loopback addresses need TLSFLEET_ALLOW_PRIVATE_TARGETS=true"
            )
