"""Requests schemathesis found to break the API, kept as plain regression tests: ids
beyond the database's integer range, cursors that decode to such ids, and bodies that
are not JSON text. Each was a 500 or an undocumented 400; each is a 422 problem now."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.integration.api.harness import Fleet, assert_problem, auth

#: One past PostgreSQL's largest ``integer``.
TOO_BIG = 2**31


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/account-managers/{}"),
        ("GET", "/v1/customers/{}"),
        ("GET", "/v1/domains/{}"),
        ("GET", "/v1/domains/{}/results"),
        ("GET", "/v1/sweeps/{}"),
        ("GET", "/v1/apikeys/{}"),
        ("DELETE", "/v1/domains/{}"),
        ("DELETE", "/v1/apikeys/{}"),
    ],
)
async def test_id_beyond_the_integer_range_is_a_422(
    client: httpx.AsyncClient, fleet: Fleet, method: str, path: str
) -> None:
    response = await client.request(method, path.format(TOO_BIG), headers=auth(fleet, "admin"))
    assert_problem(response, 422)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/domains", {"name": "big.example", "customer_id": TOO_BIG}),
        ("/v1/customers", {"name": "Big", "account_manager_id": TOO_BIG}),
        ("/v1/apikeys", {"role": "account_manager", "account_manager_id": TOO_BIG}),
    ],
)
async def test_body_id_beyond_the_integer_range_is_a_422(
    client: httpx.AsyncClient, fleet: Fleet, path: str, body: dict[str, object]
) -> None:
    response = await client.post(path, json=body, headers=auth(fleet, "admin"))
    problem = assert_problem(response, 422)
    assert problem["type"].endswith(":validation")


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/domains", "/v1/sweeps", "/v1/apikeys"])
async def test_cursor_beyond_the_integer_range_is_a_422(
    client: httpx.AsyncClient, fleet: Fleet, path: str
) -> None:
    cursor = base64.urlsafe_b64encode(b'{"id":99999999999}').decode().rstrip("=")
    response = await client.get(path, params={"cursor": cursor}, headers=auth(fleet, "admin"))
    problem = assert_problem(response, 422)
    assert "cursor" in problem["detail"]


@pytest.mark.parametrize("body", [b"\xff\xfe", b"\x80not utf-8"])
async def test_body_that_is_not_utf8_json_is_a_validation_problem(
    client: httpx.AsyncClient, fleet: Fleet, body: bytes
) -> None:
    response = await client.post(
        "/v1/customers",
        content=body,
        headers={**auth(fleet, "admin"), "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422)
    assert problem["type"].endswith(":validation")
    assert problem["errors"][0]["location"][0] == "body"
