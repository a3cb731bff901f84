"""``/v1/notices`` and ``/v1/findings`` against a real PostgreSQL and Redis: every
route × role, account managers confined to their customers (404), rendering in every
format and language with its content type, acknowledge and exception moves, finding
filters."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.db.models import DomainEndpoint, Endpoint, Notice
from fleet.findings import evaluate_sweep
from fleet.repositories.results import record_result
from policy import default_profile
from tests.integration.api.harness import (
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
LATER = (dt.date.today() + dt.timedelta(days=90)).isoformat()

ROUTES = [
    Route("GET", "/v1/notices", SCOPED, 200),
    Route("GET", "/v1/notices/{alice_notice}", SCOPED, 200),
    Route("GET", "/v1/notices/{alice_notice}/render", SCOPED, 200),
    Route("POST", "/v1/notices/{alice_notice}/acknowledge", MANAGERS, 200),
    Route(
        "POST",
        "/v1/notices/{alice_notice}/exception",
        MANAGERS,
        200,
        {"reason": "old printers until March", "until": LATER},
    ),
    Route("GET", "/v1/findings", SCOPED, 200),
]


def _legacy_imap(host: str, ip: str) -> dict[str, Any]:
    return {
        "schema_version": "1",
        "target": {
            "host": host,
            "ip": ip,
            "port": 143,
            "service": "imap",
            "tls_mode": "starttls",
            "sni": host,
        },
        "status": "ok",
        "error": None,
        "protocols": {
            "SSLv2": False,
            "SSLv3": False,
            "TLSv1.0": True,
            "TLSv1.1": True,
            "TLSv1.2": False,
            "TLSv1.3": False,
        },
        "cipher_suites": {"TLSv1.0": ["TLS_RSA_WITH_AES_128_CBC_SHA"]},
        "starttls": {"offered": True},
        "auth": {"before_tls": ["PLAIN"], "after_tls": ["PLAIN"], "plaintext_before_tls": True},
        "partial_errors": [],
    }


@pytest.fixture
async def noticed(fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]) -> Fleet:
    """The fleet's sweep with a legacy IMAP endpoint each for alice's and bob's domain,
    its findings stored, and a notified notice per customer."""
    extra: dict[str, int] = {}
    async with session_factory() as session:
        for who, domain, customer, manager, ip in (
            ("alice", fleet.alice_domain, fleet.alice_customer, fleet.alice, "192.0.2.1"),
            ("bob", fleet.bob_domain, fleet.bob_customer, fleet.bob, "192.0.2.2"),
        ):
            host = f"mail.{who}.example"
            endpoint = Endpoint(ip=ip, port=143, service="imap", host=host)
            session.add(endpoint)
            await session.flush()
            session.add(
                DomainEndpoint(
                    sweep_id=fleet.sweep,
                    domain_id=domain,
                    endpoint_id=endpoint.id,
                    host=host,
                    how="mx",
                )
            )
            await record_result(session, fleet.sweep, endpoint.id, _legacy_imap(host, ip))
            problems = [{"endpoint_id": endpoint.id, "code": "tls.only_legacy", "step": None}]
            notice = Notice(
                customer_id=customer,
                account_manager_id=manager,
                status="notified",
                problem_hash=f"{who}-hash",
                problems=problems,
                confirmed=problems,
                sweep_id=fleet.sweep,
                last_sweep_id=fleet.sweep,
                generation=1,
                regressions=0,
                notified_at=dt.datetime.now(dt.UTC),
            )
            session.add(notice)
            await session.flush()
            extra[f"{who}_notice"] = notice.id
            extra[f"{who}_endpoint"] = endpoint.id
        await session.commit()
    report = await evaluate_sweep(session_factory, default_profile(), fleet.sweep)
    assert report is not None
    assert report.stored
    return dataclasses.replace(fleet, extra=extra)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_route_role_matrix(
    client: httpx.AsyncClient, noticed: Fleet, route: Route, role: str
) -> None:
    await check_route_role(client, noticed, route, role)


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_every_route_needs_a_key(
    client: httpx.AsyncClient, noticed: Fleet, route: Route
) -> None:
    await check_route_needs_a_key(client, noticed, route)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/notices/{bob_notice}", None),
        ("GET", "/v1/notices/{bob_notice}/render?format=html", None),
        ("POST", "/v1/notices/{bob_notice}/acknowledge", None),
        ("POST", "/v1/notices/{bob_notice}/exception", {"reason": "r", "until": LATER}),
        ("GET", "/v1/notices?customer_id={bob_customer}", None),
        ("GET", "/v1/findings?customer_id={bob_customer}", None),
        ("GET", "/v1/findings?account_manager_id={bob}", None),
    ],
)
async def test_account_manager_gets_404_for_another_managers_notice(
    client: httpx.AsyncClient, noticed: Fleet, method: str, path: str, body: Any
) -> None:
    url = path.format(**noticed.ids())
    response = await client.request(
        method, url, json=body, headers=auth(noticed, "account_manager")
    )
    assert_problem(response, 404)
    # The same id exists: an operator reaches it.
    seen = await client.request(method, url, json=body, headers=auth(noticed, "operator"))
    assert seen.status_code == 200, seen.text


async def test_lists_are_scoped_and_filtered(client: httpx.AsyncClient, noticed: Fleet) -> None:
    mine = await client.get("/v1/notices", headers=auth(noticed, "account_manager"))
    assert [n["id"] for n in mine.json()["items"]] == [noticed.extra["alice_notice"]]
    every = await client.get("/v1/notices?status=notified", headers=auth(noticed, "viewer"))
    assert len(every.json()["items"]) == 2
    none = await client.get("/v1/notices?status=resolved", headers=auth(noticed, "viewer"))
    assert none.json()["items"] == []
    by_manager = await client.get(
        f"/v1/notices?account_manager_id={noticed.bob}", headers=auth(noticed, "viewer")
    )
    assert [n["id"] for n in by_manager.json()["items"]] == [noticed.extra["bob_notice"]]
    # Findings: the latest judged sweep by default; an account manager sees its own
    findings = await client.get("/v1/findings", headers=auth(noticed, "account_manager"))
    endpoints = {f["endpoint_id"] for f in findings.json()["items"]}
    assert endpoints == {noticed.extra["alice_endpoint"]}
    critical = await client.get(
        "/v1/findings?severity=critical&code=tls.only_legacy", headers=auth(noticed, "viewer")
    )
    items = critical.json()["items"]
    assert {(f["code"], f["severity"]) for f in items} == {("tls.only_legacy", "critical")}
    assert len(items) == 2
    page = await client.get("/v1/findings?limit=1", headers=auth(noticed, "viewer"))
    assert page.json()["next"] is not None


async def test_show_has_the_findings_behind_the_problems(
    client: httpx.AsyncClient, noticed: Fleet
) -> None:
    shown = await client.get(
        f"/v1/notices/{noticed.extra['alice_notice']}", headers=auth(noticed, "account_manager")
    )
    body = shown.json()
    assert [f["code"] for f in body["findings"]] == ["tls.only_legacy"]
    assert body["findings"][0]["endpoint"]["host"] == "mail.alice.example"


@pytest.mark.parametrize(
    ("fmt", "lang", "media", "needle"),
    [
        ("text", "en", "text/plain", "Accept TLS 1.2 and TLS 1.3 only."),
        ("html", "en", "text/html", "<h2>mail.alice.example (192.0.2.1) port 143 (imap)</h2>"),
        ("markdown", "en", "text/markdown", "## mail.alice.example (192.0.2.1) port 143"),
        ("text", "de", "text/plain", "Nur noch TLS 1.2 und TLS 1.3 annehmen."),
        ("html", "de", "text/html", '<html lang="de">'),
        ("markdown", "de", "text/markdown", "## Was zu ändern ist"),
    ],
)
async def test_render_in_every_format_and_language(
    client: httpx.AsyncClient, noticed: Fleet, fmt: str, lang: str, media: str, needle: str
) -> None:
    response = await client.get(
        f"/v1/notices/{noticed.extra['alice_notice']}/render?format={fmt}&lang={lang}",
        headers=auth(noticed, "viewer"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"{media}; charset=utf-8"
    assert needle in response.text
    assert "mail.alice.example" in response.text


async def test_render_refuses_unknown_format_and_language(
    client: httpx.AsyncClient, noticed: Fleet
) -> None:
    base = f"/v1/notices/{noticed.extra['alice_notice']}/render"
    assert_problem(await client.get(f"{base}?format=pdf", headers=auth(noticed, "viewer")), 422)
    assert_problem(await client.get(f"{base}?lang=fr", headers=auth(noticed, "viewer")), 422)


async def test_acknowledge_and_exception_moves(client: httpx.AsyncClient, noticed: Fleet) -> None:
    notice = noticed.extra["alice_notice"]
    who = auth(noticed, "account_manager")
    acked = await client.post(f"/v1/notices/{notice}/acknowledge", headers=who)
    assert (acked.json()["status"], acked.json()["acknowledged_at"] is not None) == (
        "acknowledged",
        True,
    )
    again = await client.post(f"/v1/notices/{notice}/acknowledge", headers=who)
    assert again.json()["status"] == "acknowledged"
    past = await client.post(
        f"/v1/notices/{notice}/exception",
        json={"reason": "r", "until": dt.date.today().isoformat()},
        headers=who,
    )
    assert "until" in assert_problem(past, 422)["detail"]
    taken = await client.post(
        f"/v1/notices/{notice}/exception", json={"reason": "printers", "until": LATER}, headers=who
    )
    assert (taken.json()["status"], taken.json()["exception_until"]) == ("exception", LATER)
    # an exception is not acknowledged again
    assert_problem(await client.post(f"/v1/notices/{notice}/acknowledge", headers=who), 409)


async def test_unknown_notice_is_404(client: httpx.AsyncClient, noticed: Fleet) -> None:
    assert_problem(await client.get("/v1/notices/999999", headers=auth(noticed, "admin")), 404)
