"""Current state for filters and statistics: endpoint_latest, domain_latest,
domain_endpoint_latest (maintained by fleet.repositories.reports.advance_latest) and
sweep_stats; backfilled from the stored results.

Revision ID: 285c7f160b7f
Revises: 5e1c0a7f3b21
Create Date: 2026-11-28 03:01:17.805131+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "285c7f160b7f"
down_revision: str | None = "5e1c0a7f3b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The current state of the results already stored: the same rules as
#: ``fleet.repositories.reports.advance_latest`` (newest by scanned_at, then id; a
#: domain's current sweep is the newest in which one of its endpoints has a result).
BACKFILL = (
    """
    INSERT INTO endpoint_latest (
        endpoint_id, result_id, sweep_id, scanned_at, port, service, status, error_kind,
        ssl2, ssl3, tls10, tls11, tls12, tls13, lowest_protocol, highest_protocol,
        plaintext_before_tls, starttls_offered, cert_status, cert_not_after)
    SELECT DISTINCT ON (r.endpoint_id)
        r.endpoint_id, r.id, r.sweep_id, r.scanned_at, e.port, e.service, r.status,
        r.error_kind, r.ssl2, r.ssl3, r.tls10, r.tls11, r.tls12, r.tls13,
        r.lowest_protocol, r.highest_protocol, r.plaintext_before_tls, r.starttls_offered,
        r.cert_status, r.cert_not_after
    FROM scan_results AS r JOIN endpoints AS e ON e.id = r.endpoint_id
    ORDER BY r.endpoint_id, r.scanned_at DESC, r.id DESC
    """,
    """
    INSERT INTO domain_latest (domain_id, sweep_id)
    SELECT de.domain_id, max(de.sweep_id)
    FROM domain_endpoints AS de
    WHERE EXISTS (
        SELECT 1 FROM scan_results AS r
        WHERE r.sweep_id = de.sweep_id AND r.endpoint_id = de.endpoint_id
    )
    GROUP BY de.domain_id
    """,
    """
    INSERT INTO domain_endpoint_latest (domain_id, endpoint_id)
    SELECT DISTINCT de.domain_id, de.endpoint_id
    FROM domain_endpoints AS de
    JOIN domain_latest AS dl ON dl.domain_id = de.domain_id AND dl.sweep_id = de.sweep_id
    """,
)


def upgrade() -> None:
    op.create_table(
        "sweep_stats",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("stats", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_sweep_stats_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sweep_id", name=op.f("pk_sweep_stats")),
    )
    op.create_table(
        "endpoint_latest",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.BigInteger(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("ssl2", sa.Boolean(), nullable=True),
        sa.Column("ssl3", sa.Boolean(), nullable=True),
        sa.Column("tls10", sa.Boolean(), nullable=True),
        sa.Column("tls11", sa.Boolean(), nullable=True),
        sa.Column("tls12", sa.Boolean(), nullable=True),
        sa.Column("tls13", sa.Boolean(), nullable=True),
        sa.Column("lowest_protocol", sa.SmallInteger(), nullable=True),
        sa.Column("highest_protocol", sa.SmallInteger(), nullable=True),
        sa.Column("plaintext_before_tls", sa.Boolean(), nullable=True),
        sa.Column("starttls_offered", sa.Boolean(), nullable=True),
        sa.Column("cert_status", sa.String(length=20), nullable=True),
        sa.Column("cert_not_after", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_latest_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["scan_results.id"],
            name=op.f("fk_endpoint_latest_result_id_scan_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", name=op.f("pk_endpoint_latest")),
    )
    op.create_index(
        "ix_endpoint_latest_cert_not_after",
        "endpoint_latest",
        ["cert_not_after", "endpoint_id"],
        unique=False,
    )
    op.create_index(
        "ix_endpoint_latest_error",
        "endpoint_latest",
        ["error_kind", "endpoint_id"],
        unique=False,
        postgresql_where=sa.text("status = 'error'"),
    )
    op.create_index(
        "ix_endpoint_latest_legacy",
        "endpoint_latest",
        ["endpoint_id"],
        unique=False,
        postgresql_where=sa.text("lowest_protocol <= 3"),
    )
    op.create_index(
        "ix_endpoint_latest_plaintext",
        "endpoint_latest",
        ["endpoint_id"],
        unique=False,
        postgresql_where=sa.text("plaintext_before_tls"),
    )
    op.create_index(
        "ix_endpoint_latest_port_service",
        "endpoint_latest",
        ["port", "service", "endpoint_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_endpoint_latest_result_id"), "endpoint_latest", ["result_id"], unique=False
    )
    op.create_index(
        "ix_endpoint_latest_starttls_missing",
        "endpoint_latest",
        ["endpoint_id"],
        unique=False,
        postgresql_where=sa.text("starttls_offered = false"),
    )
    op.create_index(
        "ix_endpoint_latest_tls10",
        "endpoint_latest",
        ["endpoint_id"],
        unique=False,
        postgresql_where=sa.text("tls10"),
    )
    op.create_index(
        "ix_endpoint_latest_tls11",
        "endpoint_latest",
        ["endpoint_id"],
        unique=False,
        postgresql_where=sa.text("tls11"),
    )
    op.create_table(
        "domain_endpoint_latest",
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_domain_endpoint_latest_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_domain_endpoint_latest_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("domain_id", "endpoint_id", name=op.f("pk_domain_endpoint_latest")),
    )
    op.create_index(
        "ix_domain_endpoint_latest_endpoint",
        "domain_endpoint_latest",
        ["endpoint_id", "domain_id"],
        unique=False,
    )
    op.create_table(
        "domain_latest",
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_domain_latest_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_domain_latest_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("domain_id", name=op.f("pk_domain_latest")),
    )
    op.create_index(op.f("ix_domain_latest_sweep_id"), "domain_latest", ["sweep_id"], unique=False)
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    op.drop_index(op.f("ix_domain_latest_sweep_id"), table_name="domain_latest")
    op.drop_table("domain_latest")
    op.drop_index("ix_domain_endpoint_latest_endpoint", table_name="domain_endpoint_latest")
    op.drop_table("domain_endpoint_latest")
    op.drop_index(
        "ix_endpoint_latest_tls11", table_name="endpoint_latest", postgresql_where=sa.text("tls11")
    )
    op.drop_index(
        "ix_endpoint_latest_tls10", table_name="endpoint_latest", postgresql_where=sa.text("tls10")
    )
    op.drop_index(
        "ix_endpoint_latest_starttls_missing",
        table_name="endpoint_latest",
        postgresql_where=sa.text("starttls_offered = false"),
    )
    op.drop_index(op.f("ix_endpoint_latest_result_id"), table_name="endpoint_latest")
    op.drop_index("ix_endpoint_latest_port_service", table_name="endpoint_latest")
    op.drop_index(
        "ix_endpoint_latest_plaintext",
        table_name="endpoint_latest",
        postgresql_where=sa.text("plaintext_before_tls"),
    )
    op.drop_index(
        "ix_endpoint_latest_legacy",
        table_name="endpoint_latest",
        postgresql_where=sa.text("lowest_protocol <= 3"),
    )
    op.drop_index(
        "ix_endpoint_latest_error",
        table_name="endpoint_latest",
        postgresql_where=sa.text("status = 'error'"),
    )
    op.drop_index("ix_endpoint_latest_cert_not_after", table_name="endpoint_latest")
    op.drop_table("endpoint_latest")
    op.drop_table("sweep_stats")
