"""A nightly sweep's schedule tick (``sweeps.scheduled_for``), unique: two schedulers
firing the same tick start one sweep (fleet.sweeps.start_nightly).

Revision ID: 8b6418fff494
Revises: 589fbdb53c7d
Create Date: 2026-11-28 03:50:33.712662+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8b6418fff494"
down_revision: str | None = "589fbdb53c7d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default: adding it rewrites nothing.
    op.add_column("sweeps", sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
    op.create_unique_constraint(op.f("uq_sweeps_scheduled_for"), "sweeps", ["scheduled_for"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_sweeps_scheduled_for"), "sweeps", type_="unique")
    op.drop_column("sweeps", "scheduled_for")
