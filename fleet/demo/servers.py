"""Local TLS servers of many kinds, for the demo fleet and the tests.

Real OpenSSL (Python's ssl module) on 127.x addresses, each server in its own thread
with a thread per connection, so a scanner's event loop and the servers never share a
loop. Servers count connections and the most that were open at once: that is how the
politeness limits are checked from the server's side.

- :class:`TlsServer`: implicit TLS, a handshake and nothing else (HTTPS for a scanner).
- :class:`SmtpServer`, :class:`ImapServer`, :class:`Pop3Server`: small, strict mail
  servers with STARTTLS / STLS (or implicit TLS with ``implicit=True``) whose
  capabilities before and after TLS are set by a behaviour dataclass, so that a server
  can allow or refuse passwords before TLS. Input pipelined behind STARTTLS is dropped
  at the upgrade, as RFC 3207 and RFC 2595 require.
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
    """A threaded TCP server on ``ip`` and ``port`` (0: the OS picks one) running
    ``handle`` per client. A port in use raises OSError here, not in :meth:`start`."""

    def __init__(self, ip: str = "127.0.0.1", *, port: int = 0) -> None:
        self.ip = ip
        self._sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((ip, port))
            self._sock.listen(256)
        except OSError:
            self._sock.close()
            raise
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
        if self._acceptor.ident is not None:  # never started: nothing to wait for
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

    def __init__(self, ctx: ssl.SSLContext, ip: str = "127.0.0.1", *, port: int = 0) -> None:
        super().__init__(ip, port=port)
        self.ctx = ctx

    def handle(self, conn: socket.socket) -> None:
        tls = self.adopt(
            self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        )
        tls.do_handshake()
        tls.recv(1024)


#: The longest command line the mail servers read; a longer one ends the session.
MAX_LINE = 4096


class _Channel:
    """One mail session's connection: lines in, lines out, and the upgrade to TLS.

    Reads go through a buffer; :meth:`start_tls` throws it away, so that commands a
    client pipelined behind STARTTLS are never executed over TLS (RFC 3207 §4.2,
    RFC 2595 §3.1: the classic STARTTLS command-injection flaw is not emulated).
    """

    def __init__(self, server: BaseServer, conn: socket.socket) -> None:
        self._server = server
        self._conn = conn
        self.sock: socket.socket = conn
        self._reader = conn.makefile("rb")
        self.tls = False

    def read_line(self) -> str | None:
        """The next line without its CRLF; None at EOF or for an over-long line."""
        line = self._reader.readline(MAX_LINE + 1)
        if not line or len(line) > MAX_LINE:
            return None
        return line.rstrip(b"\r\n").decode("utf-8", "replace")

    def send(self, *lines: str) -> None:
        """Send ``lines``, each ended with CRLF, in one write."""
        self.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def start_tls(self, ctx: ssl.SSLContext) -> None:
        """Handshake as the server; buffered plaintext input is dropped."""
        self._reader.close()
        tls = self._server.adopt(
            ctx.wrap_socket(self._conn, server_side=True, do_handshake_on_connect=False)
        )
        tls.do_handshake()
        self.sock = tls
        self._reader = tls.makefile("rb")
        self.tls = True


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
    """A small, strict SMTP server with STARTTLS (real OpenSSL after the upgrade).

    ``implicit``: TLS from the first byte (SMTP submission on 465, RFC 8314); the
    session then behaves as after STARTTLS.
    """

    def __init__(
        self,
        ctx: ssl.SSLContext,
        behaviour: SmtpBehaviour = SmtpBehaviour(),
        ip: str = "127.0.0.1",
        *,
        port: int = 0,
        implicit: bool = False,
    ) -> None:
        super().__init__(ip, port=port)
        self.ctx = ctx
        self.behaviour = behaviour
        self.implicit = implicit

    def handle(self, conn: socket.socket) -> None:
        b = self.behaviour
        ch = _Channel(self, conn)
        if self.implicit:
            ch.start_tls(self.ctx)
        ch.sock.sendall(b.banner.encode())
        while (line := ch.read_line()) is not None:
            verb = line.strip().split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                caps = ["250-mail.test", "250-PIPELINING", "250-SIZE 10240000"]
                if b.starttls and not ch.tls:
                    caps.append("250-STARTTLS")
                auth = b.auth_after_tls if ch.tls else b.auth_before_tls
                if auth:
                    caps.append(f"250-AUTH {auth}")
                caps.append("250 8BITMIME")
                ch.send(*caps)
            elif verb == "STARTTLS" and b.starttls and not ch.tls:
                ch.send("220 2.0.0 Ready to start TLS")
                ch.start_tls(self.ctx)
            elif verb == "AUTH":
                if ch.tls:
                    ch.send("535 5.7.8 Authentication credentials invalid")
                else:
                    ch.sock.sendall(b.auth_reply_before_tls.encode())
            elif verb == "NOOP":
                ch.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                ch.send("221 2.0.0 Bye")
                return
            else:
                ch.send("502 5.5.2 Error: command not recognized")


@dataclass(frozen=True)
class ImapBehaviour:
    """Knobs of the IMAP server (Dovecot-like capabilities and replies).

    ``login_before_tls``: LOGIN and AUTH=PLAIN/LOGIN are allowed before TLS (no
    LOGINDISABLED), so a password can be sent in clear; otherwise LOGINDISABLED is
    advertised and LOGIN/AUTHENTICATE are refused with PRIVACYREQUIRED until TLS.
    """

    name: str = "mail.test"
    starttls: bool = True
    login_before_tls: bool = False


_IMAP_BASE = "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE"
_IMAP_PRIVACY = (
    "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)
_IMAP_FAILED = "NO [AUTHENTICATIONFAILED] Authentication failed."


class ImapServer(BaseServer):
    """A small, strict IMAP4rev1 server: CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE,
    NOOP, LOGOUT. No login ever succeeds. ``implicit``: IMAPS (993)."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        behaviour: ImapBehaviour = ImapBehaviour(),
        ip: str = "127.0.0.1",
        *,
        port: int = 0,
        implicit: bool = False,
    ) -> None:
        super().__init__(ip, port=port)
        self.ctx = ctx
        self.behaviour = behaviour
        self.implicit = implicit

    def capabilities(self, tls: bool) -> str:
        """The capability atoms before or after TLS."""
        b = self.behaviour
        atoms = [_IMAP_BASE]
        if tls or b.login_before_tls:
            atoms.append("AUTH=PLAIN AUTH=LOGIN")
        else:
            atoms.append("LOGINDISABLED")
        if b.starttls and not tls:
            atoms.append("STARTTLS")
        return " ".join(atoms)

    def handle(self, conn: socket.socket) -> None:
        ch = _Channel(self, conn)
        if self.implicit:
            ch.start_tls(self.ctx)
        ch.send(f"* OK [CAPABILITY {self.capabilities(ch.tls)}] {self.behaviour.name} ready.")
        while (line := ch.read_line()) is not None:
            tag, _, rest = line.partition(" ")
            words = rest.split()
            if not tag or not tag.isprintable() or not words:
                ch.send("* BAD Error in IMAP command received by server.")
                continue
            verb = words[0].upper()
            if verb == "LOGOUT":
                ch.send("* BYE Logging out", f"{tag} OK Logout completed.")
                return
            self._command(ch, tag, verb, words[1:])

    def _command(self, ch: _Channel, tag: str, verb: str, args: list[str]) -> None:
        allowed = ch.tls or self.behaviour.login_before_tls
        if verb == "CAPABILITY" and not args:
            ch.send(f"* CAPABILITY {self.capabilities(ch.tls)}", f"{tag} OK Capability completed.")
        elif verb == "NOOP" and not args:
            ch.send(f"{tag} OK NOOP completed.")
        elif verb == "STARTTLS" and not args:
            if ch.tls:
                ch.send(f"{tag} BAD TLS is already active.")
            elif not self.behaviour.starttls:
                ch.send(f"{tag} BAD Unknown command.")
            else:
                ch.send(f"{tag} OK Begin TLS negotiation now.")
                ch.start_tls(self.ctx)
        elif verb == "LOGIN" and len(args) == 2:
            ch.send(f"{tag} {_IMAP_FAILED if allowed else _IMAP_PRIVACY}")
        elif verb == "AUTHENTICATE" and len(args) in (1, 2):
            self._authenticate(ch, tag, args, allowed=allowed)
        else:
            ch.send(f"{tag} BAD Error in IMAP command received by server.")

    def _authenticate(self, ch: _Channel, tag: str, args: list[str], *, allowed: bool) -> None:
        mechanism = args[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            ch.send(f"{tag} NO Unsupported authentication mechanism.")
            return
        if not allowed:
            ch.send(f"{tag} {_IMAP_PRIVACY}")
            return
        # PLAIN takes one response (or the initial one), LOGIN asks for user and password.
        prompts = ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] if mechanism == "LOGIN" else [""]
        if len(args) == 2:
            prompts = prompts[1:]
        for prompt in prompts:
            ch.send(f"+ {prompt}")
            answer = ch.read_line()
            if answer is None:
                return
            if answer == "*":
                ch.send(f"{tag} BAD Authentication aborted by client.")
                return
        ch.send(f"{tag} {_IMAP_FAILED}")


@dataclass(frozen=True)
class Pop3Behaviour:
    """Knobs of the POP3 server (Dovecot-like).

    ``user_before_tls``: USER/PASS and SASL PLAIN/LOGIN are offered and accepted before
    TLS, so a password can be sent in clear; otherwise they are only after TLS.
    """

    name: str = "mail.test"
    starttls: bool = True
    user_before_tls: bool = False


_POP3_PRIVACY = (
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)
_POP3_FAILED = "-ERR [AUTH] Authentication failed."


class Pop3Server(BaseServer):
    """A small, strict POP3 server in the AUTHORIZATION state: CAPA, STLS, USER, PASS,
    AUTH, QUIT (RFC 1939, 2449, 2595, 5034). No login ever succeeds. ``implicit``: POP3S
    (995)."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        behaviour: Pop3Behaviour = Pop3Behaviour(),
        ip: str = "127.0.0.1",
        *,
        port: int = 0,
        implicit: bool = False,
    ) -> None:
        super().__init__(ip, port=port)
        self.ctx = ctx
        self.behaviour = behaviour
        self.implicit = implicit

    def capabilities(self, tls: bool) -> list[str]:
        """The CAPA lines before or after TLS."""
        caps = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
        if self.behaviour.starttls and not tls:
            caps.append("STLS")
        if tls or self.behaviour.user_before_tls:
            caps += ["USER", "SASL PLAIN LOGIN"]
        return caps

    def handle(self, conn: socket.socket) -> None:
        ch = _Channel(self, conn)
        if self.implicit:
            ch.start_tls(self.ctx)
        ch.send(f"+OK {self.behaviour.name} ready.")
        user_given = False
        while (line := ch.read_line()) is not None:
            verb, _, rest = line.partition(" ")
            verb = verb.upper()
            args = rest.split()
            allowed = ch.tls or self.behaviour.user_before_tls
            if verb == "QUIT" and not args:
                ch.send("+OK Logging out.")
                return
            if verb == "CAPA" and not args:
                ch.send("+OK", *self.capabilities(ch.tls), ".")
            elif verb == "STLS" and not args and self.behaviour.starttls:
                if ch.tls:
                    ch.send("-ERR [IN-USE] TLS is already active.")
                else:
                    ch.send("+OK Begin TLS negotiation now.")
                    ch.start_tls(self.ctx)
            elif verb == "USER" and len(args) == 1:
                user_given = allowed
                ch.send("+OK" if allowed else _POP3_PRIVACY)
            elif verb == "PASS" and args:
                ch.send(_POP3_FAILED if user_given else "-ERR No username given.")
                user_given = False
            elif verb == "AUTH" and len(args) in (1, 2):
                self._authenticate(ch, args, allowed=allowed)
            else:
                ch.send("-ERR Unknown command.")

    def _authenticate(self, ch: _Channel, args: list[str], *, allowed: bool) -> None:
        mechanism = args[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            ch.send("-ERR Unsupported authentication mechanism.")
            return
        if not allowed:
            ch.send(_POP3_PRIVACY)
            return
        prompts = ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] if mechanism == "LOGIN" else [""]
        if len(args) == 2:
            prompts = prompts[1:]
        for prompt in prompts:
            ch.send(f"+ {prompt}")
            answer = ch.read_line()
            if answer is None:
                return
            if answer == "*":
                ch.send("-ERR Authentication aborted.")
                return
        ch.send(_POP3_FAILED)


@contextlib.contextmanager
def running(server: BaseServer) -> Iterator[BaseServer]:
    """Start ``server`` for the duration of a ``with`` block."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
