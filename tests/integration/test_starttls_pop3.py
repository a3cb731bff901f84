"""POP3 dialogues against small Dovecot-like and old-style servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from scanner import starttls
from scanner.errors import (
    ProtocolError,
    RateLimitedError,
    StarttlsNotOfferedError,
    StarttlsRefusedError,
)
from scanner.starttls import DialogueOptions
from tests.integration.starttls_servers import (
    DOVECOT_CAPA,
    SERVER_NAME,
    Peer,
    Pop3Script,
    client_context,
    connect,
    pop3_server,
    serve,
)

OPTS = DialogueOptions(timeout=5.0)


async def test_dovecot_plaintext_disallowed_then_user_over_tls() -> None:
    script = Pop3Script()
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.upgrade("pop3", reader, writer, OPTS)
        await writer.start_tls(client_context(), server_hostname=SERVER_NAME)
        after = await starttls.capabilities_after_tls("pop3", reader, writer, OPTS)

    assert script.received == ["CAPA", "STLS", "CAPA"]
    assert facts.banner == "+OK Dovecot ready."
    assert facts.starttls_offered
    assert facts.capabilities == ("SASL", *DOVECOT_CAPA)
    assert facts.mechanisms == ()
    assert not facts.plaintext_login
    assert after.mechanisms == ("PLAIN", "USER")
    assert after.plaintext_login
    assert not after.starttls_offered


async def test_capa_with_user_and_sasl() -> None:
    script = Pop3Script(capa=["TOP", "USER", "SASL PLAIN LOGIN CRAM-MD5", "STLS", "UIDL"])
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)

    assert facts.mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5", "USER")
    assert facts.plaintext_login


async def test_capa_with_only_challenge_response_sasl() -> None:
    script = Pop3Script(capa=["TOP", "SASL CRAM-MD5 SCRAM-SHA-1", "STLS"])
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)

    assert facts.mechanisms == ("CRAM-MD5", "SCRAM-SHA-1")
    assert not facts.plaintext_login


async def test_no_capa_presumes_user_and_reports_apop() -> None:
    # Given an RFC 1939 server: no CAPA, an APOP timestamp in the greeting
    script = Pop3Script(greeting="+OK POP3 server ready <1896.697170952@mail.test>", capa=None)
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)
        with pytest.raises(StarttlsNotOfferedError):
            await starttls.start_tls("pop3", reader, writer, OPTS, facts)

    assert facts.capabilities == ()
    assert facts.mechanisms == ("USER", "APOP")
    assert facts.plaintext_login
    assert not facts.starttls_offered


async def test_stls_refused() -> None:
    script = Pop3Script(stls_reply="-ERR TLS support isn't enabled.")
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(StarttlsRefusedError) as err:
            await starttls.upgrade("pop3", reader, writer, OPTS)

    assert err.value.phase == "starttls"


async def test_err_greeting_too_many_is_rate_limited() -> None:
    script = Pop3Script(greeting="-ERR [SYS/TEMP] Too many connections, try again later")
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(RateLimitedError) as err:
            await starttls.read_capabilities("pop3", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_err_greeting_refuses_the_session() -> None:
    script = Pop3Script(greeting="-ERR go away")
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError) as err:
            await starttls.read_capabilities("pop3", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_dot_stuffed_capa_lines() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send("+OK hi")
        await peer.recv_line()
        await peer.send("+OK", "..ODD", "STLS", ".")
        await peer.recv_line()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)

    assert facts.capabilities == (".ODD", "STLS")


# --- the opt-in login check ---------------------------------------------------------


async def test_login_refused_at_user() -> None:
    script = Pop3Script()
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("pop3", reader, writer, OPTS, facts)

    assert verdict == "refused"
    assert script.received[-1].startswith("USER tlsfleet-probe-")


async def test_login_refused_at_pass() -> None:
    script = Pop3Script(
        user_reply="+OK",
        pass_reply="-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.",
    )
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("pop3", reader, writer, OPTS, facts)

    assert verdict == "refused"


@pytest.mark.parametrize(
    "pass_reply", ["-ERR [AUTH] Authentication failed.", "-ERR [SYS/TEMP] Try later", "+OK"]
)
async def test_login_accepted_at_pass(pass_reply: str) -> None:
    script = Pop3Script(capa=["USER", "STLS"], user_reply="+OK", pass_reply=pass_reply)
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("pop3", reader, writer, OPTS, facts)

    assert verdict == "accepted"
    user, password = script.received[-2:]
    assert user.startswith("USER tlsfleet-probe-")
    assert user.endswith("@invalid")
    assert password.startswith("PASS ")


async def test_old_server_judging_the_name_at_user() -> None:
    script = Pop3Script(capa=None, user_reply="-ERR never heard of mailbox name")
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("pop3", reader, writer, OPTS, facts)

    assert verdict == "accepted"


async def test_login_with_sasl_plain_when_user_is_not_offered() -> None:
    script = Pop3Script(capa=["SASL PLAIN", "STLS"])
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("pop3", reader, writer, OPTS, facts)

    assert verdict == "accepted"
    assert script.received[-1].startswith("AUTH PLAIN ")
