"""Certificate analysis and the TLS contexts, with certificates made in the test.

Certificates come from ``trustme`` (a real CA and chain) or are built with
``cryptography`` where a test needs exact dates, names or keys. The handshakes run
between two ``ssl.SSLObject``s over memory BIOs: no sockets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from scanner.certificate import (
    analyse_certificate,
    classify_verify_error,
    hostname_matches,
    nocheck_context,
    verify_context,
)
from scanner.errors import ProtocolError, TargetError
from scanner.models import CertificateInfo

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


# --- building certificates -----------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    name: x509.Name
    key: PrivateKey


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def name(common_name: str, organization: str = "tlsfleet tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_cert(
    *,
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issuer | None = None,
    dns: Sequence[str] | None = (),
    ips: Sequence[str] = (),
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=60),
) -> bytes:
    """DER of a certificate; ``issuer`` None means self-signed, ``dns`` None means no SAN."""
    signer = issuer or Issuer(subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if dns is not None:
        general_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        general_names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    algorithm = None if isinstance(signer.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer.key, algorithm).public_bytes(serialization.Encoding.DER)


def der_of(leaf: trustme.LeafCert) -> bytes:
    pem = leaf.cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def analyse(
    der: bytes,
    *,
    hostname: str | None = "www.example.org",
    trusted: bool = True,
    verify_message: str | None = None,
    chain_length: int = 2,
    now: datetime = NOW,
) -> CertificateInfo:
    return analyse_certificate(
        der,
        hostname=hostname,
        trusted=trusted,
        verify_message=verify_message,
        chain_length=chain_length,
        now=now,
    )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_issuer() -> Issuer:
    key = rsa_key()
    return Issuer(name("tlsfleet test CA"), key)


# --- fields and statuses ------------------------------------------------------------------


def test_valid_chain_from_trustme_fills_every_field(ca: trustme.CA) -> None:
    # Given a leaf issued by a CA for two names and an IP, with an EC key
    leaf = ca.issue_cert("www.example.org", "example.org", "192.0.2.7", common_name="web")
    der = der_of(leaf)
    # When it verified and we asked for one of its names
    info = analyse(der, now=datetime.now(UTC), chain_length=2, verify_message=None)
    # Then everything is reported and the status is valid
    cert = x509.load_der_x509_certificate(der)
    assert info.status == "valid"
    assert info.trusted is True
    assert info.hostname_match is True
    assert info.san == ("www.example.org", "example.org", "192.0.2.7")
    assert info.subject == cert.subject.rfc4514_string()
    assert "CN=web" in info.subject
    assert info.issuer == cert.issuer.rfc4514_string()
    assert info.issuer != info.subject
    assert info.key == "EC secp256r1"
    assert info.signature == "ecdsa-with-SHA256"
    assert info.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert info.chain_length == 2
    assert info.verify_message is None
    assert ISO.match(info.not_before)
    assert ISO.match(info.not_after)
    assert info.days_left > 300


def test_rsa_leaf_from_trustme(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("mail.example.org", key_type=trustme.KeyType.RSA)
    info = analyse(der_of(leaf), hostname="MAIL.example.org.", now=datetime.now(UTC))
    assert info.key == "RSA 2048"
    assert info.status == "valid"


def test_dates_and_days_left(ca_issuer: Issuer) -> None:
    der = make_cert(
        subject=name("www.example.org"),
        key=rsa_key(),
        issuer=ca_issuer,
        dns=["www.example.org"],
        not_before=datetime(2026, 1, 1, tzinfo=UTC),
        not_after=datetime(2026, 3, 11, 12, 0, 0, tzinfo=UTC),
    )
    info = analyse(der)
    assert info.not_before == "2026-01-01T00:00:00Z"
    assert info.not_after == "2026-03-11T12:00:00Z"
    assert info.days_left == 10
    assert info.signature == "sha256WithRSAEncryption"
    # Floor, not rounding: one second short of ten days is nine.
    assert analyse(der, now=NOW + timedelta(seconds=1)).days_left == 9
    # A naive "now" is taken as UTC.
    assert analyse(der, now=NOW.replace(tzinfo=None)).days_left == 10


def test_expired_wins_over_everything() -> None:
    key = rsa_key()
    der = make_cert(
        subject=name("old.example.org"),
        key=key,
        dns=["old.example.org"],
        not_before=NOW - timedelta(days=400),
        not_after=NOW - timedelta(seconds=1),
    )
    info = analyse(der, hostname="other.example.org", trusted=False, verify_message="expired")
    assert info.status == "expired"
    assert info.days_left == -1
    assert info.hostname_match is False
    assert info.verify_message == "expired"


def test_expired_days_left_is_negative(ca_issuer: Issuer) -> None:
    der = make_cert(
        subject=name("www.example.org"),
        key=rsa_key(),
        issuer=ca_issuer,
        dns=["www.example.org"],
        not_before=NOW - timedelta(days=100),
        not_after=NOW - timedelta(days=3, hours=1),
    )
    info = analyse(der, trusted=False)
    assert info.status == "expired"
    assert info.days_left == -4


def test_last_second_of_validity_is_still_valid(ca_issuer: Issuer) -> None:
    der = make_cert(
        subject=name("www.example.org"),
        key=rsa_key(),
        issuer=ca_issuer,
        dns=["www.example.org"],
        not_after=NOW,
    )
    info = analyse(der)
    assert info.status == "valid"
    assert info.days_left == 0


def test_not_yet_valid(ca_issuer: Issuer) -> None:
    der = make_cert(
        subject=name("new.example.org"),
        key=rsa_key(),
        issuer=ca_issuer,
        dns=["new.example.org"],
        not_before=NOW + timedelta(hours=2),
        not_after=NOW + timedelta(days=90),
    )
    info = analyse(der, hostname="new.example.org", trusted=False)
    assert info.status == "not_yet_valid"
    assert info.days_left == 90


def test_self_signed_when_not_trusted() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = name("selfie.example.org")
    der = make_cert(subject=subject, key=key, dns=["selfie.example.org"])
    info = analyse(der, hostname="selfie.example.org", trusted=False, chain_length=1)
    assert info.status == "self_signed"
    assert info.subject == info.issuer
    assert info.key == "EC secp384r1"
    assert info.signature == "ecdsa-with-SHA256"
    assert info.chain_length == 1


def test_self_signed_beats_hostname_mismatch() -> None:
    der = make_cert(subject=name("selfie.example.org"), key=rsa_key(), dns=["selfie.example.org"])
    info = analyse(der, hostname="other.example.org", trusted=False)
    assert info.status == "self_signed"
    assert info.hostname_match is False


def test_trusted_self_signed_certificate_is_judged_on_its_name() -> None:
    # A self-signed certificate pinned through the extra CA file verifies.
    der = make_cert(subject=name("pinned.example.org"), key=rsa_key(), dns=["pinned.example.org"])
    assert analyse(der, hostname="pinned.example.org", trusted=True).status == "valid"
    assert analyse(der, hostname="x.example.org", trusted=True).status == "hostname_mismatch"


def test_same_subject_and_issuer_but_other_signer_is_not_self_signed() -> None:
    # Issuer name equals subject, but another key signed it: a forged or re-keyed CA.
    subject = name("twin.example.org")
    der = make_cert(
        subject=subject,
        key=rsa_key(),
        issuer=Issuer(subject, rsa_key()),
        dns=["twin.example.org"],
    )
    info = analyse(der, hostname="twin.example.org", trusted=False)
    assert info.subject == info.issuer
    assert info.status == "untrusted"


def test_untrusted_ca_signed_leaf(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("www.example.org")
    info = analyse(
        der_of(leaf),
        trusted=False,
        verify_message="unable to get local issuer certificate",
        now=datetime.now(UTC),
    )
    assert info.status == "untrusted"
    assert info.verify_message == "unable to get local issuer certificate"


def test_untrusted_beats_hostname_mismatch(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("www.example.org")
    info = analyse(der_of(leaf), hostname="x.example.net", trusted=False, now=datetime.now(UTC))
    assert info.status == "untrusted"
    assert info.hostname_match is False


def test_hostname_mismatch(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("www.example.org")
    info = analyse(der_of(leaf), hostname="mail.example.org", now=datetime.now(UTC))
    assert info.status == "hostname_mismatch"
    assert info.hostname_match is False
    assert info.trusted is True


def test_no_hostname_means_nothing_to_check(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("www.example.org")
    info = analyse(der_of(leaf), hostname=None, now=datetime.now(UTC))
    assert info.hostname_match is True
    assert info.status == "valid"


def test_wildcard_certificate(ca: trustme.CA) -> None:
    der = der_of(ca.issue_cert("*.example.org"))
    now = datetime.now(UTC)
    assert analyse(der, hostname="www.example.org", now=now).status == "valid"
    assert analyse(der, hostname="a.b.example.org", now=now).status == "hostname_mismatch"
    assert analyse(der, hostname="example.org", now=now).status == "hostname_mismatch"


def test_ip_address_san(ca: trustme.CA) -> None:
    der = der_of(ca.issue_cert("192.0.2.7", "2001:db8::1", "www.example.org"))
    now = datetime.now(UTC)
    assert analyse(der, hostname="192.0.2.7", now=now).hostname_match
    assert analyse(der, hostname="2001:DB8:0::1", now=now).hostname_match
    assert analyse(der, hostname="[2001:db8::1]", now=now).hostname_match
    assert not analyse(der, hostname="192.0.2.8", now=now).hostname_match
    assert analyse(der, hostname="192.0.2.8", now=now).status == "hostname_mismatch"


def test_ip_address_never_matches_a_dns_san() -> None:
    der = make_cert(subject=name("192.0.2.7"), key=rsa_key(), dns=["192.0.2.7"])
    info = analyse(der, hostname="192.0.2.7", trusted=True)
    assert info.hostname_match is False


def test_common_name_counts_only_without_san() -> None:
    key = rsa_key()
    without_san = make_cert(subject=name("legacy.example.org"), key=key, dns=None)
    info = analyse(without_san, hostname="legacy.example.org")
    assert info.san == ()
    assert info.hostname_match is True
    assert info.status == "valid"
    assert not analyse(without_san, hostname="other.example.org").hostname_match
    # With a SAN present, the CN is ignored even when it names the host.
    with_san = make_cert(subject=name("legacy.example.org"), key=key, dns=["www.example.org"])
    assert not analyse(with_san, hostname="legacy.example.org").hostname_match
    # An IP-only SAN still switches the CN off.
    ip_only = make_cert(subject=name("legacy.example.org"), key=key, dns=[], ips=["192.0.2.1"])
    assert not analyse(ip_only, hostname="legacy.example.org").hostname_match


def test_ed25519_key_and_signature() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    der = make_cert(subject=name("ed.example.org"), key=key, dns=["ed.example.org"])
    info = analyse(der, hostname="ed.example.org")
    assert info.key == "Ed25519"
    assert info.signature == "ED25519"


def test_rsa_key_size_is_reported(ca_issuer: Issuer) -> None:
    der = make_cert(subject=name("big.example.org"), key=rsa_key(3072), issuer=ca_issuer)
    assert analyse(der).key == "RSA 3072"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00\x01\x02", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        analyse(garbage)
    assert caught.value.phase == "certificate"
    assert caught.value.kind == "protocol_error"


def test_truncated_certificate_is_a_protocol_error(ca: trustme.CA) -> None:
    der = der_of(ca.issue_cert("www.example.org"))
    with pytest.raises(ProtocolError):
        analyse(der[: len(der) // 2])


# --- RFC 6125 name matching ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostname", "presented", "expected"),
    [
        ("www.example.org", ["www.example.org"], True),
        ("WWW.Example.ORG", ["www.example.org"], True),
        ("www.example.org.", ["WWW.EXAMPLE.ORG."], True),
        ("www.example.org", ["example.org"], False),
        ("www.example.org", ["*.example.org"], True),
        ("a.b.example.org", ["*.example.org"], False),  # one label only
        ("example.org", ["*.example.org"], False),
        (".example.org", ["*.example.org"], False),  # empty label
        ("www.example.org", ["w*.example.org"], False),  # partial wildcard
        ("www.example.org", ["*w.example.org"], False),
        ("www.example.org", ["www.*.org"], False),  # not the left-most label
        ("www.example.org", ["*.*.org"], False),
        ("example.org", ["*.org"], False),  # too few labels after the wildcard
        ("org", ["*"], False),
        ("xn--bcher-kva.example", ["xn--*.example"], False),  # wildcard inside an A-label
        ("xn--bcher-kva.example.org", ["*.example.org"], True),  # whole-label wildcard
        ("bücher.example", ["xn--bcher-kva.example"], True),  # U-label reference
        ("BÜCHER.example", ["xn--bcher-kva.example"], True),
        ("bücher.example", ["bücher.example"], False),  # U-label in a SAN is malformed
        ("www..example.org", ["www..example.org"], False),
        ("", ["*.example.org"], False),
        ("mail.example.org", ["www.example.org", "mail.example.org"], True),
        ("mail.example.org", [], False),
    ],
)
def test_dns_name_matching(hostname: str, presented: list[str], expected: bool) -> None:
    assert hostname_matches(hostname, presented) is expected


def test_ip_matching_uses_ip_addresses_only() -> None:
    v4 = ipaddress.ip_address("192.0.2.7")
    v6 = ipaddress.ip_address("2001:db8::1")
    assert hostname_matches("192.0.2.7", [], [v4])
    assert hostname_matches("2001:db8:0:0::1", [], [v6])
    assert not hostname_matches("192.0.2.7", ["192.0.2.7"], [])
    assert not hostname_matches("192.0.2.7", ["*.0.2.7"], [v6])
    assert not hostname_matches("www.example.org", [], [v4])


# --- contexts and verification errors ------------------------------------------------------


def handshake(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, server_name: str
) -> ssl.SSLObject:
    """Run a TLS handshake between two in-memory endpoints; return the client side."""
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    client_done = server_done = False
    for _ in range(10):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        client_in.write(server_out.read())
        if client_done and server_done:
            return client
    raise AssertionError("handshake did not finish")


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context


def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_verify_context_settings() -> None:
    context = verify_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False
    assert context.minimum_version == ssl.TLSVersion.MINIMUM_SUPPORTED
    names = {c["name"] for c in context.get_ciphers()}
    assert "AES128-SHA" in names  # a legacy suite is allowed
    assert "ECDHE-RSA-AES128-GCM-SHA256" in names
    assert verify_context("").verify_mode == ssl.CERT_REQUIRED


def test_nocheck_context_settings() -> None:
    context = nocheck_context()
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False
    assert context.minimum_version == ssl.TLSVersion.MINIMUM_SUPPORTED
    assert "AES128-SHA" in {c["name"] for c in context.get_ciphers()}


def test_verify_context_trusts_the_extra_ca_file(ca: trustme.CA, tmp_path: Path) -> None:
    # Given a server whose chain ends at a private CA, and that CA as the extra file
    leaf = ca.issue_cert("www.example.org")
    client = handshake(
        verify_context(ca_file(ca, tmp_path)), server_context(leaf), "www.example.org"
    )
    # Then the chain verifies and the leaf reads back as valid
    der = client.getpeercert(binary_form=True)
    assert der is not None
    info = analyse(der, trusted=True, now=datetime.now(UTC))
    assert info.status == "valid"


def test_verify_context_ignores_the_name(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("www.example.org")
    # Name checks are ours: a wrong SNI name still completes the handshake.
    client = handshake(
        verify_context(ca_file(ca, tmp_path)), server_context(leaf), "other.example.net"
    )
    der = client.getpeercert(binary_form=True)
    assert der is not None
    info = analyse(der, hostname="other.example.net", now=datetime.now(UTC))
    assert info.status == "hostname_mismatch"


def test_unknown_ca_fails_verification_as_untrusted(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("www.example.org")
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(verify_context(None), server_context(leaf), "www.example.org")
    assert classify_verify_error(caught.value) == "untrusted"
    # The nocheck context still reads the certificate.
    client = handshake(nocheck_context(), server_context(leaf), "www.example.org")
    der = client.getpeercert(binary_form=True)
    assert der is not None
    info = analyse(
        der, trusted=False, verify_message=caught.value.verify_message, now=datetime.now(UTC)
    )
    assert info.status == "untrusted"
    assert info.verify_message


def test_expired_leaf_fails_verification_as_expired(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert(
        "www.example.org",
        not_before=datetime.now(UTC) - timedelta(days=30),
        not_after=datetime.now(UTC) - timedelta(days=1),
    )
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(verify_context(ca_file(ca, tmp_path)), server_context(leaf), "www.example.org")
    assert classify_verify_error(caught.value) == "expired"


def test_self_signed_leaf_fails_verification_as_self_signed(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = make_cert(
        subject=name("selfie.example.org"),
        key=key,
        dns=["selfie.example.org"],
        not_before=datetime.now(UTC) - timedelta(days=1),
        not_after=datetime.now(UTC) + timedelta(days=1),
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(cert_path), str(key_path))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(verify_context(None), server, "selfie.example.org")
    assert classify_verify_error(caught.value) == "self_signed"


def test_classify_verify_error_codes() -> None:
    def error(code: int | None) -> ssl.SSLCertVerificationError:
        err = ssl.SSLCertVerificationError("certificate verify failed")
        if code is not None:
            err.verify_code = code
        return err

    assert classify_verify_error(error(10)) == "expired"
    assert classify_verify_error(error(9)) == "not_yet_valid"
    assert classify_verify_error(error(18)) == "self_signed"
    assert classify_verify_error(error(19)) == "untrusted"  # self-signed root in chain
    assert classify_verify_error(error(20)) == "untrusted"
    assert classify_verify_error(error(62)) == "hostname_mismatch"
    assert classify_verify_error(error(None)) == "untrusted"


def test_missing_ca_file_is_a_target_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(TargetError, match=r"nope\.pem") as caught:
        verify_context(missing)
    assert caught.value.kind == "invalid_target"
    with pytest.raises(TargetError, match="not a file"):
        verify_context(str(tmp_path))


def test_ca_file_without_certificates_is_a_target_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("this is not a certificate\n")
    with pytest.raises(TargetError, match="no usable PEM certificate"):
        verify_context(str(path))
