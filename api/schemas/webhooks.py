"""Webhook subscriptions and deliveries as the API shows them (the secret only once)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import DbId
from fleet.webhooks import EVENT_TYPES

EventType = Literal[
    "notice.opened",
    "notice.resolved",
    "finding.regressed",
    "certificate.expiring",
    "sweep.completed",
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]

DeliveryStatus = Literal["collecting", "pending", "delivered", "dead"]

_SUBSCRIPTION: dict[str, Any] = {
    "id": 3,
    "name": "alice's ticket system",
    "account_manager_id": 2,
    "url": "https://tickets.example.net/hooks/tlsfleet",
    "events": ["notice.opened", "notice.resolved"],
    "digest": False,
    "active": True,
    "created_at": "2026-11-28T03:00:00Z",
}


class SubscriptionCreate(BaseModel):
    """A subscription to create. Without ``account_manager_id`` it is global (every
    manager's events); an account manager's key always subscribes for itself.
    Without ``secret``, one is generated."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://tickets.example.net/hooks/tlsfleet",
                    "events": ["notice.opened", "notice.resolved"],
                    "account_manager_id": 2,
                    "name": "alice's ticket system",
                }
            ]
        },
    )

    url: str = Field(min_length=8, max_length=2000, description="http(s) URL to POST to")
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    account_manager_id: DbId | None = None
    digest: bool = Field(default=False, description="one delivery per sweep with its events")
    name: str = Field(default="", max_length=200)
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="the HMAC key (generated if absent)",
    )


class SubscriptionUpdate(BaseModel):
    """Fields to change; absent fields stay."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"active": False}, {"events": ["sweep.completed"]}]},
    )

    url: str | None = Field(default=None, min_length=8, max_length=2000)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
    digest: bool | None = None
    active: bool | None = None
    name: str | None = Field(default=None, max_length=200)


class SubscriptionRead(BaseModel):
    """A subscription (never its secret)."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_SUBSCRIPTION]})

    id: int
    name: str
    account_manager_id: int | None
    url: str
    events: list[str]
    digest: bool
    active: bool
    created_at: dt.datetime


class SubscriptionSecret(SubscriptionRead):
    """A subscription with its signing secret: shown when created or rotated, never again."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_SUBSCRIPTION, "secret": "whsec_Jk0…"}]}
    )

    secret: str


class DeliveryRead(BaseModel):
    """One delivery in the log: what was sent, how often, with what outcome."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 17,
                    "subscription_id": 3,
                    "event_id": "0b8f6c2e-4f43-5b1e-9a51-3f0d2c6e7a10",
                    "event_type": "notice.opened",
                    "status": "dead",
                    "attempts": 14,
                    "next_attempt_at": "2026-11-29T01:00:00Z",
                    "last_attempt_at": "2026-11-29T01:00:00Z",
                    "last_status_code": 503,
                    "last_error": "HTTP 503",
                    "created_at": "2026-11-28T03:00:00Z",
                    "delivered_at": None,
                    "payload": {"schema_version": "1", "type": "notice.opened"},
                }
            ]
        },
    )

    id: int
    subscription_id: int
    event_id: str = Field(description="the idempotency key the receiver sees")
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime
    last_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    payload: dict[str, Any] = Field(description="the envelope as sent (docs/webhooks.md)")
