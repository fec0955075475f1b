"""web credential, ticket time indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 19:39:03.881440
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_credential",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ticket_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ticket_resolved_at"), ["resolved_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_resolved_at"))
        batch_op.drop_index(batch_op.f("ix_ticket_created_at"))

    op.drop_table("web_credential")
