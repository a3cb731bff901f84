"""Policy profiles: which rules are on, how severe they are, and the cut-off date.

A profile is loaded from a plain dict (what ``tomllib`` or ``json`` give) or a TOML file:

```toml
name = "provider-2027"
cutoff = 2027-01-31                  # a TOML date, or "2027-01-31"
expiring_days = 21
plaintext_mechanisms_over_tls = true # count PLAIN/LOGIN over TLS as a finding
disable = ["tls.no_tls13"]
enable = []                          # rules that are off by default

[severity]
"tls.legacy_version" = "critical"                         # every port class
"cert.expiring" = { smtp_relay = "info", https = "high" } # per port class
```

Every mistake is a ValueError that names the key and what is allowed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from policy.rules import RULES, PortClass, Rule, Severity, rule

__all__ = [
    "DEFAULT_CUTOFF",
    "DEFAULT_EXPIRING_DAYS",
    "Profile",
    "default_profile",
    "load_profile",
    "profile_from_dict",
]

#: The provider's announced cut-off for TLS 1.0/1.1 and passwords before TLS (the same
#: default as the fleet's ``TLSFLEET_CUTOFF_DATE``; pass the setting in to follow it).
DEFAULT_CUTOFF = date(2027, 1, 31)
DEFAULT_EXPIRING_DAYS = 30

_KEYS = frozenset(
    {
        "name",
        "cutoff",
        "expiring_days",
        "plaintext_mechanisms_over_tls",
        "enable",
        "disable",
        "severity",
    }
)


@dataclass(frozen=True, slots=True)
class Profile:
    """A policy: enabled rules, severity overrides, cut-off date and thresholds.

    ``severity_overrides`` maps ``(code, port class)`` to a severity; build profiles with
    :func:`default_profile` or :func:`profile_from_dict`, which validate everything.
    """

    name: str = "default"
    cutoff: date = DEFAULT_CUTOFF
    expiring_days: int = DEFAULT_EXPIRING_DAYS
    plaintext_mechanisms_over_tls: bool = False
    enabled: frozenset[str] = field(
        default_factory=lambda: frozenset(r.code for r in RULES if r.default_enabled)
    )
    severity_overrides: Mapping[tuple[str, PortClass], Severity] = field(default_factory=dict)

    def is_enabled(self, code: str) -> bool:
        """Whether the rule counts under this profile."""
        if code == "auth.plaintext_over_tls" and not self.plaintext_mechanisms_over_tls:
            return False
        return code in self.enabled

    def severity_of(self, entry: Rule, port_class: PortClass) -> Severity | None:
        """The rule's severity for ``port_class``; None where the rule does not apply."""
        if not entry.applies_to(port_class):
            return None
        return self.severity_overrides.get((entry.code, port_class), entry.severity[port_class])

    def to_dict(self) -> dict[str, Any]:
        """The profile in the shape :func:`profile_from_dict` reads (JSON-ready)."""
        severity: dict[str, dict[str, str]] = {}
        for (code, port_class), level in sorted(self.severity_overrides.items()):
            severity.setdefault(code, {})[port_class.value] = level.value
        defaults = {r.code for r in RULES if r.default_enabled}
        return {
            "name": self.name,
            "cutoff": self.cutoff.isoformat(),
            "expiring_days": self.expiring_days,
            "plaintext_mechanisms_over_tls": self.plaintext_mechanisms_over_tls,
            "enable": sorted(self.enabled - defaults),
            "disable": sorted(defaults - self.enabled),
            "severity": severity,
        }


def default_profile(*, cutoff: date | None = None) -> Profile:
    """The provider's announced policy: TLS 1.2 and 1.3 only, no password before TLS.

    Every rule at its default severity; plaintext mechanisms over TLS do not count.
    ``cutoff`` replaces the default date (e.g. from the fleet's settings).
    """
    return Profile(name="default", cutoff=cutoff or DEFAULT_CUTOFF)


def load_profile(path: str | Path) -> Profile:
    """Read a profile from a TOML file; errors name the file."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{file}: not valid TOML: {exc}") from None
    try:
        return profile_from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


def profile_from_dict(data: Mapping[str, Any]) -> Profile:
    """Build a profile from a dict; missing keys take the default profile's values."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a profile must be a table/object, not {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"unknown profile keys {unknown} (allowed: {sorted(_KEYS)})")
    base = default_profile()
    name = data.get("name", base.name)
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name: must be a non-empty string")
    expiring_days = data.get("expiring_days", base.expiring_days)
    if isinstance(expiring_days, bool) or not isinstance(expiring_days, int) or expiring_days < 0:
        raise ValueError(
            f"expiring_days: must be a whole number of days >= 0, not {expiring_days!r}"
        )
    plaintext = data.get("plaintext_mechanisms_over_tls", base.plaintext_mechanisms_over_tls)
    if not isinstance(plaintext, bool):
        raise ValueError(f"plaintext_mechanisms_over_tls: must be true or false, not {plaintext!r}")
    enable = _codes(data.get("enable", []), "enable")
    disable = _codes(data.get("disable", []), "disable")
    both = sorted(enable & disable)
    if both:
        raise ValueError(f"rules both enabled and disabled: {both}")
    return Profile(
        name=name,
        cutoff=_cutoff(data.get("cutoff", base.cutoff)),
        expiring_days=expiring_days,
        plaintext_mechanisms_over_tls=plaintext,
        enabled=(base.enabled | enable) - disable,
        severity_overrides=_severities(data.get("severity", {})),
    )


def _cutoff(value: object) -> date:
    # tomllib gives a date for `cutoff = 2027-01-31`, JSON a string; a datetime is a
    # date subclass but a moment, not a day: refuse it rather than guess a time zone.
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"cutoff: must be a date like 2027-01-31, not {value!r}")


def _codes(value: object, key: str) -> frozenset[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}: must be a list of rule codes, not {value!r}")
    for code in value:
        _rule(code, key)
    return frozenset(value)


def _rule(code: str, key: str) -> Rule:
    try:
        return rule(code)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _severity(value: object, where: str) -> Severity:
    allowed = [s.value for s in Severity]
    if isinstance(value, str) and value.lower() in allowed:
        return Severity(value.lower())
    raise ValueError(f"{where}: bad severity {value!r} (allowed: {', '.join(allowed)})")


def _severities(value: object) -> dict[tuple[str, PortClass], Severity]:
    if not isinstance(value, Mapping):
        raise ValueError(f"severity: must be a table of rule codes, not {value!r}")
    overrides: dict[tuple[str, PortClass], Severity] = {}
    for code, setting in value.items():
        entry = _rule(str(code), "severity")
        where = f"severity.{code}"
        if isinstance(setting, Mapping):
            classes = [p.value for p in PortClass]
            for class_name, level in setting.items():
                if class_name not in classes:
                    raise ValueError(
                        f"{where}: unknown port class {class_name!r} "
                        f"(allowed: {', '.join(classes)})"
                    )
                port_class = PortClass(class_name)
                if not entry.applies_to(port_class):
                    applies = ", ".join(p.value for p in entry.severity)
                    raise ValueError(
                        f"{where}: rule does not apply to {class_name} (only to {applies})"
                    )
                overrides[(entry.code, port_class)] = _severity(level, f"{where}.{class_name}")
        else:
            level = _severity(setting, where)
            for port_class in entry.severity:
                overrides[(entry.code, port_class)] = level
    return overrides
