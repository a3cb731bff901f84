"""Connections: politeness limits, timeouts and mapping OS errors into our error tree."""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from scanner.errors import (
    ConnectionFailed,
    HandshakeError,
    RefusedError,
    ResetError,
    ScanError,
    ScanTimeout,
)

__all__ = ["ConnectionLimiter", "Connector", "LocalLimiter", "map_os_error"]

_MAX_DRAIN = 1 << 16


class ConnectionLimiter(Protocol):
    """Grants a slot for one connection to ``ip``; the fleet swaps in a shared one."""

    def slot(self, ip: str) -> AbstractAsyncContextManager[None]: ...


class LocalLimiter:
    """In-process limits: ``global_limit`` connections at once, ``per_ip`` per address."""

    def __init__(self, *, global_limit: int = 200, per_ip: int = 4) -> None:
        if global_limit < 1 or per_ip < 1:
            raise ValueError("connection limits must be at least 1")
        self.global_limit = global_limit
        self.per_ip = per_ip
        self._global = asyncio.Semaphore(global_limit)
        self._per_ip: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def slot(self, ip: str) -> AsyncIterator[None]:
        sem, users = self._per_ip.get(ip, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_ip)
        self._per_ip[ip] = (sem, users + 1)
        try:
            async with sem, self._global:
                yield
        finally:
            sem_now, users_now = self._per_ip[ip]
            if users_now <= 1:
                del self._per_ip[ip]
            else:
                self._per_ip[ip] = (sem_now, users_now - 1)


def map_os_error(exc: BaseException, phase: str) -> ScanError:
    """Turn an OS/ssl/asyncio exception into the matching :class:`ScanError`."""
    if isinstance(exc, ScanError):
        return exc
    if isinstance(exc, TimeoutError):
        return ScanTimeout(f"no answer in time ({phase})", phase=phase)
    if isinstance(exc, ConnectionRefusedError):
        return RefusedError("connection refused", phase=phase)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ResetError("connection reset by peer", phase=phase)
    if isinstance(exc, asyncio.IncompleteReadError):
        return ResetError("connection closed by peer", phase=phase)
    if isinstance(exc, RuntimeError) and "closed" in str(exc):
        # uvloop's way of saying the transport is gone (asyncio raises OSError subclasses)
        return ResetError("connection closed by peer", phase=phase)
    if isinstance(exc, ssl.SSLError):
        return HandshakeError(f"TLS handshake failed: {exc.reason or exc}", phase=phase)
    if isinstance(exc, OSError):
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return ConnectionFailed(f"unreachable: {exc.strerror}", phase=phase)
        if exc.errno == errno.ECONNREFUSED:
            return RefusedError("connection refused", phase=phase)
        if exc.errno == errno.ETIMEDOUT:
            return ScanTimeout("connection timed out", phase=phase)
        return ConnectionFailed(f"{exc.strerror or exc}", phase=phase)
    return ConnectionFailed(f"{type(exc).__name__}: {exc}", phase=phase)


@dataclass(slots=True)
class Connector:
    """Opens TCP connections under a limiter, counting them, with a connect timeout."""

    limiter: ConnectionLimiter
    connect_timeout: float = 5.0
    source_address: str | None = None
    close_timeout: float = 1.0
    opened: int = 0

    @asynccontextmanager
    async def open(
        self, ip: str, port: int
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """Yield a connected stream pair; it is closed (and its slot freed) on exit."""
        async with self.limiter.slot(ip):
            self.opened += 1
            local = (self.source_address, 0) if self.source_address else None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(
                        ip, port, local_addr=local, limit=1 << 16
                    )
            except Exception as exc:
                raise map_os_error(exc, "connect") from exc
            try:
                yield reader, writer
            finally:
                await self._close(reader, writer)

    async def _close(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close and wait (briefly) for the server to close too.

        The slot is held until the server has let go of the connection, so the per-IP
        limit holds as the server counts, not only as we count.
        """
        try:
            async with asyncio.timeout(self.close_timeout):
                if writer.can_write_eof():
                    writer.write_eof()
                    # Drain what the server still sends, but not a flood: 64 KiB at most.
                    drained = 0
                    while drained < _MAX_DRAIN and (chunk := await reader.read(65536)):
                        drained += len(chunk)
                writer.close()
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError, RuntimeError):
            pass  # uvloop raises RuntimeError on a transport the peer already closed
        finally:
            writer.close()
