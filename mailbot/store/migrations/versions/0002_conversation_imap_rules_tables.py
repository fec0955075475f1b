"""conversation, imap, rules tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 19:02:39.404028
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imap_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox", sa.String(length=64), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox", "folder"),
    )
    op.create_table(
        "lease",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ticket_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("other_ticket_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["other_ticket_id"],
            ["ticket.id"],
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["ticket.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "other_ticket_id", "kind"),
    )
    with op.batch_alter_table("ticket_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ticket_link_other_ticket_id"), ["other_ticket_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_ticket_link_ticket_id"), ["ticket_id"], unique=False)

    op.create_table(
        "ticket_participant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["ticket.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "email"),
    )
    with op.batch_alter_table("ticket_participant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ticket_participant_email"), ["email"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ticket_participant_ticket_id"), ["ticket_id"], unique=False
        )

    op.create_table(
        "rule_hit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inbound_id", sa.Integer(), nullable=True),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbound_id"],
            ["inbound.id"],
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["ticket.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rule_hit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rule_hit_inbound_id"), ["inbound_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_rule_hit_ticket_id"), ["ticket_id"], unique=False)

    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bouncing", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outbound_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_message_outbound_id_outbound", "outbound", ["outbound_id"], ["id"]
        )

    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("primary_recipient", sa.String(length=320), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("event", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("auto", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("bounced_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_outbound_primary_recipient"), ["primary_recipient"], unique=False
        )

    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("spam", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_column("escalation_level")
        batch_op.drop_column("spam")

    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_primary_recipient"))
        batch_op.drop_column("bounced_at")
        batch_op.drop_column("auto")
        batch_op.drop_column("event")
        batch_op.drop_column("primary_recipient")

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_constraint("fk_message_outbound_id_outbound", type_="foreignkey")
        batch_op.drop_column("outbound_id")

    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_column("bouncing")

    with op.batch_alter_table("rule_hit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_hit_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_rule_hit_inbound_id"))

    op.drop_table("rule_hit")
    with op.batch_alter_table("ticket_participant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_participant_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_ticket_participant_email"))

    op.drop_table("ticket_participant")
    with op.batch_alter_table("ticket_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_link_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_ticket_link_other_ticket_id"))

    op.drop_table("ticket_link")
    op.drop_table("lease")
    op.drop_table("imap_cursor")
