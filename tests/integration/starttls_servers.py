"""Small SMTP, IMAP and POP3 servers on 127.0.0.1 for the STARTTLS dialogue tests.

Each server is a script (a dataclass of what to answer) run by a handler coroutine on
``asyncio.start_server``. The server side reads through its own buffer (:class:`Peer`)
so that a test decides exactly what happens to input pipelined behind STARTTLS: a
Postfix-like server drops it, a vulnerable one answers it after the TLS upgrade.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trustme

__all__ = [
    "SERVER_NAME",
    "ImapScript",
    "Peer",
    "Pop3Script",
    "SmtpScript",
    "client_context",
    "connect",
    "imap_server",
    "pop3_server",
    "serve",
    "server_context",
    "smtp_server",
]

Address = tuple[str, int]
Handler = Callable[["Peer"], Coroutine[Any, Any, None]]

#: The name in the test certificate.
SERVER_NAME = "mail.test"


@functools.cache
def _ca() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SERVER_NAME).configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return server, client


def server_context() -> ssl.SSLContext:
    """Server-side TLS context with a certificate for :data:`SERVER_NAME`."""
    return _ca()[0]


def client_context() -> ssl.SSLContext:
    """Client-side TLS context that trusts the test CA."""
    return _ca()[1]


class Peer:
    """The server side of one test connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()

    async def recv_line(self) -> str | None:
        """The next line from the client, or None at EOF."""
        while (end := self.buffer.find(b"\n")) < 0:
            chunk = await self.reader.read(4096)
            if not chunk:
                return None
            self.buffer += chunk
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line.rstrip(b"\r\n").decode("utf-8", "replace")

    async def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def start_tls(self, *, keep_pipelined: bool) -> None:
        """Upgrade; drop input received before the upgrade unless ``keep_pipelined``."""
        if not keep_pipelined:
            self.buffer.clear()
        await self.writer.start_tls(server_context())


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(OSError, TimeoutError):
        async with asyncio.timeout(2):
            await writer.wait_closed()


@asynccontextmanager
async def serve(handler: Handler, *, tls: bool = False) -> AsyncIterator[Address]:
    """Run ``handler`` for each connection to a fresh 127.0.0.1 port; stop all at exit.

    With ``tls``, the port speaks implicit TLS (as 465/993/995 do).
    """
    # Each handler runs as a job of its own, so that stopping a tarpit at exit cancels
    # the job, not the task asyncio runs for the connection (3.11 logs that as an error).
    jobs: set[asyncio.Task[None]] = set()
    connections: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        assert this is not None
        connections.add(this)
        job = asyncio.create_task(handler(Peer(reader, writer)))
        jobs.add(job)
        try:
            await asyncio.wait({job})
            exc = None if job.cancelled() else job.exception()
            # OSError and EOF: the client went away, as hostile-server tests make it do.
            if exc is not None and not isinstance(exc, OSError | asyncio.IncompleteReadError):
                raise exc
        finally:
            await _close(writer)

    server = await asyncio.start_server(
        on_connect, "127.0.0.1", 0, ssl=server_context() if tls else None
    )
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield host, port
    finally:
        server.close()
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, *connections, return_exceptions=True)
        await server.wait_closed()


@asynccontextmanager
async def connect(
    address: Address, *, tls: bool = False
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client connection to ``address`` (implicit TLS with ``tls``), closed at exit."""
    if tls:
        reader, writer = await asyncio.open_connection(
            *address, ssl=client_context(), server_hostname=SERVER_NAME
        )
    else:
        reader, writer = await asyncio.open_connection(*address)
    try:
        yield reader, writer
    finally:
        await _close(writer)


# --- SMTP ---------------------------------------------------------------------------

POSTFIX_EHLO = [
    "mail.test",
    "PIPELINING",
    "SIZE 10240000",
    "VRFY",
    "ETRN",
    "STARTTLS",
    "ENHANCEDSTATUSCODES",
    "8BITMIME",
    "DSN",
    "CHUNKING",
]
POSTFIX_EHLO_TLS = [
    "mail.test",
    "PIPELINING",
    "SIZE 10240000",
    "AUTH PLAIN LOGIN",
    "AUTH=PLAIN LOGIN",
    "ENHANCEDSTATUSCODES",
    "8BITMIME",
]


@dataclass
class SmtpScript:
    """What an SMTP test server says. Lines of multi-line replies are given without code."""

    greeting: list[str] = field(default_factory=lambda: ["mail.test ESMTP Postfix"])
    greeting_code: int = 220
    greeting_delay: float = 0.0
    #: EHLO reply lines (first is the name); None answers EHLO with 502 (no ESMTP).
    ehlo: list[str] | None = field(default_factory=lambda: list(POSTFIX_EHLO))
    ehlo_tls: list[str] = field(default_factory=lambda: list(POSTFIX_EHLO_TLS))
    ehlo_reply: str | None = None  # a one-line EHLO reply instead (e.g. "421 …")
    helo_reply: str = "250 mail.test"
    starttls_reply: str = "220 2.0.0 Ready to start TLS"
    #: Answer commands pipelined behind STARTTLS after the upgrade (CVE-2011-0411).
    keep_pipelined: bool = False
    auth_reply: str = "535 5.7.8 Error: authentication failed: authentication failure"
    #: The reply to NOOP (RFC 5321 says 250, at any time).
    noop_reply: str = "250 2.0.0 Ok"
    #: Commands received, in order (AUTH lines included).
    received: list[str] = field(default_factory=list)
    #: The connection is TLS from the start (serve(..., tls=True)).
    implicit: bool = False


def _reply(code: int, lines: list[str]) -> list[str]:
    last = len(lines) - 1
    return [f"{code}{' ' if i == last else '-'}{text}" for i, text in enumerate(lines)]


def smtp_server(script: SmtpScript) -> Handler:
    async def handle(peer: Peer) -> None:
        if script.greeting_delay:
            await asyncio.sleep(script.greeting_delay)
        await peer.send(*_reply(script.greeting_code, script.greeting))
        tls = script.implicit
        while (line := await peer.recv_line()) is not None:
            script.received.append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                if script.ehlo_reply is not None:
                    await peer.send(script.ehlo_reply)
                elif script.ehlo is None:
                    await peer.send("502 5.5.2 Error: command not recognized")
                else:
                    await peer.send(*_reply(250, script.ehlo_tls if tls else script.ehlo))
            elif verb == "HELO":
                await peer.send(script.helo_reply)
            elif verb == "STARTTLS" and not tls:
                await peer.send(script.starttls_reply)
                if script.starttls_reply.startswith("220"):
                    await peer.start_tls(keep_pipelined=script.keep_pipelined)
                    tls = True
            elif verb == "AUTH":
                if line.upper() == "AUTH LOGIN":
                    await peer.send("334 VXNlcm5hbWU6")
                    script.received.append(await peer.recv_line() or "")
                    await peer.send("334 UGFzc3dvcmQ6")
                    script.received.append(await peer.recv_line() or "")
                await peer.send(script.auth_reply)
            elif verb == "NOOP":
                await peer.send(script.noop_reply)
            elif verb == "QUIT":
                await peer.send("221 2.0.0 Bye")
                return
            else:
                await peer.send("502 5.5.2 Error: command not recognized")

    return handle


# --- IMAP ---------------------------------------------------------------------------

DOVECOT_CAPS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS"
DOVECOT_CAPS_TLS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN"


@dataclass
class ImapScript:
    """What an IMAP test server says; the Dovecot defaults disallow plaintext login."""

    greeting: str = f"* OK [CAPABILITY {DOVECOT_CAPS} LOGINDISABLED] Dovecot ready."
    #: Atoms for the CAPABILITY command before and after TLS.
    capability: str = f"{DOVECOT_CAPS} LOGINDISABLED"
    capability_tls: str = DOVECOT_CAPS_TLS
    #: Extra untagged lines sent before ``* CAPABILITY``.
    capability_extra: list[str] = field(default_factory=list)
    starttls_reply: str = "OK Begin TLS negotiation now."
    keep_pipelined: bool = False
    #: Untagged lines, then the tagged status, answering LOGIN or AUTHENTICATE.
    login_untagged: list[str] = field(default_factory=list)
    login_reply: str = "NO [AUTHENTICATIONFAILED] Authentication failed."
    #: Untagged lines sent before the tagged response to NOOP (mailbox updates).
    noop_untagged: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    #: The connection is TLS from the start (serve(..., tls=True)).
    implicit: bool = False


def imap_server(script: ImapScript) -> Handler:
    async def handle(peer: Peer) -> None:
        await peer.send(script.greeting)
        tls = script.implicit
        while (line := await peer.recv_line()) is not None:
            script.received.append(line)
            tag, _, rest = line.partition(" ")
            words = rest.split()
            verb = words[0].upper() if words else ""
            if verb == "CAPABILITY":
                caps = script.capability_tls if tls else script.capability
                await peer.send(
                    *script.capability_extra, f"* CAPABILITY {caps}", f"{tag} OK Capability done."
                )
            elif verb == "STARTTLS" and not tls:
                await peer.send(f"{tag} {script.starttls_reply}")
                if script.starttls_reply.startswith("OK"):
                    await peer.start_tls(keep_pipelined=script.keep_pipelined)
                    tls = True
            elif verb in ("LOGIN", "AUTHENTICATE"):
                if verb == "AUTHENTICATE" and len(words) == 2:
                    await peer.send("+ ")
                    script.received.append(await peer.recv_line() or "")
                await peer.send(*script.login_untagged, f"{tag} {script.login_reply}")
            elif verb == "NOOP":
                await peer.send(*script.noop_untagged, f"{tag} OK NOOP completed.")
            elif verb == "LOGOUT":
                await peer.send("* BYE Logging out", f"{tag} OK Logout completed.")
                return
            else:
                await peer.send(f"{tag} BAD Error in IMAP command received by server.")

    return handle


# --- POP3 ---------------------------------------------------------------------------

DOVECOT_CAPA = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "STLS"]


@dataclass
class Pop3Script:
    """What a POP3 test server says; the Dovecot defaults disallow plaintext login."""

    greeting: str = "+OK Dovecot ready."
    #: CAPA lines before and after TLS; None answers CAPA with -ERR (an old server).
    capa: list[str] | None = field(default_factory=lambda: ["SASL", *DOVECOT_CAPA])
    capa_tls: list[str] | None = field(
        default_factory=lambda: ["USER", "SASL PLAIN", *DOVECOT_CAPA[:-1]]
    )
    stls_reply: str = "+OK Begin TLS negotiation now."
    keep_pipelined: bool = False
    user_reply: str = (
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
    )
    pass_reply: str = "-ERR [AUTH] Authentication failed."
    auth_reply: str = "-ERR [AUTH] Authentication failed."
    received: list[str] = field(default_factory=list)
    #: The connection is TLS from the start (serve(..., tls=True)).
    implicit: bool = False


def pop3_server(script: Pop3Script) -> Handler:
    async def handle(peer: Peer) -> None:
        await peer.send(script.greeting)
        tls = script.implicit
        while (line := await peer.recv_line()) is not None:
            script.received.append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "CAPA":
                capa = script.capa_tls if tls else script.capa
                if capa is None:
                    await peer.send("-ERR Unknown command.")
                else:
                    await peer.send("+OK", *capa, ".")
            elif verb == "STLS" and not tls:
                await peer.send(script.stls_reply)
                if script.stls_reply.startswith("+OK"):
                    await peer.start_tls(keep_pipelined=script.keep_pipelined)
                    tls = True
            elif verb == "USER":
                await peer.send(script.user_reply)
            elif verb == "PASS":
                await peer.send(script.pass_reply)
            elif verb == "AUTH":
                await peer.send(script.auth_reply)
            elif verb == "NOOP":
                await peer.send("+OK")
            elif verb == "QUIT":
                await peer.send("+OK Logging out.")
                return
            else:
                await peer.send("-ERR Unknown command.")

    return handle
