"""Webhook envelopes, signatures, the retry schedule and the target rule (no services)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.webhooks import (
    EVENT_TYPES,
    REPLAY_WINDOW,
    Event,
    RetrySchedule,
    SignatureError,
    TargetRefused,
    check_target,
    event_id,
    sign,
    signature_header,
    verify,
)

NOW = 1_764_300_000.0
SECRET = "whsec_test"


def _event() -> Event:
    return Event(
        id=event_id("notice.opened", 42, "open"),
        type="notice.opened",
        created_at=dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC),
        data={"notice_id": 42, "customer": "Bücher GmbH"},
    )


def test_envelope_is_versioned_and_stable() -> None:
    event = _event()
    document = json.loads(event.body())
    assert document == {
        "schema_version": "1",
        "id": event.id,
        "type": "notice.opened",
        "created_at": "2026-11-28T02:00:00Z",
        "data": {"notice_id": 42, "customer": "Bücher GmbH"},
    }
    # The same event is the same bytes, whatever order data was built in.
    again = Event(
        event.id, event.type, event.created_at, {"customer": "Bücher GmbH", "notice_id": 42}
    )
    assert again.body() == event.body()


def test_event_ids_are_idempotency_keys() -> None:
    assert event_id("notice.opened", 42, "open") == event_id("notice.opened", 42, "open")
    assert event_id("notice.opened", 42, "open") != event_id("notice.opened", 43, "open")
    assert event_id("notice.opened", 42) != event_id("notice.resolved", 42)
    with pytest.raises(ValueError, match="unknown event type"):
        event_id("notice.exploded", 1)


def test_events_refuse_unknown_types_and_naive_times() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        Event("x", "nope", dt.datetime.now(dt.UTC))
    with pytest.raises(ValueError, match="timezone"):
        Event("x", EVENT_TYPES[0], dt.datetime(2026, 1, 1))


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    body = _event().body()
    header = signature_header(SECRET, body, now=NOW)
    # The documented recipe, written out independently of sign():
    expected = hmac.new(SECRET.encode(), f"{int(NOW)}.".encode() + body, hashlib.sha256)
    assert header == f"t={int(NOW)},v1={expected.hexdigest()}"
    assert verify(SECRET, header, body, now=NOW + 10) == int(NOW)


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (None, b'{"tampered":1}', NOW, "no signature matches"),
        (None, None, NOW + REPLAY_WINDOW + 1, "a replay"),
        (None, None, NOW - REPLAY_WINDOW - 1, "a replay"),
        ("v1=abc", None, NOW, "needs t="),
        ("t=123", None, NOW, "needs t="),
        ("t=abc,v1=00", None, NOW, "not a number"),
        ("garbage", None, NOW, "malformed"),
    ],
)
def test_bad_signatures_are_refused(
    header: str | None, body: bytes | None, now: float, reason: str
) -> None:
    good_body = _event().body()
    good_header = signature_header(SECRET, good_body, now=NOW)
    with pytest.raises(SignatureError, match=reason):
        verify(SECRET, header or good_header, body or good_body, now=now)


def test_wrong_secret_is_refused_and_rotation_is_allowed() -> None:
    body = _event().body()
    header = signature_header("old-secret", body, now=NOW)
    with pytest.raises(SignatureError):
        verify(SECRET, header, body, now=NOW)
    # During a rotation the sender may sign with both secrets.
    both = f"{header},v1={sign(SECRET, int(NOW), body)}"
    assert verify(SECRET, both, body, now=NOW) == int(NOW)


@given(st.binary(max_size=200), st.text(max_size=40))
def test_any_body_round_trips_and_any_change_breaks_it(body: bytes, secret: str) -> None:
    header = signature_header(secret, body, now=NOW)
    assert verify(secret, header, body, now=NOW) == int(NOW)
    with pytest.raises(SignatureError):
        verify(secret, header, body + b" ", now=NOW)


def test_default_schedule_spans_about_a_day_then_gives_up() -> None:
    schedule = RetrySchedule()
    delays = [schedule.delay(n) for n in range(1, schedule.max_attempts + 1)]
    assert delays[0] == 30.0
    assert delays[1] == 60.0
    assert delays[-1] is None  # the last attempt failed: dead letter
    assert all(d is not None and d <= 4 * 3600 for d in delays[:-1])
    assert 18 * 3600 <= schedule.total() <= 26 * 3600


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="retry schedule"):
        RetrySchedule(base=0)
    with pytest.raises(ValueError, match="retry schedule"):
        RetrySchedule(base=10, cap=5)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example/x", "http:// or https://"),
        ("https:///path", "needs a host"),
        ("https://user:pw@hooks.example/", "credentials"),
        ("https://hooks.example:99999/", "port"),
        ("http://127.0.0.1:8080/hook", "non-public address 127.0.0.1"),
        ("http://10.1.2.3/hook", "non-public address 10.1.2.3"),
        ("http://[::1]/hook", "non-public address ::1"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("http://localhost/hook", "non-public"),
    ],
)
async def test_targets_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason):
        await check_target(url, allow_private=False)


async def test_public_and_allowed_private_targets_pass() -> None:
    await check_target("https://8.8.8.8:8443/hook", allow_private=False)
    await check_target("http://127.0.0.1:8080/hook", allow_private=True)
