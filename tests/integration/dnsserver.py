"""The local authoritative DNS server of the tests: :mod:`fleet.demo.dnsserver`, which
``tlsfleet demo`` serves its zone with, re-exported under its old name.

``python -m tests.integration.dnsserver`` still runs it as a program (the benchmark's
``--servers`` processes).
"""

from __future__ import annotations

import sys

from fleet.demo.dnsserver import DnsServer, Fault, ZoneData, main, serve_forever

__all__ = ["DnsServer", "Fault", "ZoneData", "main", "serve_forever"]

if __name__ == "__main__":
    sys.exit(main())
