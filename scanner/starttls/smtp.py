"""SMTP (RFC 5321) with STARTTLS (RFC 3207) and AUTH (RFC 4954), as a strict client.

States::

    connected ──220 greeting──▶ greeted ──EHLO 250──▶ ready ──STARTTLS 220──▶ (TLS)
                                    └──EHLO 5xx──▶ HELO 250 ──▶ ready, no ESMTP

Replies are read whole (``250-…`` lines up to the ``250 …`` line) within one step
timeout; every line of one reply must carry the same code.
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

# "250-" / "250 " / a bare "250"; codes 1xx-5xx.
_REPLY_LINE = re.compile(r"([1-5][0-9][0-9])([ -]|$)", re.ASCII)

# AUTH replies after which the server has judged the credentials: 535 invalid, 454
# temporary authentication failure, 432 password transition needed.
_JUDGED = frozenset({535, 454, 432})


@dataclass(slots=True)
class Reply:
    """One complete SMTP reply: its code and the text of each line."""

    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def show(self) -> str:
        return f"{self.code} {self.text}"[:300]


async def _read_reply(ch: LineChannel) -> Reply:
    lines: list[str] = []
    code = 0
    for _ in range(ch.max_reply_lines):
        line = await ch.read_line()
        m = _REPLY_LINE.match(line)
        if m is None:
            raise ProtocolError(f"not an SMTP reply line: {line[:80]!r}")
        this = int(m.group(1))
        if code and this != code:
            raise ProtocolError(f"reply code changed from {code} to {this} inside one reply")
        code = this
        lines.append(line[4:])
        if m.group(2) != "-":
            return Reply(code, lines)
    raise ProtocolError(f"reply longer than {ch.max_reply_lines} lines")


async def _command(ch: LineChannel, line: str, *, phase: str, timeout: float) -> Reply:
    """Send one command line and read its reply, as one timed step."""

    async def run() -> Reply:
        await ch.send(line.encode("ascii") + b"\r\n")
        return await _read_reply(ch)

    verb = line.split(" ", 1)[0]
    return await step(run(), phase=phase, timeout=timeout, what=f"reply to {verb}")


def _raise_if_rate_limited(reply: Reply, phase: str) -> None:
    if reply.code == 421 or (reply.code >= 400 and looks_rate_limited(reply.text)):
        raise RateLimitedError(f"server turned us away: {reply.show()}", phase=phase)


async def _greeting(ch: LineChannel, opts: DialogueOptions) -> str:
    reply = await step(
        _read_reply(ch), phase="greeting", timeout=opts.greeting_seconds, what="greeting"
    )
    if reply.code == 421 or looks_rate_limited(reply.text):
        raise RateLimitedError(f"server turned us away: {reply.show()}", phase="greeting")
    if reply.code != 220:
        raise ProtocolError(f"server refused the session: {reply.show()}", phase="greeting")
    last = len(reply.lines) - 1
    return "\n".join(f"220{' ' if i == last else '-'}{text}" for i, text in enumerate(reply.lines))


def _parse_ehlo(lines: list[str]) -> tuple[list[str], list[str]]:
    """Extension keywords and AUTH mechanisms of an EHLO reply (first line is the name)."""
    keywords: list[str] = []
    mechanisms: list[str] = []
    for ext in lines[1:]:
        words = ext.upper().split()
        if not words:
            continue
        keyword = words[0]
        keywords.append(keyword)
        if keyword == "AUTH":
            mechanisms.extend(words[1:])
        elif keyword.startswith("AUTH="):
            # The pre-RFC 2554 form some servers still send: "AUTH=PLAIN LOGIN".
            mechanisms.append(keyword[5:])
            mechanisms.extend(words[1:])
    return keywords, mechanisms


async def _hello(ch: LineChannel, opts: DialogueOptions, banner: str, phase: str) -> PlaintextFacts:
    """EHLO, or HELO when EHLO is refused (to tell "no ESMTP" apart from failure)."""
    reply = await _command(ch, f"EHLO {opts.ehlo_name}", phase=phase, timeout=opts.timeout)
    _raise_if_rate_limited(reply, phase)
    if reply.code == 250:
        keywords, mechanisms = _parse_ehlo(reply.lines)
        return make_facts("smtp", banner, keywords, "STARTTLS" in keywords, mechanisms)
    helo = await _command(ch, f"HELO {opts.ehlo_name}", phase=phase, timeout=opts.timeout)
    _raise_if_rate_limited(helo, phase)
    if helo.code != 250:
        raise ProtocolError(f"EHLO and HELO refused: {reply.show()} / {helo.show()}", phase=phase)
    return make_facts("smtp", banner, [], False, [])


async def read_capabilities(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opts: DialogueOptions
) -> PlaintextFacts:
    """Read the greeting and send EHLO; report what the plaintext phase offers."""
    ch = LineChannel(reader, writer, opts)
    banner = await _greeting(ch, opts)
    return await _hello(ch, opts, banner, "greeting")


async def _starttls_command(ch: LineChannel, opts: DialogueOptions, payload: bytes) -> None:
    async def run() -> Reply:
        await ch.send(payload)
        return await _read_reply(ch)

    reply = await step(run(), phase="starttls", timeout=opts.timeout, what="reply to STARTTLS")
    _raise_if_rate_limited(reply, "starttls")
    if reply.code != 220:
        raise StarttlsRefusedError(f"STARTTLS refused: {reply.show()}")
    if pending := ch.plaintext_pending():
        raise ProtocolError(
            f"server sent {pending} bytes of plaintext after its STARTTLS reply",
            phase="starttls",
        )


async def start_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    facts: PlaintextFacts,
) -> None:
    """Send STARTTLS; on return the server expects a TLS ClientHello."""
    if not facts.starttls_offered:
        raise StarttlsNotOfferedError("EHLO does not advertise STARTTLS")
    await _starttls_command(LineChannel(reader, writer, opts), opts, b"STARTTLS\r\n")


async def capabilities_after_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    *,
    greeting: bool = False,
) -> PlaintextFacts:
    """EHLO over TLS (after reading the greeting first when ``greeting`` is set)."""
    ch = LineChannel(reader, writer, opts)
    banner = await _greeting(ch, opts) if greeting else ""
    return await _hello(ch, opts, banner, "greeting" if greeting else "starttls")


async def try_plaintext_login(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    facts: PlaintextFacts,
) -> LoginVerdict:
    """One AUTH attempt with made-up credentials; see the façade for the contract.

    AUTH PLAIN with an initial response, or AUTH LOGIN when only LOGIN is advertised.
    Final reply: 2xx, 535, 454, 432 → "accepted" (unless the 535/454 text says the
    password is not taken in clear); 421 or rate-limit text → RateLimitedError; any
    other code (530, 534, 538, 503, 504, 5xx) → "refused".
    """
    ch = LineChannel(reader, writer, opts)
    creds = ProbeCredentials.random()
    if "PLAIN" not in facts.mechanisms and "LOGIN" in facts.mechanisms:
        first, answers = "AUTH LOGIN", [creds.b64_user(), creds.b64_password()]
    else:
        first, answers = f"AUTH PLAIN {creds.sasl_plain()}", []
    reply = await _command(ch, first, phase="auth", timeout=opts.timeout)
    while reply.code == 334:
        # Cancel ("*") once our answers run out: a server asking for more than a
        # mechanism needs gets nothing further from us.
        answer = answers.pop(0) if answers else "*"
        reply = await _command(ch, answer, phase="auth", timeout=opts.timeout)
        if answer == "*" and reply.code == 334:
            raise ProtocolError("server kept asking after AUTH was cancelled", phase="auth")
    _raise_if_rate_limited(reply, "auth")
    if 200 <= reply.code < 300:
        return "accepted"
    if reply.code in _JUDGED and not looks_like_refusal(reply.text):
        return "accepted"
    return "refused"


async def check_injection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    wait: float = INJECTION_WAIT,
) -> bool:
    """STARTTLS and an unknown command in one write, then NOOP over TLS.

    The first reply over TLS decides. 2xx is NOOP's: the pipelined command was dropped
    (False). A 4xx/5xx is the refusal of the injected command, executed after the
    upgrade, when NOOP's own reply follows it (True); NOOP's reply is read so that
    the stream is left at a prompt. A server refusing NOOP itself sends nothing more:
    after ``min(wait, opts.timeout)`` seconds of silence, False. 421 raises
    RateLimitedError; EOF or a reset before any reply means False.
    """
    ch = LineChannel(reader, writer, opts)
    await _starttls_command(ch, opts, f"STARTTLS\r\n{INJECTED_COMMAND}\r\n".encode("ascii"))
    await upgrade_stream(writer, ssl_context, server_hostname, opts.timeout)

    async def probe() -> Reply:
        await ch.send(b"NOOP\r\n")
        return await _read_reply(ch)

    first = await closed_or(probe(), timeout=opts.timeout, what="reply to NOOP over TLS")
    if first is None:
        return False
    _raise_if_rate_limited(first, "starttls")
    if 200 <= first.code < 300:
        return False
    if first.code < 400:
        raise ProtocolError(f"unexpected reply to NOOP over TLS: {first.show()}", phase="starttls")
    return await answered_within(_read_reply(ch), min(wait, opts.timeout)) is not None
