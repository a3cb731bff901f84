"""Dashboard log-in sessions, and read-only views for Grafana's PostgreSQL data source.

The views (``v_*``) present the fleet's current state and its history in the shapes a
Grafana panel plots directly; they read the same tables, with the same definitions, as
``/v1/stats`` and ``/v1/stats/trend`` (fleet/repositories/reports.py), so the numbers
agree (tests/integration/test_grafana.py compares them). Views are not in the ORM
metadata: autogenerate neither creates nor compares them, and a later migration that
changes a column they read must drop and recreate them.

Revision ID: 589fbdb53c7d
Revises: c41d7e2a9f05
Create Date: 2026-11-28 03:49:01.613453+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "589fbdb53c7d"
down_revision: str | None = "c41d7e2a9f05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROTOCOLS = (
    "(VALUES (0, 'SSLv2'), (1, 'SSLv3'), (2, 'TLSv1.0'), (3, 'TLSv1.1'), (4, 'TLSv1.2'), "
    "(5, 'TLSv1.3'))"
)
_SEVERITIES = "(VALUES (0, 'info'), (1, 'low'), (2, 'medium'), (3, 'high'), (4, 'critical'))"

#: (name, SQL) in creation order; dropped in reverse.
VIEWS: tuple[tuple[str, str], ...] = (
    (
        "v_fleet_protocols",
        # Per protocol version: endpoints (their latest result) accepting it, and those
        # whose lowest / highest accepted version it is (/v1/stats counts.protocols,
        # lowest_protocol, highest_protocol).
        f"""
        SELECT p.rank::smallint AS rank, p.protocol::text AS protocol,
               count(e.endpoint_id) FILTER (WHERE CASE p.rank
                   WHEN 0 THEN e.ssl2 WHEN 1 THEN e.ssl3 WHEN 2 THEN e.tls10
                   WHEN 3 THEN e.tls11 WHEN 4 THEN e.tls12 ELSE e.tls13 END) AS accepting,
               count(e.endpoint_id) FILTER (WHERE e.lowest_protocol = p.rank) AS lowest,
               count(e.endpoint_id) FILTER (WHERE e.highest_protocol = p.rank) AS highest
        FROM {_PROTOCOLS} AS p(rank, protocol)
        LEFT JOIN endpoint_latest AS e ON true
        GROUP BY p.rank, p.protocol
        """,
    ),
    (
        "v_fleet_summary",
        # One row: the findings of /v1/stats now (expiring: within 30 days).
        """
        SELECT count(*) AS endpoints,
               count(*) FILTER (WHERE e.lowest_protocol <= 3) AS legacy_tls,
               count(*) FILTER (WHERE e.tls10) AS tls10,
               count(*) FILTER (WHERE e.tls11) AS tls11,
               count(*) FILTER (WHERE e.ssl2 OR e.ssl3) AS ssl,
               count(*) FILTER (WHERE e.highest_protocol < 4) AS no_modern_tls,
               count(*) FILTER (WHERE e.plaintext_before_tls) AS plaintext_before_tls,
               count(*) FILTER (WHERE e.starttls_offered = false) AS starttls_missing,
               count(*) FILTER (WHERE e.cert_not_after < now()) AS cert_expired,
               count(*) FILTER (WHERE e.cert_not_after >= now()
                   AND e.cert_not_after < now() + interval '30 days') AS cert_expiring,
               count(*) FILTER (WHERE e.cert_status IN ('untrusted', 'self_signed'))
                   AS cert_untrusted,
               count(*) FILTER (WHERE e.cert_status = 'hostname_mismatch')
                   AS cert_hostname_mismatch,
               count(*) FILTER (WHERE e.status = 'error') AS errors
        FROM endpoint_latest AS e
        """,
    ),
    (
        "v_findings_by_severity",
        # The findings of the newest judged sweep per severity (every severity, zeros
        # included): rows and distinct endpoints.
        f"""
        SELECT j.sweep_id, s.rank::smallint AS severity_rank, s.severity::text AS severity,
               count(f.id) AS findings, count(DISTINCT f.endpoint_id) AS endpoints
        FROM {_SEVERITIES} AS s(rank, severity)
        CROSS JOIN (SELECT max(sweep_id) AS sweep_id FROM finding_runs) AS j
        LEFT JOIN findings AS f ON f.sweep_id = j.sweep_id AND f.severity_rank = s.rank
        GROUP BY j.sweep_id, s.rank, s.severity
        """,
    ),
    (
        "v_sweep_trend",
        # Per closed full-fleet sweep, its stored statistics (/v1/stats/trend): expiry
        # relative to the sweep's end. "time" is what Grafana puts on the x axis.
        """
        SELECT s.id AS sweep_id, s.kind, coalesce(s.finished_at, s.created_at) AS "time",
               (t.stats -> 'all' ->> 'endpoints')::integer AS endpoints,
               (t.stats -> 'all' -> 'findings' ->> 'legacy_tls')::integer AS legacy_tls,
               (t.stats -> 'all' -> 'findings' ->> 'tls10')::integer AS tls10,
               (t.stats -> 'all' -> 'findings' ->> 'tls11')::integer AS tls11,
               (t.stats -> 'all' -> 'findings' ->> 'ssl')::integer AS ssl,
               (t.stats -> 'all' -> 'findings' ->> 'no_modern_tls')::integer AS no_modern_tls,
               (t.stats -> 'all' -> 'findings' ->> 'plaintext_before_tls')::integer
                   AS plaintext_before_tls,
               (t.stats -> 'all' -> 'findings' ->> 'starttls_missing')::integer
                   AS starttls_missing,
               (t.stats -> 'all' -> 'findings' ->> 'cert_expired')::integer AS cert_expired,
               (t.stats -> 'all' -> 'findings' ->> 'cert_expiring')::integer AS cert_expiring,
               (t.stats -> 'all' -> 'findings' ->> 'errors')::integer AS errors
        FROM sweeps AS s JOIN sweep_stats AS t ON t.sweep_id = s.id
        WHERE s.status = 'done' AND s.scope = '{"all": true}'::jsonb
        """,
    ),
    (
        "v_account_manager_summary",
        # Per account manager: customers, domains, and the endpoints their customers'
        # domains use now, each once, with the findings of /v1/stats?by_account_manager.
        """
        WITH uses AS (
            SELECT DISTINCT c.account_manager_id, u.endpoint_id
            FROM domain_endpoint_latest AS u
            JOIN domains AS d ON d.id = u.domain_id
            JOIN customers AS c ON c.id = d.customer_id
            WHERE c.account_manager_id IS NOT NULL
        )
        SELECT m.id AS account_manager_id, m.name::text AS name,
               (SELECT count(*) FROM customers AS c WHERE c.account_manager_id = m.id)
                   AS customers,
               (SELECT count(*) FROM domains AS d JOIN customers AS c ON c.id = d.customer_id
                WHERE c.account_manager_id = m.id) AS domains,
               count(e.endpoint_id) AS endpoints,
               count(e.endpoint_id) FILTER (WHERE e.lowest_protocol <= 3) AS legacy_tls,
               count(e.endpoint_id) FILTER (WHERE e.highest_protocol < 4) AS no_modern_tls,
               count(e.endpoint_id) FILTER (WHERE e.plaintext_before_tls)
                   AS plaintext_before_tls,
               count(e.endpoint_id) FILTER (WHERE e.starttls_offered = false)
                   AS starttls_missing,
               count(e.endpoint_id) FILTER (WHERE e.cert_not_after < now()) AS cert_expired,
               count(e.endpoint_id) FILTER (WHERE e.status = 'error') AS errors
        FROM account_managers AS m
        LEFT JOIN uses ON uses.account_manager_id = m.id
        LEFT JOIN endpoint_latest AS e ON e.endpoint_id = uses.endpoint_id
        GROUP BY m.id, m.name
        """,
    ),
    (
        "v_sweep_progress",
        # Open sweeps: endpoints planned, results stored, failed (GET /v1/sweeps/{id}).
        """
        SELECT s.id AS sweep_id, s.kind, s.status, s.total_endpoints AS total,
               (SELECT count(*) FROM scan_results AS r WHERE r.sweep_id = s.id) AS done,
               (SELECT count(*) FROM scan_results AS r
                WHERE r.sweep_id = s.id AND r.status = 'error') AS failed,
               s.created_at, s.started_at
        FROM sweeps AS s
        WHERE s.status IN ('pending', 'discovering', 'scanning', 'closing')
        """,
    ),
    (
        "v_notices_by_status",
        # Notices per status (every status, zeros included).
        """
        SELECT st.status::text AS status, count(n.id) AS notices
        FROM (VALUES ('open'), ('notified'), ('acknowledged'), ('exception'), ('resolved'),
                     ('dismissed')) AS st(status)
        LEFT JOIN notices AS n ON n.status = st.status
        GROUP BY st.status
        """,
    ),
)


def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table(
        "dashboard_sessions",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_dashboard_sessions_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_dashboard_sessions")),
    )
    op.create_index(
        op.f("ix_dashboard_sessions_expires_at"), "dashboard_sessions", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_dashboard_sessions_key_id"), "dashboard_sessions", ["key_id"], unique=False
    )
    # ### end Alembic commands ###
    for name, body in VIEWS:
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name, _ in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_index(op.f("ix_dashboard_sessions_key_id"), table_name="dashboard_sessions")
    op.drop_index(op.f("ix_dashboard_sessions_expires_at"), table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    # ### end Alembic commands ###
