"""What the three dialogues share: options, the facts they report, and reply judgement.

Nothing here does I/O except :func:`upgrade_stream`, the TLS upgrade used by the
injection check.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import ssl
from dataclasses import dataclass
from typing import Literal

from scanner.errors import HandshakeError, ResetError, ScanTimeout

__all__ = [
    "INJECTED_COMMAND",
    "INJECTION_WAIT",
    "PLAINTEXT_MECHANISMS",
    "DialogueOptions",
    "LoginVerdict",
    "PlaintextFacts",
    "ProbeCredentials",
    "dedupe",
    "looks_like_refusal",
    "looks_rate_limited",
    "make_facts",
    "upgrade_stream",
]

#: Mechanisms (SASL and the protocols' own pseudo-mechanisms) that carry a password
#: as it is, so that anyone on an unencrypted channel can read it.
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN", "IMAP-LOGIN", "USER"})

#: The injection check's fallback wait, over TLS, for a second reply. Only needed when
#: the first reply is a failure that may be the probe's own (SMTP refusing NOOP, POP3
#: without CAPA): a vulnerable server has the probe's reply right behind it, anyone
#: else sends nothing more. Every other outcome is decided by the first reply.
INJECTION_WAIT = 2.0

#: The command the SMTP and POP3 injection checks pipeline behind STARTTLS / STLS: no
#: server knows it, so a server that executes it after the upgrade answers a failure.
INJECTED_COMMAND = "XTLSFLEET"

LoginVerdict = Literal["accepted", "refused"]

# Phrases servers use when they turn a client away for connecting too often (Exim:
# "too many concurrent SMTP connections; please try again later", Postfix: "421 4.7.0
# Error: too many connections from ...", Dovecot: "Maximum number of connections ...").
_RATE_LIMITED = re.compile(
    r"too many (?:connections|concurrent)|try again later|maximum number of connections",
    re.IGNORECASE,
)

# Phrases of servers refusing to take a password over an unencrypted channel (Dovecot
# "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS)
# connections", Cyrus "Login only available under a layer", RFC 4954's "Encryption
# required for requested authentication mechanism", "Must issue a STARTTLS command").
_REFUSAL = re.compile(
    r"privacyrequired|plain ?text|disallowed|not (?:allowed|permitted|supported)"
    r"|disabled|encrypt|starttls|\b(?:ssl|tls)\b|secure|\blayer\b",
    re.IGNORECASE,
)


def looks_rate_limited(text: str) -> bool:
    """True when a server's text says we are connecting too often or too much at once."""
    return _RATE_LIMITED.search(text) is not None


def looks_like_refusal(text: str) -> bool:
    """True when a failure text says a password is not taken over this (clear) channel."""
    return _REFUSAL.search(text) is not None


@dataclass(frozen=True, slots=True)
class DialogueOptions:
    """Limits and names for one plaintext dialogue; every limit applies per step."""

    ehlo_name: str = "tlsfleet.invalid"
    #: Seconds allowed for each reply (and for the TLS handshake of the injection check).
    timeout: float = 10.0
    #: Seconds allowed for the greeting; None means ``timeout``. Tarpits delay greetings.
    greeting_timeout: float | None = None
    #: Longest reply line accepted, line ending included.
    max_line_bytes: int = 8192
    #: Most lines one reply (greeting, EHLO, CAPABILITY, CAPA, …) may have.
    max_reply_lines: int = 256

    def __post_init__(self) -> None:
        name = self.ehlo_name
        if not name or not name.isascii() or not name.isprintable() or " " in name:
            raise ValueError(f"ehlo_name must be one printable ASCII word, not {name!r}")
        if not self.timeout > 0:
            raise ValueError("timeout must be positive")
        if self.greeting_timeout is not None and not self.greeting_timeout > 0:
            raise ValueError("greeting_timeout must be positive or None")
        if self.max_line_bytes < 64:
            raise ValueError("max_line_bytes must be at least 64")
        if self.max_reply_lines < 1:
            raise ValueError("max_reply_lines must be at least 1")

    @property
    def greeting_seconds(self) -> float:
        """The greeting timeout in force."""
        return self.timeout if self.greeting_timeout is None else self.greeting_timeout


@dataclass(frozen=True, slots=True)
class PlaintextFacts:
    """What a server told us in one phase (plaintext, or over TLS) of its dialogue."""

    #: "smtp" | "imap" | "pop3"
    dialogue: str
    #: The greeting as received (status prefix included, lines joined by "\n");
    #: "" when the phase read no greeting (EHLO/CAPABILITY again after STARTTLS).
    banner: str
    #: Upper-cased capability words as advertised: EHLO keywords, IMAP capability
    #: atoms, POP3 CAPA tags.
    capabilities: tuple[str, ...]
    starttls_offered: bool
    #: Password mechanisms usable in this phase: advertised SASL mechanisms, then the
    #: pseudo-mechanisms IMAP-LOGIN, USER and APOP for the protocols' own commands.
    mechanisms: tuple[str, ...]
    #: True when one of :data:`PLAINTEXT_MECHANISMS` is usable in this phase.
    plaintext_login: bool


def dedupe(words: list[str]) -> tuple[str, ...]:
    """The words in first-seen order, each once."""
    return tuple(dict.fromkeys(words))


def make_facts(
    dialogue: str,
    banner: str,
    capabilities: list[str],
    starttls_offered: bool,
    mechanisms: list[str],
) -> PlaintextFacts:
    """Build facts, deriving ``plaintext_login`` the same way for every dialogue."""
    mechs = dedupe(mechanisms)
    return PlaintextFacts(
        dialogue=dialogue,
        banner=banner,
        capabilities=dedupe(capabilities),
        starttls_offered=starttls_offered,
        mechanisms=mechs,
        plaintext_login=not PLAINTEXT_MECHANISMS.isdisjoint(mechs),
    )


@dataclass(frozen=True, slots=True)
class ProbeCredentials:
    """Made-up credentials for the active login check: random, for no real account."""

    user: str
    password: str

    @classmethod
    def random(cls) -> ProbeCredentials:
        return cls(
            user=f"tlsfleet-probe-{secrets.token_hex(8)}@invalid",
            password=secrets.token_hex(16),
        )

    def sasl_plain(self) -> str:
        """The SASL PLAIN initial response (RFC 4616): empty authzid, user, password."""
        raw = f"\0{self.user}\0{self.password}".encode()
        return base64.b64encode(raw).decode("ascii")

    def b64_user(self) -> str:
        return base64.b64encode(self.user.encode()).decode("ascii")

    def b64_password(self) -> str:
        return base64.b64encode(self.password.encode()).decode("ascii")


async def upgrade_stream(
    writer: asyncio.StreamWriter,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None,
    timeout: float,
) -> None:
    """Run the client side of a TLS handshake on ``writer``'s connection, bounded."""
    try:
        async with asyncio.timeout(timeout):
            await writer.start_tls(ssl_context, server_hostname=server_hostname)
    except TimeoutError:
        raise ScanTimeout(f"no TLS handshake within {timeout:g} s", phase="tls_handshake") from None
    except ssl.SSLError as exc:
        raise HandshakeError(f"TLS handshake failed: {exc}") from exc
    except OSError as exc:
        raise ResetError(
            f"connection lost during the TLS handshake: {exc}", phase="tls_handshake"
        ) from exc
