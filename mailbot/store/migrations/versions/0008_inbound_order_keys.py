"""inbound order keys

Revision ID: 0008
Revises: 0007

Several pipeline workers take mail from the inbox at once; two mails of one
sender, or of one thread, must still be processed in the order they came in.
``sender_key`` (the From address, else the envelope sender, lower-cased) and
``thread_key`` (a hash of the thread's first Message-ID) are read at intake;
two partial indexes over the waiting rows serve the claim's ordering check.

Rows still waiting at upgrade get their keys here, from their raw headers, so
that the mail queued before the upgrade keeps its order too. The header
reading is a frozen copy of ``mailbot.store.inbox.order_keys`` (a migration
must not change when the code does).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from email.utils import getaddresses

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "status IN ('received', 'processing')"

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELDS = re.compile(
    rb"^(from|references|in-reply-to|message-id)[ \t]*:(.*(?:\r?\n[ \t].*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_ANGLE = re.compile(r"<([^<>\s]+)>")


def _normal_id(text: str) -> str | None:
    found = _ANGLE.search(text.replace("\x00", ""))
    candidate = (found.group(1) if found else re.sub(r"\s+", "", text).strip("<>")).strip()
    if not candidate:
        return None
    local, sep, domain = candidate.rpartition("@")
    return f"{local}@{domain.lower()}" if sep else candidate


def _keys(raw: bytes, envelope_from: str) -> tuple[str | None, str | None]:
    head = raw[: 256 * 1024]
    end = _HEADER_END.search(head)
    head = head[: end.start()] if end else head
    fields: dict[str, str] = {}
    for match in _FIELDS.finditer(head):
        name = match.group(1).decode("ascii").lower()
        fields.setdefault(name, match.group(2).decode("utf-8", "replace"))
    sender = next((a.lower() for _, a in getaddresses([fields.get("from", "")]) if "@" in a), None)
    if sender is None and envelope_from not in ("", "<>"):
        sender = envelope_from.lower()
    root = None
    for name in ("references", "in-reply-to"):
        ids = [i for i in (_normal_id(m) for m in _ANGLE.findall(fields.get(name, ""))) if i]
        if ids:
            root = ids[0]
            break
    if root is None and fields.get("message-id"):
        root = _normal_id(fields["message-id"])
    thread = hashlib.sha256(root.encode("utf-8", "surrogatepass")).hexdigest() if root else None
    return (sender[:320] if sender else None), thread


def upgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender_key", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("thread_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_inbound_waiting_sender",
            ["sender_key", "id"],
            unique=False,
            sqlite_where=sa.text(WAITING),
            postgresql_where=sa.text(WAITING),
        )
        batch_op.create_index(
            "ix_inbound_waiting_thread",
            ["thread_key", "id"],
            unique=False,
            sqlite_where=sa.text(WAITING),
            postgresql_where=sa.text(WAITING),
        )
    bind = op.get_bind()
    waiting = bind.execute(
        sa.text(f"SELECT id, raw, envelope_from FROM inbound WHERE {WAITING}")
    ).all()
    update = sa.text("UPDATE inbound SET sender_key = :s, thread_key = :t WHERE id = :id")
    for row_id, raw, envelope_from in waiting:
        sender, thread = _keys(bytes(raw), envelope_from or "")
        bind.execute(update, {"s": sender, "t": thread, "id": row_id})


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_waiting_thread")
        batch_op.drop_index("ix_inbound_waiting_sender")
        batch_op.drop_column("thread_key")
        batch_op.drop_column("sender_key")
