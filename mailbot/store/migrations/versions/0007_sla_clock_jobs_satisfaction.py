"""sla clock, job marks, satisfaction

Revision ID: 0007
Revises: 0006

The SLA clock's pause, breaches and reminders recorded on the ticket, the
customer's satisfaction rating, an index on history times (the digest), and
``job_mark`` (things a scheduled job did once, such as a manager's daily
digest).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMES = (
    "pending_since",
    "first_response_breached_at",
    "resolution_breached_at",
    "first_response_reminded_at",
    "resolution_reminded_at",
    "pending_reminded_at",
    "rated_at",
)


def upgrade() -> None:
    op.create_table(
        "job_mark",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job", "key"),
    )
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("sla_paused_seconds", sa.Integer(), nullable=False, server_default="0")
        )
        for name in _TIMES[1:-1]:
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rating", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rating_comment", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("rated_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("history", schema=None) as batch_op:
        batch_op.create_index("ix_history_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("history", schema=None) as batch_op:
        batch_op.drop_index("ix_history_created_at")
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        for name in (*_TIMES, "sla_paused_seconds", "rating", "rating_comment"):
            batch_op.drop_column(name)
    op.drop_table("job_mark")
