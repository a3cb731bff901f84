"""Filtered result lists, CSV export, fleet statistics and trends over HTTP, on results
stored through the repositories (real result documents, real PostgreSQL).

The seeded fleet (``seeded``): alice.example (Alice's customer) and bob.example (Bob's)
send mail through MX hosts on six SMTP endpoints, one of them shared; three closed
full-fleet sweeps. What each endpoint looked like in each sweep is ``SPECS``; the
expected lists and counts are computed from it in Python, apart from the SQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.export import csv_cell, keyset_rows
from fleet.repositories import reports
from fleet.repositories.reports import LatestRow, ResultFilter
from fleet.repositories.results import record_result
from fleet.repositories.sweeps import close_sweep, create_sweep, record_discovery
from scanner.models import PROTOCOLS, EndpointResult, ErrorInfo, StarttlsInfo
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
from tests.integration.test_store import certificate, ok_result, plan, smtp_target

ROUTES = [
    Route("GET", "/v1/results/latest", SCOPED, 200),
    Route("GET", "/v1/stats", SCOPED, 200),
    Route("GET", "/v1/stats/trend", SCOPED, 200),
    Route("GET", "/v1/customers/{alice_customer}/cutoff", SCOPED, 200),
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


# -- the seeded fleet -------------------------------------------------------------------------

NOW = dt.datetime.now(dt.UTC)
EXPIRED = NOW - dt.timedelta(days=10)
EXPIRING = NOW + dt.timedelta(days=10)
LATER = NOW + dt.timedelta(days=200)

ALICE_MX = ("mx.alice.example", ("10.1.0.1", "10.1.0.2", "10.1.0.5", "10.1.0.6"))
BOB_MX = ("mx.bob.example", ("10.1.0.1", "10.1.0.3", "10.1.0.4"))
IPS = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6")
#: Who uses which endpoint (10.1.0.1 is shared).
USERS = {
    "10.1.0.1": {"alice.example", "bob.example"},
    "10.1.0.2": {"alice.example"},
    "10.1.0.3": {"bob.example"},
    "10.1.0.4": {"bob.example"},
    "10.1.0.5": {"alice.example"},
    "10.1.0.6": {"alice.example"},
}


@dataclass(frozen=True)
class Spec:
    """One endpoint in one sweep."""

    protocols: frozenset[str] = frozenset({"TLSv1.2", "TLSv1.3"})
    error: str | None = None
    plaintext: bool = False
    starttls: bool = True
    cert: str | None = "valid"
    not_after: dt.datetime = LATER


MODERN = Spec()
LEGACY = Spec(protocols=frozenset({"TLSv1.0", "TLSv1.1", "TLSv1.2"}))
PLAINTEXT_EXPIRED = Spec(
    protocols=LEGACY.protocols, plaintext=True, cert="expired", not_after=EXPIRED
)
NO_STARTTLS = Spec(protocols=frozenset(), error="starttls_not_offered", starttls=False, cert=None)
OLD_ONLY = Spec(protocols=frozenset({"TLSv1.0"}), cert="untrusted", not_after=EXPIRING)
TIMEOUT = Spec(protocols=frozenset(), error="timeout", cert=None)
MISMATCH = Spec(cert="hostname_mismatch")

#: sweep number → ip → what the endpoint looked like (scanned on that day of November).
SPECS: dict[int, dict[str, Spec]] = {
    1: {
        "10.1.0.1": Spec(protocols=frozenset({"TLSv1.0", "TLSv1.2"})),
        "10.1.0.2": PLAINTEXT_EXPIRED,
        "10.1.0.3": NO_STARTTLS,
        "10.1.0.4": OLD_ONLY,
        "10.1.0.5": TIMEOUT,
        # Stored last of all (it arrives late), and must not replace the newer ones.
        "10.1.0.6": Spec(protocols=frozenset({"SSLv3", "TLSv1.0"})),
    },
    2: {
        "10.1.0.1": MODERN,
        "10.1.0.2": PLAINTEXT_EXPIRED,
        "10.1.0.3": NO_STARTTLS,
        "10.1.0.4": OLD_ONLY,
        "10.1.0.5": MISMATCH,
        "10.1.0.6": MODERN,
    },
    3: {
        "10.1.0.1": MODERN,
        "10.1.0.2": PLAINTEXT_EXPIRED,
        "10.1.0.3": NO_STARTTLS,
        "10.1.0.4": OLD_ONLY,
        "10.1.0.5": MISMATCH,
        "10.1.0.6": MODERN,
    },
}
SCANNED = {1: "2026-11-01T02:00:00Z", 2: "2026-11-15T02:00:00Z", 3: "2026-11-20T02:00:00Z"}
CURRENT = SPECS[3]


def document(ip: str, spec: Spec, scanned_at: str) -> EndpointResult:
    """A realistic result document for ``spec`` (what the scanner would store)."""
    cert = certificate(spec.cert, spec.not_after.isoformat()) if spec.cert is not None else None
    if spec.error is None:
        return ok_result(
            ip,
            dict.fromkeys(spec.protocols, True),
            plaintext=spec.plaintext,
            offered=spec.starttls,
            cert=cert,
            scanned_at=scanned_at,
        )
    return EndpointResult(
        target=smtp_target(ip),
        status="error",
        error=ErrorInfo(spec.error, "starttls", f"{spec.error} at {ip}"),
        protocols=dict.fromkeys(PROTOCOLS, None),
        starttls=StarttlsInfo(offered=spec.starttls) if not spec.starttls else None,
        connections=1,
        scanned_at=scanned_at,
    )


@dataclass(frozen=True)
class Seeded:
    fleet: Fleet
    endpoints: dict[str, int]  # ip → endpoint id
    sweeps: dict[int, int]  # sweep number → id

    def ips(self, items: Iterable[dict[str, Any]]) -> list[str]:
        by_id = {v: k for k, v in self.endpoints.items()}
        return [by_id[item["endpoint"]["id"]] for item in items]


@pytest.fixture
async def seeded(fleet: Fleet, session_factory: async_sessionmaker[AsyncSession]) -> Seeded:
    domain_ids = {"alice.example": fleet.alice_domain, "bob.example": fleet.bob_domain}
    the_plan = plan({"alice.example": ALICE_MX, "bob.example": BOB_MX})
    sweeps: dict[int, int] = {}
    endpoints: dict[str, int] = {}
    async with session_factory() as session:
        for number in SPECS:
            sweep = await create_sweep(session, kind="nightly", scope={"all": True})
            sweeps[number] = sweep.id
            record = await record_discovery(session, sweep.id, the_plan, domain_ids)
            endpoints = {key.ip: eid for key, eid in record.endpoint_ids.items()}
            for ip, spec in SPECS[number].items():
                if (number, ip) != (1, "10.1.0.6"):
                    await record_result(
                        session, sweep.id, endpoints[ip], document(ip, spec, SCANNED[number])
                    )
            await session.commit()
        # The late result of sweep 1, older than those of sweeps 2 and 3.
        late = document("10.1.0.6", SPECS[1]["10.1.0.6"], SCANNED[1])
        assert await record_result(session, sweeps[1], endpoints["10.1.0.6"], late)
        for number in SPECS:
            assert await close_sweep(session, sweeps[number]) is not None
        await session.commit()
    return Seeded(fleet, endpoints, sweeps)


async def _items(
    client: httpx.AsyncClient, seeded: Seeded, query: str, role: str = "viewer"
) -> Any:
    response = await client.get(
        f"/v1/results/latest?limit=500&{query}", headers=auth(seeded.fleet, role)
    )
    assert response.status_code == 200, response.text
    assert response.json()["next"] is None
    return response.json()["items"]


# -- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", IPS),
        ("protocol=tls1.0", ["10.1.0.2", "10.1.0.4"]),
        ("protocol=TLSv1.3", ["10.1.0.1", "10.1.0.5", "10.1.0.6"]),
        ("protocol=tls1.0,tls1.3", ["10.1.0.1", "10.1.0.2", "10.1.0.4", "10.1.0.5", "10.1.0.6"]),
        ("protocol=ssl3&protocol=tls1.1", ["10.1.0.2"]),
        ("legacy=true", ["10.1.0.2", "10.1.0.4"]),
        ("legacy=false", ["10.1.0.1", "10.1.0.3", "10.1.0.5", "10.1.0.6"]),
        ("plaintext_before_tls=true", ["10.1.0.2"]),
        ("starttls_missing=true", ["10.1.0.3"]),
        ("cert_status=untrusted", ["10.1.0.4"]),
        ("cert_status=expired,hostname_mismatch", ["10.1.0.2", "10.1.0.5"]),
        ("status=error", ["10.1.0.3"]),
        ("status=ok&legacy=false", ["10.1.0.1", "10.1.0.5", "10.1.0.6"]),
        ("error_kind=starttls_not_offered", ["10.1.0.3"]),
        ("error_kind=timeout", []),
        ("port=25&service=smtp", IPS),
        ("port=587", []),
        ("service=imaps", []),
        ("customer_id={alice_customer}", ["10.1.0.1", "10.1.0.2", "10.1.0.5", "10.1.0.6"]),
        ("account_manager_id={bob}", ["10.1.0.1", "10.1.0.3", "10.1.0.4"]),
        ("domain_id={bob_domain}", ["10.1.0.1", "10.1.0.3", "10.1.0.4"]),
        ("legacy=true&customer_id={bob_customer}", ["10.1.0.4"]),
    ],
)
async def test_each_filter_selects_exactly_its_endpoints(
    client: httpx.AsyncClient, seeded: Seeded, query: str, expected: list[str]
) -> None:
    items = await _items(client, seeded, query.format(**seeded.fleet.ids()))
    assert seeded.ips(items) == list(expected)


async def test_certificate_expiry_filter(client: httpx.AsyncClient, seeded: Seeded) -> None:
    soon = (NOW + dt.timedelta(days=30)).date().isoformat()
    assert seeded.ips(await _items(client, seeded, f"cert_expires_before={soon}")) == [
        "10.1.0.2",
        "10.1.0.4",
    ]
    past = (NOW - dt.timedelta(days=365)).date().isoformat()
    assert await _items(client, seeded, f"cert_expires_before={past}") == []


async def test_the_latest_result_wins_and_a_late_older_one_does_not(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    items = {i["endpoint"]["ip"]: i for i in await _items(client, seeded, "")}
    # 10.1.0.1 accepted TLS 1.0 in sweep 1; sweeps 2 and 3 show it fixed.
    assert items["10.1.0.1"]["protocols"]["TLSv1.0"] is False
    assert items["10.1.0.1"]["sweep_id"] == seeded.sweeps[3]
    # 10.1.0.6's sweep-1 result (SSLv3, TLS 1.0) was stored after sweep 3's.
    six = items["10.1.0.6"]
    assert (six["sweep_id"], six["lowest_protocol"], six["highest_protocol"]) == (
        seeded.sweeps[3],
        "TLSv1.2",
        "TLSv1.3",
    )
    assert six["scanned_at"].startswith("2026-11-20T02:00:00")
    # The summary carries the result's columns and its users.
    two = items["10.1.0.2"]
    assert two["plaintext_before_tls"] is True
    assert two["cert_status"] == "expired"
    assert two["endpoint"] == {
        "id": seeded.endpoints["10.1.0.2"],
        "ip": "10.1.0.2",
        "port": 25,
        "service": "smtp",
        "host": "mx.alice.example",
    }
    assert items["10.1.0.3"]["error_kind"] == "starttls_not_offered"
    assert items["10.1.0.3"]["starttls_offered"] is False
    assert sorted(items["10.1.0.1"]["domains"]) == ["alice.example", "bob.example"]
    assert items["10.1.0.1"]["domains_total"] == 2


async def test_pages_follow_the_cursor(client: httpx.AsyncClient, seeded: Seeded) -> None:
    async def walk(url: str | None) -> tuple[list[dict[str, Any]], list[str]]:
        seen: list[dict[str, Any]] = []
        links: list[str] = []
        while url is not None:
            response = await client.get(url, headers=auth(seeded.fleet, "viewer"))
            assert response.status_code == 200, response.text
            seen += response.json()["items"]
            url = response.json()["next"]
            if url is not None:
                links.append(url)
        return seen, links

    seen, links = await walk("/v1/results/latest?limit=2")
    assert seeded.ips(seen) == list(IPS)
    assert len(links) == 2
    seen, links = await walk("/v1/results/latest?limit=3&legacy=false")
    assert seeded.ips(seen) == ["10.1.0.1", "10.1.0.3", "10.1.0.5", "10.1.0.6"]
    assert len(links) == 1
    assert "legacy=false" in links[0]  # the filter stays on the link


@pytest.mark.parametrize(
    "query",
    ["protocol=tls9", "cert_status=great", "status=maybe", "port=0", "customer_id=0", "cursor=x"],
)
async def test_bad_filters_are_422(client: httpx.AsyncClient, fleet: Fleet, query: str) -> None:
    response = await client.get(f"/v1/results/latest?{query}", headers=auth(fleet, "viewer"))
    assert_problem(response, 422)


# -- account managers ------------------------------------------------------------------------


async def test_account_manager_sees_only_its_customers_endpoints_and_domains(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    items = await _items(client, seeded, "", role="account_manager")
    assert seeded.ips(items) == ["10.1.0.1", "10.1.0.2", "10.1.0.5", "10.1.0.6"]
    shared = items[0]
    # Bob's domain on the shared endpoint stays hidden.
    assert (shared["domains"], shared["domains_total"]) == (["alice.example"], 1)
    assert await _items(client, seeded, "starttls_missing=true", role="account_manager") == []


@pytest.mark.parametrize(
    "query", ["customer_id={bob_customer}", "account_manager_id={bob}", "domain_id={bob_domain}"]
)
@pytest.mark.parametrize("path", ["/v1/results/latest", "/v1/stats"])
async def test_another_managers_ids_are_404(
    client: httpx.AsyncClient, seeded: Seeded, path: str, query: str
) -> None:
    url = f"{path}?{query.format(**seeded.fleet.ids())}"
    assert_problem(await client.get(url, headers=auth(seeded.fleet, "account_manager")), 404)
    assert (await client.get(url, headers=auth(seeded.fleet, "viewer"))).status_code == 200
    missing = await client.get(f"{path}?customer_id=999999", headers=auth(seeded.fleet, "viewer"))
    assert_problem(missing, 404)


# -- CSV ----------------------------------------------------------------------------------------


def _flat(item: dict[str, Any]) -> dict[str, str]:
    """A JSON list item as its CSV row should read."""
    endpoint = item["endpoint"]
    row: dict[str, Any] = {
        "endpoint_id": endpoint["id"],
        "ip": endpoint["ip"],
        "port": endpoint["port"],
        "service": endpoint["service"],
        "host": endpoint["host"],
        "status": item["status"],
        "error_kind": item["error_kind"],
        **item["protocols"],
        "lowest_protocol": item["lowest_protocol"],
        "highest_protocol": item["highest_protocol"],
        "plaintext_before_tls": item["plaintext_before_tls"],
        "starttls_offered": item["starttls_offered"],
        "cert_status": item["cert_status"],
        "cert_not_after": item["cert_not_after"],
        "scanned_at": item["scanned_at"],
        "sweep_id": item["sweep_id"],
        "result_id": item["result_id"],
        "domains_total": item["domains_total"],
        "domains": " ".join(item["domains"]),
    }
    out: dict[str, str] = {}
    for key, value in row.items():
        if value is None:
            out[key] = ""
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif key in ("cert_not_after", "scanned_at"):
            out[key] = dt.datetime.fromisoformat(value).isoformat()
        else:
            out[key] = str(value)
    return out


def _parse(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(response.text)))


@pytest.mark.parametrize("role", ["viewer", "account_manager"])
async def test_csv_is_the_whole_list_as_json_shows_it(
    client: httpx.AsyncClient, seeded: Seeded, role: str
) -> None:
    items = await _items(client, seeded, "", role=role)
    # limit=1 asks for one JSON item per page: the export still has every row.
    by_param = await client.get(
        "/v1/results/latest?limit=1&format=csv", headers=auth(seeded.fleet, role)
    )
    by_accept = await client.get(
        "/v1/results/latest", headers={**auth(seeded.fleet, role), "Accept": "text/csv"}
    )
    assert _parse(by_param) == [_flat(item) for item in items]
    assert _parse(by_accept) == _parse(by_param)
    assert by_param.text.splitlines()[0].startswith("endpoint_id,ip,port,service,host,status")


async def test_export_walks_every_keyset_batch(
    seeded: Seeded, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    # Given batches of two rows, each fetched in a session of its own
    calls: list[int | None] = []

    async def fetch(session: AsyncSession, after: int | None, n: int) -> list[LatestRow]:
        calls.append(after)
        return await reports.latest_page(session, ResultFilter(), after=after, limit=n)

    # When the export walks them, then it yields every row once, in order
    rows = [row async for row in keyset_rows(session_factory, fetch, batch=2)]
    assert [row.ip for row in rows] == list(IPS)
    ids = [seeded.endpoints[ip] for ip in IPS]
    assert calls == [None, ids[1], ids[3]]


async def test_csv_filters_and_empty_list(client: httpx.AsyncClient, seeded: Seeded) -> None:
    legacy = await client.get(
        "/v1/results/latest?format=csv&legacy=true", headers=auth(seeded.fleet, "viewer")
    )
    assert [row["ip"] for row in _parse(legacy)] == ["10.1.0.2", "10.1.0.4"]
    empty = await client.get(
        "/v1/results/latest?format=csv&port=587", headers=auth(seeded.fleet, "viewer")
    )
    assert _parse(empty) == []
    assert empty.text.startswith("endpoint_id,")


async def test_csv_cells_cannot_run_as_formulas(
    client: httpx.AsyncClient, seeded: Seeded, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    # Given an endpoint whose host name (from DNS) reads like a spreadsheet formula
    evil = '=HYPERLINK("http://evil.example/","x")'
    async with session_factory() as session:
        await session.execute(
            text("UPDATE endpoints SET host = :host WHERE id = :id"),
            {"host": evil, "id": seeded.endpoints["10.1.0.5"]},
        )
        await session.commit()
    # When it is exported, then the cell is text, not a formula
    rows = _parse(
        await client.get("/v1/results/latest?format=csv", headers=auth(seeded.fleet, "viewer"))
    )
    assert [r["host"] for r in rows if r["ip"] == "10.1.0.5"] == ["'" + evil]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        (None, ""),
        (True, "true"),
        (25, "25"),
        (["=a", "b"], "'=a b"),
    ],
)
def test_csv_cell(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


# -- statistics -----------------------------------------------------------------------------------


def expected_counts(specs: Iterable[Spec], now: dt.datetime, days: int = 30) -> dict[str, Any]:
    """The counts of ``/v1/stats``, computed here in Python."""
    specs = list(specs)
    ranks = {name: rank for rank, name in enumerate(PROTOCOLS)}

    def count(predicate: Any) -> int:
        return sum(1 for s in specs if predicate(s))

    def lowest(s: Spec) -> int | None:
        return min((ranks[p] for p in s.protocols), default=None)

    def highest(s: Spec) -> int | None:
        return max((ranks[p] for p in s.protocols), default=None)

    def legacy(s: Spec) -> bool:
        rank = lowest(s)
        return rank is not None and rank <= 3

    def only_old(s: Spec) -> bool:
        rank = highest(s)
        return rank is not None and rank < 4

    def has_cert(s: Spec) -> bool:
        return s.cert is not None

    errors: dict[str, int] = {}
    for s in specs:
        if s.error is not None:
            errors[s.error] = errors.get(s.error, 0) + 1
    return {
        "endpoints": len(specs),
        "protocols": {p: count(lambda s, p=p: p in s.protocols) for p in PROTOCOLS},
        "lowest_protocol": {p: count(lambda s, p=p: lowest(s) == ranks[p]) for p in PROTOCOLS},
        "highest_protocol": {p: count(lambda s, p=p: highest(s) == ranks[p]) for p in PROTOCOLS},
        "findings": {
            "legacy_tls": count(legacy),
            "tls10": count(lambda s: "TLSv1.0" in s.protocols),
            "tls11": count(lambda s: "TLSv1.1" in s.protocols),
            "ssl": count(lambda s: bool({"SSLv2", "SSLv3"} & s.protocols)),
            "no_modern_tls": count(only_old),
            "plaintext_before_tls": count(lambda s: s.plaintext),
            "starttls_missing": count(lambda s: not s.starttls),
            "cert_expired": count(lambda s: has_cert(s) and s.not_after < now),
            "cert_expiring": count(
                lambda s: has_cert(s) and now <= s.not_after < now + dt.timedelta(days=days)
            ),
            "cert_untrusted": count(lambda s: s.cert in ("untrusted", "self_signed")),
            "cert_hostname_mismatch": count(lambda s: s.cert == "hostname_mismatch"),
            "errors": count(lambda s: s.error is not None),
        },
        "cert_status": {
            status: count(lambda s, status=status: s.cert == status)
            for status in (
                "valid",
                "expired",
                "not_yet_valid",
                "self_signed",
                "untrusted",
                "hostname_mismatch",
            )
        },
        "errors": errors,
    }


def _of(specs: dict[str, Spec], domain: str) -> list[Spec]:
    return [spec for ip, spec in specs.items() if domain in USERS[ip]]


async def test_stats_equal_counts_from_the_seeds(client: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await client.get(
        "/v1/stats?by_account_manager=true", headers=auth(seeded.fleet, "viewer")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    now = dt.datetime.fromisoformat(body["as_of"])
    assert body["expiring_days"] == 30
    assert body["counts"] == expected_counts(CURRENT.values(), now)
    assert body["counts"]["findings"]["legacy_tls"] == 2  # not a vacuous comparison
    assert body["account_managers"] == [
        {
            "account_manager_id": seeded.fleet.alice,
            "name": "Alice",
            "counts": expected_counts(_of(CURRENT, "alice.example"), now),
        },
        {
            "account_manager_id": seeded.fleet.bob,
            "name": "Bob",
            "counts": expected_counts(_of(CURRENT, "bob.example"), now),
        },
    ]


async def test_stats_take_the_filters_and_the_expiry_window(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    response = await client.get(
        f"/v1/stats?expiring_days=5&by_account_manager=true&customer_id={seeded.fleet.bob_customer}",
        headers=auth(seeded.fleet, "admin"),
    )
    body = response.json()
    now = dt.datetime.fromisoformat(body["as_of"])
    assert body["counts"] == expected_counts(_of(CURRENT, "bob.example"), now, days=5)
    assert body["counts"]["findings"]["cert_expiring"] == 0
    # Alice's numbers count only endpoints her customers use that bob's customer uses too.
    alice = next(m for m in body["account_managers"] if m["name"] == "Alice")
    assert alice["counts"]["endpoints"] == 1


async def test_account_manager_gets_its_own_stats(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    plain = await client.get("/v1/stats", headers=auth(seeded.fleet, "viewer"))
    assert plain.json()["account_managers"] == []
    body = (
        await client.get(
            "/v1/stats?by_account_manager=true", headers=auth(seeded.fleet, "account_manager")
        )
    ).json()
    now = dt.datetime.fromisoformat(body["as_of"])
    mine = expected_counts(_of(CURRENT, "alice.example"), now)
    assert body["counts"] == mine
    assert [m["account_manager_id"] for m in body["account_managers"]] == [seeded.fleet.alice]


async def test_trend_over_three_sweeps(client: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await client.get("/v1/stats/trend?sweeps=3", headers=auth(seeded.fleet, "viewer"))
    assert response.status_code == 200, response.text
    points = response.json()["sweeps"]
    assert [p["sweep_id"] for p in points] == [seeded.sweeps[n] for n in (1, 2, 3)]
    for number, point in zip((1, 2, 3), points, strict=True):
        as_of = dt.datetime.fromisoformat(point["finished_at"])
        assert point["counts"] == expected_counts(SPECS[number].values(), as_of), number
    # Sweep 1 had the legacy endpoints that sweep 2 no longer had.
    assert [p["counts"]["findings"]["tls10"] for p in points] == [4, 2, 2]
    # Stored now: asking again gives the same, and the fixture's empty sweep comes first.
    again = await client.get("/v1/stats/trend?sweeps=4", headers=auth(seeded.fleet, "viewer"))
    assert again.json()["sweeps"][1:] == points
    assert again.json()["sweeps"][0]["counts"]["endpoints"] == 0


async def test_account_manager_trend_is_its_own(client: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await client.get(
        "/v1/stats/trend?sweeps=3", headers=auth(seeded.fleet, "account_manager")
    )
    points = response.json()["sweeps"]
    for number, point in zip((1, 2, 3), points, strict=True):
        as_of = dt.datetime.fromisoformat(point["finished_at"])
        assert point["counts"] == expected_counts(_of(SPECS[number], "alice.example"), as_of)


async def test_cached_stats_follow_a_new_result_at_once(
    client: httpx.AsyncClient, seeded: Seeded, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    # Given the statistics asked for twice (the second answer is the cached one),
    url = "/v1/stats"
    first = (await client.get(url, headers=auth(seeded.fleet, "viewer"))).json()
    again = (await client.get(url, headers=auth(seeded.fleet, "viewer"))).json()
    assert again == first
    before = first["counts"]["findings"]["tls10"]
    # when a new sweep finds TLS 1.0 on a formerly modern endpoint,
    async with session_factory() as session:
        sweep = await create_sweep(session, kind="adhoc", scope={"all": True})
        domain_ids = {"alice.example": seeded.fleet.alice_domain}
        await record_discovery(session, sweep.id, plan({"alice.example": ALICE_MX}), domain_ids)
        legacy = Spec(protocols=frozenset({"TLSv1.0", "TLSv1.2"}))
        await record_result(
            session,
            sweep.id,
            seeded.endpoints["10.1.0.1"],
            document("10.1.0.1", legacy, "2026-11-25T02:00:00Z"),
        )
        await session.commit()
    # then the next answer counts it, without waiting for the cache to expire.
    after = (await client.get(url, headers=auth(seeded.fleet, "viewer"))).json()
    assert after["counts"]["findings"]["tls10"] == before + 1
    assert after["as_of"] > first["as_of"]


async def test_cutoff_view_judges_each_current_endpoint_once(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    # Bob's customer uses 10.1.0.1 (modern), 10.1.0.3 (no STARTTLS) and 10.1.0.4 (TLS 1.0
    # only, an untrusted certificate).
    response = await client.get(
        f"/v1/customers/{seeded.fleet.bob_customer}/cutoff", headers=auth(seeded.fleet, "viewer")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer"] == "Bob's customer"
    assert body["cutoff"] == "2027-01-31"
    by_ip = {e["ip"]: e for e in body["endpoints"]}
    assert sorted(by_ip) == ["10.1.0.1", "10.1.0.3", "10.1.0.4"]
    # TLS 1.0 only on port 25: server-to-server mail falls back to plaintext on the
    # cut-off day (degraded, not broken: that is the relay port class's rule);
    assert by_ip["10.1.0.4"]["port_class"] == "smtp_relay"
    assert by_ip["10.1.0.4"]["outcome"] == "degraded"
    assert "tls.only_legacy" in by_ip["10.1.0.4"]["findings"]
    assert {i["scope"] for i in by_ip["10.1.0.4"]["impacts"]} == {"degraded"}
    # a modern endpoint is not affected; the shared one lists bob's domain only.
    assert by_ip["10.1.0.1"]["outcome"] == "unaffected"
    assert by_ip["10.1.0.1"]["domains"] == ["bob.example"]
    assert body["outcomes"]["degraded"] >= 1
    assert body["summary"].startswith(f"{body['outcomes']['breaks']} of 3 endpoints break")
    # Another manager's customer is not found for an account manager.
    other = await client.get(
        f"/v1/customers/{seeded.fleet.bob_customer}/cutoff",
        headers=auth(seeded.fleet, "account_manager"),
    )
    assert_problem(other, 404)
