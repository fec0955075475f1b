"""Plain-data documents of tickets, inbound mail and parsed mail, for the CLI.

Each ``*_document`` function returns JSON-ready dicts; the ``*_text`` and
``*_table`` functions render them for a terminal. Control characters from
mail are escaped before they reach a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailbot.message import ParsedMessage
from mailbot.store import ticket_reads
from mailbot.store.inbox import InboundSummary
from mailbot.store.models import InboundStatus, TicketStatus

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def _safe(text: str) -> str:
    """Terminal-safe: no escape sequences or bidi controls from mail."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def inbound_summary(row: InboundSummary) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status.value,
        "source": row.source,
        "message_id": row.message_id,
        "envelope_from": row.envelope_from,
        "envelope_to": list(row.envelope_to),
        "size": row.size,
        "attempts": row.attempts,
        "received_at": _iso(row.received_at),
        "processed_at": _iso(row.processed_at),
        "ticket_id": row.ticket_id,
        "last_error": row.last_error,
    }


def inbound_table(rows: Sequence[InboundSummary], counts: Mapping[InboundStatus, int]) -> str:
    lines = ["  ".join(f"{s.value}={counts.get(s, 0)}" for s in InboundStatus)]
    lines.append(
        f"{'ID':>7}  {'STATUS':<10} {'SOURCE':<8} {'SIZE':>8} {'TRIES':>5}  ERROR/MESSAGE-ID"
    )
    for r in rows:
        note = (r.last_error or "").splitlines()[0] if r.last_error else (r.message_id or "")
        lines.append(
            f"{r.id:>7}  {r.status.value:<10} {r.source[:8]:<8} {r.size:>8} {r.attempts:>5}  "
            f"{_safe(note)[:80]}"
        )
    return "\n".join(lines)


def outbound_table(rows: Sequence[Mapping[str, Any]], counts: Mapping[Any, int]) -> str:
    lines = ["  ".join(f"{getattr(s, 'value', s)}={n}" for s, n in counts.items())]
    lines.append(f"{'ID':>7}  {'STATUS':<8} {'EVENT':<16} {'TRIES':>5}  TO / ERROR")
    for r in rows:
        note = (
            (r["last_error"] or "").splitlines()[0]
            if r["last_error"]
            else ", ".join(r["recipients"] or [])
        )
        lines.append(
            f"{r['id']:>7}  {r['status']:<8} {r['event'][:16]:<16} {r['attempts']:>5}  "
            f"{_safe(note)[:80]}"
        )
    return "\n".join(lines)


def key_values(data: Mapping[str, Any]) -> str:
    width = max((len(k) for k in data), default=0)
    out = []
    for key, value in data.items():
        text = value if isinstance(value, str) else repr(value) if value is not None else "-"
        if "\n" in text:
            out.append(f"{key}:")
            out.extend(f"    {_safe(line)}" for line in text.splitlines())
        else:
            out.append(f"{key:<{width}}  {_safe(text)}")
    return "\n".join(out)


# -- tickets --------------------------------------------------------------------


def ticket_rows(
    session: Session, *, status: TicketStatus | None, limit: int, spam: bool = False
) -> list[dict[str, Any]]:
    return [
        {
            "number": t.number,
            "status": t.status,
            "priority": t.priority,
            "category": t.category,
            "subject": t.subject,
            "requester": email,
            "created_at": _iso(t.created_at),
            "updated_at": _iso(t.updated_at),
        }
        for t, email in ticket_reads.list_tickets(session, status=status, limit=limit, spam=spam)
    ]


def ticket_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"{'NUMBER':>7}  {'STATUS':<11} {'PRIORITY':<8} {'REQUESTER':<28} SUBJECT"]
    for r in rows:
        lines.append(
            f"{r['number']:>7}  {r['status']:<11} {r['priority']:<8} "
            f"{_safe(r['requester'] or '-')[:28]:<28} {_safe(r['subject'])[:60]}"
        )
    return "\n".join(lines)


def ticket_document(session: Session, number: int) -> dict[str, Any] | None:
    detail = ticket_reads.ticket_detail(session, number)
    if detail is None:
        return None
    t = detail.ticket
    return {
        "number": t.number,
        "subject": t.subject,
        "status": t.status,
        "priority": t.priority,
        "category": t.category,
        "subcategory": t.subcategory,
        "source": t.source,
        "tags": list(t.tags),
        "requester": (
            {"email": detail.requester.email, "name": detail.requester.name}
            if detail.requester
            else None
        ),
        "assignee": detail.assignee,
        "team": t.team,
        "escalation_level": t.escalation_level,
        "spam": t.spam,
        "merged_into_id": t.merged_into_id,
        "created_at": _iso(t.created_at),
        "updated_at": _iso(t.updated_at),
        "resolved_at": _iso(t.resolved_at),
        "closed_at": _iso(t.closed_at),
        "first_response_at": _iso(t.first_response_at),
        "sla_first_response_due_at": _iso(t.sla_first_response_due_at),
        "sla_resolution_due_at": _iso(t.sla_resolution_due_at),
        "messages": [
            {
                "id": m.id,
                "created_at": _iso(m.created_at),
                "direction": m.direction,
                "author_type": m.author_type,
                "author": m.author_email or m.author_name,
                "internal": m.internal,
                "message_id": m.message_id,
                "subject": m.subject,
                "text": m.text_body,
                "has_html": m.html_body is not None,
                "flags": list(m.flags),
                "attachments": [
                    {
                        "id": a.id,
                        "file_name": a.file_name,
                        "content_type": a.content_type,
                        "size": a.size,
                        "storage_key": a.storage_key,
                        "inline": a.inline,
                        "content_id": a.content_id,
                    }
                    for a in detail.attachments.get(m.id or 0, [])
                ],
            }
            for m in detail.messages
        ],
        "rules": [{"rule": h.rule_id, "why": h.detail} for h in detail.rule_hits],
        "history": [
            {
                "at": _iso(h.created_at),
                "field": h.field,
                "old": h.old_value,
                "new": h.new_value,
                "actor": h.actor,
            }
            for h in detail.history
        ],
    }


def ticket_text(data: Mapping[str, Any]) -> str:
    head = {k: v for k, v in data.items() if k not in ("messages", "history", "rules")}
    requester = data["requester"]
    head["requester"] = f"{requester['name']} <{requester['email']}>" if requester else None
    parts = [key_values(head)]
    for m in data["messages"]:
        parts.append(f"\n--- message {m['id']} from {m['author']} at {m['created_at']}")
        for a in m["attachments"]:
            parts.append(
                f"    [attachment] {_safe(a['file_name'])} ({a['content_type']}, {a['size']} B)"
            )
        parts.append(_safe(m["text"]))
    parts.append("\n--- rules that matched")
    for hit in data["rules"]:
        parts.append(f"{hit['rule']}: {_safe(hit['why'])}")
    parts.append("\n--- history")
    for h in data["history"]:
        parts.append(f"{h['at']}  {h['field']}: {h['old']} -> {h['new']} by {_safe(h['actor'])}")
    return "\n".join(parts)


# -- parsed mail -------------------------------------------------------------------


def parsed_document(msg: ParsedMessage) -> dict[str, Any]:
    def addresses(items: Sequence[Any]) -> list[dict[str, str]]:
        return [{"email": a.email, "name": a.name} for a in items]

    return {
        "message_id": msg.message_id,
        "subject": msg.subject,
        "from": {"email": msg.sender.email, "name": msg.sender.name} if msg.sender else None,
        "from_header": msg.from_header,
        "to": addresses(msg.to),
        "cc": addresses(msg.cc),
        "reply_to": addresses(msg.reply_to),
        "date": _iso(msg.date),
        "in_reply_to": list(msg.in_reply_to),
        "references": list(msg.references),
        "text": msg.text,
        "has_html": msg.html is not None,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "content_id": a.content_id,
                "inline": a.inline,
            }
            for a in msg.attachments
        ],
        "defects": list(msg.defects),
        "fallbacks": list(msg.fallbacks),
    }
