"""The dashboard's log-in, session, CSRF and scoping over HTTP (httpx on the ASGI app,
real PostgreSQL): what a browser does, checked at the protocol level. The pages in a
real browser are in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app
from fleet.db.models import (
    AccountManager,
    Customer,
    DashboardSession,
    Domain,
    MailAccount,
    MailClientDay,
)
from fleet.repositories import apikeys
from tests.integration.api.harness import settings_for

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True, slots=True)
class Seed:
    keys: dict[str, str]
    key_ids: dict[str, int]
    alice_customer: int
    bob_customer: int
    alice_domain: int
    bob_domain: int


@pytest.fixture
async def app(database_url: str, redis_url: str, engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    del engine  # requested for its clean-up (tables truncated after the test)
    application = create_app(settings_for(database_url, redis_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def seed(session_factory: async_sessionmaker[AsyncSession]) -> Seed:
    async with session_factory() as session:
        alice = AccountManager(name="Alice", email="alice@example.net")
        bob = AccountManager(name="Bob", email="bob@example.net")
        session.add_all([alice, bob])
        await session.flush()
        ca = Customer(name="Alice's customer", account_manager_id=alice.id)
        cb = Customer(name="Bob's customer", account_manager_id=bob.id)
        session.add_all([ca, cb])
        await session.flush()
        da = Domain(name="alice.example", customer_id=ca.id, tags=[])
        db = Domain(name="bob.example", customer_id=cb.id, tags=[])
        session.add_all([da, db])
        keys: dict[str, str] = {}
        key_ids: dict[str, int] = {}
        for role in ("admin", "viewer", "account_manager"):
            new = await apikeys.create_key(
                session,
                role=role,
                name=f"{role} key",
                account_manager_id=alice.id if role == "account_manager" else None,
            )
            keys[role], key_ids[role] = new.secret, new.key.id
        await session.commit()
        return Seed(keys, key_ids, ca.id, cb.id, da.id, db.id)


def _client(app: FastAPI, scheme: str = "http") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"{scheme}://dash.test"
    )


async def _log_in(client: httpx.AsyncClient, key: str, next_path: str = "") -> httpx.Response:
    form = await client.get("/dashboard/login")
    token = _CSRF.search(form.text)
    assert token is not None
    return await client.post(
        "/dashboard/login", data={"key": key, "csrf": token.group(1), "next": next_path}
    )


def _page_csrf(response: httpx.Response) -> str:
    found = _CSRF.search(response.text)
    assert found is not None, response.text
    return found.group(1)


async def test_pages_need_a_session(app: FastAPI, seed: Seed) -> None:
    del seed
    async with _client(app) as client:
        for path in ("/dashboard/", "/dashboard/sweeps", "/dashboard/customers/1"):
            response = await client.get(path)
            assert response.status_code == 303
            location = response.headers["location"]
            assert location.startswith("/dashboard/login")
        # the way back is kept (URL-encoded), and the root needs none
        assert "next=%2Fdashboard%2Fcustomers%2F1" in location
        root = await client.get("/dashboard/")
        assert root.headers["location"] == "/dashboard/login"


async def test_log_in_sets_a_strict_http_only_cookie_and_stores_only_its_digest(
    app: FastAPI, seed: Seed, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with _client(app) as client:
        done = await _log_in(client, seed.keys["viewer"], "/dashboard/offenders")
        assert done.status_code == 303
        assert done.headers["location"] == "/dashboard/offenders"
        cookie = next(
            c for c in done.headers.get_list("set-cookie") if c.startswith("tlsfleet_session=")
        )
        token = cookie.split(";")[0].split("=", 1)[1]
        attributes = cookie.lower()
        assert "httponly" in attributes
        assert "samesite=strict" in attributes
        assert "path=/dashboard" in attributes
        assert "secure" not in attributes  # plain http here
        page = await client.get("/dashboard/")
        assert page.status_code == 200
        assert "viewer key · viewer" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
    async with session_factory() as session:
        stored = list(await session.scalars(select(DashboardSession)))
    assert [s.key_id for s in stored] == [seed.key_ids["viewer"]]
    assert stored[0].digest != token
    assert token not in stored[0].digest


async def test_over_https_the_cookie_is_secure(app: FastAPI, seed: Seed) -> None:
    async with _client(app, "https") as client:
        done = await _log_in(client, seed.keys["viewer"])
        cookie = next(
            c for c in done.headers.get_list("set-cookie") if c.startswith("tlsfleet_session=")
        )
        assert "secure" in cookie.lower()


async def test_log_in_refuses_a_bad_key_and_a_missing_or_wrong_token(
    app: FastAPI, seed: Seed
) -> None:
    async with _client(app) as client:
        bad = await _log_in(client, "tlsf_00000000_not-a-key")
        assert bad.status_code == 401
        assert "unknown or revoked" in bad.text
        assert "tlsfleet_session" not in client.cookies
        # a form posted from elsewhere has no login cookie's token
        await client.get("/dashboard/login")
        forged = await client.post(
            "/dashboard/login", data={"key": seed.keys["admin"], "csrf": "guessed"}
        )
        assert forged.status_code == 403
        missing = await client.post("/dashboard/login", data={"key": seed.keys["admin"]})
        assert missing.status_code == 403
        assert "tlsfleet_session" not in client.cookies


async def test_log_in_never_redirects_off_the_dashboard(app: FastAPI, seed: Seed) -> None:
    for target in ("https://evil.example/", "//evil.example/dashboard/", "/v1/stats"):
        async with _client(app) as client:
            done = await _log_in(client, seed.keys["viewer"], target)
            assert done.headers["location"] == "/dashboard/"


async def test_log_out_needs_the_session_token_and_ends_the_session(
    app: FastAPI, seed: Seed
) -> None:
    async with _client(app) as client:
        await _log_in(client, seed.keys["admin"])
        page = await client.get("/dashboard/")
        token = _page_csrf(page)
        session_cookie = client.cookies["tlsfleet_session"]

        # Without the page's token (a cross-site form), log-out is refused
        refused = await client.post("/dashboard/logout", data={"csrf": "x" * len(token)})
        assert refused.status_code == 403
        assert (await client.get("/dashboard/")).status_code == 200

        done = await client.post("/dashboard/logout", data={"csrf": token})
        assert done.status_code == 303
        assert done.headers["location"] == "/dashboard/login"
        assert "tlsfleet_session" not in client.cookies
        # and the old cookie, sent again, opens nothing (the session row is gone)
        client.cookies.set("tlsfleet_session", session_cookie, path="/dashboard")
        assert (await client.get("/dashboard/")).status_code == 303


async def test_a_revoked_key_ends_its_sessions(
    app: FastAPI, seed: Seed, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with _client(app) as client:
        await _log_in(client, seed.keys["viewer"])
        assert (await client.get("/dashboard/")).status_code == 200
        async with session_factory() as session:
            await apikeys.revoke_key(session, seed.key_ids["viewer"])
            await session.commit()
        gone = await client.get("/dashboard/")
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/dashboard/login")


async def test_an_account_manager_sees_only_its_own(app: FastAPI, seed: Seed) -> None:
    async with _client(app) as client:
        await _log_in(client, seed.keys["account_manager"])
        own = await client.get(f"/dashboard/customers/{seed.alice_customer}")
        assert own.status_code == 200
        assert "Alice&#39;s customer" in own.text
        assert "alice.example" in own.text
        assert (await client.get(f"/dashboard/domains/{seed.alice_domain}")).status_code == 200
        for path in (
            f"/dashboard/customers/{seed.bob_customer}",
            f"/dashboard/domains/{seed.bob_domain}",
            "/dashboard/customers/999999",
        ):
            other = await client.get(path)
            assert other.status_code == 404, path
            assert "Bob" not in other.text
        sweeps = await client.get("/dashboard/sweeps")
        assert sweeps.status_code == 403
        offenders = await client.get("/dashboard/offenders")
        assert offenders.status_code == 200
        assert "Bob" not in offenders.text


async def test_a_reader_sees_every_customer_and_the_sweeps(app: FastAPI, seed: Seed) -> None:
    async with _client(app) as client:
        await _log_in(client, seed.keys["viewer"])
        for customer in (seed.alice_customer, seed.bob_customer):
            assert (await client.get(f"/dashboard/customers/{customer}")).status_code == 200
        sweeps = await client.get("/dashboard/sweeps")
        assert sweeps.status_code == 200
        assert "No sweep yet" in sweeps.text
        # a wall screen asks for its refresh interval
        wall = await client.get("/dashboard/?refresh=30")
        assert '<meta http-equiv="refresh" content="30">' in wall.text


async def test_static_files_are_served(app: FastAPI) -> None:
    async with _client(app) as client:
        chart = await client.get("/dashboard/static/chart.js")
        css = await client.get("/dashboard/static/dashboard.css")
    assert chart.status_code == 200
    assert "Okabe" in chart.text
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


def _number(html: str, testid: str) -> int:
    """A number the page shows: a card's value or a marked element's text."""
    card = re.search(
        rf'data-testid="count-{testid}">\s*<span class="value" data-value="(\d+)"', html
    )
    found = card or re.search(rf'data-testid="{testid}">(\d+)<', html)
    assert found is not None, testid
    return int(found.group(1))


async def _mailbox(
    sessions: async_sessionmaker[AsyncSession], account: str, *, legacy: int, plaintext: int
) -> None:
    """Today's logins of a mailbox, as the log ingest stores them."""
    now = dt.datetime.now(dt.UTC)
    async with sessions() as session:
        stored = MailAccount(account=account, domain=account.rsplit("@", 1)[1])
        session.add(stored)
        await session.flush()
        protocols = {k: n for k, n in (("TLSv1.0", legacy), ("none", plaintext)) if n}
        session.add(
            MailClientDay(
                account_id=stored.id,
                day=now.date(),
                logins=legacy + plaintext + 1,
                legacy_logins=legacy,
                plaintext_logins=plaintext,
                unknown_logins=0,
                protocols={**protocols, "TLSv1.3": 1},
                ciphers={},
                mechanisms={"PLAIN": legacy + plaintext + 1},
                services={"imap": legacy + plaintext + 1},
                client_ips={"198.51.100.9": legacy + plaintext + 1},
                client_ips_other=0,
                first_seen=now,
                last_seen=now,
                legacy_first=now if legacy else None,
                legacy_last=now if legacy else None,
                plaintext_first=now if plaintext else None,
                plaintext_last=now if plaintext else None,
            )
        )
        await session.commit()


async def test_mailboxes_and_the_impact_line_are_the_apis_numbers_in_scope(
    app: FastAPI, seed: Seed, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    # Given mailboxes on TLS 1.0 and without TLS at Alice's and Bob's customers, and one
    # whose domain the inventory does not have
    await _mailbox(session_factory, "a1@alice.example", legacy=2, plaintext=0)
    await _mailbox(session_factory, "a2@alice.example", legacy=1, plaintext=3)
    await _mailbox(session_factory, "a3@alice.example", legacy=0, plaintext=1)
    await _mailbox(session_factory, "b1@bob.example", legacy=1, plaintext=0)
    await _mailbox(session_factory, "x@elsewhere.example", legacy=1, plaintext=0)
    expected = {
        "viewer": {"customers": 2, "legacy": 4, "plaintext": 2, "impact": 3, "unmapped": 1},
        "account_manager": {"customers": 1, "legacy": 2, "plaintext": 2, "impact": 2},
    }
    for role, numbers in expected.items():
        async with _client(app) as client:
            await _log_in(client, seed.keys[role])
            page = (await client.get("/dashboard/")).text
            headers = {"Authorization": f"Bearer {seed.keys[role]}"}

            async def api(path: str, headers: dict[str, str] = headers) -> Any:
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, response.text
                return response.json()

            impact = await api("/v1/clients/impact?kind=legacy")
            legacy = (await api("/v1/clients/legacy?kind=legacy&limit=100"))["items"]
            plaintext = (await api("/v1/clients/legacy?kind=plaintext&limit=100"))["items"]
            # Then the overview shows the API's numbers, for the key's scope
            assert _number(page, "accounts_legacy") == len(legacy) == numbers["legacy"], role
            assert _number(page, "accounts_plaintext") == len(plaintext) == numbers["plaintext"]
            assert _number(page, "impact-customers") == impact["customers"] == numbers["customers"]
            assert _number(page, "impact-accounts") == impact["accounts"] == numbers["impact"]
            if "unmapped" in numbers:
                assert _number(page, "impact-unmapped") == impact["unmapped_accounts"] == 1
            else:
                assert "impact-unmapped" not in page

            # And Alice's customer page lists its mailboxes: what they use, since when
            customer = await client.get(f"/dashboard/customers/{seed.alice_customer}")
            listed = re.findall(r'<tr data-account="([^"]+)">', customer.text)
            api_listed = await api(f"/v1/clients/legacy?customer_id={seed.alice_customer}")
            assert sorted(listed) == sorted(a["account"] for a in api_listed["items"])
            assert listed == ["a2@alice.example", "a1@alice.example", "a3@alice.example"]
            used = re.findall(r'<td data-col="used">([^<]*)</td>', customer.text)
            assert used == ["TLSv1.0, no TLS", "TLSv1.0", "no TLS"]
            assert "198.51.100.9" in customer.text
            assert "b1@bob.example" not in customer.text
