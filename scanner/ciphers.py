"""The TLS cipher-suite registry: every IANA code, its names, its parts and its verdicts.

The scanner offers every known suite in its own ClientHellos and reports the suites a
server accepts by IANA name, so it needs the whole registry, not just what the local
OpenSSL implements. The table lives in ``cipher_suites.csv`` beside this module (one row
per code, facts only) and is parsed on first use; the flags are derived here, by the
rules documented on :class:`CipherSuite`.

Version rules used for ``min_version`` (the lowest version a suite can be negotiated in):

* TLS 1.3 suites (RFC 8446, 8998, 9150, 9367 and the AEGIS draft): ``"TLSv1.3"`` only.
* AEAD suites (GCM, CCM, ChaCha20-Poly1305) and suites whose HMAC is SHA-256/SHA-384:
  ``"TLSv1.2"`` (RFC 5246, 5288, 5289, 6655, 7905 ...), except the PSK families with
  HMAC-SHA-256/384 (RFC 5487, 5489, 6209, 6367), which those RFCs allow from TLS 1.0 on.
* GOST R 34.10-2012 suites 0xC100-0xC102: ``"TLSv1.2"`` (RFC 9189).
* ECC suites (RFC 4492, 5489) and the pre-RFC GOST suites 0x0080-0x0083: ``"TLSv1.0"``.
* Everything else (RSA, DH, DHE, KRB5, PSK, SRP, exports, RC4, DES, 3DES, AES-CBC,
  CAMELLIA-CBC, SEED ...): ``"SSLv3"``, because SSLv3 stacks negotiate them there.

``max_version`` is set only where an RFC forbids a suite in later versions: export
suites stop at ``"TLSv1.0"`` (RFC 4346 appendix A.5, applied to every ``*_EXPORT*``
suite, KRB5 and EXPORT1024 included) and single-DES and IDEA suites at ``"TLSv1.1"``
(RFC 5469, applied to every DES/IDEA suite). RC4 is forbidden in every version (RFC 7465)
and so has no useful maximum; it is flagged ``weak`` instead. TLS 1.3 excluding the older
suites (and vice versa) is structural: see :func:`suites_for`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "SSLV2_CIPHER_SPECS",
    "VERSIONS",
    "CipherSuite",
    "all_suites",
    "by_code",
    "by_name",
    "name_of",
    "suites_for",
]

#: The protocol versions that use two-byte cipher suites, oldest first.
VERSIONS: tuple[str, ...] = ("SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_RANK = {version: rank for rank, version in enumerate(VERSIONS)}

#: SSLv2's three-byte cipher specs (draft-hickman-netscape-ssl-00 and Netscape's RC4_64).
SSLV2_CIPHER_SPECS: dict[int, str] = {
    0x010080: "SSL_CK_RC4_128_WITH_MD5",
    0x020080: "SSL_CK_RC4_128_EXPORT40_WITH_MD5",
    0x030080: "SSL_CK_RC2_128_CBC_WITH_MD5",
    0x040080: "SSL_CK_RC2_128_CBC_EXPORT40_WITH_MD5",
    0x050080: "SSL_CK_IDEA_128_CBC_WITH_MD5",
    0x060040: "SSL_CK_DES_64_CBC_WITH_MD5",
    0x0700C0: "SSL_CK_DES_192_EDE3_CBC_WITH_MD5",
    0x080080: "SSL_CK_RC4_64_WITH_MD5",
}

_DATA_FILE = "cipher_suites.csv"

# Older OpenSSL releases (before 1.1.0) spelled these two suites with "EDH"; sslyze's
# legacy OpenSSL still reports them that way.
_OPENSSL_ALIASES: dict[str, int] = {
    "EDH-DSS-DES-CBC3-SHA": 0x0013,
    "EDH-RSA-DES-CBC3-SHA": 0x0016,
}

# Ciphers that are weak whatever their key size: RC4 (RFC 7465) and the 64-bit block
# ciphers open to Sweet32 (CVE-2016-2183). Magma (GOST R 34.12-2015, 64-bit block) is
# not listed: RFC 9189 and RFC 9367 re-key it (ACPKM, TLSTREE) well before that bound.
_WEAK_CIPHER_PREFIXES = ("RC4", "RC2", "DES", "3DES", "IDEA", "GOST28147")
_FORWARD_SECRET_KEX = frozenset({"DHE", "ECDHE", "DHE_PSK", "ECDHE_PSK", "ECCPWD", "ANY"})
_PSK_KEX = frozenset({"PSK", "DHE_PSK", "RSA_PSK", "ECDHE_PSK"})

# Offering order (see suites_for): preferred key exchanges, authentications and ciphers
# come first; anything not listed sorts after the listed ones.
_KEX_ORDER = {"ANY": 0, "ECDHE": 1, "DHE": 2, "RSA": 3, "ECDH": 4, "DH": 5}
_AUTH_ORDER = {"ECDSA": 0, "RSA": 1, "ANY": 1, "DSS": 2}


@dataclass(frozen=True, slots=True)
class CipherSuite:
    """One two-byte TLS cipher suite and what it implies.

    Fields are facts from the registry; the flags follow these rules:

    * ``export``: the IANA name contains ``EXPORT`` (``EXPORT1024`` included).
    * ``anon``: no authentication: ``auth`` is ``"anon"`` (DH_anon, ECDH_anon) or
      ``"NULL"`` (TLS_NULL_WITH_NULL_NULL).
    * ``null``: no encryption (``encryption == "NULL"``), including the integrity-only
      TLS 1.3 suites TLS_SHA256_SHA256 and TLS_SHA384_SHA384.
    * ``aead``: the cipher authenticates itself (GCM, CCM, ChaCha20-Poly1305, MGM, AEGIS);
      ``mac`` is then ``"AEAD"``.
    * ``forward_secrecy``: authenticated ephemeral key exchange: DHE, ECDHE, DHE_PSK,
      ECDHE_PSK, ECCPWD, and every TLS 1.3 suite (``kex == "ANY"``). Anonymous (EC)DH is
      ephemeral too but protects nothing, so it is not counted.
    * ``weak``: any of: ``export``; ``anon``; ``null``; fewer than 128 effective key bits
      (export, DES, 3DES at 112); RC4 at any key size; a 64-bit block cipher (RC2, DES,
      3DES, IDEA, GOST 28147-89: Sweet32); an HMAC-MD5 ``mac``. SHA-1 HMAC, CBC mode and
      static (EC)DH or RSA key exchange are legacy but not weak by this rule.
    * ``scsv``: a signalling value (TLS_EMPTY_RENEGOTIATION_INFO_SCSV, TLS_FALLBACK_SCSV),
      not a suite: found by :func:`by_code` and :func:`by_name`, never listed by
      :func:`all_suites` or :func:`suites_for`; its other flags mean nothing.

    ``min_version`` and ``max_version`` follow the rules in the module docstring.
    """

    code: int
    name: str
    openssl_name: str | None
    kex: str
    auth: str
    encryption: str
    mac: str
    bits: int
    export: bool
    anon: bool
    null: bool
    weak: bool
    aead: bool
    forward_secrecy: bool
    min_version: str
    max_version: str | None = None
    scsv: bool = False

    @property
    def tls13(self) -> bool:
        """True for the suites that exist only in TLS 1.3."""
        return self.min_version == "TLSv1.3"

    @property
    def code_bytes(self) -> bytes:
        """The two bytes of the code, as sent in a ClientHello."""
        return self.code.to_bytes(2, "big")

    def negotiable_in(self, version: str, *, strict: bool = False) -> bool:
        """Whether a server may pick this suite in ``version``.

        With ``strict`` the RFC maximum counts too; without it, a suite stays negotiable
        above its ``max_version``, because servers that ignore the RFC must be detected.
        """
        rank = _version_rank(version)
        if self.scsv:
            return False
        if self.tls13 or version == "TLSv1.3":
            return self.tls13 and version == "TLSv1.3"
        if rank < _RANK[self.min_version]:
            return False
        return not (strict and self.max_version is not None and rank > _RANK[self.max_version])


@dataclass(frozen=True, slots=True)
class _Registry:
    suites: tuple[CipherSuite, ...]  # registry order, SCSVs included
    codes: dict[int, CipherSuite]
    names: dict[str, CipherSuite]  # upper-cased IANA and OpenSSL names


def _version_rank(version: str) -> int:
    try:
        return _RANK[version]
    except KeyError:
        raise ValueError(f"unknown protocol version {version!r}; use one of {VERSIONS}") from None


def _make_suite(row: dict[str, str]) -> CipherSuite:
    name = row["name"]
    kex, auth, encryption, mac = row["kex"], row["auth"], row["encryption"], row["mac"]
    bits = int(row["bits"])
    min_version = row["min_version"]
    max_version = row["max_version"] or None
    for version in (min_version, max_version):
        if version is not None:
            _version_rank(version)
    export = "_EXPORT" in name
    anon = auth in ("anon", "NULL")
    null = encryption == "NULL"
    aead = mac == "AEAD"
    weak = (
        export
        or anon
        or null
        or bits < 128
        or encryption.startswith(_WEAK_CIPHER_PREFIXES)
        or mac == "MD5"
    )
    return CipherSuite(
        code=int(row["code"], 16),
        name=name,
        openssl_name=row["openssl_name"] or None,
        kex=kex,
        auth=auth,
        encryption=encryption,
        mac=mac,
        bits=bits,
        export=export,
        anon=anon,
        null=null,
        weak=weak,
        aead=aead,
        forward_secrecy=kex in _FORWARD_SECRET_KEX,
        min_version=min_version,
        max_version=max_version,
        scsv=name.endswith("_SCSV"),
    )


@cache
def _registry() -> _Registry:
    text = resources.files("scanner").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    suites = tuple(_make_suite(row) for row in csv.DictReader(lines))
    codes: dict[int, CipherSuite] = {}
    names: dict[str, CipherSuite] = {}
    for suite in suites:
        if suite.code in codes:
            raise ValueError(f"{_DATA_FILE}: code 0x{suite.code:04X} listed twice")
        codes[suite.code] = suite
        for key in {suite.name.upper(), (suite.openssl_name or suite.name).upper()}:
            if key in names:
                raise ValueError(f"{_DATA_FILE}: name {key} listed twice")
            names[key] = suite
    for alias, code in _OPENSSL_ALIASES.items():
        names[alias] = codes[code]
    return _Registry(suites=suites, codes=codes, names=names)


def by_code(code: int) -> CipherSuite | None:
    """The suite (or SCSV) with this two-byte code, or None if the registry lacks it."""
    return _registry().codes.get(code)


def by_name(name: str) -> CipherSuite | None:
    """The suite with this IANA or OpenSSL name (any case), or None.

    Old OpenSSL spellings (``EDH-RSA-DES-CBC3-SHA``) and the ``SSL_`` prefix that SSLv3-era
    stacks such as Java use (``SSL_RSA_WITH_RC4_128_MD5``) are accepted too.
    """
    names = _registry().names
    key = name.strip().upper()
    found = names.get(key)
    if found is None and key.startswith("SSL_"):
        found = names.get("TLS_" + key.removeprefix("SSL_"))
    return found


def name_of(code: int) -> str:
    """The IANA name of ``code``, or ``UNKNOWN_0xABCD`` for a code the registry lacks."""
    suite = by_code(code)
    return suite.name if suite is not None else f"UNKNOWN_0x{code:04X}"


def all_suites() -> tuple[CipherSuite, ...]:
    """Every cipher suite in registry (code) order, without the signalling values."""
    return _all_suites()


@cache
def _all_suites() -> tuple[CipherSuite, ...]:
    return tuple(suite for suite in _registry().suites if not suite.scsv)


def suites_for(version: str, *, strict: bool = False) -> tuple[CipherSuite, ...]:
    """Every suite a server may pick in ``version``, in the order a client offers them.

    ``"TLSv1.3"`` gives only the TLS 1.3 suites; the other versions give no TLS 1.3 suite
    and only suites whose ``min_version`` is at most ``version``. Suites above their
    ``max_version`` (export suites in TLS 1.2, say) are included unless ``strict``,
    because a scanner must see servers that still pick them.

    Order: sound suites before weak ones, AEAD before the rest, forward secrecy before
    static key exchange, then ECDHE, DHE, RSA, ECDH, DH before the exotic families, ECDSA
    before RSA before DSS, AES-GCM, AES-CBC and ChaCha20 before AES-CCM, AES-CCM_8 and the
    other ciphers, bigger keys first, and registry order last.
    """
    _version_rank(version)
    return _suites_for(version, strict)


def _cipher_rank(suite: CipherSuite) -> int:
    """0 for the ciphers every stack has (AES-GCM, AES-CBC, ChaCha20), CCM, CCM_8, rest."""
    encryption = suite.encryption
    if suite.name.startswith("OLD_"):  # pre-RFC 7905 ChaCha20 code points
        return 4
    if encryption.startswith("AES_") and "CCM" in encryption:
        return 2 if encryption.endswith("CCM_8") else 1
    return 0 if encryption.startswith(("AES_", "CHACHA20")) else 3


@cache
def _suites_for(version: str, strict: bool) -> tuple[CipherSuite, ...]:
    position = {suite.code: index for index, suite in enumerate(all_suites())}

    def offering_key(suite: CipherSuite) -> tuple[bool, bool, bool, int, int, int, int, int]:
        return (
            suite.weak,
            not suite.aead,
            not suite.forward_secrecy,
            _KEX_ORDER.get(suite.kex, len(_KEX_ORDER)),
            _AUTH_ORDER.get(suite.auth, len(_AUTH_ORDER)),
            _cipher_rank(suite),
            -suite.bits,
            position[suite.code],
        )

    chosen = [s for s in all_suites() if s.negotiable_in(version, strict=strict)]
    return tuple(sorted(chosen, key=offering_key))
