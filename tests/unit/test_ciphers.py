"""The cipher-suite registry: completeness, derived flags, version partition, names.

The cross-checks compare our table with sslyze's table and with the local OpenSSL, the
two references the scanner's results must agree with.
"""

from __future__ import annotations

import importlib
import itertools
import shutil
import ssl
import subprocess
from typing import Any

import pytest

from scanner import ciphers
from scanner.ciphers import (
    SSLV2_CIPHER_SPECS,
    VERSIONS,
    CipherSuite,
    all_suites,
    by_code,
    by_name,
    name_of,
    suites_for,
)

# Every range of IANA's registry that is assigned without gaps, plus the scattered codes.
IANA_RANGES = [
    (0x0000, 0x001B),
    (0x001E, 0x0046),
    (0x0067, 0x006D),
    (0x0084, 0x00C7),
    (0x1301, 0x1307),
    (0xC001, 0xC0B5),
    (0xC100, 0xC106),
    (0xCCA8, 0xCCAE),
]
IANA_SINGLES = [0x00FF, 0x5600, 0xD001, 0xD002, 0xD003, 0xD005]
LEGACY_CODES = [*range(0x0060, 0x0067), *range(0x0080, 0x0084), 0xCC13, 0xCC14, 0xCC15]

# OpenSSL's "protocol" of a cipher is the lowest version it can be used in.
OPENSSL_PROTOCOL = {
    "SSLv3": "SSLv3",
    "TLSv1": "TLSv1.0",
    "TLSv1.0": "TLSv1.0",
    "TLSv1.2": "TLSv1.2",
    "TLSv1.3": "TLSv1.3",
}


def suite(code: int) -> CipherSuite:
    found = by_code(code)
    assert found is not None, f"0x{code:04X} missing"
    return found


def names(suites: tuple[CipherSuite, ...]) -> set[str]:
    return {s.name for s in suites}


# --- completeness and uniqueness ---------------------------------------------------------


def test_registry_covers_every_iana_code_and_the_legacy_ones() -> None:
    expected = {c for low, high in IANA_RANGES for c in range(low, high + 1)}
    expected |= {*IANA_SINGLES, *LEGACY_CODES}
    present = {s.code for s in ciphers._registry().suites}
    assert expected - present == set()
    assert present - expected == set()
    assert len(expected) == 366


def test_all_suites_is_in_code_order_without_scsvs() -> None:
    codes = [s.code for s in all_suites()]
    assert codes == sorted(codes)
    assert len(codes) == 364
    assert not any(s.scsv for s in all_suites())


def test_codes_and_names_are_unique() -> None:
    every = ciphers._registry().suites
    assert len({s.code for s in every}) == len(every)
    assert len({s.name.upper() for s in every}) == len(every)
    openssl = [s.openssl_name.upper() for s in every if s.openssl_name]
    assert len(set(openssl)) == len(openssl)
    # An OpenSSL name never names a different suite's IANA name.
    by_iana = {s.name.upper(): s.code for s in every}
    for s in every:
        if s.openssl_name:
            assert by_iana.get(s.openssl_name.upper(), s.code) == s.code


def test_scsvs_are_found_but_never_offered() -> None:
    for code, name in [
        (0x00FF, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"),
        (0x5600, "TLS_FALLBACK_SCSV"),
    ]:
        scsv = suite(code)
        assert scsv.scsv
        assert scsv.name == name
        assert by_name(name) is scsv
        assert name_of(code) == name
        assert scsv not in all_suites()
        for version in VERSIONS:
            assert scsv not in suites_for(version)
            assert not scsv.negotiable_in(version)


# --- fields and flags on known suites -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "fields"),
    [
        (
            0xC02F,
            {
                "name": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "openssl_name": "ECDHE-RSA-AES128-GCM-SHA256",
                "kex": "ECDHE",
                "auth": "RSA",
                "encryption": "AES_128_GCM",
                "mac": "AEAD",
                "bits": 128,
                "export": False,
                "anon": False,
                "null": False,
                "weak": False,
                "aead": True,
                "forward_secrecy": True,
                "min_version": "TLSv1.2",
                "max_version": None,
            },
        ),
        (
            0x0003,
            {
                "name": "TLS_RSA_EXPORT_WITH_RC4_40_MD5",
                "openssl_name": "EXP-RC4-MD5",
                "kex": "RSA",
                "encryption": "RC4_40",
                "mac": "MD5",
                "bits": 40,
                "export": True,
                "weak": True,
                "forward_secrecy": False,
                "min_version": "SSLv3",
                "max_version": "TLSv1.0",
            },
        ),
        (
            0x000A,
            {
                "name": "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
                "openssl_name": "DES-CBC3-SHA",
                "encryption": "3DES_EDE_CBC",
                "mac": "SHA",
                "bits": 112,
                "export": False,
                "weak": True,
                "min_version": "SSLv3",
                "max_version": None,
            },
        ),
        (
            0x0009,
            {"encryption": "DES_CBC", "bits": 56, "weak": True, "max_version": "TLSv1.1"},
        ),
        (
            0x0007,
            {"encryption": "IDEA_CBC", "bits": 128, "weak": True, "max_version": "TLSv1.1"},
        ),
        (0x0005, {"encryption": "RC4_128", "bits": 128, "weak": True, "max_version": None}),
        (0x0004, {"mac": "MD5", "weak": True}),
        (
            0x0034,
            {
                "name": "TLS_DH_anon_WITH_AES_128_CBC_SHA",
                "kex": "DH",
                "auth": "anon",
                "anon": True,
                "weak": True,
                "forward_secrecy": False,
            },
        ),
        (
            0x0000,
            {"kex": "NULL", "auth": "NULL", "anon": True, "null": True, "weak": True, "bits": 0},
        ),
        (0x0002, {"encryption": "NULL", "mac": "SHA", "null": True, "weak": True, "bits": 0}),
        (
            0x002F,
            {
                "openssl_name": "AES128-SHA",
                "weak": False,
                "forward_secrecy": False,
                "min_version": "SSLv3",
            },
        ),
        (0x0033, {"kex": "DHE", "auth": "RSA", "forward_secrecy": True, "weak": False}),
        (0xC013, {"kex": "ECDHE", "min_version": "TLSv1.0", "forward_secrecy": True}),
        (0xC004, {"kex": "ECDH", "auth": "ECDSA", "forward_secrecy": False}),
        (0x003C, {"mac": "SHA256", "min_version": "TLSv1.2", "aead": False}),
        (0x00AE, {"kex": "PSK", "mac": "SHA256", "min_version": "TLSv1.0"}),
        (0x00B2, {"kex": "DHE_PSK", "auth": "PSK", "forward_secrecy": True}),
        (0x0094, {"kex": "RSA_PSK", "auth": "RSA", "forward_secrecy": False}),
        (0xC0AA, {"name": "TLS_PSK_DHE_WITH_AES_128_CCM_8", "kex": "DHE_PSK"}),
        (0xC01E, {"kex": "SRP", "auth": "RSA", "openssl_name": "SRP-RSA-AES-128-CBC-SHA"}),
        (0xC01D, {"kex": "SRP", "auth": "SRP"}),
        (0x0020, {"kex": "KRB5", "auth": "KRB5", "weak": True}),
        (0x0026, {"encryption": "DES40_CBC", "bits": 40, "export": True}),
        (0x0062, {"encryption": "DES_CBC", "bits": 56, "export": True, "max_version": "TLSv1.0"}),
        (
            0xCCA8,
            {
                "encryption": "CHACHA20_POLY1305",
                "bits": 256,
                "aead": True,
                "openssl_name": "ECDHE-RSA-CHACHA20-POLY1305",
            },
        ),
        (0xCC13, {"name": "OLD_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "aead": True}),
        (0xC0A0, {"encryption": "AES_128_CCM_8", "mac": "AEAD", "min_version": "TLSv1.2"}),
        (0xC050, {"encryption": "ARIA_128_GCM", "openssl_name": "ARIA128-GCM-SHA256"}),
        (0xC060, {"openssl_name": "ECDHE-ARIA128-GCM-SHA256", "auth": "RSA"}),
        (0xC03C, {"encryption": "ARIA_128_CBC", "openssl_name": None, "min_version": "TLSv1.2"}),
        (0xC064, {"kex": "PSK", "encryption": "ARIA_128_CBC", "min_version": "TLSv1.0"}),
        (0xC07A, {"encryption": "CAMELLIA_128_GCM", "openssl_name": None}),
        (0x0096, {"encryption": "SEED_CBC", "bits": 128, "weak": False}),
        (
            0xC0B0,
            {"kex": "ECCPWD", "auth": "ECCPWD", "forward_secrecy": True, "aead": True},
        ),
        (
            0x1301,
            {
                "name": "TLS_AES_128_GCM_SHA256",
                "openssl_name": "TLS_AES_128_GCM_SHA256",
                "kex": "ANY",
                "auth": "ANY",
                "forward_secrecy": True,
                "aead": True,
                "min_version": "TLSv1.3",
            },
        ),
        (0x1305, {"name": "TLS_AES_128_CCM_8_SHA256", "encryption": "AES_128_CCM_8"}),
        (0x00C6, {"name": "TLS_SM4_GCM_SM3", "encryption": "SM4_GCM", "min_version": "TLSv1.3"}),
        (
            0xC0B4,
            {
                "name": "TLS_SHA256_SHA256",
                "encryption": "NULL",
                "mac": "SHA256",
                "null": True,
                "weak": True,
                "aead": False,
                "min_version": "TLSv1.3",
            },
        ),
        (
            0xC100,
            {
                "kex": "GOST",
                "auth": "GOST",
                "encryption": "KUZNYECHIK_CTR_OMAC",
                "bits": 256,
                "weak": False,
                "min_version": "TLSv1.2",
            },
        ),
        (0xC101, {"encryption": "MAGMA_CTR_OMAC", "weak": False}),
        (0xC102, {"encryption": "GOST28147_CNT", "weak": True}),
        (0xC103, {"encryption": "KUZNYECHIK_MGM_L", "aead": True, "min_version": "TLSv1.3"}),
        (0x0080, {"openssl_name": "GOST94-GOST89-GOST89", "min_version": "TLSv1.0"}),
        (0x0083, {"encryption": "NULL", "mac": "GOSTR3411", "null": True}),
        (0xD005, {"name": "TLS_ECDHE_PSK_WITH_AES_128_CCM_SHA256", "encryption": "AES_128_CCM"}),
    ],
)
def test_known_suites(code: int, fields: dict[str, Any]) -> None:
    found = suite(code)
    assert {key: getattr(found, key) for key in fields} == fields


def test_flag_rules_hold_on_every_suite() -> None:
    weak_ciphers = ("RC4", "RC2", "DES", "3DES", "IDEA", "GOST28147")
    for s in all_suites():
        assert s.export == ("EXPORT" in s.name), s.name
        assert s.null == (s.encryption == "NULL") == (s.bits == 0), s.name
        assert s.aead == (s.mac == "AEAD"), s.name
        assert s.anon == (s.auth in ("anon", "NULL")), s.name
        expected_weak = (
            s.export
            or s.anon
            or s.null
            or s.bits < 128
            or s.encryption.startswith(weak_ciphers)
            or s.mac == "MD5"
        )
        assert s.weak == expected_weak, s.name
        if s.export:
            assert s.bits <= 56
            assert s.max_version == "TLSv1.0"
        if s.encryption.startswith("3DES"):
            assert s.bits == 112
        if s.tls13:
            assert (s.kex, s.auth) == ("ANY", "ANY")
            assert s.forward_secrecy
        assert s.forward_secrecy == (
            s.kex in ("DHE", "ECDHE", "DHE_PSK", "ECDHE_PSK", "ECCPWD", "ANY")
        ), s.name
        assert s.code_bytes == s.code.to_bytes(2, "big")


def test_version_rules_hold_on_every_suite() -> None:
    psk = ("PSK", "DHE_PSK", "RSA_PSK", "ECDHE_PSK")
    for s in all_suites():
        assert s.min_version in VERSIONS
        assert s.max_version in (None, "TLSv1.0", "TLSv1.1")
        if s.tls13:
            continue
        if s.aead:
            assert s.min_version == "TLSv1.2", s.name
        elif s.mac in ("SHA256", "SHA384"):
            assert s.min_version == ("TLSv1.0" if s.kex in psk else "TLSv1.2"), s.name
        elif s.kex.startswith("ECDH"):
            assert s.min_version == "TLSv1.0", s.name
        if s.encryption.startswith(("DES_", "IDEA")) and not s.export:
            assert s.max_version == "TLSv1.1", s.name


def test_encryption_and_mac_come_from_the_name() -> None:
    for s in all_suites():
        if s.encryption.startswith("GOST28147"):
            assert "28147" in s.name
        elif s.encryption != "NULL":
            assert s.encryption.replace("DES40_CBC", "DES") in s.name.replace("DES_CBC_40", "DES")
        if s.mac in ("SHA", "SHA256", "SHA384", "MD5"):
            assert s.name.endswith("_" + s.mac), s.name


# --- suites_for -----------------------------------------------------------------------------


def test_tls13_is_separate_from_the_older_versions() -> None:
    tls13 = suites_for("TLSv1.3")
    assert names(tls13) >= {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
    assert all(s.tls13 for s in tls13)
    for version in VERSIONS[:-1]:
        assert not any(s.tls13 for s in suites_for(version))


def test_every_suite_is_offered_in_some_version_and_each_once() -> None:
    union: set[int] = set()
    for version in VERSIONS:
        offered = suites_for(version)
        assert len({s.code for s in offered}) == len(offered)
        union |= {s.code for s in offered}
    assert union == {s.code for s in all_suites()}


def test_versions_before_tls13_only_grow() -> None:
    for older, newer in itertools.pairwise(VERSIONS[:4]):
        assert set(suites_for(older)) <= set(suites_for(newer))
    assert set(suites_for("TLSv1.0")) == set(suites_for("TLSv1.1"))


def test_min_version_is_respected() -> None:
    sslv3 = names(suites_for("SSLv3"))
    assert "TLS_RSA_WITH_AES_128_CBC_SHA" in sslv3
    assert "TLS_RSA_EXPORT_WITH_RC4_40_MD5" in sslv3
    assert "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" not in sslv3
    tls10 = names(suites_for("TLSv1.0"))
    assert "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" in tls10
    assert "TLS_PSK_WITH_AES_128_CBC_SHA256" in tls10
    assert "TLS_RSA_WITH_AES_128_CBC_SHA256" not in tls10
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" not in tls10
    tls12 = names(suites_for("TLSv1.2"))
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" in tls12
    assert "TLS_RSA_WITH_AES_128_CBC_SHA256" in tls12
    for version in VERSIONS:
        assert all(s.negotiable_in(version) for s in suites_for(version))


def test_max_version_counts_only_when_strict() -> None:
    export = suite(0x0003)
    des = suite(0x0009)
    assert export in suites_for("TLSv1.2")
    assert des in suites_for("TLSv1.2")
    assert export in suites_for("TLSv1.0", strict=True)
    assert export not in suites_for("TLSv1.1", strict=True)
    assert des in suites_for("TLSv1.1", strict=True)
    assert des not in suites_for("TLSv1.2", strict=True)
    assert suite(0x0005) in suites_for("TLSv1.2", strict=True)  # RC4: weak, not capped


def test_offering_order_puts_strong_common_suites_first() -> None:
    tls12 = suites_for("TLSv1.2")
    assert tls12[0].name == "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    assert [s.name for s in suites_for("TLSv1.3")[:3]] == [
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_GCM_SHA256",
    ]
    for version in VERSIONS:
        weak = [s.weak for s in suites_for(version)]
        assert weak == sorted(weak), version  # every sound suite before every weak one
    strong = [s for s in tls12 if not s.weak]
    aead = [not s.aead for s in strong]
    assert aead == sorted(aead)


def test_unknown_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown protocol version"):
        suites_for("TLSv1.4")
    with pytest.raises(ValueError, match="unknown protocol version"):
        suite(0x002F).negotiable_in("SSLv2")


# --- lookups --------------------------------------------------------------------------------


def test_by_name_takes_iana_and_openssl_names_in_any_case() -> None:
    expected = suite(0xC02F)
    assert by_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256") is expected
    assert by_name("ECDHE-RSA-AES128-GCM-SHA256") is expected
    assert by_name("ecdhe-rsa-aes128-gcm-sha256") is expected
    assert by_name("tls_dh_anon_with_aes_128_cbc_sha") is suite(0x0034)
    assert by_name("TLS_AES_256_GCM_SHA384") is suite(0x1302)


def test_by_name_takes_old_openssl_and_ssl_prefixed_names() -> None:
    assert by_name("EDH-RSA-DES-CBC3-SHA") is suite(0x0016)
    assert by_name("EDH-DSS-DES-CBC3-SHA") is suite(0x0013)
    assert by_name("SSL_RSA_WITH_RC4_128_MD5") is suite(0x0004)
    assert by_name("SSL_DHE_RSA_WITH_3DES_EDE_CBC_SHA") is suite(0x0016)


def test_unknown_names_and_codes() -> None:
    assert by_name("NOT-A-CIPHER") is None
    assert by_name("") is None
    assert by_code(0x0A0A) is None  # GREASE
    assert by_code(0x10000) is None
    assert name_of(0x0A0A) == "UNKNOWN_0x0A0A"
    assert name_of(0xABCD) == "UNKNOWN_0xABCD"
    assert name_of(0x002F) == "TLS_RSA_WITH_AES_128_CBC_SHA"


def test_sslv2_cipher_specs() -> None:
    assert SSLV2_CIPHER_SPECS[0x010080] == "SSL_CK_RC4_128_WITH_MD5"
    assert SSLV2_CIPHER_SPECS[0x0700C0] == "SSL_CK_DES_192_EDE3_CBC_WITH_MD5"
    assert SSLV2_CIPHER_SPECS[0x080080] == "SSL_CK_RC4_64_WITH_MD5"
    assert len(SSLV2_CIPHER_SPECS) == 8
    for code, name in SSLV2_CIPHER_SPECS.items():
        assert 0x010000 <= code <= 0xFFFFFF
        assert name.startswith("SSL_CK_")


# --- cross-checks ---------------------------------------------------------------------------


def _sslyze_suites() -> list[tuple[str, Any]]:
    """(version name, sslyze CipherSuite) for every suite sslyze tests, all versions."""
    module = importlib.import_module("sslyze.plugins.openssl_cipher_suites.cipher_suites")
    tls_versions = importlib.import_module("sslyze.server_connectivity").TlsVersionEnum
    repository = module.CipherSuitesRepository
    return [
        (version.name, cipher_suite)
        for version in tls_versions
        for cipher_suite in repository.get_all_cipher_suites(version)
    ]


@pytest.mark.sslyze
def test_every_sslyze_suite_has_the_same_names_here() -> None:
    checked = 0
    for version, theirs in _sslyze_suites():
        if theirs.name.startswith("SSL_CK_"):
            assert version == "SSL_2_0"
            assert theirs.name in SSLV2_CIPHER_SPECS.values()
            continue
        ours = by_name(theirs.name)
        assert ours is not None, theirs.name
        assert ours.name == theirs.name
        assert by_name(theirs.openssl_name) is ours, theirs.openssl_name
        assert theirs.openssl_name in (ours.openssl_name, *ciphers._OPENSSL_ALIASES), ours.name
        checked += 1
    assert checked > 400


@pytest.mark.sslyze
def test_sslyze_tls12_and_tls13_suites_are_offered_in_those_versions() -> None:
    # sslyze's older-version lists hold every suite its OpenSSL knows, whatever the
    # version, so only TLS 1.2 and 1.3 say something about our version partition.
    wanted = {"TLS_1_2": "TLSv1.2", "TLS_1_3": "TLSv1.3"}
    for version, theirs in _sslyze_suites():
        if version in wanted:
            assert theirs.name in names(suites_for(wanted[version])), theirs.name


@pytest.mark.sslyze
def test_sslyze_openssl_name_mapping_agrees() -> None:
    module = importlib.import_module("sslyze.plugins.openssl_cipher_suites.cipher_suites")
    mapping: dict[str, str] = getattr(module, "_TLS_OPENSSL_TO_RFC_NAMES_MAPPING", {})
    assert mapping, "sslyze (pinned in constraints.txt) has its OpenSSL-to-RFC name table"
    for openssl_name, iana_name in mapping.items():
        ours = by_name(iana_name)
        assert ours is not None, iana_name
        assert by_name(openssl_name) is ours, openssl_name


def _local_openssl_ciphers() -> list[dict[str, Any]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return [dict(c) for c in context.get_ciphers()]


def test_local_openssl_codes_map_to_the_same_names() -> None:
    local = _local_openssl_ciphers()
    assert local
    for cipher in local:
        code = cipher["id"] & 0xFFFF
        ours = by_code(code)
        assert ours is not None, cipher["name"]
        assert ours.openssl_name == cipher["name"]
        assert by_name(cipher["name"]) is ours


def test_local_openssl_versions_match_min_version() -> None:
    for cipher in _local_openssl_ciphers():
        ours = suite(cipher["id"] & 0xFFFF)
        assert ours.min_version == OPENSSL_PROTOCOL[cipher["protocol"]], ours.name


def test_local_openssl_standard_names_match() -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is installed by .ci/install-daemons.sh"
    result = subprocess.run(
        [openssl, "ciphers", "-stdname", "-V", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines
    for line in lines:
        # "0xC0,0x2F - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 - ECDHE-RSA-AES128-GCM-SHA256 ..."
        code_text, _, iana_name, _, openssl_name = line.split()[:5]
        high, low = code_text.split(",")
        code = int(high, 16) << 8 | int(low, 16)
        ours = suite(code)
        assert (ours.name, ours.openssl_name) == (iana_name, openssl_name)
