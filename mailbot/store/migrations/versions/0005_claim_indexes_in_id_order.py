"""claim indexes in id order

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 20:00:22.497156
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_status_next"))
        batch_op.create_index("ix_inbound_status_id", ["status", "id"], unique=False)

    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_status_next"))
        batch_op.create_index("ix_outbound_status_id", ["status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.drop_index("ix_outbound_status_id")
        batch_op.create_index(
            batch_op.f("ix_outbound_status_next"), ["status", "next_attempt_at"], unique=False
        )

    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_status_id")
        batch_op.create_index(
            batch_op.f("ix_inbound_status_next"), ["status", "next_attempt_at"], unique=False
        )
