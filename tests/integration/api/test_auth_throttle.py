"""Failed API keys are counted per client address (in Redis, shared by API processes):
after ``auth_failure_limit`` of them the address gets 429 with ``Retry-After``, on the
API and on the dashboard's log-in form, until the window has passed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis_client
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.throttle import KEY
from tests.integration.api.harness import Fleet, assert_problem, auth, settings_for

#: No route of its own.
ROUTES: list[object] = []

LIMIT = 3
WINDOW = 300
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def throttled(
    database_url: str, redis_url: str, engine: AsyncEngine
) -> AsyncIterator[FastAPI]:
    del engine  # for its clean-up
    app = create_app(
        settings_for(database_url, redis_url, auth_failure_limit=LIMIT, auth_failure_window=WINDOW)
    )
    async with app.router.lifespan_context(app):
        yield app


def _from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


async def test_an_address_that_sent_too_many_bad_keys_gets_429_until_the_window_ends(
    throttled: FastAPI, fleet: Fleet, redis_url: str
) -> None:
    bad = {"Authorization": "Bearer tlsf_00000000_guess"}
    async with _from(throttled, "192.0.2.7") as guesser, _from(throttled, "192.0.2.8") as other:
        # Given an address whose keys failed LIMIT times (requests without a key not counted)
        for _ in range(LIMIT + 2):
            assert_problem(await guesser.get("/v1/domains"), 401)
        for _ in range(LIMIT):
            assert_problem(await guesser.get("/v1/domains", headers=bad), 401)
        # When it tries again, with a bad key or even a good one
        for headers in (bad, auth(fleet, "admin")):
            refused = await guesser.get("/v1/domains", headers=headers)
            # Then it is refused before the key is looked up: 429, and when to come back
            body = assert_problem(refused, 429)
            assert body["type"] == "urn:tlsfleet:problem:too-many-requests"
            assert 0 < int(refused.headers["retry-after"]) <= WINDOW
        # … while another address goes on as before
        assert (await other.get("/v1/domains", headers=auth(fleet, "admin"))).status_code == 200
        assert_problem(await other.get("/v1/domains", headers=bad), 401)
        # … and once the window has passed (its counter expired), the address is let in
        store = redis_client.Redis.from_url(redis_url)
        try:
            assert 0 < await store.ttl(KEY.format("192.0.2.7")) <= WINDOW
            await store.delete(KEY.format("192.0.2.7"))
        finally:
            await store.aclose()
        assert (await guesser.get("/v1/domains", headers=auth(fleet, "admin"))).status_code == 200


async def test_the_dashboard_log_in_form_counts_with_the_api(
    throttled: FastAPI, fleet: Fleet
) -> None:
    async with _from(throttled, "192.0.2.9") as browser:

        async def log_in(key: str) -> httpx.Response:
            form = await browser.get("/dashboard/login")
            token = _CSRF.search(form.text)
            assert token is not None
            return await browser.post("/dashboard/login", data={"key": key, "csrf": token[1]})

        # Given bad keys from one address, some through the API, some through the form
        assert_problem(
            await browser.get("/v1/domains", headers={"Authorization": "Bearer tlsf_0_x"}), 401
        )
        for _ in range(LIMIT - 1):
            assert (await log_in("tlsf_00000000_guess")).status_code == 401
        # When the form is sent again, even with a good key
        refused = await log_in(fleet.keys["admin"])
        # Then it comes back with 429, says why, and opens no session
        assert refused.status_code == 429
        assert "too many failed API keys" in refused.text
        assert int(refused.headers["retry-after"]) > 0
        assert "tlsfleet_session" not in browser.cookies


async def test_without_redis_keys_are_still_checked_and_nothing_fails(
    database_url: str, engine: AsyncEngine, fleet: Fleet, unused_tcp_port: int
) -> None:
    del engine
    # Given an API whose Redis is unreachable (nothing listens on the port)
    app = create_app(
        settings_for(database_url, f"redis://127.0.0.1:{unused_tcp_port}", auth_failure_limit=1)
    )
    async with app.router.lifespan_context(app), _from(app, "192.0.2.10") as client:
        # When keys fail more often than the limit, then they are still only 401s (the
        # count is skipped, not the key check), and a good key still gets in
        for _ in range(3):
            assert_problem(
                await client.get("/v1/domains", headers={"Authorization": "Bearer tlsf_0_x"}), 401
            )
        assert (await client.get("/v1/domains", headers=auth(fleet, "viewer"))).status_code == 200


async def test_a_limit_of_0_counts_nothing(
    database_url: str, redis_url: str, engine: AsyncEngine, fleet: Fleet
) -> None:
    del engine
    app = create_app(settings_for(database_url, redis_url, auth_failure_limit=0))
    async with app.router.lifespan_context(app), _from(app, "192.0.2.11") as client:
        for _ in range(30):
            assert_problem(
                await client.get("/v1/domains", headers={"Authorization": "Bearer tlsf_0_x"}), 401
            )
        assert (await client.get("/v1/domains", headers=auth(fleet, "viewer"))).status_code == 200
    store = redis_client.Redis.from_url(redis_url)
    try:
        assert await store.keys(KEY.format("*")) == []
    finally:
        await store.aclose()
