"""STARTTLS dialogues (SMTP, IMAP, POP3) on asyncio streams.

The probe engine opens the TCP connection and owns the stream pair; these functions
only talk on it::

    facts = await upgrade("smtp", reader, writer, opts)        # greeting, EHLO, STARTTLS
    await writer.start_tls(ctx, server_hostname=name)          # the caller's handshake
    after = await capabilities_after_tls("smtp", reader, writer, opts)

For implicit TLS (465/993/995) open the connection with ``ssl=`` and call
``capabilities_after_tls(..., greeting=True)`` first.

Every step (greeting, each reply, the injection check's handshake) has its own
timeout. Whatever the server does, only :class:`~scanner.errors.ScanError` subclasses
come out, each with its ``phase``:

    ScanTimeout              a step did not finish in time (tarpit, endless reply)
    ResetError               EOF or reset where a reply was due; IMAP BYE mid-session
    RateLimitedError         SMTP 421; a greeting or failure saying "too many
                             connections", "too many concurrent", "try again later"
    ProtocolError            garbage, a line over max_line_bytes, a reply over
                             max_reply_lines, a greeting that refuses the session,
                             plaintext sent after the STARTTLS reply
    StarttlsNotOfferedError  start_tls on facts without STARTTLS/STLS
    StarttlsRefusedError     STARTTLS advertised, the command failed ("454 TLS not
                             available")
    HandshakeError           (check_injection only) the TLS handshake failed

Phases: "greeting" for the greeting and the plaintext capability request (and the
first capability request of implicit TLS), "starttls" for STARTTLS and what follows it
on the upgraded stream, "tls_handshake" for check_injection's handshake, "auth" for the
login check. After any error the stream is in an unknown state: close it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

from scanner.starttls import imap, pop3, smtp
from scanner.starttls.common import (
    INJECTION_WAIT,
    PLAINTEXT_MECHANISMS,
    DialogueOptions,
    LoginVerdict,
    PlaintextFacts,
)

__all__ = [
    "DIALOGUES",
    "INJECTION_WAIT",
    "PLAINTEXT_MECHANISMS",
    "DialogueOptions",
    "LoginVerdict",
    "PlaintextFacts",
    "capabilities_after_tls",
    "check_injection",
    "read_capabilities",
    "start_tls",
    "try_plaintext_login",
    "upgrade",
]


class _Dialogue(Protocol):
    """What each of the smtp, imap and pop3 modules provides."""

    async def read_capabilities(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opts: DialogueOptions
    ) -> PlaintextFacts: ...

    async def start_tls(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        opts: DialogueOptions,
        facts: PlaintextFacts,
    ) -> None: ...

    async def capabilities_after_tls(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        opts: DialogueOptions,
        *,
        greeting: bool = ...,
    ) -> PlaintextFacts: ...

    async def try_plaintext_login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        opts: DialogueOptions,
        facts: PlaintextFacts,
    ) -> LoginVerdict: ...

    async def check_injection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        opts: DialogueOptions,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None,
        *,
        wait: float = ...,
    ) -> bool: ...


_IMPLEMENTATIONS: dict[str, _Dialogue] = {"smtp": smtp, "imap": imap, "pop3": pop3}

#: The dialogue names these functions accept.
DIALOGUES: tuple[str, ...] = tuple(_IMPLEMENTATIONS)


def _dialogue(name: str) -> _Dialogue:
    try:
        return _IMPLEMENTATIONS[name]
    except KeyError:
        raise ValueError(f"no STARTTLS dialogue {name!r} (known: {', '.join(DIALOGUES)})") from None


async def read_capabilities(
    dialogue: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
) -> PlaintextFacts:
    """Read the greeting and the plaintext capabilities of a fresh connection.

    SMTP: greeting, then EHLO ``opts.ehlo_name`` (HELO only when EHLO is refused, which
    reports a server without ESMTP: no capabilities). IMAP: greeting, then CAPABILITY
    unless the greeting carried a ``[CAPABILITY …]`` code; a PREAUTH greeting reports
    STARTTLS as not offered and no mechanisms. POP3: greeting, then CAPA; a server
    without CAPA reports no capabilities, and USER as presumed available (RFC 1939).
    """
    return await _dialogue(dialogue).read_capabilities(reader, writer, opts)


async def start_tls(
    dialogue: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    facts: PlaintextFacts,
) -> None:
    """Ask for the upgrade (STARTTLS / STLS) after :func:`read_capabilities`.

    Raises StarttlsNotOfferedError without sending anything when
    ``facts.starttls_offered`` is false. On return the server expects TLS bytes next
    and nothing more has been read: call ``writer.start_tls(...)``. A server that sends
    plaintext after its positive reply is rejected (ProtocolError): asyncio would
    otherwise hand those bytes out later as if they had come over TLS.
    """
    await _dialogue(dialogue).start_tls(reader, writer, opts, facts)


async def upgrade(
    dialogue: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
) -> PlaintextFacts:
    """:func:`read_capabilities` then :func:`start_tls`: the common probe path.

    Returns the plaintext facts; the server then expects a TLS ClientHello.
    """
    impl = _dialogue(dialogue)
    facts = await impl.read_capabilities(reader, writer, opts)
    await impl.start_tls(reader, writer, opts, facts)
    return facts


async def capabilities_after_tls(
    dialogue: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    *,
    greeting: bool = False,
) -> PlaintextFacts:
    """Capabilities on a stream already wrapped in TLS (EHLO / CAPABILITY / CAPA).

    After STARTTLS the server sends no new greeting; for implicit TLS pass
    ``greeting=True`` to read it first. ``mechanisms`` are those offered over TLS;
    ``plaintext_login`` says whether PLAIN-type mechanisms are among them; ``banner``
    is "" unless a greeting was read.
    """
    return await _dialogue(dialogue).capabilities_after_tls(reader, writer, opts, greeting=greeting)


async def try_plaintext_login(
    dialogue: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    facts: PlaintextFacts,
) -> LoginVerdict:
    """Opt-in active check: will the server take a password over the plaintext channel?

    Call on the plaintext channel after :func:`read_capabilities`, on a connection of
    its own (close it afterwards). Sends one attempt with random credentials for no
    real account (``tlsfleet-probe-<hex>@invalid`` and a random password), never real
    ones:

    - SMTP: ``AUTH PLAIN`` with an initial response (``AUTH LOGIN`` when only LOGIN is
      advertised; PLAIN when nothing is, to see the refusal).
    - IMAP: ``LOGIN`` (``AUTHENTICATE PLAIN`` when LOGINDISABLED is advertised with
      AUTH=PLAIN).
    - POP3: ``USER`` + ``PASS`` (``AUTH PLAIN`` when only SASL PLAIN is offered).

    "refused", the server would not take a password in clear:
    SMTP 530/534/538 ("Encryption required", "Must issue a STARTTLS command first"),
    503/504/5xx (AUTH not enabled or unknown), or a 535/454 whose text says plaintext
    or an unencrypted channel is not allowed; IMAP ``NO [PRIVACYREQUIRED]``, a NO saying
    plaintext authentication is disallowed, BAD (LOGIN disabled), or such a BYE;
    POP3 ``-ERR [AUTH] Plaintext authentication disallowed…``, or any -ERR to USER.

    "accepted", the server took the credentials and judged them (or, impossibly,
    logged in): SMTP 2xx, 535 "authentication failed", 454/432; IMAP OK,
    ``NO [AUTHENTICATIONFAILED]`` or another NO; POP3 +OK, ``-ERR [AUTH]
    Authentication failed`` or another -ERR after PASS.

    421 or rate-limit text raises RateLimitedError; errors carry phase "auth".
    """
    return await _dialogue(dialogue).try_plaintext_login(reader, writer, opts, facts)


async def check_injection(
    dialogue: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    wait: float = INJECTION_WAIT,
) -> bool:
    """STARTTLS command injection check (CVE-2011-0411 class); True = vulnerable.

    Call after :func:`read_capabilities` on a connection whose server offers
    STARTTLS. Sends the upgrade command with a marker command behind it in one write,
    reads the upgrade reply, runs the TLS handshake with ``ssl_context`` (its own
    timeout, errors in phase "tls_handshake"), then sends a probe command over TLS and
    reads replies: whichever command is answered first over TLS decides, so a server
    that dropped the buffered plaintext is judged on the probe's reply, without a wait.

    ========  =================  ==============  ======================================
    dialogue  pipelined marker   probe over TLS  first reply over TLS
    ========  =================  ==============  ======================================
    SMTP      ``XTLSFLEET``      ``NOOP``        2xx: False; 4xx/5xx: True if NOOP's
                                                 reply follows
    IMAP      ``a5 NOOP``        ``a6 NOOP``     first tagged line: a5 True, a6 False
    POP3      ``XTLSFLEET``      ``CAPA``        +OK: False; -ERR: True if CAPA's reply
                                                 follows
    ========  =================  ==============  ======================================

    A failure first is ambiguous for SMTP (a server refusing NOOP) and POP3 (a server
    without CAPA): a vulnerable server sends the probe's reply right behind it, anyone
    else nothing more, so only then is there a bounded wait of ``min(wait,
    opts.timeout)`` seconds, silence meaning False. Each reply is read whole within
    the step timeout (phase "starttls"); a server sending nothing at all is a
    ScanTimeout. EOF, a reset or an IMAP BYE before any reply over TLS mean False (the
    server executed nothing it had buffered); SMTP 421 or rate-limit text raises
    RateLimitedError; a refused upgrade raises StarttlsRefusedError.

    On return the stream is TLS-wrapped and at a command prompt (the replies to both
    commands consumed), unless the server ended the session, so
    :func:`capabilities_after_tls` can follow on it.
    """
    return await _dialogue(dialogue).check_injection(
        reader, writer, opts, ssl_context, server_hostname, wait=wait
    )
