"""The read-only JSON API (``/api/...``): tickets, one ticket, KPIs; Bearer token auth."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel

from mailbot import reports
from mailbot.states import Priority, TicketStatus
from mailbot.store import reports as queries
from mailbot.store import ticket_reads
from mailbot.store.reports import TicketFilter, TicketLine
from mailbot.web.deps import Agent, Db, State

YesNo = Literal["yes", "no"]
Sort = Literal[
    "number", "-number", "created", "-created", "updated", "-updated",
    "priority", "-priority", "status", "-status",
]  # fmt: skip
View = Literal["text", "html"]
NumberPath = Path(ge=1, le=2**31 - 1)
IdPath = Path(ge=1, le=2**31 - 1)
TokenPath = Path(max_length=100)


def make_filter(
    status: TicketStatus | None,
    priority: Priority | None,
    category: str | None,
    assignee: str | None,
    breached: YesNo | None,
    text: str | None,
) -> TicketFilter:
    def clean(value: str | None) -> str | None:
        value = (value or "").replace("\x00", "").strip()
        return value or None

    return TicketFilter(
        status=status.value if status else None,
        priority=priority.value if priority else None,
        category=clean(category),
        assignee=clean(assignee),
        breached=None if breached is None else breached == "yes",
        text=clean(text),
    )


class TicketSummary(BaseModel):
    number: int
    subject: str
    status: str
    priority: str
    category: str | None
    assignee: str | None
    requester: str | None
    created_at: datetime
    updated_at: datetime
    first_response_due_at: datetime | None
    resolution_due_at: datetime | None
    breached: bool

    @classmethod
    def of(cls, line: TicketLine) -> TicketSummary:
        return cls(
            number=line.number,
            subject=line.subject,
            status=line.status,
            priority=line.priority,
            category=line.category,
            assignee=line.assignee,
            requester=line.requester,
            created_at=line.created_at,
            updated_at=line.updated_at,
            first_response_due_at=line.first_response_due_at,
            resolution_due_at=line.resolution_due_at,
            breached=line.breached,
        )


class TicketPage(BaseModel):
    total: int
    page: int
    page_size: int
    tickets: list[TicketSummary]


class MessageOut(BaseModel):
    id: int
    created_at: datetime
    direction: str
    author: str
    internal: bool
    subject: str
    text: str
    has_html: bool
    attachments: list[dict[str, Any]]


class TicketOut(BaseModel):
    number: int
    subject: str
    status: str
    priority: str
    category: str | None
    assignee: str | None
    requester: str | None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    first_response_at: datetime | None
    first_response_due_at: datetime | None
    resolution_due_at: datetime | None
    sla_state: str
    messages: list[MessageOut]
    rules: list[dict[str, str]]
    history: list[dict[str, str | None]]


class KpisOut(BaseModel):
    created_today: int
    resolved_today: int
    open: int
    breached: int
    at_risk: int
    median_first_response_minutes: float | None
    quarantined: int
    outbox_pending: int
    outbox_failed: int


class Problem(BaseModel):
    detail: str


_UNAUTHORISED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No or a wrong Bearer token"}
}


def add_routes(app: FastAPI) -> None:
    @app.get("/api/tickets", response_model=TicketPage, responses=_UNAUTHORISED)
    def list_tickets(
        _: Agent,
        s: Db,
        state: State,
        status: TicketStatus | None = None,
        priority: Priority | None = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        assignee: Annotated[str | None, Query(max_length=320)] = None,
        breached: YesNo | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        sort: Sort = "-number",
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> TicketPage:
        """Tickets (spam left out), filtered, sorted and one page at a time."""
        flt = make_filter(status, priority, category, assignee, breached, q)
        rows, total = queries.ticket_page(
            s,
            flt,
            now=state.clock(),
            sort=sort,
            limit=page_size,
            offset=(page - 1) * page_size,
        )
        return TicketPage(
            total=total,
            page=page,
            page_size=page_size,
            tickets=[TicketSummary.of(r) for r in rows],
        )

    @app.get(
        "/api/tickets/{number}",
        response_model=TicketOut,
        responses={**_UNAUTHORISED, 404: {"model": Problem, "description": "No such ticket"}},
    )
    def one_ticket(_: Agent, s: Db, state: State, number: Annotated[int, NumberPath]) -> TicketOut:
        """One ticket with its messages (internal notes included), rules and history."""
        detail = ticket_reads.ticket_detail(s, number)
        if detail is None:
            raise HTTPException(404, "no such ticket")
        t = detail.ticket
        clock = reports.ticket_clock(t, state.clock())
        return TicketOut(
            number=t.number,
            subject=t.subject,
            status=t.status,
            priority=t.priority,
            category=t.category,
            assignee=detail.assignee,
            requester=detail.requester.email if detail.requester else None,
            created_at=t.created_at,
            updated_at=t.updated_at,
            resolved_at=t.resolved_at,
            first_response_at=t.first_response_at,
            first_response_due_at=t.sla_first_response_due_at,
            resolution_due_at=t.sla_resolution_due_at,
            sla_state=clock.state,
            messages=[
                MessageOut(
                    id=m.id or 0,
                    created_at=m.created_at,
                    direction=m.direction,
                    author=m.author_email or m.author_name,
                    internal=m.internal,
                    subject=m.subject,
                    text=m.text_body,
                    has_html=m.html_body is not None,
                    attachments=[
                        {
                            "id": a.id,
                            "file_name": a.file_name,
                            "content_type": a.content_type,
                            "size": a.size,
                            "url": f"/attachments/{a.id}",
                        }
                        for a in detail.attachments.get(m.id or 0, [])
                    ],
                )
                for m in detail.messages
            ],
            rules=[{"rule": h.rule_id, "why": h.detail} for h in detail.rule_hits],
            history=[
                {
                    "at": h.created_at.isoformat(),
                    "field": h.field,
                    "old": h.old_value,
                    "new": h.new_value,
                    "actor": h.actor,
                }
                for h in detail.history
            ],
        )

    @app.get("/api/kpis", response_model=KpisOut, responses=_UNAUTHORISED)
    def kpis(_: Agent, s: Db, state: State) -> KpisOut:
        """Today's figures, the open queue against its SLA, and the mail queues."""
        board = reports.build_dashboard(s, state.clock())
        k = board.kpis
        return KpisOut(
            created_today=k.created_today,
            resolved_today=k.resolved_today,
            open=k.open,
            breached=k.breached,
            at_risk=k.at_risk,
            median_first_response_minutes=k.median_first_response_minutes,
            quarantined=board.quarantined,
            outbox_pending=board.outbound.get("pending", 0) + board.outbound.get("sending", 0),
            outbox_failed=board.failed_mail,
        )
