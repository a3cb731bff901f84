"""Real Postfix, Dovecot and nginx servers for integration tests.

Each daemon runs from Debian's packages (installed by ``.ci/install-daemons.sh``) with
a private configuration under a pytest temporary directory, on high ports of a
loopback address per profile, never touching the system-wide instances:

==========  =========================================  ==========================
profile     TLS                                        passwords before TLS
==========  =========================================  ==========================
legacy      1.0-1.3, weak suites (``@SECLEVEL=0``),    SMTP AUTH, IMAP LOGIN and
            1024-bit DHE, client cipher order          POP3 USER all accepted
modern      1.2-1.3, ECDHE + AEAD, server order        refused (LOGINDISABLED)
==========  =========================================  ==========================

Services per profile: Postfix ``smtp``, ``submission`` (STARTTLS) and ``submissions``
(implicit TLS); Dovecot ``imap``, ``pop3`` (STARTTLS), ``imaps``, ``pop3s``; nginx
``https``. Use the session fixture ``daemon_fleet`` from :mod:`.fixtures`, or
:func:`.fleet.running_fleet` to run a fleet of one's own.
"""

from .fleet import check_installed, running_fleet
from .model import (
    CLIENT_ADDRESS,
    PROFILES,
    DaemonEndpoint,
    DaemonFleet,
    ProfileSpec,
)
from .process import DaemonError, DaemonsNotInstalledError

__all__ = [
    "CLIENT_ADDRESS",
    "PROFILES",
    "DaemonEndpoint",
    "DaemonError",
    "DaemonFleet",
    "DaemonsNotInstalledError",
    "ProfileSpec",
    "check_installed",
    "running_fleet",
]
