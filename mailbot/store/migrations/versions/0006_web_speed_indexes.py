"""web speed indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 21:40:00.000000

The dashboard and the ticket list on 100,000 tickets (docs/performance.md):
a covering partial index over the open queue, spam added to the status index
and to the two time indexes (so counts read indexes only), and the category.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Written out, not imported: a migration must not change when the models do.
OPEN_QUEUE_WHERE = "status NOT IN ('resolved', 'closed')"
OPEN_QUEUE_COLUMNS = [
    "spam",
    "status",
    "priority",
    "category",
    "assignee_id",
    "first_response_at",
    "sla_first_response_due_at",
    "sla_resolution_due_at",
    "number",
]


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index("ix_ticket_status_priority")
        batch_op.drop_index(batch_op.f("ix_ticket_created_at"))
        batch_op.drop_index(batch_op.f("ix_ticket_resolved_at"))
        batch_op.create_index(
            "ix_ticket_status_priority_spam", ["status", "priority", "spam"], unique=False
        )
        batch_op.create_index("ix_ticket_created_at_spam", ["created_at", "spam"], unique=False)
        batch_op.create_index("ix_ticket_resolved_at_spam", ["resolved_at", "spam"], unique=False)
        batch_op.create_index(batch_op.f("ix_ticket_category"), ["category"], unique=False)
        batch_op.create_index(
            "ix_ticket_open_queue",
            OPEN_QUEUE_COLUMNS,
            unique=False,
            sqlite_where=sa.text(OPEN_QUEUE_WHERE),
            postgresql_where=sa.text(OPEN_QUEUE_WHERE),
        )


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index("ix_ticket_open_queue")
        batch_op.drop_index(batch_op.f("ix_ticket_category"))
        batch_op.drop_index("ix_ticket_resolved_at_spam")
        batch_op.drop_index("ix_ticket_created_at_spam")
        batch_op.drop_index("ix_ticket_status_priority_spam")
        batch_op.create_index(batch_op.f("ix_ticket_resolved_at"), ["resolved_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ticket_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_ticket_status_priority", ["status", "priority"], unique=False)
