"""Certificate analysis (pure: DER bytes in, :class:`CertificateInfo` out) and TLS contexts.

The engine fetches the leaf with a full OpenSSL handshake, first through
:func:`verify_context` (does the chain verify?) and, when that fails, again through
:func:`nocheck_context` to read the certificate anyway. :func:`analyse_certificate` then
decides the status from the certificate, the verification outcome and the name we asked
for. Host names are checked here, by RFC 6125, not by OpenSSL, so that a name mismatch is
reported as such instead of failing the handshake.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import idna
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.x509.oid import NameOID

from scanner.errors import ProtocolError, TargetError
from scanner.models import CertificateInfo, CertStatus

__all__ = [
    "analyse_certificate",
    "classify_verify_error",
    "hostname_matches",
    "nocheck_context",
    "verify_context",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Legacy servers (TLS 1.0, SHA-1 signatures, small keys, RC4/3DES) must still hand us
# their certificate: "ALL" with security level 0 is the only way OpenSSL 3 allows that.
_LEGACY_CIPHERS = "ALL:@SECLEVEL=0"
# SSL_OP_LEGACY_SERVER_CONNECT: OpenSSL 3 refuses servers that lack RFC 5746 secure
# renegotiation; the ssl module only names this option from Python 3.12 on.
_OP_LEGACY_SERVER_CONNECT = ssl.Options(0x4)

# OpenSSL verify codes (X509_V_ERR_*) that map to a status of their own.
_VERIFY_CODE_STATUS: dict[int, CertStatus] = {
    9: "not_yet_valid",  # CERT_NOT_YET_VALID
    10: "expired",  # CERT_HAS_EXPIRED
    18: "self_signed",  # DEPTH_ZERO_SELF_SIGNED_CERT (the leaf itself)
    62: "hostname_mismatch",  # HOSTNAME_MISMATCH
    64: "hostname_mismatch",  # IP_ADDRESS_MISMATCH
}

# Key types whose name says everything (no size, no curve).
_KEY_NAMES: dict[type[object], str] = {
    ed25519.Ed25519PublicKey: "Ed25519",
    ed448.Ed448PublicKey: "Ed448",
    x25519.X25519PublicKey: "X25519",
    x448.X448PublicKey: "X448",
}

# Signature algorithm OIDs by the names OpenSSL prints for them.
_SIGNATURE_NAMES: dict[str, str] = {
    "1.2.840.113549.1.1.2": "md2WithRSAEncryption",
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.3.14.3.2.29": "sha1WithRSA",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.10": "rsassaPss",
    "2.16.840.1.101.3.4.3.13": "RSA-SHA3-224",
    "2.16.840.1.101.3.4.3.14": "RSA-SHA3-256",
    "2.16.840.1.101.3.4.3.15": "RSA-SHA3-384",
    "2.16.840.1.101.3.4.3.16": "RSA-SHA3-512",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "2.16.840.1.101.3.4.3.9": "ecdsa_with_SHA3-224",
    "2.16.840.1.101.3.4.3.10": "ecdsa_with_SHA3-256",
    "2.16.840.1.101.3.4.3.11": "ecdsa_with_SHA3-384",
    "2.16.840.1.101.3.4.3.12": "ecdsa_with_SHA3-512",
    "1.2.840.10040.4.3": "dsaWithSHA1",
    "2.16.840.1.101.3.4.3.1": "dsa_with_SHA224",
    "2.16.840.1.101.3.4.3.2": "dsa_with_SHA256",
    "2.16.840.1.101.3.4.3.3": "dsa_with_SHA384",
    "2.16.840.1.101.3.4.3.4": "dsa_with_SHA512",
    "1.3.101.112": "ED25519",
    "1.3.101.113": "ED448",
    "1.2.156.10197.1.501": "SM2-with-SM3",
}


def analyse_certificate(
    leaf_der: bytes,
    *,
    hostname: str | None,
    trusted: bool,
    verify_message: str | None,
    chain_length: int,
    now: datetime,
) -> CertificateInfo:
    """Describe the leaf certificate a server sent and decide its status.

    ``trusted`` and ``verify_message`` come from the verifying handshake; ``hostname`` is
    the name we asked for (None: no name to check, so ``hostname_match`` is True);
    ``now`` is the scan time (a naive datetime is taken as UTC).

    Status, first match wins: ``expired`` / ``not_yet_valid`` (from the validity dates),
    ``self_signed`` (issuer equals subject, the certificate verifies with its own key,
    and it is not trusted), ``untrusted``, ``hostname_mismatch``, ``valid``.

    Raises ProtocolError (phase ``certificate``) when the bytes are not a certificate.
    """
    try:
        cert = x509.load_der_x509_certificate(bytes(leaf_der))
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
        not_before = cert.not_valid_before_utc
        not_after = cert.not_valid_after_utc
        san = _subject_alt_names(cert)
        common_names = _common_names(cert)
        self_signed = _is_self_signed(cert)
        key = _describe_key(cert)
        signature = _signature_name(cert.signature_algorithm_oid)
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise ProtocolError(f"unreadable certificate: {exc}", phase="certificate") from exc

    dns_names = [name for name in san if isinstance(name, str)] if san is not None else []
    ip_addresses = [name for name in san if not isinstance(name, str)] if san is not None else []
    if hostname is None:
        hostname_match = True
    else:
        # RFC 6125 section 6.4.4: the CN counts only when there is no subjectAltName.
        reference_names = dns_names if san is not None else common_names
        hostname_match = hostname_matches(hostname, reference_names, ip_addresses)

    moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    status: CertStatus
    if moment > not_after:
        status = "expired"
    elif moment < not_before:
        status = "not_yet_valid"
    elif not trusted and self_signed:
        status = "self_signed"
    elif not trusted:
        status = "untrusted"
    elif not hostname_match:
        status = "hostname_mismatch"
    else:
        status = "valid"

    return CertificateInfo(
        subject=subject,
        san=tuple(str(name) for name in san or ()),
        issuer=issuer,
        not_before=_iso(not_before),
        not_after=_iso(not_after),
        days_left=(not_after - moment) // timedelta(days=1),
        key=key,
        signature=signature,
        trusted=trusted,
        hostname_match=hostname_match,
        status=status,
        fingerprint_sha256=fingerprint,
        chain_length=chain_length,
        verify_message=verify_message,
    )


def hostname_matches(
    hostname: str, dns_names: Iterable[str], ip_addresses: Iterable[IPAddress] = ()
) -> bool:
    """Whether ``hostname`` is one of the presented identifiers, by RFC 6125.

    An IP address (``[v6]`` brackets allowed) matches only an equal IP address. A DNS
    name is compared in A-label form, case-insensitively and without a trailing dot,
    with each of ``dns_names``; a presented name may start with one wildcard label
    (``*.example.com``) that stands for exactly one non-empty label, and only when at
    least two labels follow it. Partial wildcards (``w*.example.com``, ``xn--*``) and
    wildcards elsewhere never match.
    """
    host = hostname.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return any(address == candidate for candidate in ip_addresses)
    reference = _a_label(host)
    if reference is None:
        return False
    return any(_dns_name_matches(presented, reference) for presented in dns_names)


def classify_verify_error(err: ssl.SSLCertVerificationError) -> CertStatus:
    """The certificate status an OpenSSL verification failure stands for.

    Expired, not-yet-valid, a self-signed leaf and name mismatches have their own status;
    every other failure (unknown issuer, self-signed root in the chain, revoked, bad
    signature, ...) means ``untrusted``.
    """
    code = getattr(err, "verify_code", None)
    if isinstance(code, int):
        return _VERIFY_CODE_STATUS.get(code, "untrusted")
    return "untrusted"


def verify_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the chain against the system trust store.

    ``ca_file`` (PEM) adds trusted certificates, e.g. a company CA; an empty string means
    none. Host names are not checked here (:func:`analyse_certificate` does it), and
    legacy protocols and ciphers are allowed so that old servers still show their
    certificate. A ``ca_file`` that cannot be read raises TargetError.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        _load_ca_file(context, ca_file)
    _allow_legacy(context)
    return context


def nocheck_context() -> ssl.SSLContext:
    """A client context that accepts any certificate, to read one that does not verify."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _allow_legacy(context)
    return context


def _allow_legacy(context: ssl.SSLContext) -> None:
    # The lowest version the local OpenSSL has: TLS 1.0 on builds without SSLv3.
    # (Naming TLSVersion.TLSv1 would raise a DeprecationWarning on every call.)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers(_LEGACY_CIPHERS)
    context.options |= _OP_LEGACY_SERVER_CONNECT


def _load_ca_file(context: ssl.SSLContext, ca_file: str) -> None:
    if not os.path.isfile(ca_file):
        raise TargetError(f"CA file {ca_file!r} does not exist or is not a file")
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TargetError(f"CA file {ca_file!r} holds no usable PEM certificate: {exc}") from exc


def _subject_alt_names(cert: x509.Certificate) -> list[str | IPAddress] | None:
    """DNS names and IP addresses in certificate order; None without the extension."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    names: list[str | IPAddress] = []
    for general_name in extension.value:
        value = general_name.value
        if isinstance(general_name, x509.DNSName | x509.IPAddress) and isinstance(
            value, str | ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            names.append(value)
    return names


def _common_names(cert: x509.Certificate) -> list[str]:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [attribute.value for attribute in values if isinstance(attribute.value, str)]


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _describe_key(cert: x509.Certificate) -> str:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return f"unknown {cert.public_key_algorithm_oid.dotted_string}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    for key_type, name in _KEY_NAMES.items():
        if isinstance(key, key_type):
            return name
    return f"unknown {cert.public_key_algorithm_oid.dotted_string}"


def _signature_name(oid: x509.ObjectIdentifier) -> str:
    return _SIGNATURE_NAMES.get(oid.dotted_string, oid.dotted_string)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _a_label(name: str) -> str | None:
    """``name`` in lower-case A-label form without a trailing dot; None if not a DNS name."""
    name = name.rstrip(".")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    name = name.lower()
    if not name or "" in name.split("."):
        return None
    return name


def _dns_name_matches(presented: str, reference: str) -> bool:
    pattern = presented.strip().rstrip(".").lower()
    if not pattern.isascii():
        return False  # RFC 5280: dNSName holds A-labels; a U-label is malformed
    if "*" not in pattern:
        return pattern == reference
    labels = pattern.split(".")
    if labels[0] != "*" or "*" in pattern[1:] or len(labels) < 3:
        return False
    reference_labels = reference.split(".")
    return len(reference_labels) == len(labels) and reference_labels[1:] == labels[1:]
