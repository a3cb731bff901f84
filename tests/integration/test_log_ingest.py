"""Mail-log telemetry from real logs: the test fleet's Postfix and Dovecot log to files
(Dovecot with ``%c %k`` in ``login_log_format_elements``, Postfix with
``smtpd_tls_loglevel = 1`` through postlogd), real clients log in with TLS 1.0, 1.1,
1.2, 1.3 and without TLS, and what the daemons wrote is ingested: accounts, protocols,
mechanisms and plaintext logins exactly; ingesting again (a file, or a stream) counts
nothing twice; a file that grew is read on from its checkpoint."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.db.models import (
    AccountManager,
    Customer,
    Domain,
    LogSeenConnection,
    LogSource,
    MailAccount,
    MailClientDay,
)
from fleet.logs import ingest
from fleet.logs.ingest import Ingester, IngestOptions, IngestSummary
from fleet.notices import ClientAccountView
from fleet.repositories import clients as repo
from tests.integration.daemons.clients import (
    EndpointIMAP4,
    EndpointPOP3,
    EndpointSMTP,
    tls_context,
)
from tests.integration.daemons.fixtures import daemon_fleet
from tests.integration.daemons.model import DaemonFleet, Profile, Service, TlsVersionName

pytestmark = pytest.mark.daemons

__all__ = ["daemon_fleet"]

LOGS = ("dovecot-legacy.log", "dovecot-modern.log", "postfix-legacy.log", "postfix-modern.log")


@dataclass(frozen=True)
class Client:
    """Log in (and, on SMTP, send one message to the sink) as one account."""

    fleet: DaemonFleet

    def _context(self, version: TlsVersionName | None) -> Any:
        return tls_context(self.fleet.ca_file, version) if version is not None else None

    def imap(
        self,
        account: str,
        version: TlsVersionName | None,
        *,
        profile: Profile = "legacy",
        implicit: bool = False,
        password: str | None = None,
    ) -> None:
        service: Service = "imaps" if implicit else "imap"
        endpoint = self.fleet.endpoint(profile, service)
        context = self._context(version)
        with EndpointIMAP4(endpoint, self.fleet.client_address, tls=context) as imap:
            if context is not None and not implicit:
                imap.starttls(context)
            imap.login(account, password or self.fleet.test_password)

    def pop3(self, account: str, version: TlsVersionName) -> None:
        endpoint = self.fleet.endpoint("legacy", "pop3")
        pop3 = EndpointPOP3(endpoint, self.fleet.client_address)
        try:
            pop3.stls(self._context(version))
            pop3.user(account)
            pop3.pass_(self.fleet.test_password)
        finally:
            pop3.quit()

    def smtp(
        self,
        account: str,
        version: TlsVersionName | None,
        *,
        profile: Profile = "legacy",
        service: Service = "submission",
        mechanism: str = "PLAIN",
        send: bool = True,
    ) -> None:
        endpoint = self.fleet.endpoint(profile, service)
        context = self._context(version)
        with EndpointSMTP(endpoint, self.fleet.client_address, tls=context) as smtp:
            smtp.ehlo()
            if context is not None and service != "submissions":
                smtp.starttls(context=context)
                smtp.ehlo()
            smtp.user, smtp.password = account, self.fleet.test_password
            auth = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
            smtp.auth(mechanism, auth)
            if send:
                smtp.sendmail(
                    account, [f"sink@{self.fleet.sink_domain}"], b"Subject: t\r\n\r\nt\r\n"
                )


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"the daemons did not log {what} in {timeout} s")
        time.sleep(0.05)


def _sizes(fleet: DaemonFleet) -> dict[str, int]:
    return {name: (Path(fleet.log_dir) / name).stat().st_size for name in LOGS}


def _since(fleet: DaemonFleet, name: str, sizes: dict[str, int]) -> str:
    with (Path(fleet.log_dir) / name).open("rb") as handle:
        handle.seek(sizes[name])
        return handle.read().decode(errors="replace")


def _wait_logged(
    fleet: DaemonFleet, sizes: dict[str, int], expected: dict[str, dict[str, int]]
) -> None:
    """Wait until each log has as many of each marker after ``sizes`` as expected
    (postlogd and Dovecot's log process write asynchronously)."""
    for name, markers in expected.items():
        for marker, count in markers.items():

            def logged(name: str = name, marker: str = marker, count: int = count) -> bool:
                return _since(fleet, name, sizes).count(marker) >= count

            _wait_for(logged, f"{count} × {marker!r} in {name}")


@pytest.fixture(scope="module")
def logged(daemon_fleet: DaemonFleet) -> DaemonFleet:
    """Given the logins of four accounts over every TLS version and without TLS."""
    fleet = daemon_fleet
    sizes = _sizes(fleet)
    client = Client(fleet)
    # alice@alpha.test: IMAP over TLS 1.0, POP3 over TLS 1.1
    client.imap("alice@alpha.test", "TLSv1")
    client.pop3("alice@alpha.test", "TLSv1.1")
    # … and a wrong password over TLS 1.2 (a failed login, no account counted)
    with pytest.raises(EndpointIMAP4.error):
        client.imap("alice@alpha.test", "TLSv1.2", password="wrong")
    # bob@alpha.test: IMAP and SMTP submission without TLS (the legacy profile lets him)
    client.imap("bob@alpha.test", None)
    client.smtp("bob@alpha.test", None)
    # carol@beta.test: IMAPS over TLS 1.2, submission over TLS 1.0, submissions over 1.1
    # with AUTH LOGIN, and an AUTH over TLS 1.2 that sends nothing (Postfix names no
    # SASL user then: a login without an account)
    client.imap("carol@beta.test", "TLSv1.2", implicit=True)
    client.smtp("carol@beta.test", "TLSv1")
    client.smtp("carol@beta.test", "TLSv1.1", service="submissions", mechanism="LOGIN")
    client.smtp("carol@beta.test", "TLSv1.2", send=False)
    # dave@beta.test on the modern servers: TLS 1.3 and TLS 1.2
    client.imap("dave@beta.test", "TLSv1.3", profile="modern", implicit=True)
    client.smtp("dave@beta.test", "TLSv1.2", profile="modern")
    _wait_logged(
        fleet,
        sizes,
        {
            "dovecot-legacy.log": {"Login: user=<": 4, "auth failed": 1},
            "dovecot-modern.log": {"Login: user=<": 1},
            "postfix-legacy.log": {"disconnect from": 4, "sasl_username=": 3},
            "postfix-modern.log": {"disconnect from": 1, "sasl_username=": 1},
        },
    )
    return fleet


EXPECTED = {
    "alice@alpha.test": {
        "logins": 2,
        "legacy_logins": 2,
        "plaintext_logins": 0,
        "protocols": {"TLSv1.0": 1, "TLSv1.1": 1},
        "mechanisms": {"PLAIN": 2},
        "services": {"imap": 1, "pop3": 1},
    },
    "bob@alpha.test": {
        "logins": 2,
        "legacy_logins": 0,
        "plaintext_logins": 2,
        "protocols": {"none": 2},
        "mechanisms": {"PLAIN": 2},
        "services": {"imap": 1, "submission": 1},
    },
    "carol@beta.test": {
        "logins": 3,
        "legacy_logins": 2,
        "plaintext_logins": 0,
        "protocols": {"TLSv1.2": 1, "TLSv1.0": 1, "TLSv1.1": 1},
        "mechanisms": {"PLAIN": 2, "LOGIN": 1},
        "services": {"imap": 1, "submission": 1, "submissions": 1},
    },
    "dave@beta.test": {
        "logins": 2,
        "legacy_logins": 0,
        "plaintext_logins": 0,
        "protocols": {"TLSv1.3": 1, "TLSv1.2": 1},
        "mechanisms": {"PLAIN": 2},
        "services": {"imap": 1, "submission": 1},
    },
}


@pytest.fixture
async def inventory(session_factory: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """alpha.test belongs to Alpha (Alice's customer), beta.test to Beta (Bob's)."""
    async with session_factory() as session:
        alice = AccountManager(name="Alice", email="alice@example.net")
        bob = AccountManager(name="Bob", email="bob@example.net")
        session.add_all([alice, bob])
        await session.flush()
        alpha = Customer(name="Alpha", account_manager_id=alice.id)
        beta = Customer(name="Beta", account_manager_id=bob.id)
        session.add_all([alpha, beta])
        await session.flush()
        session.add_all(
            [
                Domain(name="alpha.test", customer_id=alpha.id, tags=[]),
                Domain(name="beta.test", customer_id=beta.id, tags=[]),
            ]
        )
        await session.commit()
        return {"alpha": alpha.id, "beta": beta.id, "alice": alice.id, "bob": bob.id}


async def _ingest_files(
    sessions: async_sessionmaker[AsyncSession], fleet: DaemonFleet, **options: Any
) -> IngestSummary:
    ingester = Ingester(sessions, IngestOptions(**options))
    for name in LOGS:
        await ingester.ingest_file(Path(fleet.log_dir) / name)
    return await ingester.finish()


async def _ingest_stream(
    sessions: async_sessionmaker[AsyncSession], fleet: DaemonFleet
) -> IngestSummary:
    ingester = Ingester(sessions, IngestOptions(flush_lines=10))
    for name in LOGS:
        with (Path(fleet.log_dir) / name).open("rb") as handle:
            await ingester.ingest_stream(handle.fileno())
    return await ingester.finish()


async def _stored(sessions: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, Any]]:
    """Every account's counters, summed over its days."""
    async with sessions() as session:
        result = await session.execute(
            select(MailAccount.account, MailClientDay).join(
                MailClientDay, MailClientDay.account_id == MailAccount.id
            )
        )
        stored: dict[str, dict[str, Any]] = {}
        for account, day in result.all():
            entry = stored.setdefault(
                account,
                {"logins": 0, "legacy_logins": 0, "plaintext_logins": 0}
                | {c: {} for c in ("protocols", "mechanisms", "services")},
            )
            for column in ("logins", "legacy_logins", "plaintext_logins"):
                entry[column] += getattr(day, column)
            for column in ("protocols", "mechanisms", "services"):
                for key, value in getattr(day, column).items():
                    entry[column][key] = entry[column].get(key, 0) + value
    return stored


def _ours(stored: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a: v for a, v in stored.items() if a in EXPECTED}


async def test_real_logs_give_each_account_its_protocols_methods_and_plaintext_logins(
    logged: DaemonFleet,
    inventory: dict[str, int],
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    # When the four logs are ingested, flushing every 7 lines (so Postfix connections
    # stay open across checkpoints)
    summary = await _ingest_files(session_factory, logged, flush_lines=7)

    # Then every account has exactly what its clients did
    stored = await _stored(session_factory)
    assert _ours(stored) == EXPECTED
    # accounts without a domain (the smoke tests' "tester") are the unmapped ones
    assert summary.unmapped == len([a for a in stored if "@" not in a])
    assert summary.malformed == 0

    # And the findings, the impact view and the scoping follow from them
    async with session_factory() as session:
        since = dt.date.today() - dt.timedelta(days=1)
        legacy = await repo.list_accounts(session, since, kind="legacy")
        plaintext = await repo.list_accounts(session, since, kind="plaintext")
        impact = await repo.impact(session, since, kind="legacy")
        bobs = await repo.list_accounts(session, since, manager=inventory["bob"])
    # (other tests' logins on the same daemons, e.g. the smoke tests' "tester", may be in
    # the logs too, unmapped: only this test's accounts are checked by name)
    assert [a.account for a in legacy if a.account in EXPECTED] == [
        "alice@alpha.test",
        "carol@beta.test",
    ]
    assert [a.account for a in plaintext if a.account in EXPECTED] == ["bob@alpha.test"]
    alice = next(a for a in legacy if a.account == "alice@alpha.test")
    assert (alice.customer, alice.findings) == ("Alpha", [repo.FINDING_LEGACY])
    assert alice.client_ips == {logged.client_address: 2}
    assert alice.legacy_first is not None
    assert (impact.customers, impact.accounts) == (2, 2)
    assert [(c.customer, c.accounts) for c in impact.customer_list] == [
        ("Alpha", 1),
        ("Beta", 1),
    ]
    assert [a.account for a in bobs] == ["carol@beta.test"]

    # And Alpha's notice lists its mailboxes, what they use and since when
    async with session_factory() as session:
        accounts = await repo.customer_accounts(session, inventory["alpha"], since)
    views = [ClientAccountView.from_account(a) for a in accounts]
    assert [(v.account, v.used, v.client_ips) for v in views] == [
        ("alice@alpha.test", ("TLSv1.0", "TLSv1.1"), (logged.client_address,)),
        ("bob@alpha.test", ("none",), (logged.client_address,)),
    ]


async def test_ingesting_again_counts_nothing_twice_and_a_grown_file_is_read_on(
    logged: DaemonFleet,
    inventory: dict[str, int],
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    del inventory
    sizes = _sizes(logged)
    await _ingest_files(session_factory, logged)
    before = await _stored(session_factory)

    # When the same files are ingested again
    again = await _ingest_files(session_factory, logged)

    # Then nothing is read or counted twice
    assert await _stored(session_factory) == before
    assert (again.lines, again.skipped_bytes) == (0, sum(sizes.values()))

    # When alice logs in once more over TLS 1.0 and the logs are ingested again
    sizes = _sizes(logged)
    Client(logged).imap("alice@alpha.test", "TLSv1")
    _wait_logged(logged, sizes, {"dovecot-legacy.log": {"Login: user=<alice@alpha.test>": 1}})
    await _ingest_files(session_factory, logged)

    # Then only that login is added
    after = _ours(await _stored(session_factory))
    assert after["alice@alpha.test"]["logins"] == before["alice@alpha.test"]["logins"] + 1
    assert after["alice@alpha.test"]["protocols"]["TLSv1.0"] == (
        before["alice@alpha.test"]["protocols"]["TLSv1.0"] + 1
    )
    assert {a: v for a, v in after.items() if a != "alice@alpha.test"} == {
        a: v for a, v in _ours(before).items() if a != "alice@alpha.test"
    }


async def test_a_stream_piped_twice_counts_once(
    logged: DaemonFleet, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    # When the logs are piped in as a stream, twice
    once = await _ingest_stream(session_factory, logged)
    stored = _ours(await _stored(session_factory))
    twice = await _ingest_stream(session_factory, logged)

    # Then the second run counts no connection: all are duplicates
    assert _ours(await _stored(session_factory)) == stored
    assert twice.counted_logins == 0
    assert twice.duplicates == once.counted_logins
    assert set(stored) == set(EXPECTED)
    for account in ("bob@alpha.test", "carol@beta.test", "dave@beta.test"):
        assert stored[account] == EXPECTED[account]


# -- batching ---------------------------------------------------------------------------

MIXED_START = dt.datetime(2026, 11, 20, 22, 0, tzinfo=dt.UTC)


def _mixed_log(path: Path) -> None:
    """A log of every kind of line, over two UTC midnights: Postfix connections of 12
    processes interleaved (TLS 1.0–1.3 and none, a message with the SASL user, an AUTH
    without one, no login), Dovecot logins over TLS 1.0–1.3, without TLS and from a
    trusted network, failed logins, other programs and a malformed line; one account
    logs in from 30 addresses a day, in an order where the first 20 matter."""
    rng = random.Random(9)
    accounts = [f"u{n}@{'alpha' if n % 2 else 'beta'}.test" for n in range(12)]  # u0@beta.test
    versions = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", None)
    lines: list[str] = []
    moment = MIXED_START
    smtpd: dict[int, list[str]] = {}
    for n in range(1_500):
        moment += dt.timedelta(seconds=rng.randrange(1, 200))
        stamp = moment.isoformat()
        account = accounts[0] if rng.random() < 0.3 else rng.choice(accounts)
        version = rng.choice(versions)
        # u0 roams over 30 addresses; the others stay within three
        ip = (
            f"198.51.100.{rng.randrange(30)}"
            if account == "u0@beta.test"
            else (f"203.0.113.{rng.randrange(3)}")
        )
        kind = rng.random()
        if kind < 0.5:
            pid = rng.randrange(2000, 2012)
            prefix = f"{stamp} mx1 postfix/submission/smtpd[{pid}]: "
            pending = smtpd.get(pid)
            if pending:
                lines.append(prefix + pending.pop(0))
                if not pending:
                    del smtpd[pid]
                continue
            host = f"client.example[{ip}]"
            steps = []
            if version is not None:
                steps.append(
                    f"Anonymous TLS connection established from {host}: {version} with "
                    f"cipher AES{n % 3} (256/256 bits)"
                )
            auth = rng.random()
            if auth < 0.7:
                steps.append(
                    f"{rng.getrandbits(40):010X}: client={host}, sasl_method=PLAIN, "
                    f"sasl_username={account}"
                )
            steps.append(f"disconnect from {host} ehlo=1 auth={int(auth < 0.85)} quit=1")
            smtpd[pid] = steps
            lines.append(prefix + f"connect from {host}")
        elif kind < 0.9:
            service = rng.choice(("imap", "pop3"))
            prefix = f"{stamp} mx1 dovecot: {service}-login: "
            session = f"{rng.getrandbits(48):012x}"
            r = rng.random()
            if r < 0.75:
                marker = (
                    ", secured"
                    if r < 0.05
                    else ""
                    if version is None
                    else f", TLS, {version} with cipher AES{n % 3} (256/256 bits)"
                )
                lines.append(
                    prefix + f"Login: user=<{account}>, method={rng.choice(('PLAIN', 'LOGIN'))}, "
                    f"rip={ip}, lip=192.0.2.1, mpid={n}{marker}, session=<{session}>"
                )
            else:
                lines.append(
                    prefix + "Disconnected (auth failed, 1 attempts in 2 secs): "
                    f"user=<{account}>, method=PLAIN, rip={ip}, lip=192.0.2.1, TLS, "
                    f"session=<{session}>"
                )
        elif kind < 0.99:
            lines.append(f"{stamp} mx1 CRON[{n}]: (root) CMD (run-parts)")
        else:
            lines.append(f"{stamp} mx1 dovecot: imap-login: Login: user=<broken")
    # The connections still open end (a stream completes them at its end, a file keeps
    # them open in its checkpoint)
    for pid, steps in smtpd.items():
        lines.extend(
            f"{moment.isoformat()} mx1 postfix/submission/smtpd[{pid}]: {step}" for step in steps
        )
    path.write_text("\n".join(lines) + "\n")


async def _all_days(sessions: async_sessionmaker[AsyncSession]) -> dict[tuple[str, Any], Any]:
    """Every stored (account, day) row, every column."""
    async with sessions() as session:
        result = await session.execute(
            select(MailAccount.account, MailClientDay).join(
                MailClientDay, MailClientDay.account_id == MailAccount.id
            )
        )
        columns = [c.key for c in MailClientDay.__table__.columns if c.key != "account_id"]
        return {
            (account, day.day): {c: getattr(day, c) for c in columns}
            for account, day in result.all()
        }


async def _forget(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        for model in (LogSource, MailClientDay, MailAccount, LogSeenConnection):
            await session.execute(delete(model))
        await session.commit()


async def test_the_counts_do_not_depend_on_where_flushes_fall(
    tmp_path: Path,
    session_factory: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a mixed log
    path = tmp_path / "mail.log"
    _mixed_log(path)

    # When it is ingested from scratch, flushing after every line, every 7 lines, once
    # at the end, whenever 3 (day, account) counters are held, and written in chunks
    # of 4 rows; and once as a stream flushed every 5 lines
    results = []
    for options, chunk in (
        ({"flush_lines": 1}, None),
        ({"flush_lines": 7}, None),
        ({"flush_lines": 10_000}, None),
        ({"flush_lines": 10_000, "flush_rows": 3}, None),
        ({"flush_lines": 10_000}, 4),
    ):
        if chunk is not None:
            monkeypatch.setattr(ingest, "_CHUNK", chunk)
        ingested = await _ingest_file(session_factory, path, **options)
        results.append((ingested.to_dict(), await _all_days(session_factory)))
        monkeypatch.undo()
        await _forget(session_factory)
    stream = Ingester(session_factory, IngestOptions(flush_lines=5))
    with path.open("rb") as handle:
        await stream.ingest_stream(handle.fileno())
    streamed = await _all_days(session_factory)

    # Then every stored column and every summary figure is the same
    summary, stored = results[0]
    assert summary["malformed"] > 0
    assert summary["counted_logins"] > 500
    assert len({d for _, d in stored}) == 3  # the log spans two midnights
    for other_summary, other_stored in results[1:]:
        assert other_summary == summary
        assert other_stored == stored
    assert streamed == stored
    # And the roaming account keeps at most 20 addresses a day, the others counted
    roaming = [day for (account, _), day in stored.items() if account == "u0@beta.test"]
    assert max(len(day["client_ips"]) for day in roaming) == 20
    assert any(day["client_ips_other"] for day in roaming)
    for day in roaming:
        assert len(day["client_ips"]) <= 20
        assert sum(day["client_ips"].values()) + day["client_ips_other"] == day["logins"]


async def _ingest_file(
    sessions: async_sessionmaker[AsyncSession], path: Path, **options: Any
) -> IngestSummary:
    ingester = Ingester(sessions, IngestOptions(**options))
    await ingester.ingest_file(path)
    return await ingester.finish()
