"""Notices opened by mail-log telemetry, on a real PostgreSQL: a customer whose
servers are fine but whose mailboxes still log in over TLS 1.0/1.1 or without TLS gets
a notice, sent at once (observed logins need no re-scan); an unchanged set of mailboxes
opens no second one; it is resolved when the mailboxes' last such login leaves the
window, and reopened (finding.regressed) when one comes back. Endpoint problems still
wait for their confirming re-scan (a real TLS server), and a sweep's judgement syncs
the telemetry of customers it did not scan.

Telemetry rows are written as the ingest stores them (``mail_client_days``); the ingest
itself is tested from real daemon logs in test_log_ingest.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from fleet import notices
from fleet.db.models import AccountManager, Customer, Domain, MailAccount, MailClientDay, Notice
from fleet.notices import NoticeConfig
from fleet.sweeps import SweepRuntime
from policy import Severity, default_profile
from tests.integration.servers import MODERN, TlsServer
from tests.integration.test_notices import (
    CONFIG,
    World,
    _endpoint,
    _events,
    _judge,
    _notices,
    _scan,
    _sweep,
    redis,
    runtime,
    server,
    world,
)

__all__ = ["redis", "runtime", "server", "world"]

ALICE = "alice@example.test"
BOB = "bob@example.test"
LEGACY = "clients.legacy_tls"
PLAINTEXT = "clients.plaintext_login"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def _logins(
    world: World, account: str, *, legacy: int = 0, plaintext: int = 0, modern: int = 0
) -> None:
    """Today's logins of a mailbox: over TLS 1.0, without TLS, over TLS 1.3 (added to
    what today has already)."""
    day = _today()
    at = dt.datetime.combine(day, dt.time(0, 5), tzinfo=dt.UTC)
    total = legacy + plaintext + modern
    protocols = {
        name: n for name, n in (("TLSv1.0", legacy), ("none", plaintext), ("TLSv1.3", modern)) if n
    }
    async with world.sessions() as session:
        found = await session.scalar(select(MailAccount).where(MailAccount.account == account))
        if found is None:
            found = MailAccount(account=account, domain=account.rsplit("@", 1)[1])
            session.add(found)
            await session.flush()
        stored = await session.get(MailClientDay, (found.id, day))
        if stored is not None:  # more logins the same day: the ingest adds them up
            stored.logins += total
            stored.legacy_logins += legacy
            stored.plaintext_logins += plaintext
            stored.protocols = {
                k: stored.protocols.get(k, 0) + protocols.get(k, 0)
                for k in {*stored.protocols, *protocols}
            }
            stored.legacy_first = stored.legacy_first or (at if legacy else None)
            stored.legacy_last = at if legacy else stored.legacy_last
            await session.commit()
            return
        session.add(
            MailClientDay(
                account_id=found.id,
                day=day,
                logins=total,
                legacy_logins=legacy,
                plaintext_logins=plaintext,
                unknown_logins=0,
                protocols=protocols,
                ciphers={},
                mechanisms={"PLAIN": total},
                services={"imap": total},
                client_ips={"198.51.100.7": total},
                client_ips_other=0,
                first_seen=at,
                last_seen=at,
                legacy_first=at if legacy else None,
                legacy_last=at if legacy else None,
                plaintext_first=at if plaintext else None,
                plaintext_last=at if plaintext else None,
            )
        )
        await session.commit()


async def _age(world: World, account: str, days: int) -> None:
    """Time passes for a mailbox: its stored days move ``days`` into the past."""
    async with world.sessions() as session:
        account_id = select(MailAccount.id).where(MailAccount.account == account)
        await session.execute(
            update(MailClientDay)
            .where(MailClientDay.account_id.in_(account_id.scalar_subquery()))
            .values(day=MailClientDay.day - days)
        )
        await session.commit()


async def _judged_sweep(world: World) -> int:
    """A judged sweep of the customer's domain that found nothing on its servers."""
    sweep = await _sweep(world, {})
    await _judge(world, sweep)
    return sweep


def _mailboxes(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"account": account, "code": code} for account, code in pairs]


async def _sync(config: NoticeConfig, world: World) -> notices.SyncReport:
    report = await notices.sync_clients(world.sessions, config)
    assert report is not None
    return report


async def test_mailboxes_alone_open_a_notice_that_goes_out_at_once(world: World) -> None:
    # Given no synced sweep yet: telemetry cannot open a notice (a notice records one)
    await _logins(world, ALICE, legacy=3, modern=1)
    assert await notices.sync_clients(world.sessions, CONFIG) is None
    assert await _notices(world) == []
    await _age(world, ALICE, CONFIG.client_window_days)
    # … then a judged sweep that found nothing wrong on the customer's servers
    sweep = await _judged_sweep(world)
    assert await _notices(world) == []

    # When an ingest brings Alice's TLS 1.0 and Bob's plaintext logins and syncs
    await _logins(world, ALICE, legacy=3, modern=1)
    await _logins(world, BOB, plaintext=2)
    report = await _sync(CONFIG, world)

    # Then one notice goes out without a re-scan, listing both mailboxes
    assert (report.opened, report.confirm, report.sweep_id) == (1, [], sweep)
    [notice] = await _notices(world)
    expected = _mailboxes((ALICE, LEGACY), (BOB, PLAINTEXT))
    assert (notice.status, notice.problems, notice.confirmed) == ("notified", expected, expected)
    assert notice.notified_at is not None
    [(kind, data)] = await _events(world)
    assert (kind, data["notice_id"], data["account_manager_id"]) == (
        "notice.opened",
        notice.id,
        world.manager,
    )
    assert data["problems"] == expected
    # … rendered for the customer: its mailboxes, no servers
    async with world.sessions() as session:
        stored = await session.get(Notice, notice.id)
        assert stored is not None
        view = await notices.build_view(session, stored, CONFIG)
    text = notices.render(view, "text", "en")
    assert "Our mail servers' logs show mailboxes of yours" in text
    assert "Our scan of" not in text
    assert f"- {ALICE}: TLSv1.0 since {_today().isoformat()}" in text
    assert f"- {BOB}: without encryption since" in text

    # When the same telemetry is synced again, and the next sweep is judged
    again = await _sync(CONFIG, world)
    later = await _judge(world, await _sweep(world, {}))

    # Then nothing more: no second notice, no second event
    assert (again.opened, again.resolved, later.opened, later.resolved) == (0, 0, 0, 0)
    assert [n.id for n in await _notices(world)] == [notice.id]
    assert len(await _events(world)) == 1


async def test_the_notice_resolves_when_the_mailboxes_stop_and_reopens_on_a_regression(
    world: World,
) -> None:
    await _judged_sweep(world)
    await _logins(world, ALICE, legacy=1)
    await _logins(world, BOB, plaintext=1)
    assert (await _sync(CONFIG, world)).opened == 1
    [notice] = await _notices(world)

    # When Alice's last TLS 1.0 login leaves the window (she now uses TLS 1.3) but Bob
    # still logs in without TLS
    await _age(world, ALICE, CONFIG.client_window_days)
    await _logins(world, ALICE, modern=4)
    partly = await _sync(CONFIG, world)
    # Then the notice stays (one of its mailboxes still shows)
    assert (partly.resolved, partly.opened) == (0, 0)
    assert [n.status for n in await _notices(world)] == ["notified"]

    # When Bob's last plaintext login leaves the window too
    await _age(world, BOB, CONFIG.client_window_days)
    fixed = await _sync(CONFIG, world)
    # Then the notice is resolved and notice.resolved goes out
    assert (fixed.resolved, fixed.opened) == (1, 0)
    [resolved] = await _notices(world)
    assert (resolved.id, resolved.status) == (notice.id, "resolved")
    assert [kind for kind, _ in await _events(world)] == ["notice.opened", "notice.resolved"]
    # … and a second sync changes nothing
    assert (await _sync(CONFIG, world)).resolved == 0

    # When Alice's mail program logs in over TLS 1.0 again
    await _logins(world, ALICE, legacy=1)
    back = await _sync(CONFIG, world)
    # Then the same notice reopens (its next generation), finding.regressed goes out,
    # and it is sent again at once with the mailbox that shows now
    assert (back.regressed, back.opened, back.confirm) == (1, 0, [])
    [reopened] = await _notices(world)
    assert (reopened.id, reopened.status, reopened.generation, reopened.regressions) == (
        notice.id,
        "notified",
        2,
        1,
    )
    assert reopened.problems == _mailboxes((ALICE, LEGACY))
    events = await _events(world)
    assert [kind for kind, _ in events] == [
        "notice.opened",
        "notice.resolved",
        "finding.regressed",
        "notice.opened",
    ]
    assert events[-1][1]["generation"] == 2


async def test_a_sweep_syncs_the_mailboxes_of_customers_it_did_not_scan(world: World) -> None:
    # Given a second customer with no domain in any sweep, whose mailbox logs in
    # without TLS, and a threshold above high for another deployment
    async with world.sessions() as session:
        manager = AccountManager(name="Carl", email="carl@example.net")
        session.add(manager)
        await session.flush()
        other = Customer(name="Other AG", account_manager_id=manager.id)
        session.add(other)
        await session.flush()
        session.add(Domain(name="other.test", customer_id=other.id, tags=[]))
        await session.commit()
        other_id = other.id
    await _logins(world, "info@other.test", plaintext=1)
    strict = NoticeConfig(profile=default_profile(), min_severity=Severity.CRITICAL)

    # When a sweep of the first customer's domain is judged
    await _judged_sweep(world)

    # Then the other customer's mailbox opened a notice, sent at once
    [notice] = await _notices(world)
    assert (notice.customer_id, notice.status) == (other_id, "notified")
    assert notice.problems == _mailboxes(("info@other.test", PLAINTEXT))
    # … and under a threshold above high mailboxes count for nothing: it resolves
    assert (await _sync(strict, world)).resolved == 1


@pytest.mark.parametrize("server", [MODERN], indirect=True)
async def test_endpoint_problems_wait_for_the_rescan_and_mailboxes_do_not(
    world: World, runtime: SweepRuntime, server: TlsServer
) -> None:
    # Given a sweep whose result said "TLS 1.0 only" for a server that in truth speaks
    # TLS 1.2 and 1.3, and a mailbox of the customer on TLS 1.0
    await _logins(world, ALICE, legacy=2)
    endpoint = await _endpoint(world, server)
    real = await _scan(runtime, server)
    wrong = dict(real)
    wrong["protocols"] = {**real["protocols"], "TLSv1.0": True, "TLSv1.2": False, "TLSv1.3": False}
    wrong["cipher_suites"] = {"TLSv1.0": ["TLS_RSA_WITH_AES_128_CBC_SHA"]}

    # When the sweep is judged
    report = await _judge(world, await _sweep(world, {endpoint: wrong}))

    # Then one notice holds both kinds of problem and waits for its re-scan
    [notice] = await _notices(world)
    assert (report.confirm, notice.status) == ([notice.id], "open")
    assert {(p.get("endpoint_id"), p.get("account"), p["code"]) for p in notice.problems} >= {
        (None, ALICE, LEGACY),
        (endpoint, None, "tls.only_legacy"),
    }
    assert await _events(world) == []

    # When the re-scan does not confirm the server's problems
    outcome = await notices.confirm_notice(runtime, CONFIG, notice.id)

    # Then the notice still goes out, with the mailbox alone
    assert (outcome.outcome, outcome.confirmed) == ("notified", 1)
    [sent] = await _notices(world)
    assert sent.confirmed == _mailboxes((ALICE, LEGACY))
    [(kind, data)] = await _events(world)
    assert (kind, data["problems"]) == ("notice.opened", _mailboxes((ALICE, LEGACY)))
