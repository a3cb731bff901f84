"""The endpoint scan against canned-bytes servers for what OpenSSL 3 cannot serve.

SSLv2, SSLv3, RC4, 3DES and export suites, X25519MLKEM768 and other TLS 1.3 groups,
ServerHellos split into 1-byte records or dribbled byte by byte. The fakes answer the way
a real stack with the configured versions, suites and groups would, so the expected
result of each scan follows from the server's configuration alone. Every fake also
checks the scanner's hellos with its own parser (``problems`` must stay empty).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from scanner.engine import ScanOptions
from scanner.models import PROTOCOLS, EndpointResult
from tests.integration.fakes import (
    HRR_RANDOM,
    ClientHello,
    FakeLegacyServer,
    FakeServer,
    FakeSmtpServer,
    FakeSslv2Server,
    FakeTls13Server,
    FragmentingServer,
    Launcher,
    LegacyStack,
    MalformedHello,
    ModernStack,
    Refusal,
    Stack,
    Wire,
    assert_sane,
    no_new_threads,
    read_client_hello,
    scan,
)

# Quick-sweep options for fakes: no full handshake (a fake cannot finish one), no groups.
QUICK = ScanOptions(
    timeout=2.0,
    connect_timeout=2.0,
    greeting_timeout=2.0,
    groups=False,
    certificate=False,
    injection_check=False,
    backoff=0.05,
)
WITH_GROUPS = replace(QUICK, groups=True)

# IANA names, written out here rather than looked up in the registry under test.
RC4_SHA = (0x0005, "TLS_RSA_WITH_RC4_128_SHA")
RC4_MD5 = (0x0004, "TLS_RSA_WITH_RC4_128_MD5")
DES_CBC3_SHA = (0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA")
EXP_RC4_MD5 = (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5")
EXP_DES40 = (0x0008, "TLS_RSA_EXPORT_WITH_DES40_CBC_SHA")
EDH_DES_CBC3 = (0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA")
AES128_SHA = (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA")
ECDHE_AES128_GCM = (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
ECDHE_AES256_GCM = (0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
ECDHE_CHACHA = (0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256")
AES128_GCM_13 = (0x1301, "TLS_AES_128_GCM_SHA256")
AES256_GCM_13 = (0x1302, "TLS_AES_256_GCM_SHA384")
CHACHA_13 = (0x1303, "TLS_CHACHA20_POLY1305_SHA256")

SSL_CK_DES_192_EDE3 = (0x0700C0, "SSL_CK_DES_192_EDE3_CBC_WITH_MD5")
SSL_CK_RC4_128 = (0x010080, "SSL_CK_RC4_128_WITH_MD5")
SSL_CK_RC4_EXPORT40 = (0x020080, "SSL_CK_RC4_128_EXPORT40_WITH_MD5")

X25519, SECP256R1, SECP384R1, FFDHE2048 = 29, 23, 24, 256
X25519MLKEM768, MLKEM768 = 0x11EC, 0x0201

Suite = tuple[int, str]


def codes(suites: list[Suite]) -> list[int]:
    return [code for code, _ in suites]


def names(suites: list[Suite]) -> list[str]:
    return [name for _, name in suites]


def only(*versions: str) -> dict[str, bool]:
    return {p: p in versions for p in PROTOCOLS}


@pytest.fixture
def serve() -> Iterator[Launcher]:
    """Start servers for this test; all are stopped, and their threads gone, after it."""
    with no_new_threads(), Launcher() as launcher:
        yield launcher


def assert_clean(server: FakeServer, result: EndpointResult, *, bound_extra: int = 0) -> None:
    """Hellos well-formed, connections counted alike on both ends and within budget.

    The budget is the design's: accepted suites + versions probed + 3 (plus
    ``bound_extra`` for the TLS 1.3 group enumeration, which the quick sweep skips).
    """
    assert_sane(result)
    assert server.problems == []
    for hello in server.hellos:
        if isinstance(hello, ClientHello) and hello.legacy_version > 0x0300:
            assert hello.server_name == "fake.test"
    assert server.connections == result.connections
    accepted = sum(len(v) for v in result.cipher_suites.values())
    assert result.connections <= accepted + len(PROTOCOLS) + 3 + bound_extra


# -- SSLv3 and TLS 1.0 with RC4, 3DES and export suites ------------------------------

LEGACY_SUITES = [DES_CBC3_SHA, RC4_SHA, RC4_MD5, EXP_RC4_MD5]


async def test_sslv3_and_tls10_suites_in_server_order(serve: Launcher) -> None:
    # Given an SSLv3 + TLS 1.0 server that enforces this order (3DES before RC4, unlike
    # any client's order)
    server = serve(FakeLegacyServer({"SSLv3", "TLSv1.0"}, codes(LEGACY_SUITES), ip="127.0.20.1"))
    # When it is scanned
    result = await scan(server, QUICK)
    # Then both versions are found with every suite, by IANA name, in the server's order
    assert result.status == "ok"
    assert result.partial_errors == []
    assert result.protocols == only("SSLv3", "TLSv1.0")
    assert result.cipher_suites == {
        "SSLv3": names(LEGACY_SUITES),
        "TLSv1.0": names(LEGACY_SUITES),
    }
    assert result.server_preference is True
    assert_clean(server, result)


async def test_client_order_server_detected(serve: Launcher) -> None:
    server = serve(
        FakeLegacyServer(
            {"SSLv3", "TLSv1.0"},
            codes(LEGACY_SUITES),
            server_preference=False,
            ip="127.0.20.2",
        )
    )
    result = await scan(server, QUICK)
    assert result.status == "ok"
    assert result.protocols == only("SSLv3", "TLSv1.0")
    # In client order the list follows the scanner's offer, so only the set is the server's.
    assert sorted(result.cipher_suites["SSLv3"]) == sorted(names(LEGACY_SUITES))
    assert sorted(result.cipher_suites["TLSv1.0"]) == sorted(names(LEGACY_SUITES))
    assert result.server_preference is False
    assert_clean(server, result)


async def test_legacy_server_up_to_tls12_with_export_and_dhe_suites(serve: Launcher) -> None:
    # Given TLS 1.0–1.2 with suites from three eras; the server's order puts export first
    suites = [EXP_DES40, EDH_DES_CBC3, AES128_SHA, ECDHE_AES128_GCM]
    server = serve(
        FakeLegacyServer({"TLSv1.0", "TLSv1.1", "TLSv1.2"}, codes(suites), ip="127.0.20.3")
    )
    result = await scan(server, QUICK)
    assert result.status == "ok"
    assert result.protocols == only("TLSv1.0", "TLSv1.1", "TLSv1.2")
    # The fake applies one list to every version; the scanner offers each suite only
    # where it can be negotiated, so AES-GCM (TLS 1.2 and up) is missing from 1.0/1.1.
    assert result.cipher_suites["TLSv1.2"] == names(suites)
    assert result.cipher_suites["TLSv1.1"] == names(suites[:3])
    assert result.cipher_suites["TLSv1.0"] == names(suites[:3])
    assert result.server_preference is True
    assert_clean(server, result)


async def test_hello_versions_and_suites_offered(serve: Launcher) -> None:
    """The scanner's hellos, seen from the server: one per version, every version's suites."""
    server = serve(FakeLegacyServer({"TLSv1.0"}, [RC4_SHA[0]], ip="127.0.20.4"))
    result = await scan(server, replace(QUICK, ciphers=False))
    assert result.protocols == only("TLSv1.0")
    assert result.cipher_suites == {"TLSv1.0": [RC4_SHA[1]]}
    tls = [h for h in server.hellos if isinstance(h, ClientHello)]
    versions = sorted(h.supported_versions or (h.legacy_version,) for h in tls)
    assert versions == [(0x0300,), (0x0301,), (0x0302,), (0x0303,), (0x0304,)]
    for hello in tls:
        assert RC4_SHA[0] in hello.cipher_suites or hello.supported_versions == (0x0304,)
    assert_clean(server, result)


# -- SSLv2 -----------------------------------------------------------------------------

SSLV2_SPECS = [SSL_CK_DES_192_EDE3, SSL_CK_RC4_128, SSL_CK_RC4_EXPORT40]


async def test_sslv2_detected_with_its_cipher_specs(serve: Launcher) -> None:
    server = serve(FakeSslv2Server(codes(SSLV2_SPECS), ip="127.0.20.5"))
    result = await scan(server, QUICK)
    assert result.status == "ok"
    assert result.protocols == only("SSLv2")
    assert result.cipher_suites == {"SSLv2": names(SSLV2_SPECS)}
    assert_clean(server, result)


async def test_sslv2_beside_sslv3_like_openssl_098(serve: Launcher) -> None:
    server = serve(
        FakeSslv2Server(
            codes(SSLV2_SPECS), also={"SSLv3"}, suites=codes([RC4_MD5]), ip="127.0.20.6"
        )
    )
    result = await scan(server, QUICK)
    assert result.status == "ok"
    assert result.protocols == only("SSLv2", "SSLv3")
    assert result.cipher_suites == {"SSLv2": names(SSLV2_SPECS), "SSLv3": names([RC4_MD5])}
    assert_clean(server, result)


# -- TLS 1.3 groups through HelloRetryRequest ----------------------------------------


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (
            [X25519, X25519MLKEM768, SECP384R1, SECP256R1],
            ["x25519", "X25519MLKEM768", "secp384r1", "secp256r1"],
        ),
        ([X25519MLKEM768, X25519], ["X25519MLKEM768", "x25519"]),
        (
            [MLKEM768, X25519MLKEM768, FFDHE2048, X25519],
            ["MLKEM768", "X25519MLKEM768", "ffdhe2048", "x25519"],
        ),
    ],
    ids=["x25519-first", "pq-first", "pure-mlkem-and-ffdhe"],
)
async def test_tls13_groups_in_server_order(
    serve: Launcher, groups: list[int], expected: list[str]
) -> None:
    tls13 = [AES256_GCM_13, AES128_GCM_13, CHACHA_13]
    tls12 = [ECDHE_AES256_GCM, ECDHE_AES128_GCM]
    server = serve(
        FakeTls13Server(
            groups, tls13_suites=codes(tls13), tls12_suites=codes(tls12), ip="127.0.20.7"
        )
    )
    result = await scan(server, WITH_GROUPS)
    assert result.status == "ok"
    assert result.partial_errors == []
    assert result.protocols == only("TLSv1.2", "TLSv1.3")
    assert result.cipher_suites == {"TLSv1.2": names(tls12), "TLSv1.3": names(tls13)}
    assert result.server_preference is True
    assert result.tls13_groups == expected
    # One HelloRetryRequest per group, and one more hello that finds no group left.
    assert_clean(server, result, bound_extra=len(expected) + 1)
    hrr_probes = [
        h
        for h in server.hellos
        if isinstance(h, ClientHello) and h.supported_versions == (0x0304,) and not h.key_shares
    ]
    assert len(hrr_probes) == len(expected) + 1


async def test_tls13_only_server_in_client_order(serve: Launcher) -> None:
    tls13 = [CHACHA_13, AES128_GCM_13]
    server = serve(
        FakeTls13Server(
            [X25519],
            versions={"TLSv1.3"},
            tls13_suites=codes(tls13),
            server_preference=False,
            ip="127.0.20.8",
        )
    )
    result = await scan(server, WITH_GROUPS)
    assert result.status == "ok"
    assert result.protocols == only("TLSv1.3")
    assert sorted(result.cipher_suites["TLSv1.3"]) == sorted(names(tls13))
    assert result.server_preference is False
    assert result.tls13_groups == ["x25519"]
    assert_clean(server, result, bound_extra=2)


async def test_tls13_server_without_x25519_answers_with_hrr(serve: Launcher) -> None:
    # Given a TLS 1.3 server that only has NIST curves (FIPS-style): our x25519 key share
    # is of no use to it, so it asks for secp256r1 in a HelloRetryRequest, which is a
    # TLS 1.3 answer naming its suite
    server = serve(FakeTls13Server([SECP256R1, SECP384R1], ip="127.0.20.9"))
    # When it is scanned
    result = await scan(server, WITH_GROUPS)
    # Then TLS 1.3, its suites (each seen in an HRR) and its groups are all found
    assert result.status == "ok"
    assert result.protocols == only("TLSv1.2", "TLSv1.3")
    assert result.cipher_suites["TLSv1.3"] == names([AES256_GCM_13, AES128_GCM_13, CHACHA_13])
    assert result.tls13_groups == ["secp256r1", "secp384r1"]
    assert_clean(server, result, bound_extra=3)


# -- fragmented and dribbled answers ------------------------------------------------

MODERN = ModernStack(groups=(X25519MLKEM768, X25519))
LEGACY_FLIGHT = LegacyStack(
    versions=frozenset({"SSLv3", "TLSv1.0"}), suites=(RC4_SHA[0], DES_CBC3_SHA[0])
)


@pytest.mark.parametrize(
    ("stack", "record_size", "byte_delay", "options", "versions"),
    [
        # Every ServerHello, HRR and certificate flight in 1-byte records, full scan.
        (MODERN, 1, 0.0, WITH_GROUPS, ("TLSv1.2", "TLSv1.3")),
        (LEGACY_FLIGHT, 1, 0.0, QUICK, ("SSLv3", "TLSv1.0")),
        # Whole records, but one byte per TCP segment with sleeps between.
        (
            MODERN,
            1 << 14,
            0.001,
            replace(QUICK, protocols=("TLSv1.2", "TLSv1.3")),
            ("TLSv1.2", "TLSv1.3"),
        ),
        # Both at once: 1-byte records dribbled byte by byte.
        (
            MODERN,
            1,
            0.0005,
            replace(QUICK, protocols=("TLSv1.3",), ciphers=False),
            ("TLSv1.3",),
        ),
    ],
    ids=["records-modern", "records-legacy", "dribble", "records-dribbled"],
)
async def test_fragmented_answers_are_reassembled(
    serve: Launcher,
    stack: Stack,
    record_size: int,
    byte_delay: float,
    options: ScanOptions,
    versions: tuple[str, ...],
) -> None:
    # Given the same stack, once answering in one piece and once in fragments
    whole = serve(FragmentingServer(stack, record_size=1 << 14, ip="127.0.20.10"))
    split = serve(
        FragmentingServer(stack, record_size=record_size, byte_delay=byte_delay, ip="127.0.20.11")
    )
    # When both are scanned
    expected = await scan(whole, options)
    result = await scan(split, options)
    # Then the fragments make no difference
    assert expected.status == "ok"
    assert {v for v, ok in expected.protocols.items() if ok} == set(versions)
    if options.groups:
        assert expected.tls13_groups == ["X25519MLKEM768", "x25519"]
    assert result.status == "ok"
    assert result.partial_errors == []
    assert result.protocols == expected.protocols
    assert result.cipher_suites == expected.cipher_suites
    assert result.tls13_groups == expected.tls13_groups
    assert result.connections == expected.connections
    assert_clean(split, result, bound_extra=5 if options.groups else 0)


# -- connection budget -----------------------------------------------------------------


def legacy() -> FakeServer:
    return FakeLegacyServer({"SSLv3", "TLSv1.0"}, codes(LEGACY_SUITES), ip="127.0.20.12")


def legacy_closing() -> FakeServer:
    # Hangs up on the SSLv3 hello instead of alerting.
    return FakeLegacyServer({"TLSv1.0"}, codes(LEGACY_SUITES), refusal="close", ip="127.0.20.12")


def tls13() -> FakeServer:
    return FakeTls13Server([X25519], ip="127.0.20.12")


def sslv2() -> FakeServer:
    return FakeSslv2Server(codes(SSLV2_SPECS), also={"SSLv3"}, ip="127.0.20.12")


def smtp() -> FakeServer:
    return FakeSmtpServer(ip="127.0.20.12")


@pytest.mark.parametrize("make", [legacy, legacy_closing, tls13, sslv2, smtp])
async def test_connections_within_budget(serve: Launcher, make: Callable[[], FakeServer]) -> None:
    server = serve(make())
    service = "smtp" if isinstance(server, FakeSmtpServer) else "https"
    result = await scan(server, QUICK, service=service)
    assert result.status == "ok"
    assert any(result.protocols.values())
    assert_clean(server, result)


@pytest.mark.parametrize("refusal", ["close", "reset"])
async def test_budget_when_old_versions_are_refused_by_hanging_up(
    serve: Launcher, refusal: Refusal
) -> None:
    # Given a TLS 1.2/1.3 server that hangs up on SSLv3, TLS 1.0 and TLS 1.1 hellos
    # instead of alerting (SChannel with those versions disabled resets, for one)
    server = serve(FakeTls13Server([X25519], refusal=refusal, ip="127.0.20.13"))
    # When it is scanned
    result = await scan(server, QUICK)
    # Then each hang-up costs one connection, like an alert, not a retry in halves
    assert result.protocols == only("TLSv1.2", "TLSv1.3")
    assert_clean(server, result)


# -- the fakes themselves --------------------------------------------------------------


def test_hrr_random_is_rfc_8446s() -> None:
    assert hashlib.sha256(b"HelloRetryRequest").digest() == HRR_RANDOM


def _hello_record(extensions: bytes, *, suites: bytes = b"\x00\x2f") -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + len(suites).to_bytes(2, "big") + suites
    body += b"\x01\x00" + len(extensions).to_bytes(2, "big") + extensions
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


@pytest.mark.parametrize(
    ("record", "complaint"),
    [
        (_hello_record(b"\x00\x17\x00\x00" * 2), "twice"),
        (_hello_record(b"\x00\x15\x00\xf0" + bytes(240)), "RFC 7685"),
        (_hello_record(b"\x00\x33\x00\x06\x00\x04\x00\x1d\x00\x00"), "empty key share"),
        (_hello_record(b"", suites=b"\x00\x2f\x00\x2f"), "repeating"),
    ],
    ids=["duplicate-extension", "unpadded", "empty-key-share", "repeated-suite"],
)
def test_fake_parser_rejects_what_the_codec_must_not_send(record: bytes, complaint: str) -> None:
    """So that ``problems == []`` in the scans above means something."""
    client, server = socket.socketpair()
    with client, server:
        client.sendall(record)
        with pytest.raises(MalformedHello, match=complaint):
            read_client_hello(Wire(server))
