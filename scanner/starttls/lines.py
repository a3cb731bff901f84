"""Line reading for the dialogues: bounded, timed, and mapped onto the error tree.

A dialogue reads each reply inside :func:`step`, which applies the step's timeout and
turns every way a read can fail into one of our errors, carrying the step's phase:

    timeout                         → ScanTimeout
    EOF, reset, broken pipe         → ResetError
    TLS record error after upgrade  → ProtocolError
    line too long, control bytes    → ProtocolError   (raised by LineChannel)

``CancelledError`` is never caught: only the step's own deadline becomes a timeout.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable
from typing import TypeVar

from scanner.errors import ProtocolError, ResetError, ScanError, ScanTimeout
from scanner.starttls.common import DialogueOptions

__all__ = ["LineChannel", "answered_within", "closed_or", "step"]

T = TypeVar("T")

# Control bytes other than TAB: no text reply carries them, binary garbage does.
# (LF cannot occur inside a line; a stray CR can.)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class LineChannel:
    """A line-oriented view of an asyncio stream pair, with the dialogue's limits."""

    __slots__ = ("max_line_bytes", "max_reply_lines", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opts: DialogueOptions
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_line_bytes = opts.max_line_bytes
        self.max_reply_lines = opts.max_reply_lines

    async def read_line(self) -> str:
        """One line without its ending (CRLF or a bare LF), decoded as UTF-8.

        Lines are limited to ``max_line_bytes`` and, before that, to the reader's own
        buffer limit; either overrun is a :class:`ProtocolError`.
        """
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"reply line longer than {self.max_line_bytes} bytes") from None
        except asyncio.IncompleteReadError as exc:
            where = "in the middle of a line" if exc.partial else "where a reply was due"
            raise ResetError(f"connection closed {where}") from None
        if len(raw) > self.max_line_bytes:
            raise ProtocolError(f"reply line longer than {self.max_line_bytes} bytes")
        body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if _CONTROL.search(body) is not None:
            raise ProtocolError(f"binary data in a reply line: {body[:60]!r}")
        return body.decode("utf-8", "replace")

    async def skip_bytes(self, count: int) -> None:
        """Read and drop ``count`` bytes (an IMAP literal we have no use for)."""
        if count > self.max_line_bytes:
            raise ProtocolError(f"literal of {count} bytes exceeds {self.max_line_bytes}")
        try:
            await self.reader.readexactly(count)
        except asyncio.IncompleteReadError:
            raise ResetError("connection closed inside a literal") from None

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the transport has taken it."""
        self.writer.write(data)
        await self.writer.drain()

    def plaintext_pending(self) -> int:
        """Bytes the server sent that are buffered but not yet read.

        Checked right after a successful STARTTLS reply: the server cannot send TLS
        before our ClientHello, so anything buffered then is plaintext that
        ``StreamWriter.start_tls`` would leave in the reader and hand out later as if
        it had come over TLS. asyncio has no public call for this; ``_buffer`` has been
        the StreamReader's buffer since asyncio began (uvloop uses the same class).
        """
        buffered = getattr(self.reader, "_buffer", None)
        return len(buffered) if isinstance(buffered, bytearray) else 0


async def step(aw: Awaitable[T], *, phase: str, timeout: float, what: str) -> T:
    """Await one dialogue step within ``timeout`` seconds; failures become ScanErrors.

    Our own errors raised inside the step get the step's ``phase``.
    """
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except ScanError as exc:
        exc.phase = phase
        raise
    except TimeoutError:
        raise ScanTimeout(f"no complete {what} within {timeout:g} s", phase=phase) from None
    except ssl.SSLError as exc:
        raise ProtocolError(f"TLS error while reading {what}: {exc}", phase=phase) from exc
    except OSError as exc:
        raise ResetError(f"connection lost while reading {what}: {exc}", phase=phase) from exc


async def closed_or(aw: Awaitable[T], *, timeout: float, what: str) -> T | None:
    """:func:`step` in phase "starttls", except that EOF or a reset return None.

    For the replies over TLS of the injection check: a server that ends the session
    there has executed nothing it had buffered before the upgrade, which is an answer
    to the check, not a failure of it. Timeouts and malformed replies still raise.
    """
    try:
        return await step(aw, phase="starttls", timeout=timeout, what=what)
    except ResetError:
        return None


async def answered_within(aw: Awaitable[T], wait: float) -> T | None:
    """What ``aw`` (reading a reply that may never come) returns, if it ends in ``wait``.

    Silence, EOF or a reset mean no answer came (None); a malformed answer is still an
    error. The injection check's bounded fallback, hence phase "starttls".
    """
    try:
        async with asyncio.timeout(wait):
            return await aw
    except (TimeoutError, ResetError):
        return None
    except ScanError as exc:
        exc.phase = "starttls"
        raise
    except ssl.SSLError as exc:
        raise ProtocolError(f"TLS error after STARTTLS: {exc}", phase="starttls") from exc
    except OSError:
        return None
