"""SMTP dialogues against small servers on 127.0.0.1 that speak like Postfix and Exim."""

from __future__ import annotations

import asyncio
import base64

import pytest

from scanner import starttls
from scanner.errors import (
    ProtocolError,
    RateLimitedError,
    ResetError,
    ScanTimeout,
    StarttlsNotOfferedError,
    StarttlsRefusedError,
)
from scanner.starttls import DialogueOptions
from tests.integration.starttls_servers import (
    SERVER_NAME,
    Peer,
    SmtpScript,
    client_context,
    connect,
    serve,
    smtp_server,
)

OPTS = DialogueOptions(timeout=5.0)
SHORT = DialogueOptions(timeout=0.3)

EXIM_EHLO = [
    "mx.example.net Hello tlsfleet.invalid [127.0.0.1]",
    "SIZE 52428800",
    "8BITMIME",
    "PIPELINING",
    "AUTH PLAIN LOGIN CRAM-MD5",
    "CHUNKING",
    "STARTTLS",
    "HELP",
]


async def test_postfix_plaintext_facts_and_upgrade() -> None:
    script = SmtpScript()
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.upgrade("smtp", reader, writer, OPTS)
        await writer.start_tls(client_context(), server_hostname=SERVER_NAME)
        after = await starttls.capabilities_after_tls("smtp", reader, writer, OPTS)

    assert facts.dialogue == "smtp"
    assert facts.banner == "220 mail.test ESMTP Postfix"
    assert facts.starttls_offered
    assert facts.capabilities[:3] == ("PIPELINING", "SIZE", "VRFY")
    assert "STARTTLS" in facts.capabilities
    assert facts.mechanisms == ()
    assert not facts.plaintext_login
    # Over TLS Postfix offers AUTH, in both the standard and the old "AUTH=" form.
    assert after.mechanisms == ("PLAIN", "LOGIN")
    assert after.plaintext_login
    assert not after.starttls_offered
    assert after.banner == ""
    assert "AUTH=PLAIN" in after.capabilities
    assert script.received == ["EHLO tlsfleet.invalid", "STARTTLS", "EHLO tlsfleet.invalid"]


async def test_exim_with_auth_before_tls_reports_plaintext_login() -> None:
    script = SmtpScript(greeting=["mx.example.net ESMTP Exim 4.96"], ehlo=EXIM_EHLO)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert facts.mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert facts.plaintext_login
    assert facts.starttls_offered


async def test_only_challenge_response_auth_is_not_plaintext() -> None:
    script = SmtpScript(ehlo=["mail.test", "AUTH CRAM-MD5 SCRAM-SHA-256", "STARTTLS"])
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert facts.mechanisms == ("CRAM-MD5", "SCRAM-SHA-256")
    assert not facts.plaintext_login


async def test_ehlo_uses_the_configured_name() -> None:
    script = SmtpScript()
    opts = DialogueOptions(ehlo_name="scanner.example.org", timeout=5.0)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("smtp", reader, writer, opts)

    assert script.received == ["EHLO scanner.example.org"]


async def test_multi_line_greeting_is_kept_whole() -> None:
    script = SmtpScript(greeting=["mail.test ESMTP", "No UCE", "Relaying denied"])
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert facts.banner == "220-mail.test ESMTP\n220-No UCE\n220 Relaying denied"


async def test_delayed_greeting_within_greeting_timeout() -> None:
    # Given a postscreen-like delay longer than the per-reply timeout
    script = SmtpScript(greeting_delay=0.4)
    opts = DialogueOptions(timeout=0.2, greeting_timeout=5.0)
    # When the greeting timeout allows for it, Then the dialogue succeeds
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, opts)

    assert facts.starttls_offered


async def test_delayed_greeting_beyond_greeting_timeout() -> None:
    script = SmtpScript(greeting_delay=5.0)
    opts = DialogueOptions(timeout=5.0, greeting_timeout=0.2)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ScanTimeout) as err:
            await starttls.read_capabilities("smtp", reader, writer, opts)

    assert err.value.phase == "greeting"


async def test_no_starttls() -> None:
    script = SmtpScript(ehlo=["mail.test", "PIPELINING", "SIZE 1000", "AUTH PLAIN LOGIN"])
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)
        assert not facts.starttls_offered
        assert facts.plaintext_login
        with pytest.raises(StarttlsNotOfferedError) as err:
            await starttls.start_tls("smtp", reader, writer, OPTS, facts)

    assert err.value.phase == "starttls"
    assert "STARTTLS" not in script.received


async def test_upgrade_without_starttls_raises_not_offered() -> None:
    script = SmtpScript(ehlo=["mail.test", "PIPELINING"])
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(StarttlsNotOfferedError):
            await starttls.upgrade("smtp", reader, writer, OPTS)


async def test_no_esmtp_falls_back_to_helo() -> None:
    script = SmtpScript(ehlo=None)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert script.received == ["EHLO tlsfleet.invalid", "HELO tlsfleet.invalid"]
    assert facts.capabilities == ()
    assert not facts.starttls_offered
    assert facts.mechanisms == ()


async def test_ehlo_and_helo_refused() -> None:
    script = SmtpScript(ehlo=None, helo_reply="554 5.7.1 Go away")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError) as err:
            await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_starttls_refused_454() -> None:
    script = SmtpScript(starttls_reply="454 4.7.0 TLS not available due to local problem")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(StarttlsRefusedError) as err:
            await starttls.upgrade("smtp", reader, writer, OPTS)

    assert err.value.phase == "starttls"
    assert "454" in err.value.message


async def test_421_greeting_is_rate_limited() -> None:
    script = SmtpScript(
        greeting=["mail.test Error: too many connections from 127.0.0.1"], greeting_code=421
    )
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(RateLimitedError) as err:
            await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_exim_too_many_concurrent_is_rate_limited() -> None:
    text = "Too many concurrent SMTP connections; please try again later."
    script = SmtpScript(greeting=[text], greeting_code=554)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(RateLimitedError):
            await starttls.read_capabilities("smtp", reader, writer, OPTS)


async def test_421_to_starttls_is_rate_limited() -> None:
    script = SmtpScript(starttls_reply="421 4.3.2 Service shutting down")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(RateLimitedError) as err:
            await starttls.upgrade("smtp", reader, writer, OPTS)

    assert err.value.phase == "starttls"


async def test_421_to_ehlo_is_rate_limited() -> None:
    script = SmtpScript(ehlo_reply="421 4.7.0 Try again later, closing connection.")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(RateLimitedError) as err:
            await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_554_greeting_refuses_the_session() -> None:
    script = SmtpScript(greeting=["5.7.1 No SMTP service here"], greeting_code=554)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError) as err:
            await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_reply_code_change_inside_a_reply_is_garbage() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send("220-mail.test", "250 oops")
        await peer.recv_line()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ProtocolError):
            await starttls.read_capabilities("smtp", reader, writer, OPTS)


async def test_reset_after_greeting() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send("220 mail.test ESMTP")
        await peer.recv_line()
        peer.writer.transport.abort()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ResetError) as err:
            await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert err.value.phase == "greeting"


async def test_bare_lf_line_endings_are_accepted() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send_raw(b"220 mail.test ESMTP\n")
        await peer.recv_line()
        await peer.send_raw(b"250-mail.test\n250 STARTTLS\n")
        await peer.recv_line()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)

    assert facts.capabilities == ("STARTTLS",)


async def test_plaintext_after_the_starttls_reply_is_rejected() -> None:
    # Given a server that sends more plaintext right behind its 220 (response
    # injection) in the same write: asyncio would hand it out after the upgrade as if
    # it came over TLS
    async def handler(peer: Peer) -> None:
        await peer.send("220 mail.test ESMTP")
        await peer.recv_line()
        await peer.send("250-mail.test", "250 STARTTLS")
        await peer.recv_line()
        await peer.send("220 Go ahead", "250-mail.test", "250 AUTH PLAIN")
        await peer.recv_line()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)
        with pytest.raises(ProtocolError) as err:
            await starttls.start_tls("smtp", reader, writer, OPTS, facts)

    assert err.value.phase == "starttls"


# --- the opt-in login check ---------------------------------------------------------


def _decode_plain(line: str) -> list[str]:
    return base64.b64decode(line.split()[2]).decode().split("\0")


@pytest.mark.parametrize(
    "reply",
    [
        "538 5.7.11 Encryption required for requested authentication mechanism",
        "530 5.7.0 Must issue a STARTTLS command first",
        "534 5.7.9 Authentication mechanism is too weak",
        "503 5.5.1 Error: authentication not enabled",
        "504 5.7.4 Unrecognized authentication type",
        "535 5.7.0 Plaintext authentication not allowed without TLS",
    ],
)
async def test_login_refused(reply: str) -> None:
    script = SmtpScript(auth_reply=reply)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("smtp", reader, writer, OPTS, facts)

    assert verdict == "refused"


@pytest.mark.parametrize(
    "reply",
    [
        "535 5.7.8 Error: authentication failed: authentication failure",
        "535 Incorrect authentication data",
        "454 4.7.0 Temporary authentication failure",
        "235 2.7.0 Authentication successful",
    ],
)
async def test_login_accepted(reply: str) -> None:
    script = SmtpScript(ehlo=EXIM_EHLO, auth_reply=reply)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("smtp", reader, writer, OPTS, facts)

    assert verdict == "accepted"


async def test_login_uses_made_up_credentials_with_auth_plain() -> None:
    script = SmtpScript(ehlo=EXIM_EHLO)
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)
        await starttls.try_plaintext_login("smtp", reader, writer, OPTS, facts)

    auth = script.received[-1]
    assert auth.startswith("AUTH PLAIN ")
    authzid, user, password = _decode_plain(auth)
    assert authzid == ""
    assert user.startswith("tlsfleet-probe-")
    assert user.endswith("@invalid")
    assert len(password) >= 16


async def test_login_with_auth_login_when_only_login_is_advertised() -> None:
    script = SmtpScript(ehlo=["mail.test", "AUTH LOGIN", "STARTTLS"])
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)
        verdict = await starttls.try_plaintext_login("smtp", reader, writer, OPTS, facts)

    assert verdict == "accepted"
    assert script.received[1] == "AUTH LOGIN"
    user = base64.b64decode(script.received[2]).decode()
    assert user.startswith("tlsfleet-probe-")


async def test_login_421_is_rate_limited() -> None:
    script = SmtpScript(auth_reply="421 4.7.0 Too many errors, closing")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, OPTS)
        with pytest.raises(RateLimitedError) as err:
            await starttls.try_plaintext_login("smtp", reader, writer, OPTS, facts)

    assert err.value.phase == "auth"


async def test_login_timeout_has_auth_phase() -> None:
    async def handler(peer: Peer) -> None:
        await peer.send("220 mail.test ESMTP")
        await peer.recv_line()
        await peer.send("250-mail.test", "250 AUTH PLAIN")
        await peer.recv_line()
        await asyncio.sleep(3600)

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("smtp", reader, writer, SHORT)
        with pytest.raises(ScanTimeout) as err:
            await starttls.try_plaintext_login("smtp", reader, writer, SHORT, facts)

    assert err.value.phase == "auth"
