"""TLS handshake codec: ClientHello builders and a ServerHello/Alert reader.

Pure bytes in, bytes or typed values out: nothing here does I/O, and every malformed
input raises :class:`scanner.errors.DecodeError` (never IndexError, struct.error, …).

What the scanner needs from a server is its first flight up to the ServerHello (or the
alert that refuses us), so the reader stops there: no key exchange, no crypto.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from scanner.errors import DecodeError

__all__ = [
    "ALERT_DESCRIPTIONS",
    "GROUPS",
    "HRR_RANDOM",
    "VERSION_CODES",
    "Alert",
    "HelloReader",
    "SSLv2ServerHello",
    "ServerHello",
    "client_hello",
    "sslv2_client_hello",
]

#: Protocol name → wire version.
VERSION_CODES: dict[str, int] = {
    "SSLv2": 0x0002,
    "SSLv3": 0x0300,
    "TLSv1.0": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}
VERSION_NAMES: dict[int, str] = {v: k for k, v in VERSION_CODES.items()}

# Record content types and handshake message types.
_CT_CHANGE_CIPHER_SPEC = 20
_CT_ALERT = 21
_CT_HANDSHAKE = 22
_CT_APPLICATION_DATA = 23
_HS_HELLO_REQUEST = 0
_HS_CLIENT_HELLO = 1
_HS_SERVER_HELLO = 2

# Extension types.
_EXT_SERVER_NAME = 0
_EXT_SUPPORTED_GROUPS = 10
_EXT_EC_POINT_FORMATS = 11
_EXT_SIGNATURE_ALGORITHMS = 13
_EXT_PADDING = 21
_EXT_EXTENDED_MASTER_SECRET = 23
_EXT_SESSION_TICKET = 35
_EXT_SUPPORTED_VERSIONS = 43
_EXT_PSK_KEY_EXCHANGE_MODES = 45
_EXT_KEY_SHARE = 51
_EXT_RENEGOTIATION_INFO = 0xFF01

_SCSV_EMPTY_RENEGOTIATION_INFO = 0x00FF
_SCSV_FALLBACK = 0x5600

#: The fixed ServerHello.random that marks a HelloRetryRequest (RFC 8446 §4.1.3).
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

#: Named groups (IANA "TLS Supported Groups"), name → code.
GROUPS: dict[str, int] = {
    "sect163k1": 1, "sect163r1": 2, "sect163r2": 3, "sect193r1": 4, "sect193r2": 5,
    "sect233k1": 6, "sect233r1": 7, "sect239k1": 8, "sect283k1": 9, "sect283r1": 10,
    "sect409k1": 11, "sect409r1": 12, "sect571k1": 13, "sect571r1": 14,
    "secp160k1": 15, "secp160r1": 16, "secp160r2": 17, "secp192k1": 18, "secp192r1": 19,
    "secp224k1": 20, "secp224r1": 21, "secp256k1": 22,
    "secp256r1": 23, "secp384r1": 24, "secp521r1": 25,
    "brainpoolP256r1": 26, "brainpoolP384r1": 27, "brainpoolP512r1": 28,
    "x25519": 29, "x448": 30,
    "brainpoolP256r1tls13": 31, "brainpoolP384r1tls13": 32, "brainpoolP512r1tls13": 33,
    "GC256A": 34, "GC256B": 35, "GC256C": 36, "GC256D": 37,
    "GC512A": 38, "GC512B": 39, "GC512C": 40,
    "curveSM2": 41,
    "ffdhe2048": 256, "ffdhe3072": 257, "ffdhe4096": 258, "ffdhe6144": 259, "ffdhe8192": 260,
    "MLKEM512": 0x0200, "MLKEM768": 0x0201, "MLKEM1024": 0x0202,
    "SecP256r1MLKEM768": 0x11EB, "X25519MLKEM768": 0x11EC, "SecP384r1MLKEM1024": 0x11ED,
    "X25519Kyber768Draft00": 0x6399, "SecP256r1Kyber768Draft00": 0x639A,
}  # fmt: skip
GROUP_NAMES: dict[int, str] = {v: k for k, v in GROUPS.items()}

#: Groups offered in TLS 1.0–1.2 hellos: every curve a server might pick for ECDHE.
LEGACY_GROUPS: tuple[int, ...] = (
    29, 23, 24, 25, 30, 26, 27, 28, 22, 21, 20, 19, 18, 17, 16, 15,
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    256, 257, 258, 259, 260,
)  # fmt: skip

#: Groups a TLS 1.3 server may choose, in a modern client's order of preference.
TLS13_GROUPS: tuple[int, ...] = (
    0x11EC, 29, 23, 24, 25, 30, 0x11EB, 0x11ED, 0x0200, 0x0201, 0x0202,
    31, 32, 33, 41, 34, 35, 36, 37, 38, 39, 40, 256, 257, 258, 259, 260,
)  # fmt: skip

#: Signature algorithms (TLS 1.2 style codes plus TLS 1.3 SignatureScheme values).
SIGNATURE_ALGORITHMS: tuple[int, ...] = (
    0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0804, 0x0805, 0x0806,
    0x0809, 0x080A, 0x080B, 0x0401, 0x0501, 0x0601, 0x081A, 0x081B, 0x081C,
    0x0303, 0x0301, 0x0302, 0x0402, 0x0502, 0x0602, 0x0203, 0x0201, 0x0202,
    0x0101, 0x0102, 0x0103, 0x0709, 0x070A, 0x070B, 0x070C, 0x070D, 0x070E, 0x070F,
)  # fmt: skip

#: Alert descriptions (RFC 8446 §6 and predecessors).
ALERT_DESCRIPTIONS: dict[int, str] = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
    21: "decryption_failed", 22: "record_overflow", 30: "decompression_failure",
    40: "handshake_failure", 41: "no_certificate", 42: "bad_certificate",
    43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
    46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error",
    60: "export_restriction", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    100: "no_renegotiation", 109: "missing_extension", 110: "unsupported_extension",
    111: "certificate_unobtainable", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 114: "bad_certificate_hash_value",
    115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
}  # fmt: skip

#: Largest record fragment a peer may send (TLSCiphertext bound, RFC 5246 §6.2.3).
MAX_RECORD = (1 << 14) + 2048
#: Largest ServerHello we accept; real ones are < 200 bytes (plus PQ key shares ~1.1 kB).
MAX_SERVER_HELLO = 1 << 15


def _u8(n: int) -> bytes:
    return bytes((n,))


def _u16(n: int) -> bytes:
    return struct.pack(">H", n)


def _u24(n: int) -> bytes:
    return struct.pack(">I", n)[1:]


def _vec8(data: bytes) -> bytes:
    return _u8(len(data)) + data


def _vec16(data: bytes) -> bytes:
    return _u16(len(data)) + data


def _ext(ext_type: int, body: bytes) -> bytes:
    return _u16(ext_type) + _vec16(body)


def _codes16(codes: Sequence[int]) -> bytes:
    return struct.pack(f">{len(codes)}H", *codes)


def _sni(server_name: str) -> bytes:
    name = server_name.encode("ascii")
    return _ext(_EXT_SERVER_NAME, _vec16(_u8(0) + _vec16(name)))


def _key_share_entry(group: int) -> bytes:
    # Random bytes are a valid X25519/X448 public value; the probe never completes the
    # handshake, so no private key is needed. Other groups are left to a HelloRetryRequest.
    size = {29: 32, 30: 56}[group]
    return _u16(group) + _vec16(os.urandom(size))


@functools.lru_cache(maxsize=256)
def _extensions(
    version: str,
    server_name: str | None,
    groups: tuple[int, ...] | None,
    key_share_groups: tuple[int, ...],
    signature_algorithms: tuple[int, ...],
) -> bytes:
    """The extension block (without its length) of a hello; cached, it is the same for
    every probe of one endpoint and version (a reused random key share is harmless:
    no probe ever completes a handshake)."""
    if version == "SSLv3":
        return b""
    tls13 = version == "TLSv1.3"
    extensions: list[bytes] = []
    if server_name:
        extensions.append(_sni(server_name))
    default_groups = TLS13_GROUPS if tls13 else LEGACY_GROUPS
    group_list = list(groups if groups is not None else default_groups)
    extensions.append(_ext(_EXT_SUPPORTED_GROUPS, _vec16(_codes16(group_list))))
    extensions.append(_ext(_EXT_EC_POINT_FORMATS, _vec8(b"\x00\x01\x02")))
    extensions.append(_ext(_EXT_SIGNATURE_ALGORITHMS, _vec16(_codes16(signature_algorithms))))
    extensions.append(_ext(_EXT_SESSION_TICKET, b""))
    extensions.append(_ext(_EXT_EXTENDED_MASTER_SECRET, b""))
    if tls13:
        extensions.append(_ext(_EXT_SUPPORTED_VERSIONS, _vec8(_u16(0x0304))))
        extensions.append(_ext(_EXT_PSK_KEY_EXCHANGE_MODES, _vec8(b"\x01")))
        shares = b"".join(_key_share_entry(g) for g in key_share_groups)
        extensions.append(_ext(_EXT_KEY_SHARE, _vec16(shares)))
    else:
        extensions.append(_ext(_EXT_RENEGOTIATION_INFO, b"\x00"))
    return b"".join(extensions)


def client_hello(
    version: str,
    cipher_suites: Sequence[int],
    *,
    server_name: str | None = None,
    groups: Sequence[int] | None = None,
    key_share_groups: Sequence[int] = (29,),
    signature_algorithms: Sequence[int] = SIGNATURE_ALGORITHMS,
    fallback_scsv: bool = False,
) -> bytes:
    """Build one ClientHello record for ``version`` ("SSLv3" … "TLSv1.3").

    For TLS 1.3 the legacy version is TLS 1.2 and ``supported_versions`` names 1.3 only,
    so a server that picks anything else reveals that it lacks 1.3. ``key_share_groups``
    may be empty: the server then answers with a HelloRetryRequest naming the group it
    wants from ``groups``, which is how group support is enumerated. The handshake
    message is padded out of the 256–511 byte range that some servers choke on (RFC 7685).
    """
    if version not in VERSION_CODES or version == "SSLv2":
        raise ValueError(f"client_hello cannot build {version!r}")
    if not cipher_suites:
        raise ValueError("a ClientHello needs at least one cipher suite")
    tls13 = version == "TLSv1.3"
    legacy_version = 0x0303 if tls13 else VERSION_CODES[version]
    suites = list(cipher_suites)
    if not tls13:
        suites.append(_SCSV_EMPTY_RENEGOTIATION_INFO)
    if fallback_scsv:
        suites.append(_SCSV_FALLBACK)

    ext_bytes = _extensions(
        version,
        server_name or None,
        None if groups is None else tuple(groups),
        tuple(key_share_groups),
        tuple(signature_algorithms),
    )
    has_extensions = version != "SSLv3"

    session_id = os.urandom(32) if tls13 else b""
    body = (
        _u16(legacy_version)
        + os.urandom(32)
        + _vec8(session_id)
        + _vec16(_codes16(suites))
        + _vec8(b"\x00")  # compression: null only
    )
    # Length of the handshake message as it stands, extensions block included.
    length = 4 + len(body) + (2 + len(ext_bytes) if has_extensions else 0)
    if 256 <= length <= 511:
        overhead = 4 if has_extensions else 6  # padding header (+ block length if new)
        ext_bytes += _ext(_EXT_PADDING, b"\x00" * max(512 - length - overhead, 0))
    if ext_bytes:
        body += _vec16(ext_bytes)
    handshake = _u8(_HS_CLIENT_HELLO) + _u24(len(body)) + body
    record_version = 0x0300 if version == "SSLv3" else 0x0301
    return _u8(_CT_HANDSHAKE) + _u16(record_version) + _vec16(handshake)


def sslv2_client_hello(cipher_specs: Sequence[int]) -> bytes:
    """Build an SSLv2 CLIENT-HELLO offering the given 3-byte cipher specs."""
    if not cipher_specs:
        raise ValueError("an SSLv2 CLIENT-HELLO needs at least one cipher spec")
    specs = b"".join(struct.pack(">I", spec)[1:] for spec in cipher_specs)
    challenge = os.urandom(16)
    msg = (
        _u8(1)  # CLIENT-HELLO
        + _u16(0x0002)
        + _u16(len(specs))
        + _u16(0)  # session id length
        + _u16(len(challenge))
        + specs
        + challenge
    )
    if len(msg) > 0x7FFF:
        raise ValueError("too many SSLv2 cipher specs")
    return _u16(0x8000 | len(msg)) + msg


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A parsed ServerHello (or HelloRetryRequest)."""

    legacy_version: int
    #: The negotiated version: supported_versions if present, else legacy_version.
    version: int
    cipher_suite: int
    compression: int
    session_id: bytes
    is_hello_retry_request: bool
    #: The key-share group (TLS 1.3 ServerHello) or the requested group (HRR).
    selected_group: int | None
    extensions: tuple[int, ...]

    @property
    def version_name(self) -> str:
        return VERSION_NAMES.get(self.version, f"0x{self.version:04x}")


@dataclass(frozen=True, slots=True)
class Alert:
    """A TLS alert received instead of a ServerHello."""

    level: int
    description: int

    @property
    def description_name(self) -> str:
        return ALERT_DESCRIPTIONS.get(self.description, f"alert_{self.description}")


@dataclass(frozen=True, slots=True)
class SSLv2ServerHello:
    """An SSLv2 SERVER-HELLO: the server's version and every cipher spec it shares."""

    version: int
    cipher_specs: tuple[int, ...]
    certificate: bytes


ServerResponse = ServerHello | Alert | SSLv2ServerHello


class _Cursor:
    """Bounds-checked reads over one message; every short read is a DecodeError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(f"truncated {what}: need {n} bytes, have {len(self.data) - self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        b = self.take(2, what)
        return (b[0] << 8) | b[1]

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse the body of a ServerHello handshake message (without its 4-byte header)."""
    cur = _Cursor(body)
    legacy_version = cur.u16("server version")
    if legacy_version >> 8 != 3:
        raise DecodeError(f"ServerHello with impossible version 0x{legacy_version:04x}")
    random = cur.take(32, "server random")
    session_id = cur.take(cur.u8("session id length"), "session id")
    if len(session_id) > 32:
        raise DecodeError("ServerHello session id longer than 32 bytes")
    cipher_suite = cur.u16("cipher suite")
    compression = cur.u8("compression method")
    version = legacy_version
    selected_group: int | None = None
    is_hrr = random == HRR_RANDOM
    ext_types: list[int] = []
    if cur.remaining:
        ext_len = cur.u16("extensions length")
        if ext_len != cur.remaining:
            raise DecodeError(
                f"ServerHello extensions length {ext_len} != {cur.remaining} bytes left"
            )
        while cur.remaining:
            ext_type = cur.u16("extension type")
            data = cur.take(cur.u16("extension length"), "extension data")
            if ext_type in ext_types:
                raise DecodeError(f"duplicate ServerHello extension {ext_type}")
            ext_types.append(ext_type)
            if ext_type == _EXT_SUPPORTED_VERSIONS:
                if len(data) != 2:
                    raise DecodeError("supported_versions in ServerHello must be 2 bytes")
                version = (data[0] << 8) | data[1]
            elif ext_type == _EXT_KEY_SHARE:
                if len(data) < 2:
                    raise DecodeError("key_share in ServerHello too short")
                selected_group = (data[0] << 8) | data[1]
                if not is_hrr:
                    share = _Cursor(data[2:])
                    share.take(share.u16("key share length"), "key share")
                    if share.remaining:
                        raise DecodeError("trailing bytes in ServerHello key_share")
    return ServerHello(
        legacy_version=legacy_version,
        version=version,
        cipher_suite=cipher_suite,
        compression=compression,
        session_id=session_id,
        is_hello_retry_request=is_hrr,
        selected_group=selected_group,
        extensions=tuple(ext_types),
    )


def parse_sslv2_server_hello(msg: bytes) -> SSLv2ServerHello:
    """Parse an SSLv2 SERVER-HELLO message (after the 2-byte record header)."""
    cur = _Cursor(msg)
    msg_type = cur.u8("SSLv2 message type")
    if msg_type == 0:
        code = cur.u16("SSLv2 error code") if cur.remaining >= 2 else -1
        raise DecodeError(f"SSLv2 ERROR message (code {code})")
    if msg_type != 4:
        raise DecodeError(f"unexpected SSLv2 message type {msg_type}")
    cur.u8("session id hit")
    cur.u8("certificate type")
    version = cur.u16("SSLv2 server version")
    cert_len = cur.u16("certificate length")
    specs_len = cur.u16("cipher specs length")
    conn_id_len = cur.u16("connection id length")
    if specs_len % 3:
        raise DecodeError("SSLv2 cipher specs length is not a multiple of 3")
    certificate = cur.take(cert_len, "SSLv2 certificate")
    raw_specs = cur.take(specs_len, "SSLv2 cipher specs")
    cur.take(conn_id_len, "SSLv2 connection id")
    specs = tuple(int.from_bytes(raw_specs[i : i + 3], "big") for i in range(0, len(raw_specs), 3))
    return SSLv2ServerHello(version=version, cipher_specs=specs, certificate=certificate)


class HelloReader:
    """Incremental reader of a server's first flight, up to ServerHello or Alert.

    Feed it bytes as they arrive; :meth:`feed` returns the first complete response,
    or None while more bytes are needed. Records may be fragmented anywhere and a
    handshake message may span records. Garbage raises :class:`DecodeError`.
    """

    __slots__ = ("_alert", "_buf", "_handshake", "_sslv2_ok")

    def __init__(self, *, accept_sslv2: bool = False) -> None:
        self._buf = bytearray()
        self._handshake = bytearray()
        self._alert = bytearray()
        self._sslv2_ok = accept_sslv2

    def feed(self, data: bytes) -> ServerResponse | None:
        self._buf += data
        while True:
            buf = self._buf
            if not buf:
                return None
            first = buf[0]
            if first & 0x80 and self._sslv2_ok and not self._handshake:
                return self._sslv2_record()
            if len(buf) < 5:
                if first not in (_CT_ALERT, _CT_HANDSHAKE, _CT_CHANGE_CIPHER_SPEC,
                                 _CT_APPLICATION_DATA):  # fmt: skip
                    raise DecodeError(f"not a TLS record (first byte 0x{first:02x})")
                return None
            ct, major, length = buf[0], buf[1], (buf[3] << 8) | buf[4]
            if major != 3:
                raise DecodeError(f"not a TLS record (version byte 0x{major:02x})")
            if length > MAX_RECORD:
                raise DecodeError(f"record of {length} bytes exceeds the TLS limit")
            if length == 0 and ct in (_CT_ALERT, _CT_HANDSHAKE):
                raise DecodeError("empty handshake or alert record")
            if len(buf) < 5 + length:
                return None
            fragment = bytes(buf[5 : 5 + length])
            del buf[: 5 + length]
            if ct == _CT_ALERT:
                self._alert += fragment
                if len(self._alert) >= 2:
                    return Alert(level=self._alert[0], description=self._alert[1])
            elif ct == _CT_HANDSHAKE:
                self._handshake += fragment
                result = self._handshake_message()
                if result is not None:
                    return result
            else:
                raise DecodeError(f"record type {ct} before ServerHello")

    def _handshake_message(self) -> ServerHello | None:
        hs = self._handshake
        while len(hs) >= 4:
            msg_type = hs[0]
            length = (hs[1] << 16) | (hs[2] << 8) | hs[3]
            if msg_type == _HS_HELLO_REQUEST and length == 0:
                del hs[:4]  # harmless; servers may send it at any time
                continue
            if msg_type != _HS_SERVER_HELLO:
                raise DecodeError(f"handshake message type {msg_type} before ServerHello")
            if length > MAX_SERVER_HELLO:
                raise DecodeError(f"ServerHello of {length} bytes is implausibly large")
            if len(hs) < 4 + length:
                return None
            return parse_server_hello(bytes(hs[4 : 4 + length]))
        return None

    def _sslv2_record(self) -> SSLv2ServerHello | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        length = ((buf[0] & 0x7F) << 8) | buf[1]
        if length == 0:
            raise DecodeError("empty SSLv2 record")
        if len(buf) < 2 + length:
            return None
        return parse_sslv2_server_hello(bytes(buf[2 : 2 + length]))
