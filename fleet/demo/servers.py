"""Local TLS servers of many kinds, for the demo fleet and the tests.

Real OpenSSL (Python's ssl module) on 127.x addresses, each server in its own thread
with a thread per connection, so a scanner's event loop and the servers never share a
loop. Servers count connections and the most that were open at once: that is how the
politeness limits are checked from the server's side.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

_S = TypeVar("_S", bound=socket.socket)


class BaseServer:
    """A threaded TCP server on ``ip`` (port chosen by the OS) running ``handle`` per client."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.ip = ip
        self._sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((ip, 0))
        self._sock.listen(256)
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._local = threading.local()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    def handle(self, conn: socket.socket) -> None:
        """Serve one client. Do not close sockets here: :meth:`adopt` them instead."""
        raise NotImplementedError

    def adopt(self, sock: _S) -> _S:
        """Make ``sock`` (e.g. a TLS wrapper of the connection) the one closed at the end.

        Connections are counted closed *before* their socket is closed, so a client that
        waits for the server's close sees an exact count of open connections.
        """
        self._local.sock = sock
        return sock

    def start(self) -> BaseServer:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self.open_now += 1
                self.max_open = max(self.max_open, self.open_now)
                self._clients.add(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket) -> None:
        self._local.sock = conn
        try:
            conn.settimeout(10)
            self.handle(conn)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            with self._lock:
                self.open_now -= 1
                self._clients.discard(conn)
            for sock in (self._local.sock, conn):
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> BaseServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TlsServer(BaseServer):
    """Implicit TLS: an OpenSSL handshake straight away, then one line echoed."""

    def __init__(self, ctx: ssl.SSLContext, ip: str = "127.0.0.1") -> None:
        super().__init__(ip)
        self.ctx = ctx

    def handle(self, conn: socket.socket) -> None:
        tls = self.adopt(
            self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        )
        tls.do_handshake()
        tls.recv(1024)


@dataclass(frozen=True)
class SmtpBehaviour:
    """Knobs of the test SMTP server."""

    banner: str = "220 mail.test ESMTP test\r\n"
    starttls: bool = True
    auth_before_tls: str | None = "PLAIN LOGIN"
    auth_after_tls: str | None = "PLAIN LOGIN"
    #: The reply to AUTH before TLS: 538 = "encryption required", 535 = judged and refused.
    auth_reply_before_tls: str = "535 5.7.8 Authentication credentials invalid\r\n"


class SmtpServer(BaseServer):
    """A small, strict SMTP server with STARTTLS (real OpenSSL after the upgrade)."""

    def __init__(
        self, ctx: ssl.SSLContext, behaviour: SmtpBehaviour = SmtpBehaviour(), ip: str = "127.0.0.1"
    ) -> None:
        super().__init__(ip)
        self.ctx = ctx
        self.behaviour = behaviour

    def handle(self, conn: socket.socket) -> None:
        b = self.behaviour
        conn.sendall(b.banner.encode())
        stream: socket.socket = conn
        tls = False
        reader = stream.makefile("rb")
        while True:
            line = reader.readline(4096)
            if not line:
                return
            verb = line.strip().split(b" ")[0].upper()
            if verb in (b"EHLO", b"HELO"):
                caps = ["250-mail.test", "250-PIPELINING", "250-SIZE 10240000"]
                if b.starttls and not tls:
                    caps.append("250-STARTTLS")
                auth = b.auth_after_tls if tls else b.auth_before_tls
                if auth:
                    caps.append(f"250-AUTH {auth}")
                caps.append("250 8BITMIME")
                stream.sendall(("\r\n".join(caps) + "\r\n").encode())
            elif verb == b"STARTTLS" and b.starttls and not tls:
                stream.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                reader.close()
                stream = self.adopt(
                    self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                )
                stream.do_handshake()
                reader = stream.makefile("rb")
                tls = True
            elif verb == b"AUTH":
                if tls:
                    stream.sendall(b"535 5.7.8 Authentication credentials invalid\r\n")
                else:
                    stream.sendall(b.auth_reply_before_tls.encode())
            elif verb == b"NOOP":
                stream.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                stream.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                stream.sendall(b"502 5.5.2 Error: command not recognized\r\n")


@contextlib.contextmanager
def running(server: BaseServer) -> Iterator[BaseServer]:
    """Start ``server`` for the duration of a ``with`` block."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
