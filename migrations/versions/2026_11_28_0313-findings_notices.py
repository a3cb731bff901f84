"""Findings per sweep (with the run marker), notices per customer and problem set, and
the certificate-expiry steps already warned about.

Revision ID: bb64990c7605
Revises: 9b3e61d0c4a7
Create Date: 2026-11-28 03:13:41.285768+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "bb64990c7605"
down_revision: str | None = "9b3e61d0c4a7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "finding_runs",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("rules_version", sa.String(length=20), nullable=False),
        sa.Column("profile", sa.String(length=100), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("notices_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_finding_runs_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sweep_id", name=op.f("pk_finding_runs")),
    )
    op.create_table(
        "findings",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("severity_rank", sa.SmallInteger(), nullable=False),
        sa.Column("port_class", sa.String(length=12), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("rules_version", sa.String(length=20), nullable=False),
        sa.Column("profile", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_findings_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_findings_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_findings")),
        sa.UniqueConstraint(
            "sweep_id", "endpoint_id", "code", name="uq_findings_sweep_endpoint_code"
        ),
    )
    op.create_index(
        "ix_findings_endpoint_sweep", "findings", ["endpoint_id", "sweep_id"], unique=False
    )
    op.create_index("ix_findings_sweep_code", "findings", ["sweep_id", "code"], unique=False)
    op.create_index(
        "ix_findings_sweep_rank", "findings", ["sweep_id", "severity_rank"], unique=False
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("account_manager_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=12), server_default="open", nullable=False),
        sa.Column("problem_hash", sa.String(length=64), nullable=False),
        sa.Column("problems", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("confirmed", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("last_sweep_id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), server_default="1", nullable=False),
        sa.Column("regressions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("exception_reason", sa.Text(), nullable=True),
        sa.Column("exception_until", sa.Date(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('open','notified','acknowledged','exception','resolved','dismissed')",
            name=op.f("ck_notices_status"),
        ),
        sa.ForeignKeyConstraint(
            ["account_manager_id"],
            ["account_managers.id"],
            name=op.f("fk_notices_account_manager_id_account_managers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_notices_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name=op.f("fk_notices_sweep_id_sweeps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    op.create_index(
        op.f("ix_notices_account_manager_id"), "notices", ["account_manager_id"], unique=False
    )
    op.create_index(
        "ix_notices_customer_hash", "notices", ["customer_id", "problem_hash"], unique=False
    )
    op.create_index("ix_notices_status", "notices", ["status", "id"], unique=False)
    op.create_table(
        "certificate_warnings",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_certificate_warnings_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_certificate_warnings_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["notices.id"],
            name=op.f("fk_certificate_warnings_notice_id_notices"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint(
            "customer_id", "endpoint_id", "not_after", "step", name=op.f("pk_certificate_warnings")
        ),
    )


def downgrade() -> None:
    op.drop_table("certificate_warnings")
    op.drop_index("ix_notices_status", table_name="notices")
    op.drop_index("ix_notices_customer_hash", table_name="notices")
    op.drop_index(op.f("ix_notices_account_manager_id"), table_name="notices")
    op.drop_table("notices")
    op.drop_index("ix_findings_sweep_rank", table_name="findings")
    op.drop_index("ix_findings_sweep_code", table_name="findings")
    op.drop_index("ix_findings_endpoint_sweep", table_name="findings")
    op.drop_table("findings")
    op.drop_table("finding_runs")
