"""A free TCP port on a loopback address, for tests that must name a port before
whatever listens on it starts (a subprocess, an embedded server), or one where nothing
listens."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(ip: str = "127.0.0.1") -> int:
    """A port the kernel had free on ``ip`` a moment ago (nothing listens on it now)."""
    with socket.socket() as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port
