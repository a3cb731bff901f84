"""What the API tests share: the starting fleet, keys per role, the route × role matrix
check and the problem-document check.

Every test module of this package that adds routes lists them in a module-level
``ROUTES`` of :class:`Route` and runs :func:`check_route_role` and
:func:`check_route_needs_a_key` over them; ``test_api.py`` checks that every operation
of the OpenAPI document is in some module's ``ROUTES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from fleet.settings import Settings

__all__ = [
    "ADMIN",
    "PROBLEM",
    "READERS",
    "ROLES",
    "SCOPED",
    "WRITERS",
    "Fleet",
    "Route",
    "assert_problem",
    "auth",
    "check_route_needs_a_key",
    "check_route_role",
    "settings_for",
]

ROLES = ("admin", "operator", "viewer", "account_manager")
PROBLEM = "application/problem+json"

READERS = frozenset({"admin", "operator", "viewer"})
SCOPED = READERS | {"account_manager"}
WRITERS = frozenset({"admin", "operator"})
ADMIN = frozenset({"admin"})


@dataclass(frozen=True, slots=True)
class Fleet:
    """What every test starts with: two account managers (alice, bob), a customer and a
    domain each, a sweep, and one API key per role (the account manager's is alice's).
    ``extra`` holds ids a module's own fixture adds (for its route paths)."""

    alice: int
    bob: int
    alice_customer: int
    bob_customer: int
    alice_domain: int
    bob_domain: int
    sweep: int
    keys: dict[str, str]
    key_ids: dict[str, int]
    extra: dict[str, int] = field(default_factory=dict)

    def ids(self) -> dict[str, int]:
        """The names a route path may use: ``{alice}``, ``{sweep}``, ``{viewer_key}``, …"""
        return {
            "alice": self.alice,
            "bob": self.bob,
            "alice_customer": self.alice_customer,
            "bob_customer": self.bob_customer,
            "alice_domain": self.alice_domain,
            "bob_domain": self.bob_domain,
            "sweep": self.sweep,
            "viewer_key": self.key_ids["viewer"],
            **self.extra,
        }


def settings_for(database_url: str, redis_url: str, **more: Any) -> Settings:
    return Settings(database_url=SecretStr(database_url), redis_url=SecretStr(redis_url), **more)


def auth(fleet: Fleet, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {fleet.keys[role]}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:tlsfleet:problem:")
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    return body


@dataclass(frozen=True, slots=True)
class Route:
    """One operation, the roles allowed to call it and its success status. ``path`` and
    string values of ``body`` may name ids: ``{alice_customer}``, ``{sweep}``, …
    (a body value that is exactly ``"{name}"`` becomes the integer id)."""

    method: str
    path: str
    allowed: frozenset[str]
    ok: int
    body: dict[str, Any] | None = None

    def url(self, fleet: Fleet) -> str:
        return self.path.format(**fleet.ids())

    def json(self, fleet: Fleet) -> dict[str, Any] | None:
        if self.body is None:
            return None
        ids = fleet.ids()

        def fill(value: Any) -> Any:
            if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
                return ids[value[1:-1]]
            if isinstance(value, list):
                return [fill(v) for v in value]
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            return value

        filled: dict[str, Any] = fill(self.body)
        return filled

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


async def check_route_role(
    client: httpx.AsyncClient, fleet: Fleet, route: Route, role: str
) -> None:
    """A key of ``role`` is served by ``route`` if the role is allowed, else a 403."""
    response = await client.request(
        route.method, route.url(fleet), json=route.json(fleet), headers=auth(fleet, role)
    )
    if role in route.allowed:
        assert response.status_code == route.ok, response.text
    else:
        body = assert_problem(response, 403)
        assert role in body["detail"]


async def check_route_needs_a_key(client: httpx.AsyncClient, fleet: Fleet, route: Route) -> None:
    """Without a key, or with an unknown one, ``route`` is a 401 with a challenge."""
    missing = await client.request(route.method, route.url(fleet), json=route.json(fleet))
    assert_problem(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    bad = await client.request(
        route.method,
        route.url(fleet),
        json=route.json(fleet),
        headers={"Authorization": "Bearer tlsf_00000000_not-a-key"},
    )
    assert_problem(bad, 401)
