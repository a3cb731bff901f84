"""POP3 (RFC 1939) with CAPA (RFC 2449) and STLS (RFC 2595), as a strict client.

States::

    connected ──+OK greeting──▶ greeted ──CAPA +OK … "."──▶ ready ──STLS +OK──▶ (TLS)
              ──-ERR greeting─▶ refused      └──CAPA -ERR──▶ ready, no capabilities

A server without CAPA predates RFC 2449; it cannot advertise STLS, and RFC 1939's
USER/PASS is presumed available, so its facts list the USER pseudo-mechanism.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass

from scanner.errors import (
    ProtocolError,
    RateLimitedError,
    StarttlsNotOfferedError,
    StarttlsRefusedError,
)
from scanner.starttls.common import (
    INJECTED_COMMAND,
    INJECTION_WAIT,
    DialogueOptions,
    LoginVerdict,
    PlaintextFacts,
    ProbeCredentials,
    looks_like_refusal,
    looks_rate_limited,
    make_facts,
    upgrade_stream,
)
from scanner.starttls.lines import LineChannel, answered_within, closed_or, step

__all__ = [
    "capabilities_after_tls",
    "check_injection",
    "read_capabilities",
    "start_tls",
    "try_plaintext_login",
]

# RFC 1939's APOP timestamp, a msg-id in the greeting: <process-ID.clock@hostname>.
_APOP_TIMESTAMP = re.compile(r"<[^<>\s]+@[^<>\s]+>")

# A -ERR to USER that shows the server judged the name (some old servers check it).
_USER_JUDGED = re.compile(
    r"authentication failed|login failed|invalid|incorrect|unknown user|no such"
    r"|never heard",
    re.IGNORECASE,
)


@dataclass(slots=True)
class _Status:
    """A status line: "+OK", "-ERR", or "+" (a SASL continuation), and its text."""

    status: str
    text: str

    @property
    def ok(self) -> bool:
        return self.status == "+OK"

    def show(self) -> str:
        return f"{self.status} {self.text}"[:300]


def _parse_status(line: str, *, continuation: bool = False) -> _Status:
    head, _, text = line.partition(" ")
    head = head.upper()
    if head in ("+OK", "-ERR") or (continuation and head == "+"):
        return _Status(head, text)
    raise ProtocolError(f"not a POP3 status line: {line[:80]!r}")


async def _exchange(
    ch: LineChannel, line: str, *, phase: str, timeout: float, continuation: bool = False
) -> _Status:
    async def run() -> _Status:
        await ch.send(line.encode("ascii") + b"\r\n")
        return _parse_status(await ch.read_line(), continuation=continuation)

    verb = line.split(" ", 1)[0]
    what = f"reply to {verb}" if verb.isalpha() and verb.isupper() else "reply"
    return await step(run(), phase=phase, timeout=timeout, what=what)


async def _read_greeting(ch: LineChannel) -> tuple[str, bool]:
    line = await ch.read_line()
    status = _parse_status(line)
    if not status.ok:
        if looks_rate_limited(status.text):
            raise RateLimitedError(f"server turned us away: {status.show()}")
        raise ProtocolError(f"server refused the session: {status.show()}")
    return line, _APOP_TIMESTAMP.search(status.text) is not None


async def _capa(ch: LineChannel) -> list[str] | None:
    """The CAPA lines, or None when the server has no CAPA (answers -ERR)."""
    await ch.send(b"CAPA\r\n")
    if not _parse_status(await ch.read_line()).ok:
        return None
    return await _capa_lines(ch)


async def _capa_lines(ch: LineChannel) -> list[str]:
    """The lines of a CAPA reply after its +OK, up to the terminating "."."""
    lines: list[str] = []
    for _ in range(ch.max_reply_lines):
        line = await ch.read_line()
        if line == ".":
            return lines
        lines.append(line[1:] if line.startswith(".") else line)
    raise ProtocolError(f"CAPA longer than {ch.max_reply_lines} lines")


def _facts(banner: str, capa: list[str] | None, *, apop: bool) -> PlaintextFacts:
    capabilities: list[str] = []
    mechanisms: list[str] = []
    user = capa is None
    for entry in capa or ():
        words = entry.upper().split()
        if not words:
            continue
        capabilities.append(words[0])
        if words[0] == "SASL":
            mechanisms.extend(words[1:])
        elif words[0] == "USER":
            user = True
    if user:
        mechanisms.append("USER")
    if apop:
        mechanisms.append("APOP")
    return make_facts("pop3", banner, capabilities, "STLS" in capabilities, mechanisms)


async def _session(
    ch: LineChannel, opts: DialogueOptions, *, greeting: bool, phase: str
) -> PlaintextFacts:
    banner, apop = "", False
    if greeting:
        banner, apop = await step(
            _read_greeting(ch), phase="greeting", timeout=opts.greeting_seconds, what="greeting"
        )
    capa = await step(_capa(ch), phase=phase, timeout=opts.timeout, what="reply to CAPA")
    return _facts(banner, capa, apop=apop)


async def read_capabilities(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opts: DialogueOptions
) -> PlaintextFacts:
    """Read the greeting and ask CAPA; report what the plaintext phase offers."""
    return await _session(LineChannel(reader, writer, opts), opts, greeting=True, phase="greeting")


async def _stls_command(ch: LineChannel, opts: DialogueOptions, payload: bytes) -> None:
    async def run() -> _Status:
        await ch.send(payload)
        return _parse_status(await ch.read_line())

    status = await step(run(), phase="starttls", timeout=opts.timeout, what="reply to STLS")
    if not status.ok:
        if looks_rate_limited(status.text):
            raise RateLimitedError(f"STLS: {status.show()}", phase="starttls")
        raise StarttlsRefusedError(f"STLS refused: {status.show()}")
    if pending := ch.plaintext_pending():
        raise ProtocolError(
            f"server sent {pending} bytes of plaintext after its STLS reply", phase="starttls"
        )


async def start_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    facts: PlaintextFacts,
) -> None:
    """Send STLS; on return the server expects a TLS ClientHello."""
    if not facts.starttls_offered:
        raise StarttlsNotOfferedError("CAPA does not advertise STLS")
    await _stls_command(LineChannel(reader, writer, opts), opts, b"STLS\r\n")


async def capabilities_after_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    *,
    greeting: bool = False,
) -> PlaintextFacts:
    """CAPA over TLS; with ``greeting``, read the greeting first (implicit TLS)."""
    ch = LineChannel(reader, writer, opts)
    phase = "greeting" if greeting else "starttls"
    return await _session(ch, opts, greeting=greeting, phase=phase)


def _judge(status: _Status) -> LoginVerdict:
    if status.ok:
        return "accepted"
    if looks_rate_limited(status.text):
        raise RateLimitedError(f"login: {status.show()}", phase="auth")
    return "refused" if looks_like_refusal(status.text) else "accepted"


async def try_plaintext_login(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    facts: PlaintextFacts,
) -> LoginVerdict:
    """One USER/PASS (or AUTH PLAIN) attempt with made-up credentials.

    USER/PASS unless only SASL PLAIN is offered, then AUTH PLAIN with an initial
    response (RFC 5034). A -ERR to USER → "refused" (the password was never asked
    for), unless its text shows the name was judged ("unknown user"). After PASS or
    AUTH: +OK → "accepted"; -ERR saying plaintext is disallowed (Dovecot "-ERR [AUTH]
    Plaintext authentication disallowed…") → "refused"; any other -ERR ("-ERR [AUTH]
    Authentication failed") → "accepted".
    """
    ch = LineChannel(reader, writer, opts)
    creds = ProbeCredentials.random()
    timeout = opts.timeout
    if "USER" not in facts.mechanisms and "PLAIN" in facts.mechanisms:
        ir = creds.sasl_plain()
        status = await _exchange(
            ch, f"AUTH PLAIN {ir}", phase="auth", timeout=timeout, continuation=True
        )
        # Answer one continuation with the credentials, cancel ("*") a second one.
        for answer in (ir, "*"):
            if status.status != "+":
                break
            status = await _exchange(ch, answer, phase="auth", timeout=timeout, continuation=True)
        if status.status == "+":
            raise ProtocolError("server kept asking after AUTH was cancelled", phase="auth")
        return _judge(status)
    status = await _exchange(ch, f"USER {creds.user}", phase="auth", timeout=timeout)
    if not status.ok:
        if looks_rate_limited(status.text):
            raise RateLimitedError(f"USER: {status.show()}", phase="auth")
        judged = _USER_JUDGED.search(status.text) and not looks_like_refusal(status.text)
        return "accepted" if judged else "refused"
    status = await _exchange(ch, f"PASS {creds.password}", phase="auth", timeout=timeout)
    return _judge(status)


async def check_injection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    wait: float = INJECTION_WAIT,
) -> bool:
    """STLS and an unknown command in one write, then CAPA over TLS.

    NOOP is not valid before login (RFC 1939), hence the unknown command, which any
    server answers -ERR, and CAPA as the probe. +OK first is CAPA's: the pipelined
    command was dropped (False). -ERR first is the injected command's refusal when
    CAPA's reply follows it (True; CAPA's reply is read whole), or CAPA's own refusal
    by a server without CAPA, which then sends nothing more: after
    ``min(wait, opts.timeout)`` seconds of silence, False. Only that last case, a
    server without CAPA that is not vulnerable, costs the wait; whether CAPA was
    advertised in plaintext need not be known, as a vulnerable server sends the
    second reply at once either way. EOF or a reset before any reply means False.
    """
    ch = LineChannel(reader, writer, opts)
    await _stls_command(ch, opts, f"STLS\r\n{INJECTED_COMMAND}\r\n".encode("ascii"))
    await upgrade_stream(writer, ssl_context, server_hostname, opts.timeout)

    async def probe() -> _Status:
        await ch.send(b"CAPA\r\n")
        return await _read_status(ch)

    what = "reply to CAPA over TLS"
    first = await closed_or(probe(), timeout=opts.timeout, what=what)
    if first is None:
        return False
    if first.ok:
        await step(_capa_lines(ch), phase="starttls", timeout=opts.timeout, what=what)
        return False
    second = await answered_within(_read_status(ch), min(wait, opts.timeout))
    if second is None:
        return False
    if second.ok:
        await closed_or(_capa_lines(ch), timeout=opts.timeout, what=what)
    return True


async def _read_status(ch: LineChannel) -> _Status:
    return _parse_status(await ch.read_line())
