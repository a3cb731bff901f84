"""The demo's mail servers (:mod:`fleet.demo.servers`): what the real scanner sees on
each configuration, and their strictness in a raw dialogue."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.demo.pki import DemoCA
from fleet.demo.servers import (
    MAX_LINE,
    BaseServer,
    ImapBehaviour,
    ImapServer,
    Pop3Behaviour,
    Pop3Server,
    SmtpBehaviour,
    SmtpServer,
    running,
)
from scanner.engine import Scanner, ScanOptions
from scanner.models import EndpointResult, Target
from scanner.services import service_named

NAME = "mail.demo.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DemoCA:
    return DemoCA(tmp_path_factory.mktemp("demo-ca"))


@pytest.fixture(scope="module")
def server_ctx(ca: DemoCA) -> ssl.SSLContext:
    cert = ca.issue(NAME)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx


@pytest.fixture
def client_ctx(ca: DemoCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.ca_file))


async def scan(server: BaseServer, service: str, ca: DemoCA) -> EndpointResult:
    """Scan ``server`` with the real scanner, the login check included."""
    target = Target(NAME, server.ip, server.port, service, service_named(service).tls_mode, NAME)
    options = ScanOptions(timeout=3, greeting_timeout=3, ca_file=str(ca.ca_file), auth_check=True)
    return await Scanner(options).scan(target)


Make = Callable[[ssl.SSLContext], BaseServer]

_CASES: list[tuple[str, Make, str, bool, bool | None, str | None]] = [
    # (case, server, service, plaintext before TLS, STARTTLS offered, login check's verdict)
    # The login check only tries where a password mechanism is advertised in clear.
    ("imap strict", lambda c: ImapServer(c, ImapBehaviour(NAME)), "imap", False, True, None),
    (
        "imap login before TLS",
        lambda c: ImapServer(c, ImapBehaviour(NAME, login_before_tls=True)),
        "imap",
        True,
        True,
        "accepted",
    ),
    (
        "imap without STARTTLS",
        lambda c: ImapServer(c, ImapBehaviour(NAME, starttls=False, login_before_tls=True)),
        "imap",
        True,
        False,
        None,
    ),
    (
        "imaps",
        lambda c: ImapServer(c, ImapBehaviour(NAME), implicit=True),
        "imaps",
        False,
        None,
        None,
    ),
    ("pop3 strict", lambda c: Pop3Server(c, Pop3Behaviour(NAME)), "pop3", False, True, None),
    (
        "pop3 USER before TLS",
        lambda c: Pop3Server(c, Pop3Behaviour(NAME, user_before_tls=True)),
        "pop3",
        True,
        True,
        "accepted",
    ),
    (
        "pop3 without STLS",
        lambda c: Pop3Server(c, Pop3Behaviour(NAME, starttls=False, user_before_tls=True)),
        "pop3",
        True,
        False,
        None,
    ),
    (
        "pop3s",
        lambda c: Pop3Server(c, Pop3Behaviour(NAME), implicit=True),
        "pop3s",
        False,
        None,
        None,
    ),
    (
        "submission strict",
        lambda c: SmtpServer(c, SmtpBehaviour(auth_before_tls=None)),
        "submission",
        False,
        True,
        None,
    ),
    (
        "submissions",
        lambda c: SmtpServer(c, SmtpBehaviour(auth_before_tls=None), implicit=True),
        "submissions",
        False,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("make", "service", "plaintext", "offered", "verdict"),
    [pytest.param(*case[1:], id=case[0]) for case in _CASES],
)
async def test_the_scanner_sees_each_configuration(
    ca: DemoCA,
    server_ctx: ssl.SSLContext,
    make: Make,
    service: str,
    plaintext: bool,
    offered: bool | None,
    verdict: str | None,
) -> None:
    with running(make(server_ctx)) as server:
        result = await scan(server, service, ca)
    assert result.auth is not None
    assert result.auth.plaintext_before_tls is plaintext
    assert result.auth.active_check == verdict
    if offered is None:  # implicit TLS: no STARTTLS to offer
        assert result.starttls is None
    else:
        assert result.starttls is not None
        assert result.starttls.offered is offered
    if offered is False:
        assert result.error is not None
        assert result.error.kind == "starttls_not_offered"
        return
    assert result.status == "ok", result.error
    assert {v for v, on in result.protocols.items() if on} == {"TLSv1.2", "TLSv1.3"}
    assert result.certificate is not None
    assert result.certificate.status == "valid"
    assert {"PLAIN", "LOGIN"} <= set(result.auth.after_tls)
    if result.starttls is not None:  # input pipelined behind STARTTLS is dropped
        assert result.starttls.injection_vulnerable is False


class Dialogue:
    """A client speaking lines to a server, upgradable to TLS."""

    def __init__(self, server: BaseServer) -> None:
        self.sock: socket.socket = socket.create_connection((server.ip, server.port), timeout=5)
        self.reader = self.sock.makefile("rb")

    def line(self) -> str:
        return self.reader.readline().decode().rstrip("\r\n")

    def say(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def ask(self, line: str) -> str:
        self.say(line)
        return self.line()

    def start_tls(self, ctx: ssl.SSLContext) -> None:
        self.reader.close()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=NAME)
        self.reader = self.sock.makefile("rb")

    def until_dot(self) -> list[str]:
        """The lines of a POP3 multi-line reply up to its "." (at most 50)."""
        lines: list[str] = []
        while (line := self.line()) != "." and len(lines) < 50:
            lines.append(line)
        return lines

    def closed(self) -> bool:
        return self.reader.readline() == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def imap(server_ctx: ssl.SSLContext) -> Iterator[Dialogue]:
    with running(ImapServer(server_ctx, ImapBehaviour(NAME))) as server:
        talk = Dialogue(server)
        try:
            yield talk
        finally:
            talk.close()


@pytest.fixture
def pop3(server_ctx: ssl.SSLContext) -> Iterator[Dialogue]:
    with running(Pop3Server(server_ctx, Pop3Behaviour(NAME))) as server:
        talk = Dialogue(server)
        try:
            yield talk
        finally:
            talk.close()


def test_imap_refuses_passwords_until_tls(imap: Dialogue, client_ctx: ssl.SSLContext) -> None:
    greeting = imap.line()
    assert greeting.startswith("* OK [CAPABILITY IMAP4rev1")
    assert "LOGINDISABLED" in greeting
    assert "STARTTLS" in greeting
    assert "AUTH=PLAIN" not in greeting
    assert imap.ask('a1 LOGIN "u" "p"').startswith("a1 NO [PRIVACYREQUIRED]")
    assert imap.ask("a2 AUTHENTICATE PLAIN").startswith("a2 NO [PRIVACYREQUIRED]")
    assert imap.ask("a3 FETCH 1 BODY[]") == "a3 BAD Error in IMAP command received by server."
    assert imap.ask("nonsense") == "* BAD Error in IMAP command received by server."
    # Given STARTTLS with a command pipelined behind it
    imap.say("a4 STARTTLS", "a5 NOOP")
    assert imap.line() == "a4 OK Begin TLS negotiation now."
    imap.start_tls(client_ctx)
    # Then the pipelined command was dropped: the first answer over TLS is a6's
    assert imap.ask("a6 NOOP") == "a6 OK NOOP completed."
    assert imap.ask("a7 CAPABILITY").startswith("* CAPABILITY IMAP4rev1")
    assert imap.line() == "a7 OK Capability completed."
    assert imap.ask("a8 STARTTLS") == "a8 BAD TLS is already active."
    assert imap.ask("a9 AUTHENTICATE PLAIN") == "+ "
    assert imap.ask("*") == "a9 BAD Authentication aborted by client."
    assert imap.ask('b1 LOGIN "u" "p"') == "b1 NO [AUTHENTICATIONFAILED] Authentication failed."
    assert imap.ask("b2 LOGOUT") == "* BYE Logging out"
    assert imap.line() == "b2 OK Logout completed."
    assert imap.closed()


def test_pop3_refuses_passwords_until_tls(pop3: Dialogue, client_ctx: ssl.SSLContext) -> None:
    assert pop3.line() == f"+OK {NAME} ready."
    assert pop3.ask("CAPA") == "+OK"
    capa = pop3.until_dot()
    assert "STLS" in capa
    assert "USER" not in capa
    assert pop3.ask("USER someone").startswith("-ERR [AUTH] Plaintext authentication disallowed")
    assert pop3.ask("PASS secret") == "-ERR No username given."
    assert pop3.ask("AUTH PLAIN").startswith("-ERR [AUTH] Plaintext authentication disallowed")
    assert pop3.ask("NOOP") == "-ERR Unknown command."  # not in the AUTHORIZATION state
    pop3.say("STLS", "XPIPELINED")
    assert pop3.line() == "+OK Begin TLS negotiation now."
    pop3.start_tls(client_ctx)
    assert pop3.ask("CAPA") == "+OK"  # the pipelined command was dropped
    assert "USER" in pop3.until_dot()
    assert pop3.ask("USER someone") == "+OK"
    assert pop3.ask("PASS secret") == "-ERR [AUTH] Authentication failed."
    assert pop3.ask("QUIT") == "+OK Logging out."
    assert pop3.closed()


def test_an_overlong_line_ends_the_session(pop3: Dialogue) -> None:
    pop3.line()
    pop3.say("USER " + "x" * MAX_LINE)
    assert pop3.closed()


def test_a_port_in_use_raises_at_construction(server_ctx: ssl.SSLContext) -> None:
    with (
        running(Pop3Server(server_ctx, ip="127.0.0.1")) as first,
        pytest.raises(OSError, match="in use"),
    ):
        Pop3Server(server_ctx, ip="127.0.0.1", port=first.port)
    # A server that never started stops at once
    Pop3Server(server_ctx, ip="127.0.0.1").stop()


def test_demo_ca_issues_multi_name_and_rsa_certificates(ca: DemoCA, tmp_path: Path) -> None:
    cert = ca.issue("web.demo.test", also=["a.demo.test", "b.demo.test"], rsa_key=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    text = cert.cert_file.read_text()
    assert text.count("BEGIN CERTIFICATE") == 2  # leaf and CA
    assert cert.cert_file.parent == ca.directory != tmp_path
    again = ca.issue("web.demo.test")
    assert again.cert_file != cert.cert_file  # every certificate gets its own files
