"""The mail-log parser, joiner and counters without any service: each prefix format,
each Dovecot and Postfix line kind, per-connection joining, and mutated lines (never an
exception; every line is an event, ignored, another program's, or malformed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.logs.aggregate import MAX_CLIENT_IPS, AccountMap, Aggregator
from fleet.logs.join import Connection, Joiner
from fleet.logs.parser import (
    Clock,
    DovecotLogin,
    DovecotNoLogin,
    Kind,
    PostfixEvent,
    parse_line,
    postfix_service,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

# Lines as Dovecot 2.3.19 and Postfix 3.7 wrote them in the integration tests.
DOVECOT_FILE_LOGIN = (
    "Nov 28 03:49:09 imap-login: Info: Login: user=<tester>, method=PLAIN, "
    "rip=127.0.10.100, lip=127.0.10.1, mpid=1010, TLS, TLSv1 with cipher "
    "ECDHE-RSA-AES256-SHA (256/256 bits), session=<WRMbD05huYF/AApk>"
)
DOVECOT_SYSLOG_PLAIN = (
    "Nov 28 03:49:09 mx1 dovecot: pop3-login: Login: user=<bob@alpha.test>, method=PLAIN, "
    "rip=192.0.2.7, lip=192.0.2.1, mpid=1017, session=</EUcD05hG4p/AApk>"
)
DOVECOT_JOURNAL_SECURED = (
    "2026-11-28T03:49:09+0100 mx1 dovecot[812]: imap-login: Login: user=<web@alpha.test>, "
    "method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=9, secured, session=<abc>"
)
DOVECOT_NO_AUTH = (
    "Nov 28 03:49:08 imap-login: Info: Disconnected: Connection closed (no auth attempts "
    "in 0 secs): user=<>, rip=127.0.10.100, lip=127.0.10.1, TLS, TLSv1.3 with cipher "
    "TLS_AES_256_GCM_SHA384 (256/256 bits), session=<DsUYD05h8b1/AApk>"
)
DOVECOT_FAILED = (
    "Nov 28 03:49:09 imap-login: Info: Disconnected: Connection closed (auth failed, 1 "
    "attempts in 0 secs): user=<tester>, method=PLAIN, rip=127.0.10.100, "
    "lip=127.0.10.1, session=<5DsdD05h/55/AApk>"
)
P = "Nov 28 03:49:09 mail postfix-legacy/submission/smtpd[1001]: "
POSTFIX_CONNECTION = [
    P + "connect from unknown[127.0.10.100]",
    P + "Anonymous TLS connection established from unknown[127.0.10.100]: TLSv1 with "
    "cipher ECDHE-RSA-AES256-SHA (256/256 bits)",
    P + "4Fz1Q72mXbz9sWq: client=unknown[127.0.10.100], sasl_method=LOGIN, "
    "sasl_username=carol@beta.test",
    P + "disconnect from unknown[127.0.10.100] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 "
    "data=1 quit=1 commands=8",
]
EVERY_LINE = [
    DOVECOT_FILE_LOGIN,
    DOVECOT_SYSLOG_PLAIN,
    DOVECOT_JOURNAL_SECURED,
    DOVECOT_NO_AUTH,
    DOVECOT_FAILED,
    *POSTFIX_CONNECTION,
]


def _clock() -> Clock:
    return Clock(NOW)


def test_a_dovecot_file_login_line_with_tls_details() -> None:
    parsed = parse_line(DOVECOT_FILE_LOGIN, _clock())
    assert parsed.kind is Kind.EVENT
    assert parsed.event == DovecotLogin(
        time=dt.datetime(2026, 11, 28, 3, 49, 9, tzinfo=dt.UTC),
        host="",
        service="imap",
        user="tester",
        method="PLAIN",
        client_ip="127.0.10.100",
        transport="tls",
        protocol="TLSv1.0",
        cipher="ECDHE-RSA-AES256-SHA",
        session="WRMbD05huYF/AApk",
        pid=1010,
    )


def test_syslog_plaintext_and_journald_secured_logins() -> None:
    plain = parse_line(DOVECOT_SYSLOG_PLAIN, _clock()).event
    assert isinstance(plain, DovecotLogin)
    assert (plain.host, plain.service, plain.transport, plain.protocol) == (
        "mx1",
        "pop3",
        "plaintext",
        None,
    )
    secured = parse_line(DOVECOT_JOURNAL_SECURED, _clock()).event
    assert isinstance(secured, DovecotLogin)
    assert secured.transport == "secured"
    # +0100 in the line: stored in UTC
    assert secured.time == dt.datetime(2026, 11, 28, 2, 49, 9, tzinfo=dt.UTC)


def test_connections_without_a_login() -> None:
    no_auth = parse_line(DOVECOT_NO_AUTH, _clock()).event
    failed = parse_line(DOVECOT_FAILED, _clock()).event
    assert isinstance(no_auth, DovecotNoLogin)
    assert (no_auth.failed, no_auth.user) == (False, None)
    assert isinstance(failed, DovecotNoLogin)
    assert (failed.failed, failed.user) == (True, "tester")


def test_a_postfix_connection_is_joined_by_its_process() -> None:
    joiner = Joiner()
    for line in POSTFIX_CONNECTION:
        event = parse_line(line, _clock()).event
        assert isinstance(event, PostfixEvent)
        joiner.feed(event)
    [connection] = joiner.done
    assert (
        connection.service,
        connection.account,
        connection.method,
        connection.transport,
        connection.protocol,
        connection.cipher,
        connection.client_ip,
        connection.authenticated,
    ) == (
        "submission",
        "carol@beta.test",
        "LOGIN",
        "tls",
        "TLSv1.0",
        "ECDHE-RSA-AES256-SHA",
        "127.0.10.100",
        True,
    )
    assert joiner.open_count == 0


def test_postfix_auth_without_a_message_is_a_login_without_an_account() -> None:
    joiner = Joiner()
    for line in (
        POSTFIX_CONNECTION[0],
        P + "disconnect from unknown[1.2.3.4] ehlo=1 auth=1 quit=1",
    ):
        event = parse_line(line, _clock()).event
        assert event is not None
        joiner.feed(event)
    [connection] = joiner.done
    assert (connection.authenticated, connection.account, connection.transport) == (
        True,
        None,
        "plaintext",
    )


def test_open_postfix_connections_survive_a_checkpoint() -> None:
    # Given a connection whose TLS line was read before a checkpoint
    before = Joiner()
    for line in POSTFIX_CONNECTION[:2]:
        event = parse_line(line, _clock()).event
        assert event is not None
        before.feed(event)
    saved = before.state()
    # When a new joiner resumes from the saved state
    after = Joiner()
    after.restore(saved)
    for line in POSTFIX_CONNECTION[2:]:
        event = parse_line(line, _clock()).event
        assert event is not None
        after.feed(event)
    # Then the connection is whole, with the same key
    [connection] = after.done
    assert (connection.protocol, connection.account) == ("TLSv1.0", "carol@beta.test")
    assert connection.key == bytes.fromhex(saved[0]["key"])


def test_open_connections_are_bounded() -> None:
    joiner = Joiner(max_open=3)
    for pid in range(10):
        line = f"Nov 28 03:49:09 mx postfix/smtpd[{pid}]: connect from x[192.0.2.{pid}]"
        event = parse_line(line, _clock()).event
        assert event is not None
        joiner.feed(event)
    assert (joiner.open_count, joiner.evicted, len(joiner.done)) == (3, 7, 7)


def test_connections_in_the_same_second_of_one_process_have_their_own_keys() -> None:
    joiner = Joiner()
    for _ in range(2):
        for line in (POSTFIX_CONNECTION[0], POSTFIX_CONNECTION[3]):
            event = parse_line(line, _clock()).event
            assert event is not None
            joiner.feed(event)
    first, second = joiner.done
    assert first.key != second.key


@pytest.mark.parametrize(
    ("tag", "service"),
    [
        ("postfix/smtpd", "smtp"),
        ("postfix/submission/smtpd", "submission"),
        ("postfix/submissions/smtpd", "submissions"),
        ("postfix/smtps/smtpd", "submissions"),
    ],
)
def test_the_postfix_service_comes_from_the_syslog_name(tag: str, service: str) -> None:
    assert postfix_service(tag) == service


def test_a_december_line_read_in_january_belongs_to_the_year_before() -> None:
    clock = Clock(dt.datetime(2027, 1, 2, tzinfo=dt.UTC))
    assert clock.syslog("Dec", 31, "23:59:59") == dt.datetime(
        2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC
    )
    assert clock.syslog("Jan", 2, "10:00:00") == dt.datetime(2027, 1, 2, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("", Kind.MALFORMED),
        ("garbage", Kind.MALFORMED),
        ("Nov 28 03:49:09 mx CRON[1]: (root) CMD (true)", Kind.OTHER),
        (
            "Nov 28 03:49:09 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]",
            Kind.IGNORED,
        ),
        ("Nov 28 03:49:09 mx postfix/smtpd[1]: connect from nowhere", Kind.MALFORMED),
        ("Nov 28 03:49:09 imap-login: Info: Login: user=<a>, method=PLAIN", Kind.MALFORMED),
        ("Nov 31 03:49:09 imap-login: Info: Login: user=<a>, rip=1.2.3.4", Kind.MALFORMED),
        ("Nov 28 03:49:09 mx postfix/smtpd: connect from x[1.2.3.4]", Kind.MALFORMED),
    ],
)
def test_what_is_not_a_login_line(line: str, kind: Kind) -> None:
    assert parse_line(line, _clock()).kind is kind


def _login(account: str, ip: str, protocol: str | None, transport: str = "tls") -> Connection:
    return Connection(
        time=NOW,
        host="mx",
        service="imap",
        client_ip=ip,
        account=account,
        method="PLAIN",
        transport=transport,  # type: ignore[arg-type]
        protocol=protocol,
        cipher="AES" if protocol else None,
        authenticated=True,
        failed=False,
        key=b"k",
    )


def test_counts_per_account_and_day_with_a_bounded_set_of_addresses() -> None:
    aggregator = Aggregator()
    for n in range(MAX_CLIENT_IPS + 5):
        aggregator.add(_login("a@alpha.test", f"192.0.2.{n}", "TLSv1.0"))
    aggregator.add(_login("a@alpha.test", "192.0.2.0", None, "plaintext"))
    rows, domains = aggregator.take()
    counts = rows[(NOW.date(), "a@alpha.test")]
    assert (counts.logins, counts.legacy_logins, counts.plaintext_logins) == (26, 25, 1)
    assert len(counts.client_ips) == MAX_CLIENT_IPS
    assert counts.client_ips["192.0.2.0"] == 2
    assert counts.client_ips_other == 5
    assert dict(counts.protocols) == {"TLSv1.0": 25, "none": 1}
    assert domains == {"a@alpha.test": "alpha.test"}
    assert aggregator.take() == ({}, {})


def test_the_account_map_file(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text("match,domain\nTester,legacy.test\n/^shop-.*$/,Shop.Example\n")
    accounts = AccountMap.load(path)
    assert accounts.domain("tester") == "legacy.test"
    assert accounts.domain("shop-1") == "shop.example"
    assert accounts.domain("x@Müller.example") == "xn--mller-kva.example"
    assert accounts.domain("nobody") is None
    path.write_text("match,domain\n/(/,x.example\n")
    with pytest.raises(ValueError, match=r"map.csv:2: bad pattern"):
        AccountMap.load(path)


_MUTATIONS = st.sampled_from(EVERY_LINE).flatmap(
    lambda line: st.tuples(
        st.just(line),
        st.integers(0, len(line)),
        st.integers(0, len(line)),
        st.text(max_size=20),
    )
)


@settings(max_examples=400, deadline=None)
@given(_MUTATIONS)
def test_mutated_lines_never_raise(mutation: tuple[str, int, int, str]) -> None:
    # Given a real line with a slice cut out and arbitrary text put in its place
    line, start, end, insert = mutation
    start, end = min(start, end), max(start, end)
    mutated = line[:start] + insert + line[end:]
    # Then it parses to something, and whatever event it is feeds the joiner
    parsed = parse_line(mutated, _clock())
    assert parsed.kind in set(Kind)
    assert (parsed.event is not None) == (parsed.kind is Kind.EVENT)
    joiner = Joiner()
    if parsed.event is not None:
        joiner.feed(parsed.event)
        for connection in joiner.done:
            Aggregator().add(connection)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_never_raises(line: str) -> None:
    assert parse_line(line, _clock()).kind in set(Kind)
