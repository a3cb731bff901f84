"""The ``tlsfleet`` command as a user runs it: a real process against real servers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.servers import LEGACY, MODERN, Pki, TlsServer, running

TLSFLEET = [sys.executable, "-m", "fleet.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TLSFLEET, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "bad!host.example"], "invalid host name"),
        (["scan", "example.net:99999"], "invalid port"),
        (["scan", "example.net:8443"], "no default service for port 8443"),
        (["scan", "[2001:db8::1"], "invalid target '[2001:db8::1': missing ']'"),
        (["scan", "--service", "gopher", "example.net"], "unknown service"),
        (["scan", "--timeout", "-1", "example.net"], "--timeout must be positive"),
        (["scan", "--per-ip", "0", "example.net"], "--per-ip must be at least 1"),
        (["scan", "--ca-file", "/nonexistent/ca.pem", "example.net"], "no such file"),
        (["scan", "127.0.0.1:443"], "--allow-private"),
        (["scan", "localhost:993"], "--allow-private"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_json_lines_one_document_per_endpoint(pki: Pki) -> None:
    with (
        running(TlsServer(pki.server_context(LEGACY), ip="127.0.32.1")) as legacy,
        running(TlsServer(pki.server_context(MODERN), ip="127.0.32.2")) as modern,
    ):
        proc = run(
            "scan", "--json", "--allow-private", "--ca-file", pki.ca_file, "--sni", "tls.test",
            "--service", "https", f"{legacy.ip}:{legacy.port}", f"{modern.ip}:{modern.port}",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(docs) == 2
    by_ip = {d["target"]["ip"]: d for d in docs}
    assert by_ip[legacy.ip]["protocols"]["TLSv1.0"] is True
    assert by_ip[modern.ip]["protocols"]["TLSv1.0"] is False
    assert by_ip[modern.ip]["certificate"]["status"] == "valid"
    for doc in docs:
        assert doc["schema_version"] == "1.0"
        assert doc["status"] == "ok"
        assert set(doc) >= {
            "target", "status", "error", "protocols", "cipher_suites", "server_preference",
            "starttls", "auth", "certificate", "connections", "duration_ms",
        }  # fmt: skip


def test_unreachable_endpoint_exits_1_with_its_error() -> None:
    proc = run(
        "scan", "--json", "--allow-private", "--timeout", "1", "127.0.32.3:1", "--service", "https"
    )
    assert proc.returncode == 1
    (doc,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert doc["status"] == "error"
    assert doc["error"]["kind"] == "refused"


def test_table_output_names_every_endpoint(pki: Pki) -> None:
    with running(TlsServer(pki.server_context(LEGACY), ip="127.0.32.4")) as server:
        proc = run(
            "scan", "--allow-private", "--sni", "tls.test", "--service", "https",
            f"{server.ip}:{server.port}",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{server.ip}:{server.port}" in proc.stdout
    assert "1 endpoints: 1 scanned, 0 failed; 1 accept SSL/TLS 1.0/1.1" in proc.stdout
