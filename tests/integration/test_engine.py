"""The endpoint scan against real OpenSSL servers (Python's ssl module on 127.x).

The expected answers come from an independent oracle: real OpenSSL client handshakes,
one per (version, suite), the way a careful human would check a server by hand.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from dataclasses import replace

import pytest
import uvloop

from scanner import ciphers
from scanner.engine import Scanner, ScanOptions
from scanner.models import EndpointResult, Target
from scanner.net import LocalLimiter
from scanner.services import service_named
from tests.integration.servers import (
    LEGACY,
    MODERN,
    OLD_ONLY,
    BaseServer,
    Pki,
    SmtpBehaviour,
    SmtpServer,
    TlsProfile,
    TlsServer,
    running,
)

_TLS_VERSIONS = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def openssl_accepts(ip: str, port: int, version: str, cipher: str | None = None) -> bool:
    """One real OpenSSL client handshake restricted to ``version`` (and ``cipher``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = _TLS_VERSIONS[version]
    ctx.set_ciphers(f"{cipher or 'ALL:COMPLEMENTOFALL'}:@SECLEVEL=0")
    try:
        with (
            socket.create_connection((ip, port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="tls.test") as tls,
        ):
            return tls.version() is not None
    except (ssl.SSLError, OSError):
        return False


def oracle_suites(ip: str, port: int, version: str) -> set[str]:
    """IANA names of the TLS ≤ 1.2 suites a server accepts, one handshake per suite."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    names = {c["name"] for c in probe.get_ciphers() if c["protocol"] != "TLSv1.3"}
    accepted = set()
    for name in sorted(names):
        if openssl_accepts(ip, port, version, name):
            suite = ciphers.by_name(name)
            assert suite is not None, f"OpenSSL suite {name} missing from our registry"
            accepted.add(suite.name)
    return accepted


def target(ip: str, port: int, service: str = "https", sni: str | None = "tls.test") -> Target:
    mode = service_named(service).tls_mode
    return Target(host=sni or ip, ip=ip, port=port, service=service, tls_mode=mode, sni=sni)


async def scan(t: Target, **options: object) -> EndpointResult:
    opts = replace(ScanOptions(timeout=5.0, backoff=0.05), **options)  # type: ignore[arg-type]
    return await Scanner(opts).scan(t)


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (MODERN, {"TLSv1.2", "TLSv1.3"}),
        (LEGACY, {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}),
        (OLD_ONLY, {"TLSv1.0", "TLSv1.1"}),
    ],
    ids=["modern", "legacy", "old-only"],
)
async def test_protocols_and_suites_match_openssl(
    pki: Pki, profile: TlsProfile, expected: set[str]
) -> None:
    # Given a real OpenSSL server configured by the profile
    with running(TlsServer(pki.server_context(profile), ip="127.0.30.1")) as server:
        # When we scan it
        res = await scan(target(server.ip, server.port), ca_file=pki.ca_file)
        seen_by_server = server.connections
        # Then protocols and suites are what per-suite OpenSSL handshakes find
        assert res.status == "ok", res.error
        assert {p for p, ok in res.protocols.items() if ok} == expected
        assert res.protocols["SSLv2"] is False
        assert res.protocols["SSLv3"] is False
        for version in sorted(expected - {"TLSv1.3"}):
            assert set(res.cipher_suites[version]) == oracle_suites(
                server.ip, server.port, version
            ), version
            assert len(res.cipher_suites[version]) == len(set(res.cipher_suites[version]))
        if "TLSv1.3" in expected:
            assert set(res.cipher_suites["TLSv1.3"]) == {
                "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_GCM_SHA256",
            }
        assert res.server_preference is True
        # Connections: the server saw exactly what we counted, within the budget
        # (TLS 1.3 group enumeration costs one more than the groups it finds).
        accepted = sum(len(v) for v in res.cipher_suites.values())
        groups = len(res.tls13_groups) + 1 if res.tls13_groups is not None else 0
        assert res.connections == seen_by_server
        assert res.connections <= accepted + 6 + 3 + groups
        # The quick sweep stays within accepted suites + versions + 3.
        quick = await scan(target(server.ip, server.port), certificate=False, groups=False)
        assert quick.connections <= accepted + 6 + 3
        assert quick.cipher_suites == res.cipher_suites
        assert res.certificate is not None
        assert res.certificate.status == "valid"
        assert res.certificate.trusted
        assert res.partial_errors == []


async def test_server_order_is_reported_in_server_preference_order(pki: Pki) -> None:
    # Given a server whose cipher string fixes a distinctive order
    profile = replace(
        MODERN,
        ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
        "ECDHE-RSA-AES256-GCM-SHA384",
    )
    with running(TlsServer(pki.server_context(profile), ip="127.0.30.2")) as server:
        res = await scan(target(server.ip, server.port), certificate=False, groups=False)
    assert res.cipher_suites["TLSv1.2"] == [
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ]
    assert res.server_preference is True


async def test_client_preference_server(pki: Pki) -> None:
    profile = replace(MODERN, server_preference=False)
    with running(TlsServer(pki.server_context(profile), ip="127.0.30.3")) as server:
        res = await scan(target(server.ip, server.port), certificate=False, groups=False)
    assert res.server_preference is False
    assert len(res.cipher_suites["TLSv1.2"]) >= 2


async def test_tls13_groups_via_hello_retry_request(pki: Pki) -> None:
    profile = replace(MODERN, ecdh_curve="secp384r1")
    with running(TlsServer(pki.server_context(profile), ip="127.0.30.4")) as server:
        res = await scan(target(server.ip, server.port), certificate=False)
    assert res.tls13_groups == ["secp384r1"]


async def test_default_groups_of_openssl3(pki: Pki) -> None:
    with running(TlsServer(pki.server_context(MODERN), ip="127.0.30.5")) as server:
        res = await scan(target(server.ip, server.port), certificate=False)
    assert res.tls13_groups is not None
    # OpenSSL 3.0's defaults; it has no ML-KEM, so the hybrid must not be reported.
    assert set(res.tls13_groups) == {
        "x25519", "secp256r1", "x448", "secp521r1", "secp384r1",
        "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192",
    }  # fmt: skip
    assert "X25519MLKEM768" not in res.tls13_groups


async def test_certificate_problems(pki: Pki) -> None:
    with running(TlsServer(pki.server_context(MODERN), ip="127.0.30.6")) as server:
        untrusted = await scan(target(server.ip, server.port), groups=False)
        wrong_name = await scan(
            target(server.ip, server.port, sni="other.test"), ca_file=pki.ca_file, groups=False
        )
    assert untrusted.certificate is not None
    assert untrusted.certificate.status == "untrusted"
    assert untrusted.certificate.verify_message
    assert wrong_name.certificate is not None
    assert wrong_name.certificate.status == "hostname_mismatch"
    assert wrong_name.certificate.trusted


@pytest.mark.parametrize(
    ("behaviour", "before", "plaintext"),
    [
        (SmtpBehaviour(), ("PLAIN", "LOGIN"), True),
        (SmtpBehaviour(auth_before_tls=None), (), False),
        (
            SmtpBehaviour(auth_before_tls="CRAM-MD5 SCRAM-SHA-256"),
            ("CRAM-MD5", "SCRAM-SHA-256"),
            False,
        ),
    ],
    ids=["auth-before-tls", "auth-after-tls-only", "challenge-response-only"],
)
async def test_smtp_starttls_auth_facts(
    pki: Pki, behaviour: SmtpBehaviour, before: tuple[str, ...], plaintext: bool
) -> None:
    ctx = pki.server_context(replace(LEGACY, hostnames=("mail.test",)))
    with running(SmtpServer(ctx, behaviour, ip="127.0.30.7")) as server:
        res = await scan(
            target(server.ip, server.port, "submission", sni="mail.test"), ca_file=pki.ca_file
        )
    assert res.status == "ok", res.error
    assert res.protocols["TLSv1.0"] is True
    assert res.starttls is not None
    assert res.starttls.offered
    assert res.starttls.injection_vulnerable is False
    assert res.auth is not None
    assert res.auth.before_tls == before
    assert res.auth.after_tls == ("PLAIN", "LOGIN")
    assert res.auth.plaintext_before_tls is plaintext
    assert res.certificate is not None
    assert res.certificate.status == "valid"
    assert res.connections == server.connections


async def test_smtp_without_starttls_is_an_error_with_facts(pki: Pki) -> None:
    behaviour = SmtpBehaviour(starttls=False, auth_before_tls="PLAIN LOGIN")
    with running(SmtpServer(pki.server_context(MODERN), behaviour, ip="127.0.30.8")) as server:
        res = await scan(target(server.ip, server.port, "smtp", sni="mail.test"))
    assert res.status == "error"
    assert res.error is not None
    assert res.error.kind == "starttls_not_offered"
    assert res.starttls is not None
    assert res.starttls.offered is False
    assert res.auth is not None
    assert res.auth.plaintext_before_tls is True
    assert all(v is None for v in res.protocols.values())
    assert res.connections == 1


@pytest.mark.parametrize(
    ("reply", "outcome", "plaintext"),
    [
        ("538 5.7.11 Encryption required for the requested mechanism\r\n", "refused", False),
        ("535 5.7.8 Authentication credentials invalid\r\n", "accepted", True),
    ],
)
async def test_active_auth_check(pki: Pki, reply: str, outcome: str, plaintext: bool) -> None:
    behaviour = SmtpBehaviour(auth_reply_before_tls=reply)
    with running(SmtpServer(pki.server_context(MODERN), behaviour, ip="127.0.30.9")) as server:
        res = await scan(
            target(server.ip, server.port, "submission", sni="mail.test"),
            auth_check=True,
            certificate=False,
        )
    assert res.auth is not None
    assert res.auth.active_check == outcome
    assert res.auth.plaintext_before_tls is plaintext


async def test_refused_port_is_a_refused_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.30.10", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    res = await scan(target("127.0.30.10", port))
    assert res.status == "error"
    assert res.error is not None
    assert res.error.kind == "refused"
    assert res.error.phase == "connect"
    assert res.connections == 1


async def test_per_ip_limit_holds_on_the_server_side(pki: Pki) -> None:
    with running(TlsServer(pki.server_context(LEGACY), ip="127.0.30.11")) as server:
        scanner = Scanner(
            ScanOptions(timeout=5.0, certificate=False), limiter=LocalLimiter(per_ip=2)
        )
        results = [r async for r in scanner.scan_many([target(server.ip, server.port)] * 3)]
    assert [r.status for r in results] == ["ok"] * 3
    assert server.max_open <= 2
    assert server.connections == sum(r.connections for r in results)


def test_same_results_on_asyncio_and_uvloop(pki: Pki) -> None:
    """The CLI runs on uvloop when it is installed: it must see exactly what asyncio sees."""
    smtp_ctx = pki.server_context(replace(LEGACY, hostnames=("mail.test",)))
    with (
        running(TlsServer(pki.server_context(LEGACY), ip="127.0.30.12")) as tls,
        running(SmtpServer(smtp_ctx, SmtpBehaviour(), ip="127.0.30.13")) as smtp,
    ):
        targets = [
            target(tls.ip, tls.port),
            target(smtp.ip, smtp.port, "submission", sni="mail.test"),
            target(tls.ip, tls.port, sni="expired.test"),
        ]

        async def scan_all() -> list[EndpointResult]:
            scanner = Scanner(ScanOptions(timeout=5.0, ca_file=pki.ca_file))
            return [await scanner.scan(t) for t in targets]

        on_asyncio = asyncio.run(scan_all())
        on_uvloop = uvloop.run(scan_all())
    for a, b in zip(on_asyncio, on_uvloop, strict=True):
        assert a.status == b.status == "ok"
        assert a.protocols == b.protocols
        assert a.cipher_suites == b.cipher_suites
        assert a.tls13_groups == b.tls13_groups
        assert a.auth == b.auth
        assert a.starttls == b.starttls
        assert a.certificate is not None
        assert b.certificate is not None
        assert a.certificate.status == b.certificate.status
        assert a.partial_errors == b.partial_errors == []


class ChokingServer(BaseServer):
    """Real OpenSSL behind a middlebox that hangs up on ClientHello records over a size."""

    def __init__(self, ctx: ssl.SSLContext, ip: str, limit: int) -> None:
        super().__init__(ip)
        self.ctx = ctx
        self.limit = limit

    def handle(self, conn: socket.socket) -> None:
        header = conn.recv(5, socket.MSG_WAITALL)
        if len(header) < 5 or 5 + int.from_bytes(header[3:5], "big") > self.limit:
            return  # silent hang-up, no alert
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(header)
        while True:
            try:
                tls.do_handshake()
                conn.sendall(outgoing.read())
                conn.recv(1024)
                return
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    conn.sendall(outgoing.read())
                data = conn.recv(16384)
                if not data:
                    return
                incoming.write(data)


@pytest.mark.parametrize("tls13", [False, True], ids=["tls12-only", "with-tls13"])
async def test_server_that_chokes_on_long_hellos_is_scanned_in_halves(
    pki: Pki, tls13: bool
) -> None:
    # Given a server that silently drops hellos of more than 800 bytes (ours for TLS 1.2
    # offer every suite: about 1100 bytes), while a shorter TLS 1.3 hello gets through
    profile = replace(
        LEGACY,
        max_version=ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2,
        min_version=ssl.TLSVersion.TLSv1_2,
    )
    server = ChokingServer(pki.server_context(profile), ip="127.0.30.14", limit=800)
    with running(server):
        res = await scan(target(server.ip, server.port), certificate=False, groups=False)
        direct = oracle_suites(server.ip, server.port, "TLSv1.2")
    # Then TLS 1.2 is found, with the same suites a per-suite OpenSSL check finds
    assert res.protocols["TLSv1.2"] is True
    assert res.protocols["TLSv1.3"] is tls13
    assert set(res.cipher_suites["TLSv1.2"]) == direct
