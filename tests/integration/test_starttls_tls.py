"""Real TLS upgrades: implicit TLS, the STARTTLS injection check, and uvloop."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, NoReturn

import pytest

from scanner import starttls
from scanner.errors import (
    HandshakeError,
    ProtocolError,
    RateLimitedError,
    ScanTimeout,
    StarttlsRefusedError,
)
from scanner.starttls import DialogueOptions, pop3, smtp
from tests.integration.starttls_servers import (
    DOVECOT_CAPS,
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
# The injection check's fallback wait, for the cases that need one (SMTP refusing
# NOOP, POP3 without CAPA); every other verdict comes from the first reply.
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


# What each server receives from the injection check, plaintext dialogue included:
# the marker pipelined behind the upgrade command, then the probe over TLS.
RECEIVED = {
    "smtp": ["EHLO tlsfleet.invalid", "STARTTLS", "XTLSFLEET", "NOOP"],
    "imap": ["a2 STARTTLS", "a5 NOOP", "a6 NOOP"],
    "pop3": ["CAPA", "STLS", "XTLSFLEET", "CAPA"],
}
MARKER = {"smtp": "XTLSFLEET", "imap": "a5 NOOP", "pop3": "XTLSFLEET"}


def _script(dialogue: str, **kwargs: Any) -> SmtpScript | ImapScript | Pop3Script:
    if dialogue == "smtp":
        return SmtpScript(**kwargs)
    if dialogue == "imap":
        return ImapScript(**kwargs)
    return Pop3Script(**kwargs)


def _handler(script: SmtpScript | ImapScript | Pop3Script) -> Handler:
    if isinstance(script, SmtpScript):
        return smtp_server(script)
    if isinstance(script, ImapScript):
        return imap_server(script)
    return pop3_server(script)


@pytest.mark.parametrize("dialogue", DIALOGUES)
@pytest.mark.parametrize("vulnerable", [False, True], ids=["drops", "keeps"])
async def test_injection_pipelines_the_marker_and_probes_over_tls(
    dialogue: str, vulnerable: bool
) -> None:
    # Given a server that drops (or keeps) input pipelined behind the upgrade command
    script = _script(dialogue, keep_pipelined=vulnerable)
    async with serve(_handler(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities(dialogue, reader, writer, OPTS)
        verdict = await starttls.check_injection(
            dialogue, reader, writer, OPTS, client_context(), SERVER_NAME, wait=OPTS.timeout
        )

    # Then the marker went in the upgrade's write (a dropping server never sees it)
    # and the probe followed over TLS
    expected = RECEIVED[dialogue]
    if not vulnerable:
        expected = [line for line in expected if line != MARKER[dialogue]]
    assert script.received == expected
    assert verdict is vulnerable


@pytest.mark.parametrize("dialogue", DIALOGUES)
async def test_a_quick_probe_reply_decides_without_the_fallback_wait(
    dialogue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a non-vulnerable server that answers the probe at once, and no fallback
    # wait available to the check
    def no_wait(*_: object) -> NoReturn:
        raise AssertionError("the fallback wait was used")

    for module in (smtp, pop3):
        monkeypatch.setattr(module, "answered_within", no_wait)
    async with serve(_server(dialogue)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities(dialogue, reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            dialogue, reader, writer, OPTS, client_context(), SERVER_NAME
        )
        after = await starttls.capabilities_after_tls(dialogue, reader, writer, OPTS)

    # Then the probe's own reply decided, and was read whole
    assert vulnerable is False
    assert after.plaintext_login


async def test_imap_injected_response_first_is_decisive_without_waiting() -> None:
    # Given a vulnerable IMAP server that sends mailbox updates around its responses;
    # tags decide, so the check needs no wait at all (wait=0)
    script = ImapScript(keep_pipelined=True, noop_untagged=["* 3 EXISTS", "* 0 RECENT"])
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("imap", reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            "imap", reader, writer, OPTS, client_context(), SERVER_NAME, wait=0
        )
        after = await starttls.capabilities_after_tls("imap", reader, writer, OPTS)

    assert vulnerable is True
    assert "AUTH=PLAIN" in after.capabilities


async def test_imap_untagged_lines_before_the_probe_response_are_skipped() -> None:
    script = ImapScript(noop_untagged=["* 3 EXISTS", "* OK [ALERT] Maintenance tonight"])
    async with serve(imap_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("imap", reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            "imap", reader, writer, OPTS, client_context(), SERVER_NAME, wait=0
        )
        after = await starttls.capabilities_after_tls("imap", reader, writer, OPTS)

    assert vulnerable is False
    assert "AUTH=PLAIN" in after.capabilities


async def _upgraded(peer: Peer, dialogue: str, *, keep_pipelined: bool = False) -> None:
    """Greet, answer the capability request and the upgrade, and run the handshake."""
    if dialogue == "smtp":
        await peer.send("220 mail.test ESMTP")
        await peer.recv_line()
        await peer.send("250-mail.test", "250 STARTTLS")
        await peer.recv_line()
        await peer.send("220 2.0.0 Ready to start TLS")
    elif dialogue == "imap":
        await peer.send(f"* OK [CAPABILITY {DOVECOT_CAPS}] Dovecot ready.")
        await peer.recv_line()
        await peer.send("a2 OK Begin TLS negotiation now.")
    else:
        await peer.send("+OK Dovecot ready.")
        await peer.recv_line()
        await peer.send("+OK", "STLS", ".")
        await peer.recv_line()
        await peer.send("+OK Begin TLS negotiation now.")
    await peer.start_tls(keep_pipelined=keep_pipelined)


async def _check(handler: Handler, dialogue: str, opts: DialogueOptions = OPTS) -> bool:
    async with serve(handler) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities(dialogue, reader, writer, opts)
        return await starttls.check_injection(
            dialogue, reader, writer, opts, client_context(), SERVER_NAME, wait=WAIT
        )


async def test_smtp_multiline_refusal_of_the_marker_then_noop_is_injectable() -> None:
    # Given a vulnerable server answering the injected command with a two-line 500
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, "smtp", keep_pipelined=True)
        assert await peer.recv_line() == "XTLSFLEET"
        await peer.send("500-5.5.1 Unrecognized command", "500 5.5.1 Try HELP")
        assert await peer.recv_line() == "NOOP"
        await peer.send("250 2.0.0 Ok")
        assert await peer.recv_line() == "EHLO tlsfleet.invalid"
        await peer.send("250-mail.test", "250 AUTH PLAIN")
        await peer.recv_line()

    async with serve(handler) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("smtp", reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            "smtp", reader, writer, OPTS, client_context(), SERVER_NAME, wait=OPTS.timeout
        )
        # Then both replies were read whole: the stream is at a prompt
        after = await starttls.capabilities_after_tls("smtp", reader, writer, OPTS)

    assert vulnerable is True
    assert after.mechanisms == ("PLAIN",)


async def test_smtp_server_refusing_noop_over_tls_is_not_injectable() -> None:
    # Given a server that drops the pipelined input but answers NOOP with a 5xx (as a
    # server insisting on EHLO after STARTTLS might): no second reply follows
    script = SmtpScript(noop_reply="503 5.5.1 Error: send EHLO first")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("smtp", reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            "smtp", reader, writer, OPTS, client_context(), SERVER_NAME, wait=WAIT
        )
        after = await starttls.capabilities_after_tls("smtp", reader, writer, OPTS)

    assert vulnerable is False
    assert after.plaintext_login


async def test_smtp_vulnerable_server_refusing_noop_too_is_injectable() -> None:
    # Given a vulnerable server that answers both commands with a 5xx
    script = SmtpScript(keep_pipelined=True, noop_reply="503 5.5.1 Error: send EHLO first")
    async with serve(smtp_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("smtp", reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            "smtp", reader, writer, OPTS, client_context(), SERVER_NAME, wait=OPTS.timeout
        )

    assert vulnerable is True


async def test_smtp_421_over_tls_is_rate_limiting() -> None:
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, "smtp")
        await peer.recv_line()
        await peer.send("421 4.7.0 mail.test Error: too many connections")

    with pytest.raises(RateLimitedError) as err:
        await _check(handler, "smtp")

    assert err.value.phase == "starttls"


async def test_smtp_unexpected_reply_to_noop_is_a_protocol_error() -> None:
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, "smtp")
        await peer.recv_line()
        await peer.send("354 End data with <CR><LF>.<CR><LF>")
        await peer.recv_line()

    with pytest.raises(ProtocolError) as err:
        await _check(handler, "smtp")

    assert err.value.phase == "starttls"


@pytest.mark.parametrize("dialogue", DIALOGUES)
async def test_server_closing_after_the_handshake_is_not_injectable(dialogue: str) -> None:
    # Given a server that hangs up right after the handshake: it executed nothing
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, dialogue)

    assert await _check(handler, dialogue) is False


@pytest.mark.parametrize("dialogue", DIALOGUES)
async def test_server_silent_after_the_handshake_times_out(dialogue: str) -> None:
    # Given a server that never answers the probe: a reply was due
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, dialogue)
        await asyncio.sleep(3600)

    with pytest.raises(ScanTimeout) as err:
        await _check(handler, dialogue, DialogueOptions(timeout=0.3))

    assert err.value.phase == "starttls"


async def test_imap_bye_before_any_tagged_response_is_not_injectable() -> None:
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, "imap")
        await peer.recv_line()
        await peer.send("* BYE Server shutting down.")

    assert await _check(handler, "imap") is False


async def test_imap_rate_limiting_bye_over_tls() -> None:
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, "imap")
        await peer.recv_line()
        await peer.send("* BYE Too many connections from your IP, try again later.")
        await peer.recv_line()

    with pytest.raises(RateLimitedError) as err:
        await _check(handler, "imap")

    assert err.value.phase == "starttls"


async def test_imap_response_with_a_foreign_tag_is_a_protocol_error() -> None:
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, "imap")
        await peer.recv_line()
        await peer.send("a9 OK NOOP completed.")
        await peer.recv_line()

    with pytest.raises(ProtocolError) as err:
        await _check(handler, "imap")

    assert err.value.phase == "starttls"


async def test_imap_injected_noop_refused_after_tls_is_still_injectable() -> None:
    # Given a vulnerable server answering the injected a5 with BAD: executed all the same
    async def handler(peer: Peer) -> None:
        await _upgraded(peer, "imap", keep_pipelined=True)
        assert await peer.recv_line() == "a5 NOOP"
        await peer.send("* 1 EXISTS", "a5 BAD Unexpected command.")
        assert await peer.recv_line() == "a6 NOOP"
        await peer.send("a6 OK NOOP completed.")
        await peer.recv_line()

    assert await _check(handler, "imap") is True


@pytest.mark.parametrize("vulnerable", [False, True], ids=["drops", "keeps"])
async def test_pop3_without_capa(vulnerable: bool) -> None:
    # Given an old POP3 server without CAPA (answers it -ERR, in plaintext and over
    # TLS): -ERR first is ambiguous, so the second reply (or silence) decides
    script = Pop3Script(capa=None, capa_tls=None, keep_pipelined=vulnerable)
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        facts = await starttls.read_capabilities("pop3", reader, writer, OPTS)
        verdict = await starttls.check_injection(
            "pop3", reader, writer, OPTS, client_context(), SERVER_NAME, wait=WAIT
        )
        # Then the stream is at a prompt either way
        after = await starttls.capabilities_after_tls("pop3", reader, writer, OPTS)

    assert facts.capabilities == ()
    assert verdict is vulnerable
    assert after.capabilities == ()
    marker = ["XTLSFLEET"] if vulnerable else []
    assert script.received == ["CAPA", "STLS", *marker, "CAPA", "CAPA"]


async def test_pop3_capa_over_tls_answered_after_the_marker_is_injectable() -> None:
    # Given a vulnerable server with CAPA: -ERR to the marker, then the CAPA listing
    script = Pop3Script(keep_pipelined=True)
    async with serve(pop3_server(script)) as addr, connect(addr) as (reader, writer):
        await starttls.read_capabilities("pop3", reader, writer, OPTS)
        vulnerable = await starttls.check_injection(
            "pop3", reader, writer, OPTS, client_context(), SERVER_NAME, wait=OPTS.timeout
        )
        # Then the whole CAPA listing was consumed
        after = await starttls.capabilities_after_tls("pop3", reader, writer, OPTS)

    assert vulnerable is True
    assert after.plaintext_login


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
    import uvloop  # a dependency of the project's "fast" extra, installed by ./dev

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
