"""``/v1/clients`` against a real PostgreSQL: every route × role, account managers
confined to their customers (404 for another manager's ids, never an unmapped
account), the window and filters, pagination, CSV, and the impact view."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.repositories import clients as repo
from tests.integration.api.harness import (
    ROLES,
    SCOPED,
    Fleet,
    Route,
    assert_problem,
    auth,
    check_route_needs_a_key,
    check_route_role,
)

ROUTES = [
    Route("GET", "/v1/clients/legacy", SCOPED, 200),
    Route("GET", "/v1/clients/impact", SCOPED, 200),
]

TODAY = dt.datetime.now(dt.UTC).date()


def _day(
    account_id: int,
    day: dt.date,
    *,
    legacy: int = 0,
    plaintext: int = 0,
    modern: int = 0,
    ip: str = "198.51.100.7",
) -> dict[str, Any]:
    at = dt.datetime.combine(day, dt.time(8), dt.UTC)
    protocols = {
        k: v for k, v in (("TLSv1.0", legacy), ("none", plaintext), ("TLSv1.3", modern)) if v
    }
    logins = legacy + plaintext + modern
    return {
        "account_id": account_id,
        "day": day,
        "logins": logins,
        "legacy_logins": legacy,
        "plaintext_logins": plaintext,
        "unknown_logins": 0,
        "protocols": protocols,
        "ciphers": {},
        "mechanisms": {"PLAIN": logins},
        "services": {"imap": logins},
        "client_ips": {ip: logins},
        "client_ips_other": 0,
        "first_seen": at,
        "last_seen": at,
        "legacy_first": at if legacy else None,
        "legacy_last": at if legacy else None,
        "plaintext_first": at if plaintext else None,
        "plaintext_last": at if plaintext else None,
    }


@pytest.fixture
async def clients(fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]) -> Fleet:
    """Given alice's customer's two legacy accounts (one also on TLS 1.3) and a
    plaintext one, bob's customer's legacy account, an unmapped legacy account, a
    modern-only account, and a legacy login 90 days ago (outside the window)."""
    async with session_factory() as session:
        ids = await repo.upsert_accounts(
            session,
            {
                "a1@alice.example": "alice.example",
                "a2@alice.example": "alice.example",
                "a3@alice.example": "alice.example",
                "b1@bob.example": "bob.example",
                "tester": None,
                "m@alice.example": "alice.example",
                "old@alice.example": "alice.example",
            },
        )
        await repo.add_days(
            session,
            [
                _day(ids["a1@alice.example"], TODAY, legacy=3),
                _day(
                    ids["a1@alice.example"],
                    TODAY - dt.timedelta(days=2),
                    legacy=1,
                    ip="203.0.113.1",
                ),
                _day(ids["a2@alice.example"], TODAY, legacy=1, modern=2),
                _day(ids["a3@alice.example"], TODAY, plaintext=2),
                _day(ids["b1@bob.example"], TODAY, legacy=5),
                _day(ids["tester"], TODAY, legacy=1),
                _day(ids["m@alice.example"], TODAY, modern=4),
                _day(ids["old@alice.example"], TODAY - dt.timedelta(days=90), legacy=1),
            ],
        )
        # Adding the same day again adds counts (what a second ingest of new lines does)
        await repo.add_days(session, [_day(ids["a1@alice.example"], TODAY, legacy=1)])
        await session.commit()
    return fleet


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_route_role_matrix(
    client: httpx.AsyncClient, clients: Fleet, route: Route, role: str
) -> None:
    await check_route_role(client, clients, route, role)


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_every_route_needs_a_key(
    client: httpx.AsyncClient, clients: Fleet, route: Route
) -> None:
    await check_route_needs_a_key(client, clients, route)


async def test_the_legacy_list_in_the_window(client: httpx.AsyncClient, clients: Fleet) -> None:
    response = await client.get("/v1/clients/legacy", headers=auth(clients, "viewer"))
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["account"] for i in items] == [
        "a1@alice.example",
        "a2@alice.example",
        "a3@alice.example",
        "b1@bob.example",
        "tester",
    ]
    a1 = items[0]
    assert (a1["logins"], a1["legacy_logins"], a1["customer"]) == (5, 5, "Alice's customer")
    assert a1["client_ips"] == {"198.51.100.7": 4, "203.0.113.1": 1}
    assert a1["findings"] == ["clients.legacy_tls"]
    assert a1["legacy_first"].startswith((TODAY - dt.timedelta(days=2)).isoformat())
    assert items[1]["protocols"] == {"TLSv1.0": 1, "TLSv1.3": 2}
    assert items[2]["findings"] == ["clients.plaintext_login"]
    assert items[4]["customer_id"] is None  # unmapped

    # kind, domain and the window
    plaintext = await client.get(
        "/v1/clients/legacy?kind=plaintext", headers=auth(clients, "viewer")
    )
    assert [i["account"] for i in plaintext.json()["items"]] == ["a3@alice.example"]
    bob = await client.get("/v1/clients/legacy?domain=BOB.example", headers=auth(clients, "admin"))
    assert [i["account"] for i in bob.json()["items"]] == ["b1@bob.example"]
    year = await client.get(
        f"/v1/clients/legacy?days=366&kind=legacy&customer_id={clients.alice_customer}",
        headers=auth(clients, "admin"),
    )
    assert [i["account"] for i in year.json()["items"]] == [
        "a1@alice.example",
        "a2@alice.example",
        "old@alice.example",
    ]


async def test_pages_and_csv(client: httpx.AsyncClient, clients: Fleet) -> None:
    first = await client.get("/v1/clients/legacy?limit=2", headers=auth(clients, "admin"))
    body = first.json()
    assert len(body["items"]) == 2
    seen = [i["account"] for i in body["items"]]
    while body["next"]:
        body = (await client.get(body["next"], headers=auth(clients, "admin"))).json()
        seen += [i["account"] for i in body["items"]]
    assert len(seen) == 5
    exported = await client.get("/v1/clients/legacy?format=csv", headers=auth(clients, "admin"))
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["account"] for r in rows] == seen
    assert rows[0]["findings"] == "clients.legacy_tls"


async def test_account_managers_see_their_customers_only(
    client: httpx.AsyncClient, clients: Fleet
) -> None:
    headers = auth(clients, "account_manager")  # alice's
    mine = await client.get("/v1/clients/legacy", headers=headers)
    assert [i["account"] for i in mine.json()["items"]] == [
        "a1@alice.example",
        "a2@alice.example",
        "a3@alice.example",
    ]
    impact = (await client.get("/v1/clients/impact", headers=headers)).json()
    assert (impact["customers"], impact["accounts"], impact["unmapped_accounts"]) == (1, 2, 0)
    for query in (f"customer_id={clients.bob_customer}", f"account_manager_id={clients.bob}"):
        for path in ("/v1/clients/legacy", "/v1/clients/impact"):
            assert_problem(await client.get(f"{path}?{query}", headers=headers), 404)


async def test_the_impact_view(client: httpx.AsyncClient, clients: Fleet) -> None:
    legacy = (await client.get("/v1/clients/impact", headers=auth(clients, "viewer"))).json()
    assert (legacy["kind"], legacy["days"], legacy["customers"], legacy["accounts"]) == (
        "legacy",
        30,
        2,
        3,
    )
    # a1 and b1 used nothing but TLS 1.0; a2 has a TLS 1.3 client too
    assert legacy["only_affected_accounts"] == 2
    assert legacy["unmapped_accounts"] == 1
    assert [(c["customer"], c["accounts"]) for c in legacy["customer_list"]] == [
        ("Alice's customer", 2),
        ("Bob's customer", 1),
    ]
    both = (await client.get("/v1/clients/impact?kind=any", headers=auth(clients, "viewer"))).json()
    assert (both["customers"], both["accounts"]) == (2, 4)
    assert both["customer_list"][0]["plaintext_accounts"] == 1
