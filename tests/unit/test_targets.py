"""Target parsing, name normalisation and the private-address policy (no sockets)."""

from __future__ import annotations

import pytest

from scanner.errors import PrivateTargetError, TargetError
from scanner.targets import is_public_address, normalise_hostname, parse_target, resolve


@pytest.mark.parametrize(
    ("text", "host", "port", "service", "sni"),
    [
        ("mail.example.net:587", "mail.example.net", 587, "submission", "mail.example.net"),
        ("Mail.Example.NET.:25", "mail.example.net", 25, "smtp", "mail.example.net"),
        ("www.example.net", "www.example.net", 443, "https", "www.example.net"),
        ("192.0.2.7:993", "192.0.2.7", 993, "imaps", None),
        ("[2001:db8::1]:995", "2001:db8::1", 995, "pop3s", None),
        ("2001:db8::1", "2001:db8::1", 443, "https", None),
        ("bücher.example:143", "xn--bcher-kva.example", 143, "imap", "xn--bcher-kva.example"),
    ],
)
def test_parse_target(text: str, host: str, port: int, service: str, sni: str | None) -> None:
    spec = parse_target(text)
    assert (spec.host, spec.port, spec.service.name, spec.sni) == (host, port, service, sni)


def test_explicit_service_and_sni() -> None:
    spec = parse_target("192.0.2.1:10025", service="smtp", sni="MX.Example.net")
    assert spec.service.name == "smtp"
    assert spec.service.tls_mode == "starttls"
    assert spec.sni == "mx.example.net"
    assert parse_target("mx.example.net", service="imap").port == 143


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty target"),
        ("host:0", "invalid port"),
        ("host:65536", "invalid port"),
        ("host:abc", "invalid port"),
        ("host:8443", "no default service for port 8443"),
        ("[2001:db8::1", "missing ']'"),
        ("-bad.example", "hyphen"),
        ("a..b", "invalid host name"),
        ("exa mple.com", "white space"),
        ("x" * 64 + ".example", "invalid host name"),
        ("bad!name.example", "invalid host name"),
    ],
)
def test_bad_targets_say_why(text: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_target(text)


def test_unknown_service() -> None:
    with pytest.raises(TargetError, match="unknown service 'gopher'"):
        parse_target("x.example", service="gopher")


def test_normalise_hostname_idn_and_length() -> None:
    assert normalise_hostname("ÉCOLE.example.") == "xn--cole-9oa.example"
    with pytest.raises(TargetError, match="too long"):
        normalise_hostname(".".join(["a" * 60] * 5))


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("8.8.8.8", True),
        ("2a00:1450:4001:80b::200e", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("169.254.1.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_private_addresses_are_not_public(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


async def test_resolve_refuses_private_unless_allowed() -> None:
    spec = parse_target("127.0.0.1:443")
    with pytest.raises(PrivateTargetError, match="--allow-private"):
        await resolve(spec)
    (target,) = await resolve(spec, allow_private=True)
    assert target.ip == "127.0.0.1"
    assert target.sni is None
    localhost = await resolve(parse_target("localhost:993"), allow_private=True)
    assert {t.ip for t in localhost} <= {"127.0.0.1", "::1"}
    with pytest.raises(PrivateTargetError):
        await resolve(parse_target("localhost:993"))
