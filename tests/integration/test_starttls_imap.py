"""IMAP dialogues against small Dovecot-like servers on 127.0.0.1."""

from __future__ import annotations

import base64

import pytest

from scanner import starttls
from scanner.errors import (
    ProtocolError,
    RateLimitedError,
    ResetError,
    StarttlsNotOfferedError,
    StarttlsRefusedError,
)
from scanner.starttls import DialogueOptions
from tests.integration.starttls_servers import (
    DOVECOT_CAPS,
    SERVER_NAME,
    ImapScript,
    Peer,
    client_context,
    connect,
    imap_server,
    serve,
)

OPTS = DialogueOptions(timeout=5.0)

PRIVACY_REQUIRED = (
    "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)


async def test_dovecot_greeting_capabilities_save_a_round_trip() -> None:
    # Given Dovecot's default greeting with a [CAPABILITY …] code and LOGINDISABLED
    script = ImapScript()
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.upgrade("imap", reader, writer, OPTS)
        await writer.start_tls(client_context(), server_hostname=SERVER_NAME)
        after = await starttls.capabilities_after_tls("imap", reader, writer, OPTS)

    # Then no CAPABILITY command was needed before STARTTLS
    assert script.received == ["a2 STARTTLS", "a3 CAPABILITY"]
    assert facts.banner.startswith("* OK [CAPABILITY IMAP4rev1")
    assert facts.starttls_offered
    assert "LOGINDISABLED" in facts.capabilities
    assert "IMAP4REV1" in facts.capabilities
    assert facts.mechanisms == ()
    assert not facts.plaintext_login
    # And over TLS, LOGIN and AUTH=PLAIN are offered
    assert after.mechanisms == ("PLAIN", "IMAP-LOGIN")
    assert after.plaintext_login
    assert not after.starttls_offered


async def test_greeting_without_capabilities_asks_for_them() -> None:
    script = ImapScript(greeting="* OK IMAP server ready", capability=DOVECOT_CAPS)
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)

    assert script.received == ["a1 CAPABILITY"]
    assert facts.starttls_offered
    # No LOGINDISABLED: LOGIN works in clear
    assert facts.mechanisms == ("IMAP-LOGIN",)
    assert facts.plaintext_login


async def test_untagged_noise_and_literals_before_capability() -> None:
    script = ImapScript(
        greeting="* OK ready",
        capability=f"{DOVECOT_CAPS} LOGINDISABLED AUTH=CRAM-MD5",
        capability_extra=['* ID ("name" {7}', 'Dovecot "version" "2.3")', "* OK still here"],
    )
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)

    assert facts.mechanisms == ("CRAM-MD5",)
    assert not facts.plaintext_login


async def test_auth_plain_before_tls_despite_logindisabled() -> None:
    script = ImapScript(greeting=f"* OK [CAPABILITY {DOVECOT_CAPS} LOGINDISABLED AUTH=PLAIN] hi")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)

    assert facts.mechanisms == ("PLAIN",)
    assert facts.plaintext_login


async def test_no_starttls() -> None:
    script = ImapScript(greeting="* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)
        with pytest.raises(StarttlsNotOfferedError):
            await starttls.start_tls("imap", reader, writer, OPTS, facts)

    assert not facts.starttls_offered
    assert script.received == []


async def test_preauth_cannot_starttls() -> None:
    script = ImapScript(greeting=f"* PREAUTH [CAPABILITY {DOVECOT_CAPS}] Logged in as joe")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)

    assert facts.banner.startswith("* PREAUTH")
    assert "STARTTLS" in facts.capabilities
    assert not facts.starttls_offered
    assert facts.mechanisms == ()


async def test_bye_greeting_too_many_connections_is_rate_limited() -> None:
    script = ImapScript(greeting="* BYE Too many connections from your IP, try again later")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(RateLimitedError) as err:
            await starttls.read_capabilities("imap", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_bye_greeting_refuses_the_session() -> None:
    script = ImapScript(greeting="* BYE Server shutting down")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError) as err:
            await starttls.read_capabilities("imap", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_bye_instead_of_capability_is_a_reset() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send("* OK ready")
        await peer.recv_line()
        await peer.send("* BYE Disconnected for inactivity.")

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ResetError) as err:
            await starttls.read_capabilities("imap", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_starttls_refused() -> None:
    script = ImapScript(starttls_reply="NO [UNAVAILABLE] TLS support isn't enabled.")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(StarttlsRefusedError) as err:
            await starttls.upgrade("imap", reader, writer, OPTS)

    assert err.value.phase == "starttls"


async def test_starttls_bad_is_refused() -> None:
    script = ImapScript(starttls_reply="BAD Unknown command")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(StarttlsRefusedError):
            await starttls.upgrade("imap", reader, writer, OPTS)


async def test_unknown_tag_is_garbage() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send("* OK ready")
        await peer.recv_line()
        await peer.send("zz9 OK what")

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError):
            await starttls.read_capabilities("imap", reader, writer, OPTS)


async def test_huge_literal_is_refused() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send("* OK ready")
        await peer.recv_line()
        await peer.send("* ID {99999999}")
        await peer.recv_line()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError):
            await starttls.read_capabilities("imap", reader, writer, OPTS)


# --- the opt-in login check ---------------------------------------------------------


@pytest.mark.parametrize(
    ("untagged", "reply"),
    [
        (
            [
                "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your "
                "client did it anyway. If anyone was listening, the password was exposed."
            ],
            PRIVACY_REQUIRED,
        ),
        ([], "NO Plaintext authentication disallowed"),
        ([], "NO Login only available under a layer"),
        ([], "BAD Command disabled"),
    ],
)
async def test_login_refused(untagged: list[str], reply: str) -> None:
    script = ImapScript(login_untagged=untagged, login_reply=reply)
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("imap", reader, writer, OPTS, facts)

    assert verdict == "refused"
    # LOGINDISABLED is advertised: LOGIN is sent anyway, to see what the server does
    assert script.received[0].startswith('a4 LOGIN "tlsfleet-probe-')


@pytest.mark.parametrize(
    "reply",
    [
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
        "NO [UNAVAILABLE] Temporary authentication failure.",
        "NO LOGIN failed.",
        "OK Logged in",
    ],
)
async def test_login_accepted(reply: str) -> None:
    script = ImapScript(greeting=f"* OK [CAPABILITY {DOVECOT_CAPS}] ready", login_reply=reply)
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("imap", reader, writer, OPTS, facts)

    assert verdict == "accepted"


@pytest.mark.parametrize("sasl_ir", [True, False])
async def test_login_with_authenticate_plain(sasl_ir: bool) -> None:
    # Given LOGINDISABLED but AUTH=PLAIN before TLS, with or without SASL-IR
    caps = f"IMAP4rev1 {'SASL-IR ' if sasl_ir else ''}STARTTLS LOGINDISABLED AUTH=PLAIN"
    script = ImapScript(greeting=f"* OK [CAPABILITY {caps}] ready")
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("imap", reader, writer, OPTS, facts)

    assert verdict == "accepted"
    if sasl_ir:
        assert script.received[0].startswith("a4 AUTHENTICATE PLAIN ")
        initial = script.received[0].split()[3]
    else:
        assert script.received[0] == "a4 AUTHENTICATE PLAIN"
        initial = script.received[1]
    _, user, _ = base64.b64decode(initial).decode().split("\0")
    assert user.startswith("tlsfleet-probe-")


async def test_login_bye_with_too_many_is_rate_limited() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send(f"* OK [CAPABILITY {DOVECOT_CAPS}] ready")
        await peer.recv_line()
        await peer.send("* BYE Too many connections, try again later")

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("imap", reader, writer, OPTS)
        with pytest.raises(RateLimitedError) as err:
            await starttls.try_plaintext_login("imap", reader, writer, OPTS, facts)

    assert err.value.phase == "auth"
