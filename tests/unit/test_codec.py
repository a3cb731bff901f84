"""The TLS codec on bytes: our hellos are well-formed, the reader copes with anything."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.errors import DecodeError
from scanner.hello.codec import (
    HRR_RANDOM,
    Alert,
    HelloReader,
    ServerHello,
    SSLv2ServerHello,
    client_hello,
    sslv2_client_hello,
)

# -- a small independent ClientHello parser, so the builder is checked from outside ------


def parse_client_hello(record: bytes) -> dict[str, object]:
    assert record[0] == 22
    (length,) = struct.unpack(">H", record[3:5])
    assert len(record) == 5 + length
    hs = record[5:]
    assert hs[0] == 1
    body_len = int.from_bytes(hs[1:4], "big")
    assert body_len == len(hs) - 4
    body = hs[4:]
    pos = 0
    version = struct.unpack(">H", body[0:2])[0]
    pos = 2 + 32
    sid_len = body[pos]
    pos += 1 + sid_len
    (cs_len,) = struct.unpack(">H", body[pos : pos + 2])
    pos += 2
    suites = list(struct.unpack(f">{cs_len // 2}H", body[pos : pos + cs_len]))
    pos += cs_len
    comp_len = body[pos]
    pos += 1 + comp_len
    extensions: dict[int, bytes] = {}
    if pos < len(body):
        (ext_total,) = struct.unpack(">H", body[pos : pos + 2])
        pos += 2
        assert ext_total == len(body) - pos
        while pos < len(body):
            etype, elen = struct.unpack(">HH", body[pos : pos + 4])
            extensions[etype] = body[pos + 4 : pos + 4 + elen]
            assert len(extensions[etype]) == elen
            pos += 4 + elen
    return {
        "record_version": struct.unpack(">H", record[1:3])[0],
        "hs_len": len(hs),
        "version": version,
        "session_id_len": sid_len,
        "suites": suites,
        "extensions": extensions,
    }


def server_hello(
    *,
    version: int = 0x0303,
    suite: int = 0xC02F,
    random: bytes = b"\x11" * 32,
    extensions: bytes | None = None,
) -> bytes:
    body = struct.pack(">H", version) + random + b"\x00" + struct.pack(">HB", suite, 0)
    if extensions is not None:
        body += struct.pack(">H", len(extensions)) + extensions
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack(">H", len(hs)) + hs


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack(">HH", etype, len(data)) + data


# -- builder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "wire"),
    [("SSLv3", 0x0300), ("TLSv1.0", 0x0301), ("TLSv1.1", 0x0302), ("TLSv1.2", 0x0303)],
)
def test_legacy_hello_carries_version_suites_and_reneg_scsv(version: str, wire: int) -> None:
    parsed = parse_client_hello(client_hello(version, [0x002F, 0xC02F], server_name="a.test"))
    assert parsed["version"] == wire
    assert parsed["suites"] == [0x002F, 0xC02F, 0x00FF]
    exts = parsed["extensions"]
    assert isinstance(exts, dict)
    assert 43 not in exts  # no supported_versions below TLS 1.3
    if version == "SSLv3":
        assert parsed["record_version"] == 0x0300
        assert 0 not in exts  # SSLv3 hellos carry no SNI
    else:
        assert b"a.test" in exts[0]


def test_tls13_hello_uses_supported_versions_and_key_share() -> None:
    parsed = parse_client_hello(client_hello("TLSv1.3", [0x1301], server_name="m.test"))
    assert parsed["version"] == 0x0303
    assert parsed["session_id_len"] == 32
    exts = parsed["extensions"]
    assert isinstance(exts, dict)
    assert exts[43] == b"\x02\x03\x04"
    key_share = exts[51]
    assert key_share[2:4] == b"\x00\x1d"  # x25519
    assert int.from_bytes(key_share[4:6], "big") == 32


def test_tls13_hello_without_key_shares_for_hrr() -> None:
    parsed = parse_client_hello(
        client_hello("TLSv1.3", [0x1301], groups=[0x11EC], key_share_groups=())
    )
    exts = parsed["extensions"]
    assert isinstance(exts, dict)
    assert exts[51] == b"\x00\x00"
    assert exts[10] == b"\x00\x02\x11\xec"


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from(["SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"]),
    n=st.integers(min_value=1, max_value=400),
    name=st.one_of(st.none(), st.from_regex(r"[a-z]{1,20}\.test", fullmatch=True)),
)
def test_hello_length_is_never_in_the_f5_range(version: str, n: int, name: str | None) -> None:
    parsed = parse_client_hello(client_hello(version, list(range(1, n + 1)), server_name=name))
    hs_len = parsed["hs_len"]
    assert isinstance(hs_len, int)
    assert not 256 <= hs_len <= 511


def test_builder_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="cipher suite"):
        client_hello("TLSv1.2", [])
    with pytest.raises(ValueError, match="cannot build"):
        client_hello("SSLv2", [1])


def test_sslv2_client_hello_layout() -> None:
    data = sslv2_client_hello([0x010080, 0x0700C0])
    length = ((data[0] & 0x7F) << 8) | data[1]
    assert data[0] & 0x80
    assert length == len(data) - 2
    assert data[2] == 1
    assert data[3:5] == b"\x00\x02"
    assert struct.unpack(">HHH", data[5:11]) == (6, 0, 16)
    assert data[11:17] == bytes.fromhex("010080 0700c0".replace(" ", ""))


# -- reader ----------------------------------------------------------------------------


def test_reads_server_hello_fed_one_byte_at_a_time() -> None:
    data = server_hello(extensions=ext(0xFF01, b"\x00"))
    reader = HelloReader()
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert all(r is None for r in results[:-1])
    final = results[-1]
    assert isinstance(final, ServerHello)
    assert final.version == 0x0303
    assert final.cipher_suite == 0xC02F
    assert final.version_name == "TLSv1.2"
    assert final.extensions == (0xFF01,)


def test_reads_server_hello_split_across_records() -> None:
    whole = server_hello()
    hs = whole[5:]
    rec1 = b"\x16\x03\x03" + struct.pack(">H", 10) + hs[:10]
    rec2 = b"\x16\x03\x03" + struct.pack(">H", len(hs) - 10) + hs[10:]
    reader = HelloReader()
    assert reader.feed(rec1) is None
    result = reader.feed(rec2)
    assert isinstance(result, ServerHello)
    assert result.cipher_suite == 0xC02F


def test_tls13_server_hello_and_hrr() -> None:
    sh = server_hello(
        suite=0x1302,
        extensions=ext(43, b"\x03\x04") + ext(51, b"\x00\x1d\x00\x20" + b"\x01" * 32),
    )
    result = HelloReader().feed(sh)
    assert isinstance(result, ServerHello)
    assert result.version_name == "TLSv1.3"
    assert result.selected_group == 0x1D
    assert not result.is_hello_retry_request
    hrr = server_hello(
        suite=0x1301, random=HRR_RANDOM, extensions=ext(43, b"\x03\x04") + ext(51, b"\x11\xec")
    )
    result = HelloReader().feed(hrr)
    assert isinstance(result, ServerHello)
    assert result.is_hello_retry_request
    assert result.selected_group == 0x11EC


def test_alert() -> None:
    result = HelloReader().feed(b"\x15\x03\x01\x00\x02\x02\x28")
    assert result == Alert(level=2, description=40)
    assert isinstance(result, Alert)
    assert result.description_name == "handshake_failure"


def test_sslv2_server_hello() -> None:
    cert = b"\x30\x03\x02\x01\x00"
    specs = bytes.fromhex("0100800700c0")
    msg = b"\x04\x00\x01\x00\x02" + struct.pack(">HHH", len(cert), len(specs), 16)
    msg += cert + specs + b"\x00" * 16
    data = struct.pack(">H", 0x8000 | len(msg)) + msg
    result = HelloReader(accept_sslv2=True).feed(data)
    assert isinstance(result, SSLv2ServerHello)
    assert result.cipher_specs == (0x010080, 0x0700C0)
    assert result.certificate == cert


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"220 mail.example ESMTP\r\n", "not a TLS record"),
        (b"\x16\x05\x01\x00\x05", "version byte"),
        (b"\x16\x03\x01\xff\xff", "exceeds"),
        (b"\x17\x03\x03\x00\x01\x00", "record type 23"),
        (b"\x16\x03\x03\x00\x04\x0b\x00\x00\x00", "handshake message type 11"),
        (b"\x16\x03\x03\x00\x04\x02\xff\xff\xff", "implausibly large"),
        (b"\x16\x03\x03\x00\x00", "empty"),
    ],
)
def test_garbage_is_a_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        HelloReader().feed(data)


def test_truncated_server_hello_body_is_a_decode_error() -> None:
    body = b"\x03\x03" + b"\x00" * 10
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    with pytest.raises(DecodeError, match="truncated"):
        HelloReader().feed(b"\x16\x03\x03" + struct.pack(">H", len(hs)) + hs)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_give_a_result_none_or_decode_error(data: bytes, sslv2: bool) -> None:
    try:
        result = HelloReader(accept_sslv2=sslv2).feed(data)
    except DecodeError:
        return
    assert result is None or isinstance(result, ServerHello | Alert | SSLv2ServerHello)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.integers(0, 255)), max_size=6),
    st.integers(min_value=0, max_value=120),
)
def test_mutated_server_hellos_never_escape_our_errors(
    mutations: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(server_hello(extensions=ext(43, b"\x03\x04") + ext(51, b"\x00\x1d\x00\x02ab")))
    for pos, value in mutations:
        if pos < len(data):
            data[pos] = value
    reader = HelloReader()
    try:
        reader.feed(bytes(data[:cut]))
        reader.feed(bytes(data[cut:]))
    except DecodeError:
        pass
