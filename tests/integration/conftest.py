"""Fixtures shared by the integration tests: a test PKI and the real daemons."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from tests.integration.servers import Pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, its PEM file for ``--ca-file``, and leaf certificates on demand."""
    ca = trustme.CA()
    directory: Path = tmp_path_factory.mktemp("pki")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca=ca, ca_file=str(ca_file))
