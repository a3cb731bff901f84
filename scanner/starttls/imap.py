"""IMAP4rev1 (RFC 3501) with STARTTLS, as a strict client.

States::

    connected ──* OK [CAPABILITY …]──────────────▶ ready ──a2 STARTTLS / a2 OK──▶ (TLS)
              ──* OK ──a1 CAPABILITY / a1 OK──────▶ ready
              ──* PREAUTH─▶ authenticated (STARTTLS no longer allowed)
              ──* BYE─────▶ refused (rate-limited or not)

Every command has its own tag, so that one connection never reuses one whatever the
order of calls: a1 CAPABILITY, a2 STARTTLS, a3 CAPABILITY over TLS, a4 LOGIN or
AUTHENTICATE, a5 the NOOP the injection check pipelines behind STARTTLS, a6 its NOOP
over TLS. Untagged responses other than CAPABILITY and BYE are skipped; literals
(``{n}`` at a line end) are read and dropped.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass

from scanner.errors import (
    ProtocolError,
    RateLimitedError,
    ResetError,
    StarttlsNotOfferedError,
    StarttlsRefusedError,
)
from scanner.starttls.common import (
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
from scanner.starttls.lines import LineChannel, closed_or, step

__all__ = [
    "capabilities_after_tls",
    "check_injection",
    "read_capabilities",
    "start_tls",
    "try_plaintext_login",
]

TAG_CAPABILITY = "a1"
TAG_STARTTLS = "a2"
TAG_CAPABILITY_TLS = "a3"
TAG_LOGIN = "a4"
TAG_NOOP = "a5"
TAG_NOOP_TLS = "a6"

_LITERAL = re.compile(r"\{([0-9]{1,9})\+?\}$")

# NO response codes (RFC 5530) after which the server has judged the credentials.
_JUDGED_CODES = frozenset(
    {"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "UNAVAILABLE", "CONTACTADMIN"}
)


class _Lines:
    """Reads response lines of one reply, within one budget of lines, dropping literals."""

    __slots__ = ("ch", "left")

    def __init__(self, ch: LineChannel) -> None:
        self.ch = ch
        self.left = ch.max_reply_lines

    async def next(self) -> str:
        parts: list[str] = []
        while True:
            if self.left <= 0:
                raise ProtocolError(f"reply longer than {self.ch.max_reply_lines} lines")
            self.left -= 1
            line = await self.ch.read_line()
            literal = _LITERAL.search(line) if line.endswith("}") else None
            if literal is None:
                break
            await self.ch.skip_bytes(int(literal.group(1)))
            parts.append(line[: literal.start()])
        if parts:
            parts.append(line)
            return "".join(parts)
        return line


@dataclass(slots=True)
class _Done:
    """How a command ended: OK/NO/BAD (tagged), BYE, or "+" (a continuation request)."""

    status: str
    text: str
    capabilities: list[str] | None
    #: The tag of a tagged response; "" for BYE and "+".
    tag: str = ""


def _code(text: str) -> tuple[str, str]:
    """The response code of a status text ("[CAPABILITY IMAP4rev1 …] Ready"), split."""
    if not text.startswith("["):
        return "", ""
    end = text.find("]")
    if end < 0:
        return "", ""
    name, _, args = text[1:end].partition(" ")
    return name.upper(), args


def _capability_code(text: str) -> list[str] | None:
    name, args = _code(text)
    return args.split() if name == "CAPABILITY" else None


async def _read_until_tagged(ch: LineChannel, *tags: str, continuation: bool = False) -> _Done:
    """Read to the first response tagged with one of ``tags`` (or BYE, or "+")."""
    lines = _Lines(ch)
    capabilities: list[str] | None = None
    while True:
        line = await lines.next()
        head, _, rest = line.partition(" ")
        if head == "*":
            kind, _, text = rest.partition(" ")
            kind = kind.upper()
            if kind == "CAPABILITY":
                capabilities = text.split()
            elif kind == "BYE":
                return _Done("BYE", text, capabilities)
        elif head in tags:
            status, _, text = rest.partition(" ")
            status = status.upper()
            if status not in ("OK", "NO", "BAD"):
                raise ProtocolError(f"bad tagged response: {line[:80]!r}")
            if capabilities is None and status == "OK":
                capabilities = _capability_code(text)
            return _Done(status, text, capabilities, head)
        elif head == "+" and continuation:
            return _Done("+", rest, capabilities)
        else:
            raise ProtocolError(f"not an IMAP response line: {line[:80]!r}")


async def _exchange(
    ch: LineChannel,
    line: str,
    tag: str,
    *,
    phase: str,
    timeout: float,
    what: str,
    continuation: bool = False,
) -> _Done:
    """Send one line and read until ``tag``'s response (or BYE, or "+" if allowed)."""

    async def run() -> _Done:
        await ch.send(line.encode("ascii") + b"\r\n")
        return await _read_until_tagged(ch, tag, continuation=continuation)

    return await step(run(), phase=phase, timeout=timeout, what=what)


async def _command(ch: LineChannel, tag: str, command: str, *, phase: str, timeout: float) -> _Done:
    what = f"response to {command.split(' ', 1)[0]}"
    return await _exchange(ch, f"{tag} {command}", tag, phase=phase, timeout=timeout, what=what)


def _raise_if_bye(done: _Done, phase: str) -> None:
    if done.status == "BYE":
        if looks_rate_limited(done.text):
            raise RateLimitedError(f"server turned us away: BYE {done.text}"[:300], phase=phase)
        raise ResetError(f"server closed the session: BYE {done.text}"[:300], phase=phase)


def _facts(banner: str, atoms: list[str], *, preauth: bool) -> PlaintextFacts:
    capabilities = [atom.upper() for atom in atoms]
    if preauth:
        # Already authenticated: no password is asked for, and STARTTLS is only valid
        # in the not-authenticated state (RFC 3501 6.2.1), whatever is advertised.
        return make_facts("imap", banner, capabilities, False, [])
    mechanisms = [c[5:] for c in capabilities if c.startswith("AUTH=")]
    if "LOGINDISABLED" not in capabilities:
        mechanisms.append("IMAP-LOGIN")
    return make_facts("imap", banner, capabilities, "STARTTLS" in capabilities, mechanisms)


async def _read_greeting(ch: LineChannel) -> tuple[str, bool, list[str] | None]:
    line = await _Lines(ch).next()
    head, _, rest = line.partition(" ")
    kind, _, text = rest.partition(" ")
    kind = kind.upper()
    if head != "*" or kind not in ("OK", "PREAUTH", "BYE"):
        raise ProtocolError(f"not an IMAP greeting: {line[:80]!r}")
    if kind == "BYE":
        if looks_rate_limited(text):
            raise RateLimitedError(f"server turned us away: {line}"[:300])
        raise ProtocolError(f"server refused the session: {line}"[:300])
    return line, kind == "PREAUTH", _capability_code(text)


async def _session(
    ch: LineChannel, opts: DialogueOptions, *, greeting: bool, tag: str, phase: str
) -> PlaintextFacts:
    banner, preauth, atoms = "", False, None
    if greeting:
        banner, preauth, atoms = await step(
            _read_greeting(ch), phase="greeting", timeout=opts.greeting_seconds, what="greeting"
        )
    if atoms is None:
        done = await _command(ch, tag, "CAPABILITY", phase=phase, timeout=opts.timeout)
        _raise_if_bye(done, phase)
        if done.status != "OK":
            raise ProtocolError(f"CAPABILITY failed: {done.status} {done.text}"[:300], phase=phase)
        atoms = done.capabilities or []
    return _facts(banner, atoms, preauth=preauth)


async def read_capabilities(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opts: DialogueOptions
) -> PlaintextFacts:
    """Read the greeting and, unless it carried them, ask for the capabilities."""
    ch = LineChannel(reader, writer, opts)
    return await _session(ch, opts, greeting=True, tag=TAG_CAPABILITY, phase="greeting")


async def _starttls_command(ch: LineChannel, opts: DialogueOptions, payload: bytes) -> None:
    async def run() -> _Done:
        await ch.send(payload)
        return await _read_until_tagged(ch, TAG_STARTTLS)

    done = await step(run(), phase="starttls", timeout=opts.timeout, what="response to STARTTLS")
    _raise_if_bye(done, "starttls")
    if done.status != "OK":
        if looks_rate_limited(done.text):
            raise RateLimitedError(f"STARTTLS: {done.status} {done.text}"[:300], phase="starttls")
        raise StarttlsRefusedError(f"STARTTLS refused: {done.status} {done.text}"[:300])
    if pending := ch.plaintext_pending():
        raise ProtocolError(
            f"server sent {pending} bytes of plaintext after its STARTTLS response",
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
        raise StarttlsNotOfferedError("STARTTLS not offered (not advertised, or PREAUTH)")
    payload = f"{TAG_STARTTLS} STARTTLS\r\n".encode("ascii")
    await _starttls_command(LineChannel(reader, writer, opts), opts, payload)


async def capabilities_after_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    *,
    greeting: bool = False,
) -> PlaintextFacts:
    """CAPABILITY over TLS; with ``greeting``, read the greeting first (implicit TLS)."""
    ch = LineChannel(reader, writer, opts)
    phase = "greeting" if greeting else "starttls"
    return await _session(ch, opts, greeting=greeting, tag=TAG_CAPABILITY_TLS, phase=phase)


def _judge_login(done: _Done) -> LoginVerdict:
    text = done.text
    if done.status == "OK":
        return "accepted"
    if looks_rate_limited(text):
        raise RateLimitedError(f"login: {done.status} {text}"[:300], phase="auth")
    if done.status == "BYE":
        if looks_like_refusal(text):
            return "refused"
        raise ResetError(f"server closed the session: BYE {text}"[:300], phase="auth")
    if done.status == "BAD":
        return "refused"
    code, _ = _code(text)
    if code == "PRIVACYREQUIRED":
        return "refused"
    if code in _JUDGED_CODES:
        return "accepted"
    return "refused" if looks_like_refusal(text) else "accepted"


async def try_plaintext_login(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    facts: PlaintextFacts,
) -> LoginVerdict:
    """One LOGIN (or AUTHENTICATE PLAIN) attempt with made-up credentials.

    LOGIN unless LOGINDISABLED is advertised; then AUTHENTICATE PLAIN if AUTH=PLAIN is
    advertised, else LOGIN anyway (to see the refusal). Tagged OK → "accepted";
    NO [AUTHENTICATIONFAILED] (or another RFC 5530 code of judged credentials, or a
    plain "NO Login failed") → "accepted"; NO [PRIVACYREQUIRED], a NO saying plaintext
    is disallowed, BAD, or a BYE saying so → "refused".
    """
    ch = LineChannel(reader, writer, opts)
    creds = ProbeCredentials.random()
    timeout = opts.timeout
    if "IMAP-LOGIN" not in facts.mechanisms and "PLAIN" in facts.mechanisms:
        ir = creds.sasl_plain()
        if "SASL-IR" in facts.capabilities:
            command = f"AUTHENTICATE PLAIN {ir}"
        else:
            command = "AUTHENTICATE PLAIN"
        what = "response to AUTHENTICATE"
        done = await _exchange(
            ch,
            f"{TAG_LOGIN} {command}",
            TAG_LOGIN,
            phase="auth",
            timeout=timeout,
            what=what,
            continuation=True,
        )
        # Answer one continuation with the credentials, cancel ("*") a second one.
        for answer in (ir, "*"):
            if done.status != "+":
                break
            done = await _exchange(
                ch, answer, TAG_LOGIN, phase="auth", timeout=timeout, what=what, continuation=True
            )
        if done.status == "+":
            raise ProtocolError("server kept asking after AUTHENTICATE was cancelled", phase="auth")
    else:
        command = f'LOGIN "{creds.user}" "{creds.password}"'
        done = await _command(ch, TAG_LOGIN, command, phase="auth", timeout=timeout)
    return _judge_login(done)


async def check_injection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    opts: DialogueOptions,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    wait: float = INJECTION_WAIT,  # noqa: ARG001 - the façade's signature; tags decide
) -> bool:
    """STARTTLS and ``a5 NOOP`` in one write, then ``a6 NOOP`` over TLS.

    The first tagged response over TLS decides (untagged ones are skipped): a5 means
    the pipelined NOOP was executed after the upgrade (True; the a6 response is read
    too, so that the stream is left at a prompt), a6 means it was dropped (False).
    Tags leave no doubt, so ``wait`` is not used. A BYE or EOF before any tagged
    response means False (a BYE saying "too many connections" raises RateLimitedError).
    """
    ch = LineChannel(reader, writer, opts)
    payload = f"{TAG_STARTTLS} STARTTLS\r\n{TAG_NOOP} NOOP\r\n".encode("ascii")
    await _starttls_command(ch, opts, payload)
    await upgrade_stream(writer, ssl_context, server_hostname, opts.timeout)

    async def probe() -> _Done:
        await ch.send(f"{TAG_NOOP_TLS} NOOP\r\n".encode("ascii"))
        return await _read_until_tagged(ch, TAG_NOOP_TLS, TAG_NOOP)

    what = "response to NOOP over TLS"
    first = await closed_or(probe(), timeout=opts.timeout, what=what)
    if first is None:
        return False
    if first.status == "BYE":
        if looks_rate_limited(first.text):
            message = f"server turned us away: BYE {first.text}"[:300]
            raise RateLimitedError(message, phase="starttls")
        return False
    if first.tag == TAG_NOOP_TLS:
        return False
    # The injected a5 was answered over TLS; a6's response follows it.
    await closed_or(_read_until_tagged(ch, TAG_NOOP_TLS), timeout=opts.timeout, what=what)
    return True
