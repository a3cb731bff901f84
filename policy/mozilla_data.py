"""Mozilla's Server Side TLS configurations, as data, with the guideline version named.

Facts transcribed from Mozilla's published guideline documents (protocol versions, IANA
cipher-suite names, TLS 1.3 suites, groups, certificate requirements, HSTS age):

* 6.0 — https://ssl-config.mozilla.org/guidelines/6.0.json, the current guidelines.
  They define ``modern`` and ``intermediate`` only: 6.0 withdrew ``old``. Compared with
  5.7, ``intermediate`` drops the DHE suites and its oldest clients move up (Firefox
  31.3, Chrome 49, Java 8u161), and X25519MLKEM768 heads the groups of both.
* 5.7 — https://ssl-config.mozilla.org/guidelines/5.7.json (2023-05-15), the last
  version whose ``old`` configuration we check against; also the version sslyze 6
  ships.

Protocol names are ours (``TLSv1.0``), not Mozilla's ``TLSv1``; groups and curves keep
Mozilla's (OpenSSL) names and are translated where they are compared.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CURRENT", "GUIDELINES", "MozillaConfig"]


@dataclass(frozen=True, slots=True)
class MozillaConfig:
    """One Mozilla configuration (``modern``, ``intermediate`` or ``old``) of one version."""

    name: str
    version: str
    href: str
    tls_versions: frozenset[str]
    ciphers: tuple[str, ...]  # TLS 1.0-1.2 suites, IANA names, in Mozilla's order
    ciphersuites: tuple[str, ...]  # TLS 1.3 suites
    tls_curves: tuple[str, ...]
    certificate_types: frozenset[str]  # "ecdsa", "rsa"
    certificate_curves: frozenset[str]
    certificate_signatures: frozenset[str]
    rsa_key_size: int | None
    dh_param_size: int | None
    ecdh_param_size: int
    maximum_certificate_lifespan: int
    recommended_certificate_lifespan: int
    server_preferred_order: bool
    hsts_min_age: int
    ocsp_staple: bool
    oldest_clients: tuple[str, ...]


_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
_ECDSA_SIGNATURES = frozenset({"ecdsa-with-SHA256", "ecdsa-with-SHA384", "ecdsa-with-SHA512"})
_CERT_CURVES = frozenset({"prime256v1", "secp384r1"})
_TWO_YEARS = 63072000
_MODERN_CLIENTS = (
    "Firefox 63",
    "Android 10.0",
    "Chrome 70",
    "Edge 75",
    "Java 11",
    "OpenSSL 1.1.1",
    "Opera 57",
    "Safari 12.1",
)
_ECDHE_AEAD = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)


def _href(version: str) -> str:
    return f"https://ssl-config.mozilla.org/guidelines/{version}.json"


def _modern(version: str, curves: tuple[str, ...]) -> MozillaConfig:
    return MozillaConfig(
        name="modern",
        version=version,
        href=_href(version),
        tls_versions=frozenset({"TLSv1.3"}),
        ciphers=(),
        ciphersuites=_TLS13_SUITES,
        tls_curves=curves,
        certificate_types=frozenset({"ecdsa"}),
        certificate_curves=_CERT_CURVES,
        certificate_signatures=_ECDSA_SIGNATURES,
        rsa_key_size=None,
        dh_param_size=None,
        ecdh_param_size=256,
        maximum_certificate_lifespan=90,
        recommended_certificate_lifespan=90,
        server_preferred_order=False,
        hsts_min_age=_TWO_YEARS,
        ocsp_staple=True,
        oldest_clients=_MODERN_CLIENTS,
    )


_CURVES_57 = ("X25519", "prime256v1", "secp384r1")
_CURVES_60 = ("X25519MLKEM768", "X25519", "prime256v1", "secp384r1")

_V57 = "5.7"
_V60 = "6.0"

GUIDELINES: dict[str, dict[str, MozillaConfig]] = {
    _V57: {
        "modern": _modern(_V57, _CURVES_57),
        "intermediate": MozillaConfig(
            name="intermediate",
            version=_V57,
            href=_href(_V57),
            tls_versions=frozenset({"TLSv1.2", "TLSv1.3"}),
            ciphers=(
                *_ECDHE_AEAD,
                "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ),
            ciphersuites=_TLS13_SUITES,
            tls_curves=_CURVES_57,
            certificate_types=frozenset({"ecdsa", "rsa"}),
            certificate_curves=_CERT_CURVES,
            certificate_signatures=_ECDSA_SIGNATURES | {"sha256WithRSAEncryption"},
            rsa_key_size=2048,
            dh_param_size=2048,
            ecdh_param_size=256,
            maximum_certificate_lifespan=366,
            recommended_certificate_lifespan=90,
            server_preferred_order=False,
            hsts_min_age=_TWO_YEARS,
            ocsp_staple=True,
            oldest_clients=(
                "Firefox 27",
                "Android 4.4.2",
                "Chrome 31",
                "Edge",
                "IE 11 on Windows 7",
                "Java 8u31",
                "OpenSSL 1.0.1",
                "Opera 20",
                "Safari 9",
            ),
        ),
        "old": MozillaConfig(
            name="old",
            version=_V57,
            href=_href(_V57),
            tls_versions=frozenset({"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}),
            ciphers=(
                *_ECDHE_AEAD,
                "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
                "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
                "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
                "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
                "TLS_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_RSA_WITH_AES_128_CBC_SHA256",
                "TLS_RSA_WITH_AES_256_CBC_SHA256",
                "TLS_RSA_WITH_AES_128_CBC_SHA",
                "TLS_RSA_WITH_AES_256_CBC_SHA",
                "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
            ),
            ciphersuites=_TLS13_SUITES,
            tls_curves=_CURVES_57,
            certificate_types=frozenset({"rsa"}),
            certificate_curves=_CERT_CURVES,
            certificate_signatures=frozenset({"sha256WithRSAEncryption"}),
            rsa_key_size=2048,
            dh_param_size=1024,
            ecdh_param_size=256,
            maximum_certificate_lifespan=366,
            recommended_certificate_lifespan=90,
            server_preferred_order=True,
            hsts_min_age=_TWO_YEARS,
            ocsp_staple=True,
            oldest_clients=(
                "Firefox 1",
                "Android 2.3",
                "Chrome 1",
                "Edge 12",
                "IE8 on Windows XP",
                "Java 6",
                "OpenSSL 0.9.8",
                "Opera 5",
                "Safari 1",
            ),
        ),
    },
    _V60: {
        "modern": _modern(_V60, _CURVES_60),
        "intermediate": MozillaConfig(
            name="intermediate",
            version=_V60,
            href=_href(_V60),
            tls_versions=frozenset({"TLSv1.2", "TLSv1.3"}),
            ciphers=_ECDHE_AEAD,
            ciphersuites=_TLS13_SUITES,
            tls_curves=_CURVES_60,
            certificate_types=frozenset({"ecdsa", "rsa"}),
            certificate_curves=_CERT_CURVES,
            certificate_signatures=_ECDSA_SIGNATURES | {"sha256WithRSAEncryption"},
            rsa_key_size=2048,
            dh_param_size=2048,
            ecdh_param_size=256,
            maximum_certificate_lifespan=366,
            recommended_certificate_lifespan=90,
            server_preferred_order=False,
            hsts_min_age=_TWO_YEARS,
            ocsp_staple=True,
            oldest_clients=(
                "Firefox 31.3.0",
                "Android 4.4.2",
                "Chrome 49",
                "Edge 15 on Windows 10",
                "IE 11 on Windows 10",
                "Java 8u161",
                "OpenSSL 1.0.1l",
                "Opera 20",
                "Safari 9",
            ),
        ),
    },
}

#: What an endpoint is checked against by default: the current guidelines (6.0) for
#: ``modern`` and ``intermediate``; ``old`` from 5.7, since 6.0 no longer defines it.
CURRENT: tuple[MozillaConfig, ...] = (
    GUIDELINES[_V60]["modern"],
    GUIDELINES[_V60]["intermediate"],
    GUIDELINES[_V57]["old"],
)
