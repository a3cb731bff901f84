"""Real TLS upgrades: implicit TLS, the STARTTLS injection check, and uvloop."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from scanner import starttls
from scanner.errors import HandshakeError, ScanTimeout, StarttlsRefusedError
from scanner.starttls import DialogueOptions
from tests.integration.starttls_servers import (
    DOVECOT_CAPS_TLS,
    SERVER_NAME,
    Handler,
    ImapScript,
    Peer,
    Pop3Script,
    SmtpScript,
    client_context,
    connect,
    imap_server,
    pop3_server,
    serve,
    smtp_server,
)

DIALOGUES = ("smtp", "imap", "pop3")
OPTS = DialogueOptions(timeout=5.0)
# The injection check waits this long for an answer nobody should send.
WAIT = 0.3


def _server(dialogue: str, *, vulnerable: bool = False, implicit: bool = False) -> Handler:
    if dialogue == "smtp":
        return smtp_server(SmtpScript(keep_pipelined=vulnerable, implicit=implicit))
    if dialogue == "imap":
        script = ImapScript(keep_pipelined=vulnerable, implicit=implicit)
        if implicit:
            script.greeting = f"* OK [CAPABILITY {DOVECOT_CAPS_TLS}] Dovecot ready."
        return imap_server(script)
    return pop3_server(Pop3Script(keep_pipelined=vulnerable, implicit=implicit))


@pytest.mark.parametrize("dialogue", DIALOGUES)
async def test_implicit_tls_reads_the_greeting_first(dialogue: str) -> None:
    # Given a 465/993/995-style port: TLS from the first byte
    handler = _server(dialogue, implicit=True)
    async with serve(handler, tls=True) as addr, connect(addr, tls=True) as (reader, writer):
        facts = await starttls.capabilities_after_tls(dialogue, reader, writer, OPTS, greeting=True)

    assert facts.banner
    assert facts.plaintext_login
    assert "PLAIN" in facts.mechanisms
    assert not facts.starttls_offered


@pytest.mark.parametrize("dialogue", DIALOGUES)
async def test_postfix_like_server_is_not_injectable(dialogue: str) -> None:
    # Given a server that drops input pipelined behind STARTTLS, as Postfix does
    async with serve(_server(dialogue)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities(dialogue, reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            dialogue, reader, writer, OPTS, client_context(), SERVER_NAME, wait=WAIT
        )
        # Then the stream is TLS and usable for the capabilities over TLS
        after = await starttls.capabilities_after_tls(dialogue, reader, writer, OPTS)

    assert vulnerable is False
    assert after.plaintext_login


@pytest.mark.parametrize("dialogue", DIALOGUES)
async def test_server_answering_pipelined_plaintext_after_tls_is_injectable(
    dialogue: str,
) -> None:
    # Given a server that keeps the pipelined NOOP and answers it over TLS
    async with serve(_server(dialogue, vulnerable=True)) as addr, connect(addr) as (r, w):
        await starttls.read_capabilities(dialogue, r, w, OPTS)
        vulnerable = await starttls.check_injection(
            dialogue, r, w, OPTS, client_context(), SERVER_NAME, wait=OPTS.timeout
        )
        after = await starttls.capabilities_after_tls(dialogue, r, w, OPTS)

    assert vulnerable is True
    assert after.plaintext_login


async def test_injection_sends_both_commands_in_one_write() -> None:
    script = ImapScript(keep_pipelined=True)
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("imap", reader, writer, OPTS)
        await starttls.check_injection(
            "imap", reader, writer, OPTS, client_context(), SERVER_NAME, wait=OPTS.timeout
        )

    assert script.received == ["a2 STARTTLS", "a5 NOOP"]


async def test_injection_check_with_refused_starttls() -> None:
    script = SmtpScript(starttls_reply="454 4.7.0 TLS not available due to local problem")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("smtp", reader, writer, OPTS)
        with pytest.raises(StarttlsRefusedError):
            await starttls.check_injection(
                "smtp", reader, writer, OPTS, client_context(), SERVER_NAME, wait=WAIT
            )


async def test_injection_check_handshake_that_never_comes() -> None:
    # Given a server that says "220 go ahead" and then never speaks TLS
    async def handler(peer: Peer) -> None:
        await peer.send("220 mail.test ESMTP")
        await peer.recv_line()
        await peer.send("250-mail.test", "250 STARTTLS")
        await peer.recv_line()
        await peer.send("220 2.0.0 Ready to start TLS")
        await asyncio.sleep(3600)

    opts = DialogueOptions(timeout=0.3)
    async with serve(handler) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("smtp", reader, writer, opts)
        with pytest.raises(ScanTimeout) as err:
            await starttls.check_injection(
                "smtp", reader, writer, opts, client_context(), SERVER_NAME, wait=WAIT
            )

    assert err.value.phase == "tls_handshake"


async def test_injection_check_handshake_failure() -> None:
    # Given a client context that does not trust the test CA
    untrusting = ssl.create_default_context()
    untrusting.load_verify_locations(cadata=_unrelated_ca_pem())
    async with serve(_server("smtp")) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("smtp", reader, writer, OPTS)
        with pytest.raises(HandshakeError) as err:
            await starttls.check_injection(
                "smtp", reader, writer, OPTS, untrusting, SERVER_NAME, wait=WAIT
            )

    assert err.value.phase == "tls_handshake"


def _unrelated_ca_pem() -> str:
    import trustme  # local: only this test needs a second CA

    pem: bytes = trustme.CA().cert_pem.bytes()
    return pem.decode()


async def test_unknown_dialogue_is_a_caller_error() -> None:
    async with serve(_server("smtp")) as addr, connect(addr) as (reader, writer):
        with pytest.raises(ValueError, match="http"):
            await starttls.read_capabilities("http", reader, writer, OPTS)


def test_full_smtp_path_on_uvloop() -> None:
    # The probe engine may run on uvloop: the same upgrade path must hold there.
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[bool, tuple[str, ...], bool]:
        async with serve(_server("smtp", vulnerable=True)) as addr:
            async with connect(addr) as (reader, writer):
                facts = await starttls.upgrade("smtp", reader, writer, OPTS)
                await writer.start_tls(client_context(), server_hostname=SERVER_NAME)
                after = await starttls.capabilities_after_tls("smtp", reader, writer, OPTS)
            async with connect(addr) as (reader, writer):
                await starttls.read_capabilities("smtp", reader, writer, OPTS)
                vulnerable = await starttls.check_injection(
                    "smtp", reader, writer, OPTS, client_context(), SERVER_NAME, wait=OPTS.timeout
                )
            return facts.starttls_offered, after.mechanisms, vulnerable

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        offered, mechanisms, vulnerable = runner.run(scenario())

    assert offered
    assert mechanisms == ("PLAIN", "LOGIN")
    assert vulnerable
