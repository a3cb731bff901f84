"""What the daemon fleet offers its tests: endpoints, profiles and their expectations.

Two profiles run side by side, each on its own loopback address:

- ``legacy``: TLS 1.0 to 1.3, weak suites (CBC-SHA1, RSA key exchange, 1024-bit DHE,
  CAMELLIA/ARIA) through ``@SECLEVEL=0``, client cipher order, and passwords accepted
  before TLS (SMTP AUTH PLAIN/LOGIN before STARTTLS, IMAP without LOGINDISABLED, POP3
  USER before STLS).
- ``modern``: TLS 1.2 and 1.3 only, ECDHE with AEAD suites, server cipher order, and
  authentication only after TLS.

The :data:`PROFILES` table is the single statement of what each profile is configured to
do, so integration tests take their expectations from it instead of repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Profile = Literal["legacy", "modern"]
Daemon = Literal["postfix", "dovecot", "nginx"]
Service = Literal["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "https"]
TlsMode = Literal["starttls", "implicit"]
TlsVersionName = Literal["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]

ALL_TLS_VERSIONS: tuple[TlsVersionName, ...] = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class DaemonEndpoint:
    """One listening port of one daemon, as a scanner target."""

    profile: Profile
    daemon: Daemon
    service: Service
    ip: str
    port: int
    tls_mode: TlsMode
    hostname: str


@dataclass(frozen=True)
class DaemonFleet:
    """The running daemons of both profiles, and what a test needs to talk to them.

    Connect from ``client_address`` (bind it as the source address): Dovecot treats a
    client whose address equals its own listen address as secure and would then allow
    plaintext logins even in the modern profile.
    """

    ca_file: str
    client_address: str
    endpoints: tuple[DaemonEndpoint, ...]
    log_dir: str
    test_user: str
    test_password: str
    #: More users (``user@domain``, the same password) for tests of log telemetry:
    #: Dovecot logs them in and Postfix authenticates them (SASL through Dovecot).
    mail_accounts: tuple[str, ...] = ()
    #: Mail to this domain is accepted from authenticated clients and discarded, so a
    #: submission logs its queue id with the SASL user (``client=…, sasl_username=…``).
    sink_domain: str = ""

    def endpoint(self, profile: Profile, service: Service) -> DaemonEndpoint:
        """Return the endpoint of ``service`` in ``profile``."""
        for candidate in self.endpoints:
            if candidate.profile == profile and candidate.service == service:
                return candidate
        raise KeyError(f"no {service} endpoint in the {profile} profile")

    def of_profile(self, profile: Profile) -> tuple[DaemonEndpoint, ...]:
        """Return every endpoint of ``profile``."""
        return tuple(e for e in self.endpoints if e.profile == profile)


@dataclass(frozen=True)
class ProfileSpec:
    """How one profile is configured, in the terms its tests check.

    ``cipher_list`` is the OpenSSL cipher string every daemon of the profile uses for
    TLS 1.2 and below; TLS 1.3 suites are OpenSSL's defaults everywhere.
    """

    name: Profile
    ip: str
    hostname: str
    tls_versions: tuple[TlsVersionName, ...]
    cipher_list: str
    server_preference: bool
    auth_before_tls: bool
    dhe: bool

    @property
    def min_tls_version(self) -> TlsVersionName:
        """The lowest accepted version, in the spelling daemons' configs use."""
        return self.tls_versions[0]


LEGACY = ProfileSpec(
    name="legacy",
    ip="127.0.10.1",
    hostname="mail.legacy.test",
    tls_versions=ALL_TLS_VERSIONS,
    # OpenSSL 3 allows TLS 1.0/1.1 (SHA-1 and MD5+SHA-1 signatures) only at level 0.
    # PSK and SRP suites can never be negotiated without a PSK or SRP database, so they
    # are left out rather than listed as configured but unusable.
    cipher_list="ALL:!aNULL:!eNULL:!PSK:!SRP:@SECLEVEL=0",
    server_preference=False,
    auth_before_tls=True,
    dhe=True,
)

MODERN = ProfileSpec(
    name="modern",
    ip="127.0.10.2",
    hostname="mail.modern.test",
    tls_versions=("TLSv1.2", "TLSv1.3"),
    cipher_list=":".join(
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-CHACHA20-POLY1305",
        )
    ),
    server_preference=True,
    auth_before_tls=False,
    dhe=False,
)

PROFILES: dict[Profile, ProfileSpec] = {spec.name: spec for spec in (LEGACY, MODERN)}

# Tests connect from here; it must differ from every profile's address.
CLIENT_ADDRESS = "127.0.10.100"

TEST_USER = "tester"
MAIL_ACCOUNTS = (
    "alice@alpha.test",
    "bob@alpha.test",
    "carol@beta.test",
    "dave@beta.test",
)
SINK_DOMAIN = "sink.test"
