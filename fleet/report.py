"""Readable terminal output of scan results (rich tables)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner.models import PROTOCOLS, DomainResult, EndpointResult

#: Versions the provider is switching off; shown in red when accepted.
_DEPRECATED = {"SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"}
_SHORT = {
    "SSLv2": "S2",
    "SSLv3": "S3",
    "TLSv1.0": "1.0",
    "TLSv1.1": "1.1",
    "TLSv1.2": "1.2",
    "TLSv1.3": "1.3",
}


def _protocols(res: EndpointResult) -> Text:
    text = Text()
    for proto in PROTOCOLS:
        state = res.protocols.get(proto)
        label = _SHORT[proto]
        if state is True:
            style = "bold red" if proto in _DEPRECATED else "green"
            text.append(label + " ", style=style)
        elif state is None and res.status == "ok":
            text.append(label + "? ", style="yellow")
    return text


def _certificate(res: EndpointResult) -> Text:
    cert = res.certificate
    if cert is None:
        return Text("-", style="dim")
    style = "green" if cert.status == "valid" else "red"
    if cert.status == "valid" and cert.days_left < 30:
        style = "yellow"
    return Text(f"{cert.status} ({cert.days_left}d)", style=style)


def _auth(res: EndpointResult) -> Text:
    if res.auth is None:
        return Text("-", style="dim")
    if res.auth.plaintext_before_tls:
        mechs = ",".join(res.auth.before_tls) or "?"
        return Text(f"PASSWORD IN CLEAR ({mechs})", style="bold red")
    return Text("ok", style="green")


def render_results(console: Console, results: Sequence[EndpointResult]) -> None:
    """Print one table row per endpoint and a one-line summary."""
    table = Table(title="tlsfleet scan", header_style="bold", expand=False)
    for column in ("endpoint", "service", "protocols", "suites", "pref", "certificate",
                   "STARTTLS", "auth before TLS", "conns", "ms"):  # fmt: skip
        table.add_column(column)
    for res in sorted(results, key=lambda r: (r.target.host, r.target.port, r.target.ip)):
        t = res.target
        where = f"{t.host}\n{t.ip}:{t.port}" if t.ip and t.ip != t.host else f"{t.host}:{t.port}"
        if res.status == "error" and res.error is not None:
            table.add_row(
                where,
                t.service,
                Text(f"{res.error.kind}: {res.error.message}", style="red"),
                "", "", "", "", "", str(res.connections), str(res.duration_ms),
            )  # fmt: skip
            continue
        suites = sum(len(v) for v in res.cipher_suites.values())
        pref = {True: "server", False: "client", None: "-"}[res.server_preference]
        starttls = "-" if res.starttls is None else ("yes" if res.starttls.offered else "NO")
        table.add_row(
            where,
            t.service,
            _protocols(res),
            str(suites),
            pref,
            _certificate(res),
            starttls,
            _auth(res),
            str(res.connections),
            str(res.duration_ms),
        )
    console.print(table)
    ok = sum(1 for r in results if r.status == "ok")
    legacy = sum(1 for r in results if any(r.protocols.get(p) for p in _DEPRECATED))
    clear = sum(1 for r in results if r.auth and r.auth.plaintext_before_tls)
    console.print(
        f"{len(results)} endpoints: {ok} scanned, {len(results) - ok} failed; "
        f"{legacy} accept SSL/TLS 1.0/1.1; {clear} take a password before TLS."
    )


def _domain_row(doc: DomainResult) -> tuple[str, ...]:
    d = doc.discovery
    mx = ", ".join(f"{m.preference} {m.target.host}" for m in d.mx) or "-"
    if d.null_mx:
        mx = "null MX (no mail)"
    elif d.implicit_mx:
        mx = f"implicit: {mx}"
    eps = doc.endpoints
    legacy = sum(1 for e in eps if any(e.protocols.get(p) for p in _DEPRECATED))
    clear = sum(1 for e in eps if e.auth and e.auth.plaintext_before_tls)
    bad_certs = sum(1 for e in eps if e.certificate and e.certificate.status != "valid")
    failed = sum(1 for e in eps if e.status != "ok")
    problems = [e.message for e in d.errors][:2]
    return (
        doc.domain,
        d.status,
        mx,
        str(len(eps)),
        str(legacy),
        str(clear),
        str(bad_certs),
        str(failed),
        "; ".join(problems),
    )


def render_domains(console: Console, documents: Sequence[DomainResult]) -> None:
    """A row per domain, then the table of every distinct endpoint they use."""
    table = Table(title="domains", header_style="bold")
    for column in ("domain", "discovery", "MX", "endpoints", "TLS<1.2", "password in clear",
                   "bad certs", "failed", "DNS problems"):  # fmt: skip
        table.add_column(column)
    for doc in sorted(documents, key=lambda d: d.domain):
        table.add_row(*_domain_row(doc))
    console.print(table)
    unique: dict[tuple[str, int, str], EndpointResult] = {}
    for doc in documents:
        for e in doc.endpoints:
            unique.setdefault((e.target.ip, e.target.port, e.target.service), e)
    if unique:
        render_results(console, list(unique.values()))
