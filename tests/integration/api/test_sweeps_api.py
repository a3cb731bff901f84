"""Sweeps, diffs and endpoint history over HTTP: cancelling a sweep, the stored diff and
one computed against any sweep (filtered, paged), an endpoint with the domains that use
it and its results across sweeps (account managers scoped, 404 not 403), and a sweep
started through the API whose MX leads to a loopback address: refused as a private
target unless private targets are allowed."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, get_args

import httpx
import pytest
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app
from api.schemas.sweeps import DiffCategory
from fleet import jobs, sweeps
from fleet.db.models import DomainEndpoint, Endpoint, Sweep
from fleet.demo.servers import BaseServer
from fleet.repositories.diff import CATEGORIES
from fleet.repositories.results import record_results
from fleet.repositories.sweeps import close_sweep, sweep_endpoint_ids
from fleet.sweeps import SweepRuntime
from scanner.dns import Resolver
from scanner.engine import ScanOptions
from scanner.net import LocalLimiter
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
    settings_for,
)
from tests.integration.dnsserver import DnsServer

ROUTES = [
    Route("POST", "/v1/sweeps/{open_sweep}/cancel", WRITERS, 200),
    Route("GET", "/v1/sweeps/{closed}/diff", READERS, 200),
    Route("GET", "/v1/sweeps/{closed}/diff?against={first}&category=new_endpoints", READERS, 200),
    Route("GET", "/v1/endpoints/{shared_endpoint}", SCOPED, 200),
    Route("GET", "/v1/endpoints/{shared_endpoint}/results", SCOPED, 200),
]


def _document(ip: str, port: int, *, legacy: bool) -> dict[str, Any]:
    return {
        "target": {"ip": ip, "port": port},
        "status": "ok",
        "protocols": {"TLSv1.0": legacy, "TLSv1.1": False, "TLSv1.2": True},
        "auth": {"plaintext_before_tls": False},
    }


async def _use(
    session: AsyncSession, sweep_id: int, domain_id: int, endpoint: Endpoint, how: str = "mx"
) -> None:
    session.add(
        DomainEndpoint(
            sweep_id=sweep_id,
            domain_id=domain_id,
            endpoint_id=endpoint.id,
            host=endpoint.host,
            how=how,
        )
    )
    await session.flush()


@pytest.fixture
async def fleet(fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]) -> Fleet:
    """The starting fleet, and:

    - ``first`` (done): ``shared_endpoint`` used by alice's domain, TLS 1.2 only;
    - ``closed`` (closed for real, its diff stored against ``first``): the shared
      endpoint now also takes TLS 1.0 and is used by bob's domain too; ``bob_endpoint``
      (used only by bob's domain) is new;
    - ``open_sweep`` (scanning), for cancelling.
    """
    async with session_factory() as session:
        shared = Endpoint(ip="192.0.2.1", port=25, service="smtp", host="mx.alice.example")
        bobs = Endpoint(ip="192.0.2.2", port=993, service="imaps", host="mail.bob.example")
        first = Sweep(kind="adhoc", status="done", scope={"all": True}, options={})
        closed = Sweep(kind="adhoc", status="scanning", scope={"all": True}, options={})
        session.add_all([shared, bobs, first])
        await session.flush()
        session.add(closed)  # after first: a higher id
        await session.flush()
        open_sweep = Sweep(kind="adhoc", status="scanning", scope={"all": True}, options={})
        session.add(open_sweep)
        await session.flush()
        await _use(session, first.id, fleet.alice_domain, shared)
        await record_results(
            session, first.id, {shared.id: _document("192.0.2.1", 25, legacy=False)}
        )
        await _use(session, closed.id, fleet.alice_domain, shared)
        await _use(session, closed.id, fleet.bob_domain, shared)
        await _use(session, closed.id, fleet.bob_domain, bobs, how="srv")
        await record_results(
            session,
            closed.id,
            {
                shared.id: _document("192.0.2.1", 25, legacy=True),
                bobs.id: _document("192.0.2.2", 993, legacy=False),
            },
        )
        diff = await close_sweep(session, closed.id)
        assert diff is not None
        await session.commit()
        extra = {
            "first": first.id,
            "closed": closed.id,
            "open_sweep": open_sweep.id,
            "shared_endpoint": shared.id,
            "bob_endpoint": bobs.id,
        }
    return dataclasses.replace(fleet, extra=extra)


# -- the route × role matrix ----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_route_role_matrix(
    client: httpx.AsyncClient, fleet: Fleet, route: Route, role: str
) -> None:
    await check_route_role(client, fleet, route, role)


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_every_route_needs_a_key(
    client: httpx.AsyncClient, fleet: Fleet, route: Route
) -> None:
    await check_route_needs_a_key(client, fleet, route)


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_an_open_sweep_twice_and_a_closed_one(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    path = f"/v1/sweeps/{fleet.extra['open_sweep']}/cancel"
    cancelled = await client.post(path, headers=auth(fleet, "operator"))
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["id"], body["status"]) == (fleet.extra["open_sweep"], "cancelled")
    assert body["finished_at"] is not None
    assert body["progress"]["remaining"] == 0
    # Cancelling again changes nothing and says so with the same answer
    again = await client.post(path, headers=auth(fleet, "admin"))
    assert again.status_code == 200
    assert again.json()["finished_at"] == body["finished_at"]
    # A closed sweep is a conflict, and stays done; an unknown one is 404
    closed = await client.post(
        f"/v1/sweeps/{fleet.extra['closed']}/cancel", headers=auth(fleet, "operator")
    )
    assert "is done" in assert_problem(closed, 409)["detail"]
    shown = await client.get(f"/v1/sweeps/{fleet.extra['closed']}", headers=auth(fleet, "viewer"))
    assert shown.json()["status"] == "done"
    assert_problem(await client.post("/v1/sweeps/999999/cancel", headers=auth(fleet, "admin")), 404)


async def test_cancel_takes_the_sweeps_discovery_off_the_queue(
    client: httpx.AsyncClient, fleet: Fleet, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    started = await client.post(
        "/v1/sweeps", json={"customers": [fleet.alice_customer]}, headers=auth(fleet, "operator")
    )
    sweep_id = started.json()["id"]
    queue = aioredis.Redis.from_url(redis_url)
    try:
        assert await queue.zrange("arq:queue", 0, -1) == [jobs.discover_job_id(sweep_id).encode()]
        response = await client.post(
            f"/v1/sweeps/{sweep_id}/cancel", headers=auth(fleet, "operator")
        )
        assert response.json()["status"] == "cancelled"
        assert await queue.zcard("arq:queue") == 0
        assert await queue.exists(f"arq:job:{jobs.discover_job_id(sweep_id)}") == 0
    finally:
        await queue.aclose()


async def test_cancel_works_while_redis_is_unreachable(
    database_url: str, engine: AsyncEngine, unused_tcp_port: int, fleet: Fleet
) -> None:
    del engine  # requested for its clean-up
    # Given an API whose job queue is unreachable
    app = create_app(settings_for(database_url, f"redis://127.0.0.1:{unused_tcp_port}/0"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        # When an open sweep is cancelled, then it is (PostgreSQL holds the status)
        response = await http.post(
            f"/v1/sweeps/{fleet.extra['open_sweep']}/cancel", headers=auth(fleet, "operator")
        )
        assert response.status_code == 200, response.text
        shown = await http.get(
            f"/v1/sweeps/{fleet.extra['open_sweep']}", headers=auth(fleet, "viewer")
        )
    assert shown.json()["status"] == "cancelled"


# -- diffs ----------------------------------------------------------------------------------


async def test_stored_diff_against_the_previous_closed_sweep(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    response = await client.get(
        f"/v1/sweeps/{fleet.extra['closed']}/diff", headers=auth(fleet, "viewer")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["sweep_id"], body["previous_sweep_id"], body["stored"]) == (
        fleet.extra["closed"],
        fleet.extra["first"],
        True,
    )
    assert body["counts"] == {
        "newly_legacy_tls": 1,
        "fixed_legacy_tls": 0,
        "newly_plaintext_login": 0,
        "fixed_plaintext_login": 0,
        "new_endpoints": 1,
        "vanished_endpoints": 0,
    }
    assert [(i["category"], i["endpoint_id"], i["domains"]) for i in body["items"]] == [
        ("newly_legacy_tls", fleet.extra["shared_endpoint"], ["alice.example", "bob.example"]),
        ("new_endpoints", fleet.extra["bob_endpoint"], ["bob.example"]),
    ]
    assert body["items"][0]["legacy_tls"] is True
    assert body["next"] is None


async def test_diff_against_any_sweep_is_computed_now(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    # The first sweep against the later one: the reverse changes
    response = await client.get(
        f"/v1/sweeps/{fleet.extra['first']}/diff?against={fleet.extra['closed']}",
        headers=auth(fleet, "operator"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["previous_sweep_id"], body["stored"]) == (fleet.extra["closed"], False)
    assert [(i["category"], i["endpoint_id"]) for i in body["items"]] == [
        ("fixed_legacy_tls", fleet.extra["shared_endpoint"]),
        ("vanished_endpoints", fleet.extra["bob_endpoint"]),
    ]
    # A category alone; the counts still cover the whole diff
    only = await client.get(
        f"/v1/sweeps/{fleet.extra['first']}/diff",
        params={"against": fleet.extra["closed"], "category": "vanished_endpoints"},
        headers=auth(fleet, "operator"),
    )
    assert [i["category"] for i in only.json()["items"]] == ["vanished_endpoints"]
    assert only.json()["counts"]["fixed_legacy_tls"] == 1


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/sweeps/{closed}/diff?against={closed}", 422, "itself"),
        ("/v1/sweeps/999999/diff", 404, "no sweep 999999"),
        ("/v1/sweeps/{closed}/diff?against=999999", 404, "no sweep 999999"),
        ("/v1/sweeps/{open_sweep}/diff", 409, "?against="),
        ("/v1/sweeps/{closed}/diff?category=everything", 422, "category"),
        ("/v1/sweeps/{closed}/diff?cursor=garbage!", 422, "cursor"),
    ],
)
async def test_bad_diff_requests(
    client: httpx.AsyncClient, fleet: Fleet, path: str, status: int, words: str
) -> None:
    response = await client.get(path.format(**fleet.ids()), headers=auth(fleet, "admin"))
    assert words in assert_problem(response, status)["detail"]


async def _sweep_with_endpoints(
    sessions: async_sessionmaker[AsyncSession], domain_id: int, count: int
) -> int:
    """A done sweep in which the domain used ``count`` endpoints of its own."""
    async with sessions() as session:
        sweep = Sweep(kind="adhoc", status="done", scope={"domains": ["x"]}, options={})
        endpoints = [
            Endpoint(ip=f"198.51.100.{n % 250}", port=1000 + n, service="smtp", host="mx.test")
            for n in range(count)
        ]
        session.add_all([sweep, *endpoints])
        await session.flush()
        for endpoint in endpoints:
            await _use(session, sweep.id, domain_id, endpoint)
        await session.commit()
        return sweep.id


async def test_diff_pages_walk_every_entry_once(
    client: httpx.AsyncClient, fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    # Given a sweep of 120 endpoints compared with one that had 2 others (122 entries)
    big = await _sweep_with_endpoints(session_factory, fleet.alice_domain, 120)
    url: str | None = f"/v1/sweeps/{big}/diff?against={fleet.extra['closed']}&limit=50"
    seen: list[tuple[str, int]] = []
    pages = 0
    while url is not None:
        response = await client.get(url, headers=auth(fleet, "viewer"))
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [(i["category"], i["endpoint_id"]) for i in page["items"]]
        url = page["next"]
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 122
    assert sorted(c for c, _ in seen) == ["new_endpoints"] * 120 + ["vanished_endpoints"] * 2
    # Entries come by category (in the documented order), then endpoint id
    order = [(CATEGORIES.index(c), e) for c, e in seen]
    assert order == sorted(order)


def test_the_category_filter_names_every_category() -> None:
    assert get_args(DiffCategory) == CATEGORIES


# -- endpoints ------------------------------------------------------------------------------


async def test_endpoint_shows_the_domains_of_its_latest_sweep(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    path = f"/v1/endpoints/{fleet.extra['shared_endpoint']}"
    everyone = (await client.get(path, headers=auth(fleet, "viewer"))).json()
    assert (everyone["ip"], everyone["port"], everyone["service"]) == ("192.0.2.1", 25, "smtp")
    assert everyone["latest_sweep_id"] == fleet.extra["closed"]
    assert [d["domain"] for d in everyone["domains"]] == ["alice.example", "bob.example"]
    # Alice's account manager sees the endpoint, and only her own domain
    alices = (await client.get(path, headers=auth(fleet, "account_manager"))).json()
    assert [(d["domain_id"], d["domain"], d["how"]) for d in alices["domains"]] == [
        (fleet.alice_domain, "alice.example", "mx")
    ]


@pytest.mark.parametrize(
    "path", ["/v1/endpoints/{bob_endpoint}", "/v1/endpoints/{bob_endpoint}/results"]
)
async def test_account_manager_gets_404_for_another_managers_endpoint(
    client: httpx.AsyncClient, fleet: Fleet, path: str
) -> None:
    url = path.format(**fleet.ids())
    assert_problem(await client.get(url, headers=auth(fleet, "account_manager")), 404)
    # The endpoint exists: a viewer sees it; and an unknown id is the same 404
    assert (await client.get(url, headers=auth(fleet, "viewer"))).status_code == 200
    unknown = await client.get(
        path.format(bob_endpoint=999_999), headers=auth(fleet, "account_manager")
    )
    assert_problem(unknown, 404)


async def test_endpoint_results_newest_first_paged_with_or_without_documents(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    path = f"/v1/endpoints/{fleet.extra['shared_endpoint']}/results"
    full = (await client.get(path, headers=auth(fleet, "account_manager"))).json()
    assert [(r["sweep_id"], r["status"]) for r in full["items"]] == [
        (fleet.extra["closed"], "ok"),
        (fleet.extra["first"], "ok"),
    ]
    assert full["items"][0]["document"]["protocols"]["TLSv1.0"] is True
    assert full["items"][1]["document"]["protocols"]["TLSv1.0"] is False
    # One at a time, without documents
    first_page = (
        await client.get(
            path, params={"limit": 1, "documents": "false"}, headers=auth(fleet, "viewer")
        )
    ).json()
    assert [r["sweep_id"] for r in first_page["items"]] == [fleet.extra["closed"]]
    assert first_page["items"][0]["document"] is None
    assert "documents=false" in first_page["next"]
    second_page = (await client.get(first_page["next"], headers=auth(fleet, "viewer"))).json()
    assert [r["sweep_id"] for r in second_page["items"]] == [fleet.extra["first"]]
    assert second_page["items"][0]["document"] is None
    assert second_page["next"] is None


# -- private targets through the API ------------------------------------------------------

#: The MX of ``private.test`` (a loopback address: a private target).
PRIVATE_MX = "127.0.0.47"


class _PlainSmtp(BaseServer):
    """SMTP on port 25 without STARTTLS: a scan gets as far as ``starttls_not_offered``."""

    def handle(self, conn: socket.socket) -> None:
        conn.sendall(b"220 private.test ESMTP\r\n")
        stream = conn.makefile("rb")
        for line in stream:
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250-private.test\r\n250 AUTH PLAIN LOGIN\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"502 no\r\n")


@pytest.fixture
def private_mx() -> Iterator[tuple[DnsServer, BaseServer]]:
    zone = f"@ MX 10 mx.private.test.\nmx A {PRIVATE_MX}\n"
    server = _PlainSmtp(PRIVATE_MX, port=25).start()
    try:
        with DnsServer({"private.test": zone}, host="127.0.0.1") as dns:
            yield dns, server
    finally:
        server.stop()


@pytest.fixture
async def queue(arq_redis_settings: RedisSettings) -> AsyncIterator[ArqRedis]:
    pool = await jobs.create_job_pool(arq_redis_settings)
    try:
        yield pool
    finally:
        await pool.aclose()


def _runtime(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, dns: DnsServer, *, private: bool
) -> SweepRuntime:
    return SweepRuntime(
        sessions=sessions,
        redis=redis,
        scan_options=ScanOptions(timeout=2.0, connect_timeout=2.0, greeting_timeout=2.0),
        limiter=LocalLimiter(per_ip=2),
        new_resolver=lambda: Resolver((dns.nameserver,)),
        allow_private=private,
    )


async def _sweep_through_the_api(
    client: httpx.AsyncClient,
    fleet: Fleet,
    rt: SweepRuntime,
    session_factory: async_sessionmaker[AsyncSession],
) -> tuple[int, Sequence[int]]:
    """Start a sweep of private.test through the API, then run its jobs' steps."""
    started = await client.post(
        "/v1/sweeps", json={"domains": ["private.test"]}, headers=auth(fleet, "operator")
    )
    assert started.status_code == 202, started.text
    sweep_id: int = started.json()["id"]
    await sweeps.discover_sweep(rt, sweep_id)
    async with session_factory() as session:
        endpoint_ids = await sweep_endpoint_ids(session, sweep_id)
    for endpoint_id in endpoint_ids:
        await sweeps.scan_endpoint(rt, sweep_id, endpoint_id)
    assert await sweeps.close(rt, sweep_id)
    return sweep_id, endpoint_ids


async def test_a_private_mx_is_refused_unless_private_targets_are_allowed(
    client: httpx.AsyncClient,
    fleet: Fleet,
    session_factory: async_sessionmaker[AsyncSession],
    queue: ArqRedis,
    private_mx: tuple[DnsServer, BaseServer],
) -> None:
    dns, server = private_mx
    # Given alice's domain private.test, whose MX is a loopback address
    created = await client.post(
        "/v1/domains",
        json={"name": "private.test", "customer_id": fleet.alice_customer},
        headers=auth(fleet, "operator"),
    )
    domain_id = created.json()["id"]
    # When a sweep started through the API runs on workers that refuse private targets
    refused, endpoints = await _sweep_through_the_api(
        client, fleet, _runtime(session_factory, queue, dns, private=False), session_factory
    )
    # Then its one endpoint is a private_target error, never connected to, and it is done
    assert len(endpoints) == 1
    shown = (await client.get(f"/v1/sweeps/{refused}", headers=auth(fleet, "viewer"))).json()
    assert shown["status"] == "done"
    assert (shown["progress"]["total"], shown["progress"]["failed"]) == (1, 1)
    results = (
        await client.get(f"/v1/domains/{domain_id}/results", headers=auth(fleet, "viewer"))
    ).json()["results"]
    assert [(r["endpoint"]["ip"], r["endpoint"]["port"]) for r in results] == [(PRIVATE_MX, 25)]
    assert results[0]["document"]["error"]["kind"] == "private_target"
    assert server.connections == 0
    # When workers that allow private targets sweep it again
    allowed, again = await _sweep_through_the_api(
        client, fleet, _runtime(session_factory, queue, dns, private=True), session_factory
    )
    # Then the same endpoint was really scanned: the server saw it, and the result says
    # what the server does (no STARTTLS)
    assert again == endpoints
    assert server.connections > 0
    history = (
        await client.get(f"/v1/endpoints/{endpoints[0]}/results", headers=auth(fleet, "viewer"))
    ).json()["items"]
    assert [(r["sweep_id"], r["error_kind"]) for r in history] == [
        (allowed, "starttls_not_offered"),
        (refused, "private_target"),
    ]
