"""The dialogue options, facts and reply judgement shared by the STARTTLS dialogues."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from scanner import starttls
from scanner.starttls import PLAINTEXT_MECHANISMS, DialogueOptions, PlaintextFacts
from scanner.starttls.common import (
    ProbeCredentials,
    looks_like_refusal,
    looks_rate_limited,
    make_facts,
)


def test_defaults() -> None:
    opts = DialogueOptions()
    assert opts.ehlo_name == "tlsfleet.invalid"
    assert opts.timeout == 10.0
    assert opts.greeting_seconds == 10.0
    assert opts.max_line_bytes == 8192
    assert opts.max_reply_lines == 256


def test_greeting_timeout_overrides_timeout() -> None:
    assert DialogueOptions(timeout=2.0, greeting_timeout=9.0).greeting_seconds == 9.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ehlo_name": ""},
        {"ehlo_name": "two words"},
        {"ehlo_name": "evil\r\nRCPT TO:<x>"},
        {"ehlo_name": "bücher.example"},
        {"timeout": 0},
        {"timeout": -1.0},
        {"greeting_timeout": 0.0},
        {"max_line_bytes": 10},
        {"max_reply_lines": 0},
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        DialogueOptions(**kwargs)  # type: ignore[arg-type]


def test_options_and_facts_are_frozen() -> None:
    opts = DialogueOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.timeout = 1.0  # type: ignore[misc]
    facts = make_facts("smtp", "220 hi", [], False, [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.plaintext_login = True  # type: ignore[misc]


def test_plaintext_mechanisms() -> None:
    assert frozenset({"PLAIN", "LOGIN", "IMAP-LOGIN", "USER"}) == PLAINTEXT_MECHANISMS
    assert starttls.PLAINTEXT_MECHANISMS is PLAINTEXT_MECHANISMS


@pytest.mark.parametrize(
    ("mechanisms", "plaintext"),
    [
        ([], False),
        (["CRAM-MD5", "SCRAM-SHA-256"], False),
        (["APOP"], False),
        (["CRAM-MD5", "LOGIN"], True),
        (["PLAIN"], True),
        (["IMAP-LOGIN"], True),
        (["USER"], True),
    ],
)
def test_plaintext_login_follows_the_mechanisms(mechanisms: list[str], plaintext: bool) -> None:
    facts = make_facts("imap", "", [], True, mechanisms)
    assert facts.plaintext_login is plaintext


def test_make_facts_deduplicates_in_order() -> None:
    facts = make_facts("smtp", "b", ["AUTH", "SIZE", "AUTH"], True, ["PLAIN", "LOGIN", "PLAIN"])
    assert facts == PlaintextFacts(
        dialogue="smtp",
        banner="b",
        capabilities=("AUTH", "SIZE"),
        starttls_offered=True,
        mechanisms=("PLAIN", "LOGIN"),
        plaintext_login=True,
    )


def test_probe_credentials_are_made_up_and_fresh() -> None:
    first, second = ProbeCredentials.random(), ProbeCredentials.random()
    assert first.user.startswith("tlsfleet-probe-")
    assert first.user.endswith("@invalid")
    assert first.user != second.user
    assert first.password != second.password
    assert len(first.password) >= 16


def test_sasl_plain_encoding() -> None:
    creds = ProbeCredentials(user="u@invalid", password="secret")
    assert base64.b64decode(creds.sasl_plain()) == b"\0u@invalid\0secret"
    assert base64.b64decode(creds.b64_user()) == b"u@invalid"
    assert base64.b64decode(creds.b64_password()) == b"secret"


@pytest.mark.parametrize(
    "text",
    [
        "4.7.0 mail.example Error: too many connections from 192.0.2.1",
        "Too many concurrent SMTP connections; please try again later.",
        "Service temporarily unavailable, try again later",
        "[SYS/TEMP] Maximum number of connections from user+IP exceeded",
    ],
)
def test_rate_limit_texts(text: str) -> None:
    assert looks_rate_limited(text)


@pytest.mark.parametrize(
    "text", ["5.7.8 Error: authentication failed", "mail.test ESMTP Postfix", "Ready"]
)
def test_not_rate_limit_texts(text: str) -> None:
    assert not looks_rate_limited(text)


@pytest.mark.parametrize(
    "text",
    [
        "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) "
        "connections.",
        "[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
        "5.7.11 Encryption required for requested authentication mechanism",
        "5.7.0 Must issue a STARTTLS command first",
        "Login only available under a layer",
        "LOGIN is disabled",
    ],
)
def test_refusal_texts(text: str) -> None:
    assert looks_like_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.8 Error: authentication failed: authentication failure",
        "[AUTHENTICATIONFAILED] Authentication failed.",
        "[AUTH] Authentication failed.",
        "Incorrect authentication data",
        "LOGIN failed.",
    ],
)
def test_judged_texts_are_not_refusals(text: str) -> None:
    assert not looks_like_refusal(text)
