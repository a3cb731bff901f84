"""``/v1/webhooks`` against a real PostgreSQL and Redis: every route × role, account
managers confined to their own subscriptions (404), URL checks, secrets shown once,
the delivery log and redelivery."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.db.models import WebhookDelivery, WebhookSubscription
from fleet.repositories import webhooks as repo
from tests.integration.api.harness import (
    READERS,
    ROLES,
    SCOPED,
    WRITERS,
    Fleet,
    Route,
    assert_problem,
    auth,
    check_route_needs_a_key,
    check_route_role,
)

MANAGERS = WRITERS | {"account_manager"}
PUBLIC_URL = "https://8.8.8.8/hooks/tlsfleet"

ROUTES = [
    Route("GET", "/v1/webhooks", SCOPED, 200),
    Route("GET", "/v1/webhooks/{alice_hook}", SCOPED, 200),
    Route("GET", "/v1/webhooks/{alice_hook}/deliveries", SCOPED, 200),
    Route("POST", "/v1/webhooks", MANAGERS, 201, {"url": PUBLIC_URL, "events": ["notice.opened"]}),
    Route("PATCH", "/v1/webhooks/{alice_hook}", MANAGERS, 200, {"active": False}),
    Route("POST", "/v1/webhooks/{alice_hook}/rotate-secret", MANAGERS, 200),
    Route("DELETE", "/v1/webhooks/{alice_hook}", MANAGERS, 204),
    Route("POST", "/v1/webhook-deliveries/{alice_dead}/redeliver", MANAGERS, 202),
]


@pytest.fixture
async def hooks(fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]) -> Fleet:
    """The fleet plus a subscription each for alice and bob, each with a dead delivery."""
    extra: dict[str, int] = {}
    async with session_factory() as session:
        for who, manager in (("alice", fleet.alice), ("bob", fleet.bob)):
            sub = await repo.create_subscription(
                session,
                url=PUBLIC_URL,
                secret=f"{who}-secret-0123456789",
                events=["notice.opened"],
                account_manager_id=manager,
            )
            delivery = WebhookDelivery(
                subscription_id=sub.id,
                event_id=f"{who}-event",
                event_type="notice.opened",
                payload={"schema_version": "1"},
                status="dead",
                attempts=14,
                last_error="HTTP 503",
            )
            session.add(delivery)
            await session.flush()
            extra[f"{who}_hook"] = sub.id
            extra[f"{who}_dead"] = delivery.id
        await session.commit()
    return dataclasses.replace(fleet, extra=extra)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_route_role_matrix(
    client: httpx.AsyncClient, hooks: Fleet, route: Route, role: str
) -> None:
    await check_route_role(client, hooks, route, role)


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_every_route_needs_a_key(
    client: httpx.AsyncClient, hooks: Fleet, route: Route
) -> None:
    await check_route_needs_a_key(client, hooks, route)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/webhooks/{bob_hook}"),
        ("GET", "/v1/webhooks/{bob_hook}/deliveries"),
        ("PATCH", "/v1/webhooks/{bob_hook}"),
        ("POST", "/v1/webhooks/{bob_hook}/rotate-secret"),
        ("DELETE", "/v1/webhooks/{bob_hook}"),
        ("POST", "/v1/webhook-deliveries/{bob_dead}/redeliver"),
    ],
)
async def test_account_manager_gets_404_for_another_managers_subscription(
    client: httpx.AsyncClient, hooks: Fleet, method: str, path: str
) -> None:
    url = path.format(**hooks.ids())
    body = {"active": False} if method == "PATCH" else None
    response = await client.request(method, url, json=body, headers=auth(hooks, "account_manager"))
    assert_problem(response, 404)
    # The same id exists: an operator reaches it.
    seen = await client.request(method, url, json=body, headers=auth(hooks, "operator"))
    assert seen.status_code < 300


async def test_account_manager_lists_and_creates_only_its_own(
    client: httpx.AsyncClient, hooks: Fleet
) -> None:
    mine = await client.get("/v1/webhooks", headers=auth(hooks, "account_manager"))
    assert [s["id"] for s in mine.json()["items"]] == [hooks.extra["alice_hook"]]
    # An account manager's subscription is its own, whatever it asks for:
    created = await client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "events": ["sweep.completed"]},
        headers=auth(hooks, "account_manager"),
    )
    assert created.json()["account_manager_id"] == hooks.alice
    other = await client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "events": ["sweep.completed"], "account_manager_id": hooks.bob},
        headers=auth(hooks, "account_manager"),
    )
    assert_problem(other, 404)


async def test_secret_is_shown_on_create_and_rotate_only(
    client: httpx.AsyncClient, hooks: Fleet, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    created = await client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "events": ["notice.opened", "notice.opened"], "name": "noc"},
        headers=auth(hooks, "operator"),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["notice.opened"]
    assert body["account_manager_id"] is None  # global
    shown = await client.get(f"/v1/webhooks/{body['id']}", headers=auth(hooks, "viewer"))
    assert "secret" not in shown.json()
    listed = await client.get("/v1/webhooks", headers=auth(hooks, "viewer"))
    assert all("secret" not in s for s in listed.json()["items"])
    rotated = await client.post(
        f"/v1/webhooks/{body['id']}/rotate-secret", headers=auth(hooks, "operator")
    )
    assert rotated.json()["secret"] not in (body["secret"], "")
    async with session_factory() as session:
        stored = await session.get(WebhookSubscription, body["id"])
        assert stored is not None
        assert stored.secret == rotated.json()["secret"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"url": "http://127.0.0.1:9/hook", "events": ["notice.opened"]}, "non-public"),
        ({"url": "http://10.0.0.8/hook", "events": ["notice.opened"]}, "non-public"),
        ({"url": "ftp://files.example/x", "events": ["notice.opened"]}, "http"),
        ({"url": PUBLIC_URL, "events": ["notice.exploded"]}, "events"),
        ({"url": PUBLIC_URL, "events": []}, "events"),
    ],
)
async def test_bad_subscriptions_are_422_with_a_reason(
    client: httpx.AsyncClient, hooks: Fleet, body: dict[str, object], reason: str
) -> None:
    response = await client.post("/v1/webhooks", json=body, headers=auth(hooks, "admin"))
    assert reason in assert_problem(response, 422)["detail"]


async def test_delivery_log_and_redelivery(
    client: httpx.AsyncClient,
    hooks: Fleet,
    session_factory: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    hook, dead = hooks.extra["alice_hook"], hooks.extra["alice_dead"]
    log = await client.get(
        f"/v1/webhooks/{hook}/deliveries?status=dead", headers=auth(hooks, "account_manager")
    )
    [entry] = log.json()["items"]
    assert (entry["id"], entry["attempts"], entry["last_error"]) == (dead, 14, "HTTP 503")
    assert (
        await client.get(
            f"/v1/webhooks/{hook}/deliveries?status=pending", headers=auth(hooks, "viewer")
        )
    ).json()["items"] == []
    # Redelivery: pending again with a fresh schedule, and a job on the queue;
    again = await client.post(
        f"/v1/webhook-deliveries/{dead}/redeliver", headers=auth(hooks, "account_manager")
    )
    assert again.status_code == 202, again.text
    assert (again.json()["status"], again.json()["attempts"]) == ("pending", 0)
    import redis.asyncio as aioredis

    queue = aioredis.Redis.from_url(redis_url)
    try:
        assert await queue.zcard("arq:queue") == 1
    finally:
        await queue.aclose()
    # a second redelivery while it is pending is a 409.
    twice = await client.post(
        f"/v1/webhook-deliveries/{dead}/redeliver", headers=auth(hooks, "operator")
    )
    assert_problem(twice, 409)
    async with session_factory() as session:
        stored = await session.scalar(select(WebhookDelivery).where(WebhookDelivery.id == dead))
        assert stored is not None
        assert stored.status == "pending"


async def test_readers_cannot_change_subscriptions(client: httpx.AsyncClient, hooks: Fleet) -> None:
    assert "viewer" in READERS
    response = await client.patch(
        f"/v1/webhooks/{hooks.extra['alice_hook']}",
        json={"active": False},
        headers=auth(hooks, "viewer"),
    )
    assert "viewer" in assert_problem(response, 403)["detail"]
