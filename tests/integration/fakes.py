"""Fake and hostile servers: canned bytes for what the local OpenSSL cannot serve.

Debian 12's OpenSSL 3 has no SSLv2, SSLv3, RC4, 3DES, export suites or post-quantum
groups, and a real stack never misbehaves on purpose. The servers here read the
scanner's ClientHello with a parser of their own (never ``scanner.hello.codec``, so the
codec is checked from outside rather than against itself), answer the way a stack with
the configured versions, suites and groups would — a ServerHello, a HelloRetryRequest or
a fatal alert — and hang up. The hostile ones tarpit, babble, reset, flood or turn the
scanner away instead.

Every server is a :class:`tests.integration.servers.BaseServer`: one thread per
connection, ``connections`` and ``max_open`` counted server-side, and ``stop()`` joins
every thread. Waits use the server's stop event, so stopping never sits out a sleep.
Hellos the parser rejects are kept in ``problems``; tests assert it stays empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, TypeVar

from scanner.engine import Scanner, ScanOptions
from scanner.errors import ERROR_KINDS
from scanner.models import PROTOCOLS, EndpointResult, Target
from scanner.net import ConnectionLimiter
from scanner.services import TlsMode
from tests.integration.servers import BaseServer

__all__ = [
    "ALWAYS",
    "FAKE_CERTIFICATE",
    "HRR_RANDOM",
    "VERSIONS",
    "AlertServer",
    "Answer",
    "ClientHello",
    "FakeLegacyServer",
    "FakeServer",
    "FakeSmtpServer",
    "FakeSslv2Server",
    "FakeTls13Server",
    "FakeTlsServer",
    "FloodServer",
    "FragmentingServer",
    "GarbageServer",
    "Gauge",
    "HelloRequestServer",
    "Launcher",
    "LegacyStack",
    "MalformedHello",
    "ModernStack",
    "Refusal",
    "ResetServer",
    "SSLv2ClientHello",
    "SilentAfterHelloServer",
    "SmtpScript",
    "Stack",
    "TarpitServer",
    "Wire",
    "assert_sane",
    "no_new_threads",
    "parse_records",
    "read_client_hello",
    "scan",
    "target_for",
]

#: Protocol name → wire version.
VERSIONS: dict[str, int] = {
    "SSLv2": 0x0002,
    "SSLv3": 0x0300,
    "TLSv1.0": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}

#: ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest"), RFC 8446 §4.1.3.
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
# RFC 8446 §4.1.3: a TLS 1.3 server negotiating 1.2 or below says so in its random.
_DOWNGRADE_TLS12 = bytes.fromhex("444F574E47524401")
_DOWNGRADE_TLS11 = bytes.fromhex("444F574E47524400")

#: "A connection count no scan reaches": SmtpScript(busy_first=ALWAYS) always refuses.
ALWAYS = 1 << 30

#: Not a certificate, but shaped like DER (a SEQUENCE of 256 bytes): probes never parse it.
FAKE_CERTIFICATE = b"\x30\x82\x01\x00" + bytes(range(256))

# Record content types, handshake types, extensions and alerts (RFC 8446 and before).
_CT_CCS, _CT_ALERT, _CT_HANDSHAKE, _CT_APPDATA = 20, 21, 22, 23
_HS_HELLO_REQUEST, _HS_CLIENT_HELLO, _HS_SERVER_HELLO = 0, 1, 2
_HS_CERTIFICATE, _HS_SERVER_HELLO_DONE = 11, 14
_EXT_SNI, _EXT_GROUPS, _EXT_POINT_FORMATS, _EXT_SIGALGS = 0, 10, 11, 13
_EXT_PADDING, _EXT_EMS, _EXT_VERSIONS, _EXT_PSK_MODES, _EXT_KEY_SHARE = 21, 23, 43, 45, 51
_EXT_RENEGOTIATION = 0xFF01
_SCSV_RENEGOTIATION = 0x00FF
HANDSHAKE_FAILURE, PROTOCOL_VERSION = 40, 70

# Sizes of a server's key share per group: X25519MLKEM768 is an ML-KEM-768 ciphertext
# (1088 bytes) followed by an X25519 share (32), draft-kwiatkowski-tls-ecdhe-mlkem.
_SERVER_SHARE_SIZE: dict[int, int] = {
    23: 65, 24: 97, 25: 133, 29: 32, 30: 56,
    0x0200: 768, 0x0201: 1088, 0x0202: 1568,
    0x11EB: 65 + 1088, 0x11EC: 1088 + 32, 0x11ED: 97 + 1568,
    256: 256, 257: 384, 258: 512, 259: 768, 260: 1024,
}  # fmt: skip

Refusal = Literal["alert", "close", "reset"]


# -- bytes on the wire -----------------------------------------------------------------


def _u16(n: int) -> bytes:
    return struct.pack(">H", n)


def _u24(n: int) -> bytes:
    return struct.pack(">I", n)[1:]


def _vec8(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def _vec16(data: bytes) -> bytes:
    return _u16(len(data)) + data


def record(content_type: int, version: int, payload: bytes, *, size: int = 1 << 14) -> bytes:
    """``payload`` as TLS records of at most ``size`` bytes each."""
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return b"".join(bytes((content_type,)) + _u16(version) + _vec16(c) for c in chunks)


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes((msg_type,)) + _u24(len(body)) + body


def alert(description: int, version: int = 0x0303) -> bytes:
    """A fatal alert record."""
    return record(_CT_ALERT, version, bytes((2, description)))


def _extensions(exts: Sequence[tuple[int, bytes]]) -> bytes:
    if not exts:
        return b""
    return _vec16(b"".join(_u16(t) + _vec16(d) for t, d in exts))


def server_hello(
    version: int,
    suite: int,
    *,
    random: bytes | None = None,
    session_id: bytes = b"",
    extensions: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """A ServerHello handshake message (header included)."""
    body = (
        _u16(version)
        + (random if random is not None else os.urandom(32))
        + _vec8(session_id)
        + _u16(suite)
        + b"\x00"
        + _extensions(extensions)
    )
    return handshake(_HS_SERVER_HELLO, body)


def parse_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """Split bytes we built ourselves back into (content type, version, fragment)."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos < len(data):
        ct, version, length = struct.unpack(">BHH", data[pos : pos + 5])
        out.append((ct, version, data[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    return out


def _choose(server: Sequence[int], client: Sequence[int], server_preference: bool) -> int | None:
    """The suite (or group) a stack picks: its own favourite, or the client's."""
    if server_preference:
        offered = set(client)
        return next((s for s in server if s in offered), None)
    mine = set(server)
    return next((c for c in client if c in mine), None)


# -- reading the scanner's hello -------------------------------------------------------


class MalformedHello(ValueError):
    """The scanner sent a hello our own parser rejects: a codec bug the test reports."""


class PeerClosed(ConnectionError):
    """The client hung up where the server expected more."""


class Wire:
    """A blocking socket with a read buffer (lines, exact reads, peeks)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise PeerClosed("client closed the connection")
        self.buf += data

    def peek(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        return bytes(self.buf[:n])

    def read_exact(self, n: int) -> bytes:
        data = self.peek(n)
        del self.buf[:n]
        return data

    def read_line(self, limit: int = 4096) -> bytes:
        """One line, ending included; a line longer than ``limit`` is the client's fault."""
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise MalformedHello(f"client line longer than {limit} bytes")
            self._fill()
        end = self.buf.index(b"\n") + 1
        line = bytes(self.buf[:end])
        del self.buf[:end]
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drain(self) -> None:
        """Read and drop everything until the client closes (or the server stops)."""
        self.buf.clear()
        while self.sock.recv(65536):
            pass


class _Cursor:
    """Bounds-checked reads over one message; a short read is a :class:`MalformedHello`."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, part: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedHello(f"{self.what}: truncated {part}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, part: str) -> int:
        return self.take(1, part)[0]

    def u16(self, part: str) -> int:
        return int.from_bytes(self.take(2, part), "big")

    def vec8(self, part: str) -> bytes:
        return self.take(self.u8(part), part)

    def vec16(self, part: str) -> bytes:
        return self.take(self.u16(part), part)

    def codes16(self, data: bytes, part: str) -> tuple[int, ...]:
        if len(data) % 2:
            raise MalformedHello(f"{self.what}: odd length of {part}")
        return struct.unpack(f">{len(data) // 2}H", data)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def end(self, part: str) -> None:
        if self.left:
            raise MalformedHello(f"{self.what}: {self.left} trailing bytes after {part}")


@dataclass(frozen=True)
class ClientHello:
    """What a TLS ClientHello (SSLv3 … TLS 1.3) asked for."""

    record_version: int
    legacy_version: int
    session_id: bytes
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    server_name: str | None
    groups: tuple[int, ...]
    #: supported_versions, or None when the extension is absent (a pre-1.3 hello).
    supported_versions: tuple[int, ...] | None
    key_shares: tuple[int, ...]
    length: int

    @property
    def secure_renegotiation(self) -> bool:
        """RFC 5746: the client signalled it with the SCSV or the extension."""
        return _SCSV_RENEGOTIATION in self.cipher_suites or _EXT_RENEGOTIATION in self.extensions


@dataclass(frozen=True)
class SSLv2ClientHello:
    """What an SSLv2 CLIENT-HELLO asked for."""

    version: int
    cipher_specs: tuple[int, ...]


AnyHello = ClientHello | SSLv2ClientHello


def read_client_hello(wire: Wire) -> AnyHello:
    """Read one ClientHello (SSLv2 or TLS records), checking it as strictly as a server would.

    Beyond well-formedness it checks what the codec promises: no handshake message of
    256–511 bytes (RFC 7685), no duplicate extensions, key shares only for offered
    groups, TLS 1.3 hellos with legacy_version 1.2 and null compression only.
    """
    if wire.peek(1)[0] & 0x80:
        return _read_sslv2_hello(wire)
    hs = bytearray()
    record_version = None
    while len(hs) < 4 or len(hs) < 4 + int.from_bytes(hs[1:4], "big"):
        ct, version, length = struct.unpack(">BHH", wire.read_exact(5))
        if ct != _CT_HANDSHAKE:
            raise MalformedHello(f"record type {ct} where a ClientHello was due")
        if version >> 8 != 3:
            raise MalformedHello(f"record version 0x{version:04x}")
        if not 0 < length <= 1 << 14:
            raise MalformedHello(f"record length {length}")
        record_version = record_version or version
        hs += wire.read_exact(length)
    if hs[0] != _HS_CLIENT_HELLO:
        raise MalformedHello(f"handshake type {hs[0]} where a ClientHello was due")
    length = 4 + int.from_bytes(hs[1:4], "big")
    if len(hs) != length:
        raise MalformedHello("bytes after the ClientHello in its last record")
    if 256 <= length <= 511:
        raise MalformedHello(f"ClientHello of {length} bytes: unpadded (RFC 7685)")
    assert record_version is not None
    return _parse_client_hello(bytes(hs[4:]), record_version, length)


def _parse_client_hello(body: bytes, record_version: int, length: int) -> ClientHello:
    cur = _Cursor(body, "ClientHello")
    legacy_version = cur.u16("version")
    if legacy_version >> 8 != 3 or legacy_version & 0xFF > 3:
        raise MalformedHello(f"ClientHello version 0x{legacy_version:04x}")
    cur.take(32, "random")
    session_id = cur.vec8("session id")
    if len(session_id) > 32:
        raise MalformedHello("session id longer than 32 bytes")
    suites = cur.codes16(cur.vec16("cipher suites"), "cipher suites")
    if not suites or len(set(suites)) != len(suites):
        raise MalformedHello("empty or repeating cipher suite list")
    compression = cur.vec8("compression methods")
    if 0 not in compression:
        raise MalformedHello("null compression not offered")
    ext_types: list[int] = []
    data_of: dict[int, bytes] = {}
    if cur.left:
        block = _Cursor(cur.vec16("extensions"), "extensions")
        cur.end("extensions")
        while block.left:
            ext_type = block.u16("extension type")
            if ext_type in data_of:
                raise MalformedHello(f"extension {ext_type} twice")
            ext_types.append(ext_type)
            data_of[ext_type] = block.vec16(f"extension {ext_type}")
    server_name = _sni(data_of[_EXT_SNI]) if _EXT_SNI in data_of else None
    groups: tuple[int, ...] = ()
    if _EXT_GROUPS in data_of:
        c = _Cursor(data_of[_EXT_GROUPS], "supported_groups")
        groups = c.codes16(c.vec16("groups"), "groups")
        c.end("groups")
        if not groups:
            raise MalformedHello("empty supported_groups")
    versions: tuple[int, ...] | None = None
    if _EXT_VERSIONS in data_of:
        c = _Cursor(data_of[_EXT_VERSIONS], "supported_versions")
        versions = c.codes16(c.vec8("versions"), "versions")
        c.end("versions")
        if not versions:
            raise MalformedHello("empty supported_versions")
    shares: list[int] = []
    if _EXT_KEY_SHARE in data_of:
        c = _Cursor(data_of[_EXT_KEY_SHARE], "key_share")
        entries = _Cursor(c.vec16("client shares"), "key_share")
        c.end("client shares")
        while entries.left:
            group = entries.u16("share group")
            if not entries.vec16("share"):
                raise MalformedHello(f"empty key share for group {group}")
            if group in shares or group not in groups:
                raise MalformedHello(f"key share for group {group} repeated or not offered")
            shares.append(group)
    for ext_type, data in data_of.items():
        _check_extension(ext_type, data)
    if versions is not None and 0x0304 in versions:
        if legacy_version != 0x0303 or compression != b"\x00":
            raise MalformedHello("TLS 1.3 hello needs legacy_version 1.2, null compression")
        if _EXT_KEY_SHARE not in data_of or not groups:
            raise MalformedHello("TLS 1.3 hello without key_share or supported_groups")
    return ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        session_id=session_id,
        cipher_suites=suites,
        extensions=tuple(ext_types),
        server_name=server_name,
        groups=groups,
        supported_versions=versions,
        key_shares=tuple(shares),
        length=length,
    )


def _sni(data: bytes) -> str:
    c = _Cursor(data, "server_name")
    names = _Cursor(c.vec16("server name list"), "server_name")
    c.end("server name list")
    if names.u8("name type") != 0:
        raise MalformedHello("server_name entry is not a host name")
    name = names.vec16("host name")
    names.end("host name")
    if not name or not name.isascii() or name.endswith(b".") or b"\x00" in name:
        raise MalformedHello(f"bad SNI host name {name!r}")
    return name.decode("ascii")


def _check_extension(ext_type: int, data: bytes) -> None:
    c = _Cursor(data, f"extension {ext_type}")
    if ext_type == _EXT_SIGALGS:
        if not c.codes16(c.vec16("signature algorithms"), "signature algorithms"):
            raise MalformedHello("empty signature_algorithms")
    elif ext_type == _EXT_POINT_FORMATS:
        if 0 not in c.vec8("point formats"):
            raise MalformedHello("ec_point_formats without uncompressed")
    elif ext_type == _EXT_PSK_MODES:
        if not c.vec8("psk modes"):
            raise MalformedHello("empty psk_key_exchange_modes")
    elif ext_type == _EXT_RENEGOTIATION:
        if c.vec8("renegotiated connection"):
            raise MalformedHello("renegotiation_info not empty in an initial hello")
    elif ext_type == _EXT_PADDING:
        if data.strip(b"\x00"):
            raise MalformedHello("padding extension with non-zero bytes")
        return
    else:
        return  # parsed above, or opaque to a server (session_ticket, EMS, …)
    c.end(f"extension {ext_type}")


def _read_sslv2_hello(wire: Wire) -> SSLv2ClientHello:
    header = wire.read_exact(2)
    length = ((header[0] & 0x7F) << 8) | header[1]
    cur = _Cursor(wire.read_exact(length), "SSLv2 CLIENT-HELLO")
    if cur.u8("message type") != 1:
        raise MalformedHello("SSLv2 record is not a CLIENT-HELLO")
    version = cur.u16("version")
    specs_len = cur.u16("cipher specs length")
    sid_len = cur.u16("session id length")
    challenge_len = cur.u16("challenge length")
    if specs_len == 0 or specs_len % 3:
        raise MalformedHello(f"SSLv2 cipher specs length {specs_len}")
    if sid_len not in (0, 16) or not 16 <= challenge_len <= 32:
        raise MalformedHello("SSLv2 session id or challenge of the wrong size")
    raw = cur.take(specs_len, "cipher specs")
    cur.take(sid_len, "session id")
    cur.take(challenge_len, "challenge")
    cur.end("challenge")
    specs = tuple(int.from_bytes(raw[i : i + 3], "big") for i in range(0, specs_len, 3))
    return SSLv2ClientHello(version=version, cipher_specs=specs)


# -- stacks: how a server with given versions, suites and groups answers -------------


@dataclass(frozen=True)
class Answer:
    """What a stack sends back, and whether it then hangs up with a TCP reset."""

    data: bytes = b""
    reset: bool = False


class Stack(Protocol):
    """A server's TLS personality: its answer to one ClientHello."""

    def answer(self, hello: AnyHello) -> Answer: ...


def _refuse(refusal: Refusal, description: int, version: int) -> Answer:
    if refusal == "alert":
        return Answer(alert(description, version))
    return Answer(reset=refusal == "reset")


def _sslv2_server_hello(specs: Sequence[int], certificate: bytes) -> bytes:
    spec_bytes = b"".join(struct.pack(">I", s)[1:] for s in specs)
    connection_id = os.urandom(16)
    msg = (
        b"\x04\x00\x01"  # SERVER-HELLO, no session-id hit, X.509 certificate
        + _u16(0x0002)
        + _u16(len(certificate))
        + _u16(len(spec_bytes))
        + _u16(len(connection_id))
        + certificate
        + spec_bytes
        + connection_id
    )
    return _u16(0x8000 | len(msg)) + msg


@dataclass(frozen=True)
class LegacyStack:
    """A pre-TLS-1.3 stack (think OpenSSL 0.9.8/1.0): SSLv2 to TLS 1.2, no supported_versions.

    It answers a hello with the highest of its versions not above the client's, and
    picks a suite from ``suites`` (one list for every version) by its own order or the
    client's. A client below its lowest version gets ``protocol_version``, no shared
    suite ``handshake_failure`` — or a plain hang-up, per ``refusal``.
    """

    versions: frozenset[str]
    suites: tuple[int, ...]
    server_preference: bool = True
    sslv2_specs: tuple[int, ...] = ()
    refusal: Refusal = "alert"
    #: Send Certificate and ServerHelloDone after the ServerHello, as real stacks do.
    full_flight: bool = True

    def answer(self, hello: AnyHello) -> Answer:
        if isinstance(hello, SSLv2ClientHello):
            shared = [s for s in self.sslv2_specs if s in hello.cipher_specs]
            if "SSLv2" not in self.versions or not shared:
                return _refuse(self.refusal, HANDSHAKE_FAILURE, 0x0300)
            return Answer(_sslv2_server_hello(shared, FAKE_CERTIFICATE))
        usable = [
            VERSIONS[v] for v in self.versions if 0x0300 <= VERSIONS[v] <= hello.legacy_version
        ]
        if not usable:
            return _refuse(self.refusal, PROTOCOL_VERSION, hello.record_version)
        version = max(usable)
        suite = _choose(self.suites, hello.cipher_suites, self.server_preference)
        if suite is None:
            return _refuse(self.refusal, HANDSHAKE_FAILURE, version)
        exts: list[tuple[int, bytes]] = []
        if version > 0x0300 and hello.secure_renegotiation:
            exts.append((_EXT_RENEGOTIATION, b"\x00"))
        flight = server_hello(version, suite, session_id=os.urandom(32), extensions=exts)
        if self.full_flight:
            cert = _u24(len(FAKE_CERTIFICATE)) + FAKE_CERTIFICATE
            flight += handshake(_HS_CERTIFICATE, _u24(len(cert)) + cert)
            flight += handshake(_HS_SERVER_HELLO_DONE, b"")
        return Answer(record(_CT_HANDSHAKE, version, flight))


@dataclass(frozen=True)
class ModernStack:
    """A TLS 1.3-era stack: reads supported_versions, negotiates groups, sends HRRs.

    For TLS 1.3 it takes the client's key share for the group it likes best among the
    shares sent; with no usable share it answers a HelloRetryRequest naming its
    favourite group among those the client supports. Below 1.3 it picks from
    ``tls12_suites`` and marks the downgrade in its random (RFC 8446 §4.1.3).
    """

    versions: frozenset[str] = frozenset({"TLSv1.2", "TLSv1.3"})
    tls13_suites: tuple[int, ...] = (0x1302, 0x1301, 0x1303)
    tls12_suites: tuple[int, ...] = (0xC030, 0xC02F)
    groups: tuple[int, ...] = (29, 23, 24)
    server_preference: bool = True
    refusal: Refusal = "alert"

    def answer(self, hello: AnyHello) -> Answer:
        if isinstance(hello, SSLv2ClientHello):
            return Answer()  # modern stacks drop SSLv2-format hellos without a word
        if hello.supported_versions is not None:
            offered = set(hello.supported_versions)
        else:
            offered = {v for v in VERSIONS.values() if 0x0300 <= v <= hello.legacy_version}
        common = [VERSIONS[v] for v in self.versions if VERSIONS[v] in offered]
        if not common:
            return _refuse(self.refusal, PROTOCOL_VERSION, 0x0303)
        version = max(common)
        if version == 0x0304:
            return self._tls13(hello)
        suite = _choose(self.tls12_suites, hello.cipher_suites, self.server_preference)
        if suite is None:
            return _refuse(self.refusal, HANDSHAKE_FAILURE, version)
        random = os.urandom(32)
        if "TLSv1.3" in self.versions:
            sentinel = _DOWNGRADE_TLS12 if version == 0x0303 else _DOWNGRADE_TLS11
            random = random[:24] + sentinel
        exts: list[tuple[int, bytes]] = []
        if hello.secure_renegotiation:
            exts.append((_EXT_RENEGOTIATION, b"\x00"))
        if _EXT_EMS in hello.extensions:
            exts.append((_EXT_EMS, b""))
        hs = server_hello(version, suite, random=random, session_id=os.urandom(32), extensions=exts)
        return Answer(record(_CT_HANDSHAKE, version, hs))

    def _tls13(self, hello: ClientHello) -> Answer:
        suite = _choose(self.tls13_suites, hello.cipher_suites, self.server_preference)
        shared = [g for g in self.groups if g in hello.groups]
        if suite is None or not shared:
            return _refuse(self.refusal, HANDSHAKE_FAILURE, 0x0303)
        usable = next((g for g in shared if g in hello.key_shares), None)
        versions_ext = (_EXT_VERSIONS, _u16(0x0304))
        # Middlebox compatibility (RFC 8446 D.4): echo the session id, add a CCS record.
        ccs = record(_CT_CCS, 0x0303, b"\x01") if hello.session_id else b""
        if usable is None:
            hrr = server_hello(
                0x0303,
                suite,
                random=HRR_RANDOM,
                session_id=hello.session_id,
                extensions=[versions_ext, (_EXT_KEY_SHARE, _u16(shared[0]))],
            )
            return Answer(record(_CT_HANDSHAKE, 0x0303, hrr) + ccs)
        share = _u16(usable) + _vec16(os.urandom(_SERVER_SHARE_SIZE.get(usable, 32)))
        hs = server_hello(
            0x0303,
            suite,
            session_id=hello.session_id,
            extensions=[versions_ext, (_EXT_KEY_SHARE, share)],
        )
        # Then what would be EncryptedExtensions…: opaque application_data to a prober.
        encrypted = record(_CT_APPDATA, 0x0303, os.urandom(64))
        return Answer(record(_CT_HANDSHAKE, 0x0303, hs) + ccs + encrypted)


# -- counting ---------------------------------------------------------------------------


class Gauge:
    """Connections busy at once, shared by every server on one address.

    A connection counts from the moment its handler starts until just before the
    server sends its final answer: always inside the span during which the client
    holds its slot, so a peak above the client's limit is a real breach.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.total = 0

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1


# -- servers ---------------------------------------------------------------------------


class FakeServer(BaseServer):
    """Base of the fakes: our own hello parser, what it saw, and stop-aware waits."""

    def __init__(self, ip: str = "127.0.0.1", *, gauge: Gauge | None = None) -> None:
        super().__init__(ip)
        self.gauge = gauge
        self.hellos: list[AnyHello] = []
        self.problems: list[str] = []

    def read_hello(self, wire: Wire) -> AnyHello:
        try:
            hello = read_client_hello(wire)
        except MalformedHello as exc:
            with self._lock:
                self.problems.append(str(exc))
            raise
        with self._lock:
            self.hellos.append(hello)
        return hello

    def wait(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True when it is stopping."""
        return self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def busy(self) -> contextlib.AbstractContextManager[None]:
        return self.gauge.busy() if self.gauge else contextlib.nullcontext()

    @staticmethod
    def reset(conn: socket.socket) -> None:
        """Make the close that ends this handler a TCP RST (SO_LINGER with zero timeout).

        The handler returns right after; BaseServer closes the socket once it has
        counted the connection closed.
        """
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FakeTlsServer(FakeServer):
    """Implicit TLS: read the ClientHello, answer as ``stack`` would, hang up.

    ``hold`` keeps each connection busy a while before answering (for limit tests).
    """

    def __init__(
        self,
        stack: Stack,
        ip: str = "127.0.0.1",
        *,
        gauge: Gauge | None = None,
        hold: float = 0.0,
    ) -> None:
        super().__init__(ip, gauge=gauge)
        self.stack = stack
        self.hold = hold

    def handle(self, conn: socket.socket) -> None:
        wire = Wire(conn)
        with self.busy():
            answer = self.stack.answer(self.read_hello(wire))
            if self.hold and self.wait(self.hold):
                return
        self.send(conn, answer.data)
        if answer.reset:
            self.reset(conn)

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)


class FakeLegacyServer(FakeTlsServer):
    """SSLv3 … TLS 1.2 with suites OpenSSL 3 lacks (RC4, 3DES, export), canned bytes."""

    def __init__(
        self,
        versions: Iterable[str],
        suites: Sequence[int],
        *,
        server_preference: bool = True,
        sslv2_specs: Sequence[int] = (),
        refusal: Refusal = "alert",
        ip: str = "127.0.0.1",
        gauge: Gauge | None = None,
        hold: float = 0.0,
    ) -> None:
        stack = LegacyStack(
            versions=frozenset(versions),
            suites=tuple(suites),
            server_preference=server_preference,
            sslv2_specs=tuple(sslv2_specs),
            refusal=refusal,
        )
        super().__init__(stack, ip, gauge=gauge, hold=hold)


class FakeSslv2Server(FakeLegacyServer):
    """An SSLv2 server: SERVER-HELLO with the shared cipher specs and a fake DER blob.

    ``also`` adds SSLv3/TLS versions (with ``suites``), as OpenSSL 0.9.8 served both.
    """

    def __init__(
        self,
        specs: Sequence[int],
        *,
        also: Iterable[str] = (),
        suites: Sequence[int] = (0x0005,),
        ip: str = "127.0.0.1",
    ) -> None:
        super().__init__({"SSLv2", *also}, suites, sslv2_specs=specs, ip=ip)


class FakeTls13Server(FakeTlsServer):
    """TLS 1.2 + 1.3 with the given groups (X25519MLKEM768 included), by canned bytes."""

    def __init__(
        self,
        groups: Sequence[int],
        *,
        versions: Iterable[str] = ("TLSv1.2", "TLSv1.3"),
        tls13_suites: Sequence[int] = (0x1302, 0x1301, 0x1303),
        tls12_suites: Sequence[int] = (0xC030, 0xC02F),
        server_preference: bool = True,
        refusal: Refusal = "alert",
        ip: str = "127.0.0.1",
    ) -> None:
        stack = ModernStack(
            versions=frozenset(versions),
            tls13_suites=tuple(tls13_suites),
            tls12_suites=tuple(tls12_suites),
            groups=tuple(groups),
            server_preference=server_preference,
            refusal=refusal,
        )
        super().__init__(stack, ip)


class FragmentingServer(FakeTlsServer):
    """Sends its answer in records of ``record_size`` bytes, optionally byte by byte.

    With ``byte_delay`` every byte goes out in its own TCP segment (Nagle off) after a
    short sleep: the client sees headers, lengths and bodies split anywhere.
    """

    def __init__(
        self,
        stack: Stack,
        *,
        record_size: int = 1,
        byte_delay: float = 0.0,
        ip: str = "127.0.0.1",
    ) -> None:
        super().__init__(stack, ip)
        self.record_size = record_size
        self.byte_delay = byte_delay

    def send(self, conn: socket.socket, data: bytes) -> None:
        if data[:1] and data[0] & 0x80:  # SSLv2 has no records to split
            framed = data
        else:
            framed = b"".join(
                record(ct, version, fragment, size=self.record_size)
                for ct, version, fragment in parse_records(data)
            )
        if not self.byte_delay:
            conn.sendall(framed)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(framed)):
            conn.sendall(framed[i : i + 1])
            if self.wait(self.byte_delay):
                return


# -- hostile servers -------------------------------------------------------------------


class TarpitServer(FakeServer):
    """Accepts, reads whatever comes, never says a word."""

    def handle(self, conn: socket.socket) -> None:
        Wire(conn).drain()


class SilentAfterHelloServer(FakeServer):
    """Reads the whole ClientHello, then falls silent."""

    def handle(self, conn: socket.socket) -> None:
        wire = Wire(conn)
        self.read_hello(wire)
        wire.drain()


class GarbageServer(FakeServer):
    """Answers the hello with bytes that are no TLS at all, then waits for the hang-up."""

    def __init__(self, garbage: bytes, ip: str = "127.0.0.1") -> None:
        super().__init__(ip)
        self.garbage = garbage

    def handle(self, conn: socket.socket) -> None:
        wire = Wire(conn)
        self.read_hello(wire)
        wire.send(self.garbage)
        wire.drain()


class ResetServer(FakeServer):
    """Resets the connection: on accept, or once the hello has arrived."""

    def __init__(self, *, after_hello: bool = False, ip: str = "127.0.0.1") -> None:
        super().__init__(ip)
        self.after_hello = after_hello

    def handle(self, conn: socket.socket) -> None:
        if self.after_hello:
            self.read_hello(Wire(conn))
        self.reset(conn)


class AlertServer(FakeServer):
    """A fatal alert (handshake_failure by default) to every hello, SSLv2 ones included."""

    def __init__(self, ip: str = "127.0.0.1", *, description: int = HANDSHAKE_FAILURE) -> None:
        super().__init__(ip)
        self.description = description

    def handle(self, conn: socket.socket) -> None:
        wire = Wire(conn)
        self.read_hello(wire)
        wire.send(alert(self.description, 0x0301))


class FloodServer(FakeServer):
    """Announces something huge and then sends endless bytes until the client leaves.

    ``style="handshake"``: valid 16 kB records carrying a ServerHello header that
    announces 16 MB; ``style="record"``: a handshake record header announcing 64 kB,
    beyond the TLS record limit.
    """

    def __init__(
        self, style: Literal["handshake", "record"] = "handshake", ip: str = "127.0.0.1"
    ) -> None:
        super().__init__(ip)
        self.style = style
        #: Most bytes one connection managed to send: what the client read, plus buffers.
        self.most_sent = 0

    def handle(self, conn: socket.socket) -> None:
        wire = Wire(conn)
        self.read_hello(wire)
        filler = bytes(range(256)) * 64
        if self.style == "handshake":
            wire.send(record(_CT_HANDSHAKE, 0x0303, b"\x02\xff\xff\xff" + filler[4:]))
            chunk = record(_CT_HANDSHAKE, 0x0303, filler)
        else:
            wire.send(b"\x16\x03\x03\xff\xff" + b"\x02\x00\xff\xfb")
            chunk = filler
        sent = 0
        try:
            while not self.stopping:
                wire.send(chunk)
                sent += len(chunk)
        finally:
            with self._lock:
                self.most_sent = max(self.most_sent, sent)


class HelloRequestServer(FakeServer):
    """Answers with HelloRequest records, endlessly: a flood, or one every ``interval``."""

    def __init__(self, *, interval: float = 0.0, ip: str = "127.0.0.1") -> None:
        super().__init__(ip)
        self.interval = interval

    def handle(self, conn: socket.socket) -> None:
        wire = Wire(conn)
        self.read_hello(wire)
        one = record(_CT_HANDSHAKE, 0x0303, handshake(_HS_HELLO_REQUEST, b""))
        while not self.stopping:
            if self.interval:
                wire.send(one)
                self.wait(self.interval)
            else:
                wire.send(one * 1000)


# -- SMTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpScript:
    """How a fake SMTP server behaves, from greeting to what follows ``220 Ready``."""

    banner: bytes = b"220 fake.test ESMTP tlsfleet-fake\r\n"
    #: Seconds before the greeting (postscreen-style); stop() cuts it short.
    greeting_delay: float = 0.0
    #: The first ``busy_first`` connections (in arrival order) get ``busy_reply`` at
    #: ``busy_at`` and are closed; ALWAYS turns every connection away.
    busy_first: int = 0
    busy_reply: bytes = b"421 4.7.0 Too many connections\r\n"
    busy_at: Literal["greeting", "ehlo", "starttls"] = "greeting"
    #: Answer EHLO with ``250-`` lines that never end.
    endless_capabilities: bool = False
    starttls: bool = True
    starttls_reply: bytes = b"220 2.0.0 Ready to start TLS\r\n"
    #: After ``220 Ready``: answer the ClientHello, reset, or say nothing.
    after_starttls: Literal["tls", "reset", "silent"] = "tls"


@dataclass
class _Counter:
    lock: threading.Lock = field(default_factory=threading.Lock)
    value: int = 0

    def next(self) -> int:
        with self.lock:
            self.value += 1
            return self.value - 1


class FakeSmtpServer(FakeServer):
    """SMTP with STARTTLS whose TLS side is a canned :class:`Stack` (TLS 1.2 by default)."""

    def __init__(
        self,
        script: SmtpScript = SmtpScript(),
        stack: Stack | None = None,
        ip: str = "127.0.0.1",
    ) -> None:
        super().__init__(ip)
        self.script = script
        self.stack: Stack = stack or ModernStack(versions=frozenset({"TLSv1.2"}))
        self._arrivals = _Counter()

    def handle(self, conn: socket.socket) -> None:
        s = self.script
        busy = self._arrivals.next() < s.busy_first
        wire = Wire(conn)
        if s.greeting_delay and self.wait(s.greeting_delay):
            return
        if busy and s.busy_at == "greeting":
            wire.send(s.busy_reply)
            return
        wire.send(s.banner)
        while True:
            verb = wire.read_line().split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                if busy and s.busy_at == "ehlo":
                    wire.send(s.busy_reply)
                    return
                if s.endless_capabilities:
                    self._endless_ehlo(wire)
                    return
                caps = [b"fake.test", b"PIPELINING", b"SIZE 10240000"]
                if s.starttls:
                    caps.append(b"STARTTLS")
                caps += [b"AUTH PLAIN LOGIN", b"8BITMIME"]
                wire.send(
                    b"".join(b"250-" + c + b"\r\n" for c in caps[:-1])
                    + b"250 "
                    + caps[-1]
                    + b"\r\n"
                )
            elif verb == b"HELO":
                wire.send(b"250 fake.test\r\n")
            elif verb == b"STARTTLS" and s.starttls:
                if busy and s.busy_at == "starttls":
                    wire.send(s.busy_reply)
                    return
                wire.send(s.starttls_reply)
                if s.starttls_reply.startswith(b"220"):
                    self._after_starttls(conn, wire)
                    return
            elif verb == b"QUIT":
                wire.send(b"221 2.0.0 Bye\r\n")
                return
            elif verb in (b"NOOP", b"RSET"):
                wire.send(b"250 2.0.0 Ok\r\n")
            else:
                wire.send(b"502 5.5.2 Error: command not recognized\r\n")

    def _endless_ehlo(self, wire: Wire) -> None:
        wire.send(b"250-fake.test\r\n")
        lines = b"".join(b"250-X-CAPABILITY-%d\r\n" % i for i in range(200))
        while not self.stopping:
            wire.send(lines)

    def _after_starttls(self, conn: socket.socket, wire: Wire) -> None:
        mode = self.script.after_starttls
        if mode == "reset":
            self.reset(conn)
        elif mode == "silent":
            wire.drain()
        else:
            answer = self.stack.answer(self.read_hello(wire))
            wire.send(answer.data)
            if answer.reset:
                self.reset(conn)


# -- test plumbing ---------------------------------------------------------------------

S = TypeVar("S", bound=BaseServer)


class Launcher:
    """Starts servers for one test and stops every one of them when the test ends."""

    def __init__(self) -> None:
        self._servers: list[BaseServer] = []

    def __call__(self, server: S) -> S:
        server.start()
        self._servers.append(server)
        return server

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in reversed(self._servers):
            server.stop()


@contextlib.contextmanager
def no_new_threads(grace: float = 5.0) -> Iterator[None]:
    """Fail when threads started inside the block are still alive ``grace`` s after it."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + grace
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = sorted(t.name for t in set(threading.enumerate()) - before if t.is_alive())
    assert not left, f"threads left behind: {left}"


# -- scanning the fakes ----------------------------------------------------------------

#: Generous bound on one endpoint scan in a test: far above every scanner timeout used.
SCAN_BOUND = 60.0


def target_for(server: BaseServer, service: str = "https", sni: str | None = "fake.test") -> Target:
    mode: TlsMode = "starttls" if service in ("smtp", "submission", "imap", "pop3") else "implicit"
    return Target(
        host=sni or server.ip,
        ip=server.ip,
        port=server.port,
        service=service,
        tls_mode=mode,
        sni=sni,
    )


async def scan(
    server: BaseServer,
    options: ScanOptions,
    *,
    service: str = "https",
    limiter: ConnectionLimiter | None = None,
) -> EndpointResult:
    """Scan one fake endpoint, bounded so that a stuck scan fails instead of hanging."""
    async with asyncio.timeout(SCAN_BOUND):
        return await Scanner(options, limiter=limiter).scan(target_for(server, service))


def assert_sane(result: EndpointResult) -> None:
    """What holds for every result: documented error kinds, JSON-ready, no internal error."""
    errors = [result.error] if result.error else []
    for info in [*errors, *result.partial_errors]:
        assert info.kind in ERROR_KINDS, f"undocumented error kind: {info}"
    assert (result.status == "error") == (result.error is not None)
    assert set(result.protocols) <= set(PROTOCOLS)
    if None in result.protocols.values():
        # A version left undecided must come with the reason why.
        assert result.error is not None or result.partial_errors, result.protocols
    for version, suites in result.cipher_suites.items():
        assert result.protocols.get(version) is True, f"suites for a refused {version}"
        assert suites
        assert len(set(suites)) == len(suites)
    json.dumps(result.to_dict())
