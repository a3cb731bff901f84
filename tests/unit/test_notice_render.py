"""Notice rendering: text, HTML and Markdown in English and German, compared exactly
with the snapshots under tests/snapshots/ (regenerate deliberately with
``TLSFLEET_UPDATE_SNAPSHOTS=1``, then read the diff); HTML escapes, Markdown escapes,
a deployment's template directory overrides the shipped one."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from fleet.notices import (
    CERT_STEP,
    ClientAccountView,
    NoticeView,
    render,
    view_from_assessments,
)
from policy import assess, default_profile

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
JUDGED = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC)
CUTOFF = dt.date(2027, 1, 31)


def _doc(host: str, ip: str, port: int, service: str, **parts: Any) -> dict[str, Any]:
    protocols = dict.fromkeys(("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"), False)
    protocols.update(parts.pop("protocols", {}))
    return {
        "schema_version": "1",
        "target": {
            "host": host,
            "ip": ip,
            "port": port,
            "service": service,
            "tls_mode": "starttls" if port in (25, 587, 143, 110) else "implicit",
            "sni": host,
        },
        "status": "ok",
        "error": None,
        "protocols": protocols,
        "cipher_suites": parts.pop("cipher_suites", {}),
        "partial_errors": [],
        **parts,
    }


LEGACY_IMAP = _doc(
    "mail.mueller.example",
    "192.0.2.10",
    143,
    "imap",
    protocols={"TLSv1.0": True, "TLSv1.1": True},
    cipher_suites={
        "TLSv1.0": ["TLS_RSA_WITH_AES_128_CBC_SHA"],
        "TLSv1.1": ["TLS_RSA_WITH_AES_128_CBC_SHA"],
    },
    starttls={"offered": True},
    auth={
        "before_tls": ["IMAP-LOGIN", "PLAIN"],
        "after_tls": ["PLAIN"],
        "plaintext_before_tls": True,
    },
)
EXPIRING_SUBMISSION = _doc(
    "smtp.mueller.example",
    "192.0.2.11",
    587,
    "submission",
    protocols={"TLSv1.1": True, "TLSv1.2": True, "TLSv1.3": True},
    cipher_suites={
        "TLSv1.1": ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"],
        "TLSv1.2": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        "TLSv1.3": ["TLS_AES_128_GCM_SHA256"],
    },
    starttls={"offered": True},
    auth={"before_tls": [], "after_tls": ["PLAIN"], "plaintext_before_tls": False},
    certificate={
        "not_before": "2026-09-01T00:00:00Z",
        "not_after": "2026-12-10T00:00:00Z",
        "status": "valid",
        "trusted": True,
        "hostname_match": True,
    },
)


def _view() -> NoticeView:
    profile = default_profile(cutoff=CUTOFF)
    problems = [
        {"endpoint_id": 1, "code": "tls.only_legacy", "step": None},
        {"endpoint_id": 1, "code": "auth.plaintext_before_tls", "step": None},
        {"endpoint_id": 2, "code": "tls.legacy_version", "step": None},
        {"endpoint_id": 2, "code": CERT_STEP, "step": 14},
    ]
    return view_from_assessments(
        notice_id=7,
        status="notified",
        customer="Müller & Söhne <GmbH>",
        account_manager="Alice *Admin*",
        profile=profile,
        judged_at=JUDGED,
        problems=problems,
        assessments={
            1: assess(LEGACY_IMAP, profile, JUDGED),
            2: assess(EXPIRING_SUBMISSION, profile, JUDGED),
        },
        domains={1: ["mueller.example", "shop.mueller.example"], 2: ["mueller.example"]},
        certificates={2: dt.datetime(2026, 12, 10, tzinfo=dt.UTC)},
        client_accounts=[
            ClientAccountView(
                account="info@mueller.example",
                used=("TLSv1.0",),
                since=dt.date(2026, 11, 2),
                last_seen=dt.date(2026, 11, 27),
                client_ips=("198.51.100.23", "203.0.113.9"),
            ),
            ClientAccountView(
                account="shop_<bot>@mueller.example",
                used=("TLSv1.1", "none"),
                since=dt.date(2026, 11, 20),
                last_seen=dt.date(2026, 11, 28),
                client_ips=("198.51.100.40",),
            ),
        ],
        client_window_days=30,
    )


@pytest.mark.parametrize("lang", ["en", "de"])
@pytest.mark.parametrize(("fmt", "ext"), [("text", "txt"), ("html", "html"), ("markdown", "md")])
def test_rendering_matches_the_snapshot(fmt: str, ext: str, lang: str) -> None:
    rendered = render(_view(), fmt, lang)
    snapshot = SNAPSHOTS / f"notice.{lang}.{ext}"
    if os.environ.get("TLSFLEET_UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(rendered, encoding="utf-8")
    assert rendered == snapshot.read_text(encoding="utf-8")


def test_the_view_says_what_breaks_and_where() -> None:
    view = _view()
    # Given an IMAP endpoint with only TLS 1.0/1.1 and a submission endpoint with 1.1 too
    [imap, submission] = view.endpoints
    assert (imap.port, imap.outcome) == (143, "breaks")
    assert {f.code for f in imap.findings} == {"tls.only_legacy", "auth.plaintext_before_tls"}
    assert submission.outcome == "breaks"  # the certificate expires before the cut-off
    assert (submission.certificate_expires, submission.certificate_days_left) == (
        dt.date(2026, 12, 10),
        11,
    )
    assert view.domains == ["mueller.example", "shop.mueller.example"]
    assert view.summary.startswith("2 of 2 endpoints break on 2027-01-31")


def test_html_is_escaped_and_markdown_too() -> None:
    html = render(_view(), "html", "en")
    assert "Müller &amp; Söhne &lt;GmbH&gt;" in html
    assert "<GmbH>" not in html
    assert "shop_&lt;bot&gt;@mueller.example" in html
    markdown = render(_view(), "markdown", "en")
    assert r"Müller & Söhne \<GmbH\>" in markdown
    assert r"Alice \*Admin\*" in markdown
    assert (
        r"| shop\_\<bot\>@mueller.example | TLSv1.1, without encryption | 2026-11-20 |" in markdown
    )
    text = render(_view(), "text", "en")
    assert "Müller & Söhne <GmbH>" in text


def test_every_notice_says_what_to_change() -> None:
    for lang in ("en", "de"):
        text = render(_view(), "text", lang)
        for port in ("993", "995", "465", "587", "143, 110", "TLS 1.2"):
            assert port in text, (lang, port)
    assert '"encrypted password"' in render(_view(), "text", "en")
    assert '"verschlüsseltes Passwort"' in render(_view(), "text", "de")


def test_a_deployment_template_overrides_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "notice.txt.j2").write_text(
        "Eigener Hinweis {{ notice.notice_id }} an {{ notice.customer }}\n", encoding="utf-8"
    )
    assert render(_view(), "text", "de", templates_dir=tmp_path) == (
        "Eigener Hinweis 7 an Müller & Söhne <GmbH>\n"
    )
    # … the others still come from the package
    assert render(_view(), "text", "en", templates_dir=tmp_path).startswith("Notice 7")


@pytest.mark.parametrize(("fmt", "lang"), [("pdf", "en"), ("text", "fr")])
def test_unknown_format_or_language_is_a_value_error(fmt: str, lang: str) -> None:
    with pytest.raises(ValueError, match=r"^(format|lang): one of"):
        render(_view(), fmt, lang)
