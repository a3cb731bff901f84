"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by
Playwright; no browser download) against an API served by uvicorn on loopback, over a
database filled by two real sweeps of a local fleet on a real arq worker.

Each page is opened logged in with a key; the numbers it shows must be those the API
returns for the same key; no page may log a console error or throw; an account
manager sees only its own customers; log-out ends the session. Screenshots go to
``artifacts/screenshots/`` (kept by CI).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from arq.connections import RedisSettings
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from fleet.db.models import MailAccount, MailClientDay
from fleet.inventory import InventoryRecord
from fleet.repositories import apikeys
from tests.integration.api.harness import settings_for
from tests.integration.test_pipeline import _config, _sweep_and_drain
from tests.integration.test_sweep_harness import LocalFleet, import_inventory, local_fleet
from tests.ports import free_port

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
#: The findings the overview shows as cards (besides ``endpoints``).
CARDS = (
    "tls10",
    "tls11",
    "no_modern_tls",
    "plaintext_before_tls",
    "starttls_missing",
    "cert_expiring",
    "cert_expired",
    "legacy_tls",
    "errors",
)


@dataclass(frozen=True, slots=True)
class Served:
    url: str
    keys: dict[str, str]
    sweeps: tuple[int, int]


@pytest.fixture
def fleet() -> Iterator[LocalFleet]:
    with local_fleet("127.96.0") as running:
        yield running


@pytest.fixture
async def served(
    session_factory: async_sessionmaker[AsyncSession],
    database_url: str,
    redis_url: str,
    arq_redis_settings: RedisSettings,
    fleet: LocalFleet,
) -> AsyncIterator[Served]:
    """Two sweeps of the local fleet (customers 0 and 1 are Ann's, customer 2 Bob's),
    a viewer key and Ann's key, and the API on a free loopback port."""
    records = [
        InventoryRecord(
            r.domain,
            r.customer,
            "Bob Manager" if r.customer.endswith("2") else "Ann Manager",
            "bob@provider.test" if r.customer.endswith("2") else "ann@provider.test",
        )
        for r in fleet.records
    ]
    await import_inventory(session_factory, records)
    config = _config(database_url, arq_redis_settings, fleet)
    first = await _sweep_and_drain(config, session_factory)
    second = await _sweep_and_drain(config, session_factory)
    async with session_factory() as session:
        ann = await apikeys.manager_by_email(session, "ann@provider.test")
        assert ann is not None
        viewer = await apikeys.create_key(session, role="viewer", name="NOC wall")
        manager = await apikeys.create_key(
            session, role="account_manager", name="Ann", account_manager_id=ann.id
        )
        await session.commit()
    await _mailboxes(session_factory, records)

    port = free_port()
    app = create_app(settings_for(database_url, redis_url))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.05)
        yield Served(
            f"http://127.0.0.1:{port}",
            {"viewer": viewer.secret, "account_manager": manager.secret},
            (first, second),
        )
    finally:
        server.should_exit = True
        await task


async def _mailboxes(
    sessions: async_sessionmaker[AsyncSession], records: list[InventoryRecord]
) -> None:
    """Today's logins of a few mailboxes, as the log ingest stores them: two of Customer
    0's on TLS 1.0 (one also without TLS), one of Customer 2's without TLS, and one
    whose domain the inventory does not have."""
    first = next(r.domain for r in records if r.customer.endswith("0"))
    bobs = next(r.domain for r in records if r.customer.endswith("2"))
    now = dt.datetime.now(dt.UTC)
    async with sessions() as session:
        for account, legacy, plaintext in (
            (f"info@{first}", 2, 0),
            (f"shop@{first}", 1, 1),
            (f"office@{bobs}", 0, 3),
            ("old@unknown.example", 1, 0),
        ):
            stored = MailAccount(account=account, domain=account.rsplit("@", 1)[1])
            session.add(stored)
            await session.flush()
            protocols = {k: n for k, n in (("TLSv1.0", legacy), ("none", plaintext)) if n}
            session.add(
                MailClientDay(
                    account_id=stored.id,
                    day=now.date(),
                    logins=legacy + plaintext,
                    legacy_logins=legacy,
                    plaintext_logins=plaintext,
                    unknown_logins=0,
                    protocols=protocols,
                    ciphers={},
                    mechanisms={"PLAIN": legacy + plaintext},
                    services={"imap": legacy + plaintext},
                    client_ips={"198.51.100.20": legacy + plaintext},
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


async def _check_mailbox_numbers(page: Page, served: Served, role: str) -> dict[str, Any]:
    """The overview's mailbox cards and impact line against /v1/clients for ``role``."""
    impact = await _api(served, role, "/v1/clients/impact?kind=legacy")
    legacy = (await _api(served, role, "/v1/clients/legacy?kind=legacy&limit=100"))["items"]
    plaintext = (await _api(served, role, "/v1/clients/legacy?kind=plaintext&limit=100"))["items"]
    assert await _int(page, '[data-testid="count-accounts_legacy"] .value') == len(legacy)
    assert await _int(page, '[data-testid="count-accounts_plaintext"] .value') == len(plaintext)
    assert await _int(page, '[data-testid="impact-customers"]') == impact["customers"]
    assert await _int(page, '[data-testid="impact-accounts"]') == impact["accounts"]
    unmapped = page.locator('[data-testid="impact-unmapped"]')
    if impact["unmapped_accounts"]:
        assert await _int(page, '[data-testid="impact-unmapped"]') == impact["unmapped_accounts"]
    else:
        assert await unmapped.count() == 0
    return {"impact": impact, "legacy": legacy, "plaintext": plaintext}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    # A missing chromium must fail loudly (never skip): the launch raises.
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run .ci/install-daemons.sh"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


class Console:
    """Console errors and uncaught exceptions of a page; responses a test expects to
    fail (a 404 page) are allowed one by one."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.allowed = 0
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        if self.allowed and "Failed to load resource" in message.text:
            self.allowed -= 1
            return
        self.errors.append(message.text)


async def _api(served: Served, role: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=served.url) as http:
        response = await http.get(path, headers={"Authorization": f"Bearer {served.keys[role]}"})
    assert response.status_code == 200, response.text
    return response.json()


async def _log_in(page: Page, served: Served, role: str) -> None:
    await page.goto(f"{served.url}/dashboard/")
    assert page.url.startswith(f"{served.url}/dashboard/login")
    await page.fill("#key", served.keys[role])
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{served.url}/dashboard/")


async def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def _int(page: Page, selector: str) -> int:
    content = await page.text_content(selector)
    assert content is not None, selector
    return int(content.strip())


async def _charts_drawn(page: Page) -> None:
    figures = page.locator("figure.chart")
    assert await figures.count() > 0
    for index in range(await figures.count()):
        assert await figures.nth(index).get_attribute("data-drawn") == "true"
        assert await figures.nth(index).locator("svg").count() >= 1


async def test_every_page_shows_what_the_api_says(served: Served, browser: Browser) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    console = Console(page)
    await _log_in(page, served, "viewer")

    # Overview: the cards, the protocol table and the trend are the API's numbers.
    stats = await _api(served, "viewer", "/v1/stats")
    counts = stats["counts"]
    assert counts["endpoints"] > 0
    assert counts["findings"]["legacy_tls"] > 0  # the local fleet has legacy stacks
    assert await _int(page, '[data-testid="count-endpoints"] .value') == counts["endpoints"]
    for name in CARDS:
        shown = await _int(page, f'[data-testid="count-{name}"] .value')
        assert shown == counts["findings"][name], name
    for protocol, accepting in counts["protocols"].items():
        row = f'[data-testid="protocol-{protocol}"]'
        assert await _int(page, f'{row} [data-col="accepting"]') == accepting
        assert await _int(page, f'{row} [data-col="lowest"]') == counts["lowest_protocol"][protocol]
    trend = (await _api(served, "viewer", "/v1/stats/trend?sweeps=20"))["sweeps"]
    assert [p["sweep_id"] for p in trend] == list(served.sweeps)
    legacy = json.loads(await page.get_attribute('[data-testid="trend-1"]', "data-series") or "")
    assert legacy[0]["values"] == [p["counts"]["findings"]["tls10"] for p in trend]
    breaks = json.loads(await page.get_attribute('[data-testid="trend-2"]', "data-series") or "")
    assert breaks[0]["values"] == [p["counts"]["findings"]["no_modern_tls"] for p in trend]
    # … and so are the mailboxes on TLS 1.0/1.1 or without TLS, and the impact line
    mailboxes = await _check_mailbox_numbers(page, served, "viewer")
    assert (len(mailboxes["legacy"]), len(mailboxes["plaintext"])) == (3, 2)
    assert (mailboxes["impact"]["customers"], mailboxes["impact"]["accounts"]) == (1, 2)
    await _charts_drawn(page)
    await _shot(page, "overview")

    # Sweeps: the latest sweep's progress is the API's.
    await page.goto(f"{served.url}/dashboard/sweeps")
    sweep = await _api(served, "viewer", f"/v1/sweeps/{served.sweeps[1]}")
    box = f'[data-testid="sweep-{served.sweeps[1]}"]'
    for name in ("done", "total", "failed"):
        assert await _int(page, f'{box} [data-testid="{name}"]') == sweep["progress"][name]
    assert (await page.text_content(f'{box} [data-testid="status"]')) == "done"
    await _shot(page, "sweeps")

    # Offenders: the per-manager breakdown is /v1/stats?by_account_manager=true.
    await page.goto(f"{served.url}/dashboard/offenders")
    managers = (await _api(served, "viewer", "/v1/stats?by_account_manager=true"))[
        "account_managers"
    ]
    assert len(managers) == 2
    for manager in managers:
        row = f'[data-testid="manager-{manager["account_manager_id"]}"]'
        assert await _int(page, f'{row} [data-col="endpoints"]') == manager["counts"]["endpoints"]
        for name in ("legacy_tls", "no_modern_tls", "errors"):
            shown = await _int(page, f'{row} [data-col="{name}"]')
            assert shown == manager["counts"]["findings"][name], name
    # the local fleet's legacy stacks make offenders of customers (each listed once)
    offenders = page.locator('[data-testid="offenders"] tbody tr[data-testid]')
    names = [
        await offenders.nth(i).locator("a").text_content() for i in range(await offenders.count())
    ]
    assert names
    assert len(set(names)) == len(names)
    assert set(names) <= {"Customer 0", "Customer 1", "Customer 2"}
    await _shot(page, "offenders")

    # Customers: the cut-off outcomes are the API's.
    customers = (await _api(served, "viewer", "/v1/customers"))["items"]
    assert len(customers) == 3
    for customer in customers:
        await page.goto(f"{served.url}/dashboard/customers/{customer['id']}")
        cutoff = await _api(served, "viewer", f"/v1/customers/{customer['id']}/cutoff")
        assert await page.text_content('[data-testid="customer-name"]') == customer["name"]
        for outcome in ("breaks", "partly_breaks", "degraded", "unaffected", "unknown"):
            shown = await _int(page, f'[data-testid="outcome-{outcome}"] .value')
            assert shown == cutoff["outcomes"].get(outcome, 0), outcome
        rows = page.locator('[data-testid="cutoff-endpoints"] tbody tr[data-endpoint]')
        assert await rows.count() == len(cutoff["endpoints"])
        accounts = await _api(served, "viewer", f"/v1/clients/legacy?customer_id={customer['id']}")
        boxes = page.locator('[data-testid="mailboxes"] tbody tr[data-account]')
        names = [
            await boxes.nth(i).get_attribute("data-account") for i in range(await boxes.count())
        ]
        assert sorted(n or "" for n in names) == sorted(a["account"] for a in accounts["items"])
    await _shot(page, "customer")

    # A domain: the protocol matrix is its results' documents.
    domains = (await _api(served, "viewer", "/v1/domains?limit=100"))["items"]
    first = next(d for d in domains if d["name"].startswith("d0."))
    await page.goto(f"{served.url}/dashboard/domains/{first['id']}")
    results = (await _api(served, "viewer", f"/v1/domains/{first['id']}/results"))["results"]
    assert results
    for result in results:
        row = f'[data-testid="matrix"] tr[data-endpoint="{result["endpoint"]["id"]}"]'
        for protocol, accepted in result["document"]["protocols"].items():
            cell = await page.get_attribute(f'{row} [data-protocol="{protocol}"]', "data-value")
            expected = "yes" if accepted else ("no" if accepted is False else "unknown")
            assert cell == expected, (result["endpoint"], protocol)
    assert await page.locator('[data-testid="history"] tbody tr').count() == 2
    assert await page.locator('[data-testid="findings"] tbody tr').count() >= 1
    await _shot(page, "domain")

    # A laptop sees the same overview, in its own layout.
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.goto(f"{served.url}/dashboard/?refresh=60")
    await _charts_drawn(page)
    await _shot(page, "overview-laptop")

    # Log-out ends the session: the dashboard asks for a key again.
    await page.click('[data-testid="logout"]')
    await page.wait_for_url(f"{served.url}/dashboard/login")
    await page.goto(f"{served.url}/dashboard/offenders")
    assert page.url.startswith(f"{served.url}/dashboard/login")
    assert console.errors == []
    await context.close()


async def test_an_account_manager_sees_only_its_customers(served: Served, browser: Browser) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    console = Console(page)
    await _log_in(page, served, "account_manager")

    stats = await _api(served, "account_manager", "/v1/stats")
    assert (
        await _int(page, '[data-testid="count-endpoints"] .value') == stats["counts"]["endpoints"]
    )
    for name in CARDS:
        shown = await _int(page, f'[data-testid="count-{name}"] .value')
        assert shown == stats["counts"]["findings"][name], name
    # Ann's mailboxes only: Customer 0's two, none of Bob's, none outside the inventory
    mailboxes = await _check_mailbox_numbers(page, served, "account_manager")
    assert (len(mailboxes["legacy"]), len(mailboxes["plaintext"])) == (2, 1)
    assert mailboxes["impact"]["unmapped_accounts"] == 0
    await _shot(page, "overview-account-manager")

    own = (await _api(served, "account_manager", "/v1/customers"))["items"]
    assert sorted(c["name"] for c in own) == ["Customer 0", "Customer 1"]
    response = await page.goto(f"{served.url}/dashboard/customers/{own[0]['id']}")
    assert response is not None
    assert response.status == 200

    async with httpx.AsyncClient(base_url=served.url) as http:
        everyone = (
            await http.get(
                "/v1/customers", headers={"Authorization": f"Bearer {served.keys['viewer']}"}
            )
        ).json()["items"]
    other = next(c for c in everyone if c["name"] == "Customer 2")
    console.allowed = 2  # the 404 and the 403 below are expected
    response = await page.goto(f"{served.url}/dashboard/customers/{other['id']}")
    assert response is not None
    assert response.status == 404
    assert await page.text_content('[data-testid="error-status"]') == "404"
    assert "Customer 2" not in await page.content()
    response = await page.goto(f"{served.url}/dashboard/sweeps")
    assert response is not None
    assert response.status == 403
    await page.goto(f"{served.url}/dashboard/offenders")
    assert "Customer 2" not in await page.content()
    assert "Bob Manager" not in await page.content()
    await _shot(page, "offenders-account-manager")
    assert console.errors == []
    await context.close()
