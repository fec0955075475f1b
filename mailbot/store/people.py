"""Agents in the database, and what routing needs to know about their load."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel

from mailbot.directory import People
from mailbot.routing import RoutingState
from mailbot.states import TicketStatus

_tables = SQLModel.metadata.tables
_agent, _ticket, _state = _tables["agent"], _tables["ticket"], _tables["routing_state"]

#: Statuses in which a ticket counts towards its assignee's load.
OPEN_STATUSES = (
    TicketStatus.new.value,
    TicketStatus.assigned.value,
    TicketStatus.in_progress.value,
    TicketStatus.reopened.value,
)
_LOAD = (
    select(_agent.c.email, _ticket.c.priority)
    .select_from(_ticket.join(_agent, _agent.c.id == _ticket.c.assignee_id))
    .where(_ticket.c.status.in_(OPEN_STATUSES))
)
_LAST = select(_state.c.team, _state.c.last_assigned)
_AGENT_IDS = select(_agent.c.email, _agent.c.id)
_UPSERT_AGENT = {
    name: dialect.insert(_agent)
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_DIALECTS = {"sqlite": sqlite, "postgresql": postgresql}


def sync_agents(session: Session, people: People, now: datetime) -> None:
    """Make the agent table match ``agents.yaml``; agents no longer listed become inactive."""
    conn = session.connection()
    dialect = conn.dialect.name
    listed = set()
    for record in people.agents.values():
        agent = record.agent
        values = {
            "email": agent.email,
            "name": agent.name,
            "role": record.role.value,
            "skills": sorted(agent.skills),
            "time_zone": agent.time_zone,
            "working_hours": dict(record.working_hours_spec or {}),
            "active": agent.active,
            "created_at": now,
        }
        stmt = _UPSERT_AGENT[dialect].on_conflict_do_update(
            index_elements=["email"],
            set_={k: v for k, v in values.items() if k not in ("email", "created_at")},
        )
        conn.execute(stmt, values)
        listed.add(agent.email)
    stale = _agent.update().where(_agent.c.email.not_in(listed) if listed else true())
    conn.execute(stale.values(active=False))


def agent_ids(session: Session) -> dict[str, int]:
    return {email: agent_id for email, agent_id in session.connection().execute(_AGENT_IDS)}


def routing_state(session: Session) -> RoutingState:
    conn = session.connection()
    load: dict[str, list[str]] = {}
    for email, priority in conn.execute(_LOAD):
        load.setdefault(email, []).append(priority)
    last = {team: email for team, email in conn.execute(_LAST)}
    return RoutingState(load=load, last_assigned=last)


def set_last_assigned(session: Session, team: str, email: str, now: datetime) -> None:
    conn = session.connection()
    insert = _DIALECTS[conn.dialect.name].insert(_state)
    stmt = insert.values(team=team, last_assigned=email, updated_at=now).on_conflict_do_update(
        index_elements=["team"],
        set_={"last_assigned": insert.excluded.last_assigned, "updated_at": now},
    )
    conn.execute(stmt)
