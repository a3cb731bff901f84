"""The HTTP API against a real PostgreSQL and Redis: every route × every role, scoping
of account managers (404, not 403), authentication, problem documents, pagination,
bulk import, body limits, health, readiness and metrics."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import tests.integration.api as api_tests
from api.app import create_app
from fleet.db.models import ApiKey, DomainEndpoint, Endpoint, ScanResult, Sweep
from tests.integration.api.harness import (
    ADMIN,
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

_assert_problem = assert_problem
_auth = auth
_settings = settings_for

# -- the route × role matrix ------------------------------------------------------------------

ROUTES = [
    Route("GET", "/v1/account-managers", SCOPED, 200),
    Route("GET", "/v1/account-managers/{alice}", SCOPED, 200),
    Route("POST", "/v1/account-managers", WRITERS, 201, {"name": "C", "email": "c@example.net"}),
    Route("PATCH", "/v1/account-managers/{alice}", WRITERS, 200, {"name": "Alice B."}),
    Route("DELETE", "/v1/account-managers/{alice}", WRITERS, 204),
    Route("GET", "/v1/customers", SCOPED, 200),
    Route("GET", "/v1/customers/{alice_customer}", SCOPED, 200),
    Route("POST", "/v1/customers", WRITERS, 201, {"name": "New", "account_manager_id": None}),
    Route("PATCH", "/v1/customers/{alice_customer}", WRITERS, 200, {"name": "Renamed"}),
    Route("DELETE", "/v1/customers/{alice_customer}", WRITERS, 204),
    Route("GET", "/v1/domains", SCOPED, 200),
    Route("GET", "/v1/domains/{alice_domain}", SCOPED, 200),
    Route("GET", "/v1/domains/{alice_domain}/results", SCOPED, 200),
    Route(
        "POST",
        "/v1/domains",
        WRITERS,
        201,
        {"name": "new.example", "customer_id": "{alice_customer}"},
    ),
    Route("PATCH", "/v1/domains/{alice_domain}", WRITERS, 200, {"tags": ["vip"]}),
    Route("DELETE", "/v1/domains/{alice_domain}", WRITERS, 204),
    Route(
        "POST",
        "/v1/domains/import",
        WRITERS,
        200,
        {"rows": [{"domain": "imported.example", "customer": "Imported"}]},
    ),
    Route("GET", "/v1/sweeps", READERS, 200),
    Route("GET", "/v1/sweeps/{sweep}", READERS, 200),
    Route("POST", "/v1/sweeps", WRITERS, 202, {"domains": ["alice.example"], "quick": True}),
    Route("GET", "/v1/apikeys", ADMIN, 200),
    Route("GET", "/v1/apikeys/{viewer_key}", ADMIN, 200),
    Route("POST", "/v1/apikeys", ADMIN, 201, {"role": "viewer", "name": "new"}),
    Route("DELETE", "/v1/apikeys/{viewer_key}", ADMIN, 200),
]


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


def _all_matrix_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route in some test module's ``ROUTES``."""
    listed: set[tuple[str, str]] = set()
    for module in pkgutil.iter_modules(api_tests.__path__):
        if module.name.startswith("test_"):
            routes = getattr(
                importlib.import_module(f"{api_tests.__name__}.{module.name}"), "ROUTES", []
            )
            listed |= {(r.method, r.path) for r in routes}
    return listed


def _template(path: str) -> str:
    """A matrix path with its ids named generically: ``/v1/domains/{alice_domain}`` →
    ``/v1/domains/{}``."""
    import re

    return re.sub(r"\{[^}]+\}", "{}", path)


async def test_every_operation_is_in_the_role_matrix(client: httpx.AsyncClient) -> None:
    # Every /v1 operation of the OpenAPI document is checked for every role somewhere.
    document = (await client.get("/openapi.json")).json()
    operations = {
        (method.upper(), _template(path))
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method in item
    }
    covered = {(method, _template(path)) for method, path in _all_matrix_routes()}
    assert operations - covered == set()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/account-managers/{bob}",
        "/v1/customers/{bob_customer}",
        "/v1/domains/{bob_domain}",
        "/v1/domains/{bob_domain}/results",
    ],
)
async def test_account_manager_gets_404_for_another_managers_things(
    client: httpx.AsyncClient, fleet: Fleet, path: str
) -> None:
    ids = {"bob": fleet.bob, "bob_customer": fleet.bob_customer, "bob_domain": fleet.bob_domain}
    response = await client.get(path.format(**ids), headers=_auth(fleet, "account_manager"))
    _assert_problem(response, 404)
    # The same id exists: a viewer sees it.
    assert (await client.get(path.format(**ids), headers=_auth(fleet, "viewer"))).status_code == 200


@pytest.mark.parametrize(
    ("path", "field", "own"),
    [
        ("/v1/account-managers", "id", "alice"),
        ("/v1/customers", "id", "alice_customer"),
        ("/v1/domains", "id", "alice_domain"),
    ],
)
async def test_account_manager_lists_only_its_own(
    client: httpx.AsyncClient, fleet: Fleet, path: str, field: str, own: str
) -> None:
    response = await client.get(path, headers=_auth(fleet, "account_manager"))
    assert response.status_code == 200
    assert [item[field] for item in response.json()["items"]] == [getattr(fleet, own)]
    everyone = await client.get(path, headers=_auth(fleet, "viewer"))
    assert len(everyone.json()["items"]) == 2


async def test_revoked_key_is_refused(client: httpx.AsyncClient, fleet: Fleet) -> None:
    revoked = await client.delete(
        f"/v1/apikeys/{fleet.key_ids['viewer']}", headers=_auth(fleet, "admin")
    )
    assert revoked.json()["revoked_at"] is not None
    response = await client.get("/v1/domains", headers=_auth(fleet, "viewer"))
    _assert_problem(response, 401)


async def test_created_key_works_and_is_stored_as_a_hash(
    client: httpx.AsyncClient, fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    created = await client.post(
        "/v1/apikeys",
        json={"role": "account_manager", "account_manager_id": fleet.bob, "name": "bob"},
        headers=_auth(fleet, "admin"),
    )
    assert created.status_code == 201
    secret = created.json()["key"]
    assert secret.startswith(f"tlsf_{created.json()['prefix']}_")
    mine = await client.get("/v1/customers", headers={"Authorization": f"Bearer {secret}"})
    assert [c["id"] for c in mine.json()["items"]] == [fleet.bob_customer]
    listed = await client.get("/v1/apikeys", headers=_auth(fleet, "admin"))
    assert all("key" not in k and "digest" not in k for k in listed.json()["items"])
    async with session_factory() as session:
        digests = list(await session.scalars(select(ApiKey.digest)))
    assert secret not in digests
    assert all(len(d) == 64 for d in digests)


@pytest.mark.parametrize(
    "body",
    [
        {"role": "account_manager"},
        {"role": "viewer", "account_manager_id": 1},
        {"role": "superuser"},
    ],
)
async def test_bad_key_requests_are_422(
    client: httpx.AsyncClient, fleet: Fleet, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/apikeys", json=body, headers=_auth(fleet, "admin"))
    _assert_problem(response, 422)


# -- problems -----------------------------------------------------------------------------


async def test_validation_errors_are_problems(client: httpx.AsyncClient, fleet: Fleet) -> None:
    response = await client.post(
        "/v1/domains", json={"name": "x.example"}, headers=_auth(fleet, "admin")
    )
    body = _assert_problem(response, 422)
    assert "customer_id" in body["detail"]
    assert body["errors"][0]["location"] == ["body", "customer_id"]


async def test_bad_domain_name_is_a_clear_422(client: httpx.AsyncClient, fleet: Fleet) -> None:
    response = await client.post(
        "/v1/domains",
        json={"name": "bad..name", "customer_id": fleet.alice_customer},
        headers=_auth(fleet, "admin"),
    )
    assert _assert_problem(response, 422)["detail"].startswith("name:")


async def test_duplicate_is_409(client: httpx.AsyncClient, fleet: Fleet) -> None:
    response = await client.post(
        "/v1/domains",
        json={"name": "ALICE.example.", "customer_id": fleet.bob_customer},
        headers=_auth(fleet, "admin"),
    )
    _assert_problem(response, 409)


async def test_unknown_route_and_id_are_404_problems(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    _assert_problem(await client.get("/v1/nothing", headers=_auth(fleet, "admin")), 404)
    _assert_problem(await client.get("/v1/domains/999999", headers=_auth(fleet, "admin")), 404)
    _assert_problem(await client.get("/v1/sweeps/999999", headers=_auth(fleet, "admin")), 404)


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient, fleet: Fleet) -> None:
    _assert_problem(await client.put("/v1/domains", headers=_auth(fleet, "admin")), 405)


async def test_domain_update_moves_updated_at(client: httpx.AsyncClient, fleet: Fleet) -> None:
    path = f"/v1/domains/{fleet.alice_domain}"
    before = (await client.get(path, headers=_auth(fleet, "admin"))).json()
    after = await client.patch(
        path, json={"tags": ["b", "a", "a"], "active": False}, headers=_auth(fleet, "admin")
    )
    assert after.json()["tags"] == ["a", "b"]
    assert after.json()["active"] is False
    assert after.json()["updated_at"] > before["updated_at"]


async def test_secrets_are_never_logged(
    client: httpx.AsyncClient, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await client.post(
        "/v1/apikeys", json={"role": "viewer"}, headers=_auth(fleet, "admin")
    )
    secret = created.json()["key"]
    await client.get("/v1/domains", headers={"Authorization": f"Bearer {secret}"})
    await client.delete(f"/v1/apikeys/{created.json()['id']}", headers=_auth(fleet, "admin"))
    await client.get("/v1/domains", headers={"Authorization": f"Bearer {secret}"})
    assert created.json()["prefix"] in caplog.text
    for key in [secret, *fleet.keys.values()]:
        assert key not in caplog.text
        assert key.rsplit("_", 1)[1] not in caplog.text


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient, fleet: Fleet) -> None:
    big = b'{"rows": [' + b'{"domain": "x.example", "customer": "c"},' * 120_000 + b"]}"
    response = await client.post(
        "/v1/domains/import",
        content=big,
        headers={**_auth(fleet, "admin"), "Content-Type": "application/json"},
    )
    assert "larger than" in _assert_problem(response, 413)["detail"]


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient, fleet: Fleet) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (1024 * 1024)

    response = await client.post(
        "/v1/domains/import",
        content=chunks(),
        headers={**_auth(fleet, "admin"), "Content-Type": "application/json"},
    )
    _assert_problem(response, 413)


# -- pagination -----------------------------------------------------------------------------


async def test_pagination_walks_250_items_exactly_once(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    # Given 250 domains in all (2 from the fleet, 248 imported),
    rows = [{"domain": f"d{i:03}.example", "customer": "Many"} for i in range(248)]
    imported = await client.post(
        "/v1/domains/import", json={"rows": rows}, headers=_auth(fleet, "operator")
    )
    assert imported.json()["created"] == 248
    # when a client follows the next links 40 at a time,
    seen: list[int] = []
    url: str | None = "/v1/domains?limit=40"
    pages = 0
    while url is not None:
        response = await client.get(url, headers=_auth(fleet, "viewer"))
        assert response.status_code == 200
        page = response.json()
        seen += [d["id"] for d in page["items"]]
        url = page["next"]
        pages += 1
    # then it sees every domain exactly once, in 7 pages.
    assert len(seen) == 250
    assert len(set(seen)) == 250
    assert pages == 7


async def test_limit_has_a_maximum_and_bad_cursors_are_422(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    _assert_problem(await client.get("/v1/domains?limit=501", headers=_auth(fleet, "admin")), 422)
    response = await client.get("/v1/domains?cursor=garbage!", headers=_auth(fleet, "admin"))
    assert "cursor" in _assert_problem(response, 422)["detail"]


# -- bulk import ------------------------------------------------------------------------------


async def test_import_keeps_good_rows_and_reports_bad_ones(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    rows = [
        {"domain": "good1.example", "customer": "Imp", "tags": ["mail"]},
        {"domain": "bad..example", "customer": "Imp"},
        {"domain": "good2.example", "customer": "Imp", "account_manager": "Carol"},
        {"domain": "good1.example", "customer": "Imp"},
        {"domain": "bücher.example", "customer": "Imp"},
        {"customer": "Imp"},
    ]
    response = await client.post(
        "/v1/domains/import", json={"rows": rows}, headers=_auth(fleet, "operator")
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["created"], report["rejected"]) == (6, 2, 4)
    assert [e["row"] for e in report["errors"]] == [2, 3, 4, 6]
    assert "already listed in row 1" in report["errors"][2]["reason"]
    listed = await client.get("/v1/domains?limit=500", headers=_auth(fleet, "viewer"))
    names = {d["name"] for d in listed.json()["items"]}
    assert {"good1.example", "xn--bcher-kva.example"} <= names
    assert "bad..example" not in names


async def test_import_over_10000_rows_is_413(client: httpx.AsyncClient, fleet: Fleet) -> None:
    rows = [{"domain": f"d{i}.example", "customer": "c"} for i in range(10_001)]
    response = await client.post(
        "/v1/domains/import", json={"rows": rows}, headers=_auth(fleet, "admin")
    )
    body = _assert_problem(response, 413)
    assert "10,000" in body["detail"]
    assert body["type"].endswith("batch-too-large")
    assert (await client.get("/v1/domains", headers=_auth(fleet, "admin"))).json()["next"] is None


# -- sweeps and results -------------------------------------------------------------------


async def test_start_sweep_queues_discovery_and_shows_progress(
    client: httpx.AsyncClient, fleet: Fleet, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    response = await client.post(
        "/v1/sweeps", json={"customers": [fleet.alice_customer]}, headers=_auth(fleet, "operator")
    )
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert sweep["status"] == "pending"
    assert sweep["scope"] == {"customers": [fleet.alice_customer]}
    assert sweep["progress"]["done"] == 0
    queue = aioredis.Redis.from_url(redis_url)
    try:
        assert await queue.zcard("arq:queue") == 1
    finally:
        await queue.aclose()
    shown = await client.get(f"/v1/sweeps/{sweep['id']}", headers=_auth(fleet, "viewer"))
    assert shown.json()["id"] == sweep["id"]
    listed = await client.get("/v1/sweeps", headers=_auth(fleet, "viewer"))
    assert [s["id"] for s in listed.json()["items"]] == [sweep["id"], fleet.sweep]


@pytest.mark.parametrize(
    "body",
    [{}, {"all": True, "domains": ["a.example"]}, {"domains": []}, {"domains": ["bad..x"]}],
)
async def test_bad_sweep_scopes_are_422(
    client: httpx.AsyncClient, fleet: Fleet, body: dict[str, Any]
) -> None:
    _assert_problem(await client.post("/v1/sweeps", json=body, headers=_auth(fleet, "admin")), 422)


async def test_domain_results_show_the_latest_document(
    client: httpx.AsyncClient, fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    # Given an endpoint of alice's domain with an older and a newer result,
    async with session_factory() as session:
        endpoint = Endpoint(ip="192.0.2.1", port=25, service="smtp", host="mx.alice.example")
        newer = Sweep(kind="adhoc", status="done", scope={"all": True}, options={})
        session.add_all([endpoint, newer])
        await session.flush()
        for sweep_id in (fleet.sweep, newer.id):
            session.add(
                DomainEndpoint(
                    sweep_id=sweep_id,
                    domain_id=fleet.alice_domain,
                    endpoint_id=endpoint.id,
                    host="mx.alice.example",
                    how="mx",
                )
            )
        now = dt.datetime.now(dt.UTC)
        for sweep_id, when, label in (
            (fleet.sweep, now - dt.timedelta(days=1), "old"),
            (newer.id, now, "new"),
        ):
            session.add(
                ScanResult(
                    sweep_id=sweep_id,
                    endpoint_id=endpoint.id,
                    status="ok",
                    scanned_at=when,
                    document={"label": label},
                )
            )
        await session.commit()
    # when alice's account manager asks for the domain's results,
    response = await client.get(
        f"/v1/domains/{fleet.alice_domain}/results", headers=_auth(fleet, "account_manager")
    )
    # then there is one endpoint, with the newer document.
    assert response.status_code == 200
    body = response.json()
    assert body["domain"] == "alice.example"
    assert [(r["endpoint"]["port"], r["document"]) for r in body["results"]] == [
        (25, {"label": "new"})
    ]


# -- operations -----------------------------------------------------------------------------


async def test_healthz_readyz_and_metrics(client: httpx.AsyncClient, fleet: Fleet) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    await client.get("/v1/domains", headers=_auth(fleet, "viewer"))
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    requests = (
        "tlsfleet_http_requests_total",
        (("method", "GET"), ("route", "/v1/domains"), ("status", "200")),
    )
    assert samples.get(requests) == 1.0, sorted(samples)
    latency = ("tlsfleet_http_request_duration_seconds_count", requests[1][:2])
    assert samples.get(latency) == 1.0
    assert samples[("tlsfleet_sweeps", (("status", "done"),))] == 1.0


async def test_readyz_is_503_when_redis_is_unreachable(
    database_url: str, engine: AsyncEngine, unused_tcp_port: int
) -> None:
    del engine
    # Given Redis pointed at a port nobody listens on,
    app = create_app(_settings(database_url, f"redis://127.0.0.1:{unused_tcp_port}/0"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        # then the process is healthy but not ready, and says why.
        assert (await http.get("/healthz")).status_code == 200
        response = await http.get("/readyz")
    body = _assert_problem(response, 503)
    assert body["unreachable"] == ["Redis"]


async def test_readyz_is_503_when_postgresql_is_unreachable(
    redis_url: str, unused_tcp_port: int
) -> None:
    app = create_app(_settings(f"postgresql://nobody@127.0.0.1:{unused_tcp_port}/none", redis_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        response = await http.get("/readyz")
        assert (await http.get("/metrics")).status_code == 200
    assert _assert_problem(response, 503)["unreachable"] == ["PostgreSQL"]


async def test_sweep_start_is_503_when_redis_is_unreachable(
    database_url: str, engine: AsyncEngine, unused_tcp_port: int, fleet: Fleet
) -> None:
    del engine
    app = create_app(_settings(database_url, f"redis://127.0.0.1:{unused_tcp_port}/0"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        response = await http.post(
            "/v1/sweeps", json={"all": True}, headers=_auth(fleet, "operator")
        )
        assert "Redis" in _assert_problem(response, 503)["detail"]
        # The rest of the API still works.
        assert (await http.get("/v1/domains", headers=_auth(fleet, "viewer"))).status_code == 200


def _has_example(document: dict[str, Any], operation: dict[str, Any]) -> bool:
    """Whether the operation's success response (or its request body) has an example,
    directly or on the schema it refers to; a 204 has no body to show."""
    schemas = document["components"]["schemas"]
    if set(operation["responses"]) & {"200", "201", "202"} == set():
        return "204" in operation["responses"]  # nothing to show but the status
    places = [
        response.get("content", {})
        for status, response in operation["responses"].items()
        if status.startswith("2")
    ]
    places.append(operation.get("requestBody", {}).get("content", {}))
    for content in places:
        for media in content.values():
            if "example" in media or "examples" in media:
                return True
            ref = media.get("schema", {}).get("$ref", "")
            if ref and "examples" in schemas[ref.rsplit("/", 1)[1]]:
                return True
    return False


async def test_openapi_documents_every_operation(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            assert operation.get("description"), (method, path)
            assert "HTTPValidationError" not in str(operation), (method, path)
            assert _has_example(document, operation), (method, path)
    assert "bearer" in str(document["components"]["securitySchemes"]).lower()


# -- list filters -----------------------------------------------------------------------------


async def test_domain_and_customer_lists_filter(client: httpx.AsyncClient, fleet: Fleet) -> None:
    # Given alice's customer with two more domains, one tagged and inactive,
    for name, tags, active in (("t1.example", ["vip"], False), ("t2.example", [], True)):
        created = await client.post(
            "/v1/domains",
            json={"name": name, "customer_id": fleet.alice_customer, "tags": tags},
            headers=_auth(fleet, "admin"),
        )
        if not active:
            await client.patch(
                f"/v1/domains/{created.json()['id']}",
                json={"active": False},
                headers=_auth(fleet, "admin"),
            )

    async def names(url: str, role: str = "viewer") -> list[str]:
        response = await client.get(url, headers=_auth(fleet, role))
        assert response.status_code == 200, response.text
        return sorted(item["name"] for item in response.json()["items"])

    # then each filter selects exactly its domains, and they combine;
    own = f"customer_id={fleet.alice_customer}"
    assert await names(f"/v1/domains?{own}") == ["alice.example", "t1.example", "t2.example"]
    assert await names("/v1/domains?tag=vip") == ["t1.example"]
    assert await names("/v1/domains?active=false") == ["t1.example"]
    assert await names(f"/v1/domains?{own}&active=true") == ["alice.example", "t2.example"]
    # a filter stays on the next page's link;
    first = await client.get(f"/v1/domains?{own}&limit=1", headers=_auth(fleet, "viewer"))
    assert "customer_id=" in first.json()["next"]
    # customers filter by account manager;
    assert await names(f"/v1/customers?account_manager_id={fleet.bob}") == ["Bob's customer"]
    # and an account manager filtering on another manager's things sees nothing.
    bobs = f"/v1/domains?customer_id={fleet.bob_customer}"
    assert await names(bobs, "account_manager") == []
    assert await names(f"/v1/customers?account_manager_id={fleet.bob}", "account_manager") == []


async def test_inventory_lists_export_as_csv(client: httpx.AsyncClient, fleet: Fleet) -> None:
    import csv
    import io

    # Given 1,200 more domains (more than one export batch) and a customer whose name a
    # spreadsheet would run as a formula,
    rows = [{"domain": f"csv{i:04}.example", "customer": "=HYPERLINK(1)"} for i in range(1200)]
    imported = await client.post(
        "/v1/domains/import", json={"rows": rows}, headers=_auth(fleet, "operator")
    )
    assert imported.json()["created"] == 1200
    # when the domain list is exported (format=csv, and Accept: text/csv),
    response = await client.get("/v1/domains?format=csv", headers=_auth(fleet, "viewer"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    # then it holds every domain once, with the JSON list's values,
    assert len(table) == 1202
    assert len({r["id"] for r in table}) == 1202
    first = (await client.get("/v1/domains?limit=1", headers=_auth(fleet, "viewer"))).json()
    item = first["items"][0]
    assert table[0]["name"] == item["name"]
    assert table[0]["customer_id"] == str(item["customer_id"])
    assert table[0]["active"] == "true"
    accepted = await client.get(
        "/v1/domains", headers={**_auth(fleet, "viewer"), "Accept": "text/csv"}
    )
    assert accepted.text == response.text
    # filters apply, and an account manager's export holds only its own;
    own = await client.get(
        f"/v1/domains?format=csv&customer_id={fleet.bob_customer}",
        headers=_auth(fleet, "viewer"),
    )
    assert [r["name"] for r in csv.DictReader(io.StringIO(own.text))] == ["bob.example"]
    mine = await client.get("/v1/domains?format=csv", headers=_auth(fleet, "account_manager"))
    assert [r["name"] for r in csv.DictReader(io.StringIO(mine.text))] == ["alice.example"]
    # and a formula-like name is escaped.
    customers = await client.get("/v1/customers?format=csv", headers=_auth(fleet, "viewer"))
    names = [r["name"] for r in csv.DictReader(io.StringIO(customers.text))]
    assert "'=HYPERLINK(1)" in names
    assert "=HYPERLINK(1)" not in names
    managers = await client.get(
        "/v1/account-managers?format=csv", headers=_auth(fleet, "account_manager")
    )
    assert [r["email"] for r in csv.DictReader(io.StringIO(managers.text))] == ["alice@example.net"]


async def test_every_list_exports_its_whole_list_as_csv(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    import csv
    import io

    # Every collection route that offers format=csv (they all should: see below) gives
    # a header row and one row per item of its JSON list, followed through every page.
    document = (await client.get("/openapi.json")).json()
    lists = [
        path
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        and "get" in item
        and "Page_" in str(item["get"]["responses"]["200"])
    ]
    exporting = [
        path
        for path in lists
        if any(p["name"] == "format" for p in document["paths"][path]["get"].get("parameters", []))
    ]
    assert sorted(exporting) == sorted(lists)
    assert "/v1/domains" in exporting
    for path in (p for p in exporting if "{" not in p):
        items: list[Any] = []
        url: str | None = f"{path}?limit=1"
        while url is not None:
            page = (await client.get(url, headers=_auth(fleet, "admin"))).json()
            items += page["items"]
            url = page["next"]
        response = await client.get(f"{path}?format=csv", headers=_auth(fleet, "admin"))
        assert response.headers["content-type"].startswith("text/csv"), path
        table = list(csv.reader(io.StringIO(response.text)))
        assert len(table) == 1 + len(items), path
        if items:
            assert set(table[0]) <= set(items[0]) | {"endpoint"}, path
