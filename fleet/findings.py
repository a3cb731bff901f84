"""Findings per closed sweep: every result document of the sweep judged by the policy.

When a sweep closes, :func:`fleet.sweeps.close` queues the ``findings_evaluate`` job
after its commit (the closing transaction stays short: judging 10,000 documents takes
seconds). The job (:func:`evaluate_sweep`) reads the sweep's documents in batches in
short read-only sessions, judges them outside any transaction with
:func:`policy.evaluate` under the deployment's profile (:func:`profile_for`) at the
sweep's ``finished_at`` (so that judging again gives the same findings, certificate
expiry included), and stores them in one transaction, insert-once per
``(sweep, endpoint, code)``, together with the ``finding_runs`` marker. Running it
twice stores the same rows; then notices are brought up to date
(:func:`fleet.notices.sync_sweep`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.repositories import findings as repo
from fleet.repositories import sweeps as sweep_repo
from fleet.settings import Settings
from policy import RULES_VERSION, Profile, Severity, default_profile, evaluate, load_profile

__all__ = [
    "SEVERITY_RANK",
    "EvaluateReport",
    "evaluate_sweep",
    "finding_rows",
    "profile_for",
]

log = logging.getLogger(__name__)

#: Severity → the stored ``severity_rank`` (0 info … 4 critical).
SEVERITY_RANK: dict[str, int] = {s.value: s.rank for s in Severity}

#: Documents read (and judged) per batch.
BATCH = 1000


def profile_for(settings: Settings) -> Profile:
    """The deployment's policy profile: ``policy_file`` (TOML) if set, else the default
    profile with the fleet's ``cutoff_date``. ValueError names a bad file's mistake."""
    if settings.policy_file is not None:
        return load_profile(settings.policy_file)
    return default_profile(cutoff=settings.cutoff_date)


def finding_rows(
    sweep_id: int,
    endpoint_id: int,
    document: Mapping[str, Any],
    profile: Profile,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The ``findings`` rows of one result document (judged at ``now``)."""
    return [
        {
            "sweep_id": sweep_id,
            "endpoint_id": endpoint_id,
            "code": f.code,
            "severity": f.severity.value,
            "severity_rank": f.severity.rank,
            "port_class": f.port_class.value,
            "title": f.title,
            "detail": f.detail,
            "evidence": list(f.evidence),
            "rules_version": RULES_VERSION,
            "profile": profile.name,
        }
        for f in evaluate(document, profile, now)
    ]


@dataclass(frozen=True, slots=True)
class EvaluateReport:
    """What :func:`evaluate_sweep` did: ``stored`` is False when the sweep's findings
    were there already (a job run twice)."""

    sweep_id: int
    findings: int
    stored: bool


async def _judged_at(session: AsyncSession, sweep_id: int) -> dt.datetime | None:
    sweep = await sweep_repo.get_sweep(session, sweep_id)
    if sweep is None or sweep.status != "done":
        return None
    return sweep.finished_at or dt.datetime.now(dt.UTC)


async def evaluate_sweep(
    sessions: async_sessionmaker[AsyncSession], profile: Profile, sweep_id: int
) -> EvaluateReport | None:
    """Judge every result of a closed sweep and store its findings once; None when the
    sweep is not (or no longer) a closed one."""
    async with sessions() as session:
        judged_at = await _judged_at(session, sweep_id)
        if judged_at is None:
            return None
        run = await repo.get_run(session, sweep_id)
        if run is not None:
            return EvaluateReport(sweep_id, run.findings, stored=False)

    rows: list[dict[str, Any]] = []
    after = 0
    while True:
        async with sessions() as session:
            batch = await repo.result_documents(session, sweep_id, after=after, limit=BATCH)
        if not batch:
            break
        for result_id, endpoint_id, document in batch:
            rows.extend(finding_rows(sweep_id, endpoint_id, document, profile, judged_at))
            after = result_id

    async with sessions() as session:
        stored = await repo.store_findings(
            session,
            sweep_id,
            rows,
            rules_version=RULES_VERSION,
            profile=profile.name,
            judged_at=judged_at,
        )
        await session.commit()
    if stored:
        log.info("sweep %s: %d findings stored", sweep_id, len(rows))
    return EvaluateReport(sweep_id, len(rows), stored=stored)
