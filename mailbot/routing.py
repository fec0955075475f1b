"""Who gets a ticket: teams, skills, shifts and two balancing modes, all pure.

* An agent's ``working_hours`` are read in the agent's own IANA time zone, so
  shifts follow daylight saving time; a shift whose end is not after its start
  (``22:00-06:00``) runs past midnight into the next day. ``None`` means
  always on shift.
* Eligible members are the team's members, in the team's order, who are
  active, have the ticket's category among their ``skills`` (an empty set
  means every category) and are on shift.
* ``least-loaded`` picks the eligible member with the smallest *weighted*
  load: the sum of :data:`PRIORITY_WEIGHTS` over their open tickets
  (critical 4, high 3, medium 2, low 1); ties go to the fewer tickets, then to
  round-robin order.
* ``round-robin`` picks the first eligible member after the one assigned last
  in this team (``last_assigned``, which the caller stores per team), so the
  rotation is deterministic and survives restarts.
* Nobody eligible: :func:`choose_agent` returns None and the ticket waits in
  the team's queue; :func:`assign_waiting` hands queued tickets out once a
  member comes on shift.
* :func:`route` puts it together: an agent's ``#assign`` always wins, then a
  rule's ``assign: agent``, then a rule's ``assign: team:<name>``, then the
  first team whose skills include the category.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Weight of one open ticket of each priority in the least-loaded mode.
PRIORITY_WEIGHTS: Final[Mapping[str, int]] = {"critical": 4, "high": 3, "medium": 2, "low": 1}
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Shift = tuple[time, time]
WorkingHours = Mapping[int, Sequence[Shift]]


class RoutingMode(enum.StrEnum):
    least_loaded = "least-loaded"
    round_robin = "round-robin"


@dataclass(frozen=True, slots=True)
class Agent:
    """A support agent. ``working_hours`` maps weekday (0 = Monday) to shifts."""

    email: str
    name: str = ""
    active: bool = True
    skills: frozenset[str] = frozenset()
    time_zone: str = "UTC"
    working_hours: WorkingHours | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "email", self.email.lower())
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"agent {self.email}: unknown time zone {self.time_zone!r}") from None


@dataclass(frozen=True, slots=True)
class Team:
    """A team: members (agent addresses, in rotation order), skills, balancing mode."""

    name: str
    members: tuple[str, ...]
    skills: frozenset[str] = frozenset()
    mode: RoutingMode = RoutingMode.least_loaded

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(m.lower() for m in self.members))
        object.__setattr__(self, "mode", RoutingMode(self.mode))


def parse_working_hours(spec: Mapping[str, Sequence[str]]) -> dict[int, tuple[Shift, ...]]:
    """``{"mon-fri": ["09:00-13:00", "14:00-18:00"], "sat": ["22:00-06:00"]}`` to shifts.

    Keys are a weekday or a range of weekdays (``mon``..``sun``); values are
    ``HH:MM-HH:MM`` shifts in the agent's local time. Raises ValueError.
    """
    hours: dict[int, list[Shift]] = {}
    for days, shifts in spec.items():
        first, _, last = days.strip().lower().partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"unknown weekday or range {days!r} (use mon..sun, mon-fri)")
        start_day, end_day = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        day_list = [(start_day + i) % 7 for i in range((end_day - start_day) % 7 + 1)]
        for text in shifts:
            match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
            if match is None:
                raise ValueError(f"expected a shift as HH:MM-HH:MM, got {text!r}")
            h1, m1, h2, m2 = map(int, match.groups())
            if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
                raise ValueError(f"bad time in shift {text!r}")
            shift = (time(h1, m1), time(h2 % 24, m2))
            if shift[0] == shift[1]:
                raise ValueError(f"empty shift {text!r}")
            for day in day_list:
                hours.setdefault(day, []).append(shift)
    return {day: tuple(shifts) for day, shifts in hours.items()}


def on_shift(agent: Agent, at: datetime) -> bool:
    """Whether ``agent`` works at the instant ``at`` (an aware datetime)."""
    if at.tzinfo is None:
        raise ValueError("on_shift needs an aware datetime")
    if agent.working_hours is None:
        return True
    local = at.astimezone(ZoneInfo(agent.time_zone))
    now = local.time().replace(tzinfo=None)
    today = local.weekday()
    for start, end in agent.working_hours.get(today, ()):
        if start < end and start <= now < end:
            return True
        if end <= start and now >= start:  # crosses midnight: the evening part
            return True
    yesterday = (local - timedelta(days=1)).weekday()
    return any(end <= start and now < end for start, end in agent.working_hours.get(yesterday, ()))


def load_weight(priorities: Iterable[str]) -> int:
    """The weighted load of open tickets with these priorities (unknown counts as medium)."""
    default = PRIORITY_WEIGHTS["medium"]
    return sum(PRIORITY_WEIGHTS.get(p, default) for p in priorities)


def eligible(
    team: Team, agents: Mapping[str, Agent], category: str | None, at: datetime
) -> list[str]:
    """The team's members who may take a ticket of ``category`` now, in team order."""
    out: list[str] = []
    for email in team.members:
        agent = agents.get(email)
        if agent is None or not agent.active:
            continue
        if category is not None and agent.skills and category not in agent.skills:
            continue
        if on_shift(agent, at):
            out.append(email)
    return out


def _rotation(team: Team, last_assigned: str | None) -> dict[str, int]:
    """Each member's distance from the one after ``last_assigned`` (0 = next in turn)."""
    members = team.members
    start = members.index(last_assigned) + 1 if last_assigned in members else 0
    return {m: (i - start) % len(members) for i, m in enumerate(members)}


def choose_agent(
    team: Team,
    agents: Mapping[str, Agent],
    category: str | None,
    at: datetime,
    load: Mapping[str, Sequence[str]],
    last_assigned: str | None = None,
) -> str | None:
    """Pick the member of ``team`` for a new ticket, or None if nobody can take it now.

    ``load`` maps an agent address to the priorities of their open tickets;
    ``last_assigned`` is the member this team gave a ticket to last.
    """
    candidates = eligible(team, agents, category, at)
    if not candidates:
        return None
    turn = _rotation(team, last_assigned)
    if team.mode is RoutingMode.round_robin:
        return min(candidates, key=turn.__getitem__)

    def score(email: str) -> tuple[int, int, int]:
        tickets = load.get(email, ())
        return (load_weight(tickets), len(tickets), turn[email])

    return min(candidates, key=score)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A ticket in a team's queue (oldest first is the caller's order)."""

    ticket_id: int
    priority: str
    category: str | None = None


def assign_waiting(
    team: Team,
    agents: Mapping[str, Agent],
    waiting: Sequence[Waiting],
    at: datetime,
    load: Mapping[str, Sequence[str]],
    last_assigned: str | None = None,
) -> list[tuple[int, str]]:
    """Hand out queued tickets to members now on shift: ``[(ticket_id, agent), ...]``.

    The most urgent go first (then queue order); each assignment counts in
    the load and the rotation for the next. The last pair's agent is the new
    ``last_assigned``. Tickets nobody can take stay queued (left out).
    """
    urgency = {p: i for i, p in enumerate(PRIORITY_WEIGHTS)}
    order = sorted(range(len(waiting)), key=lambda i: (urgency.get(waiting[i].priority, 9), i))
    current = {email: list(priorities) for email, priorities in load.items()}
    out: list[tuple[int, str]] = []
    for i in order:
        ticket = waiting[i]
        agent = choose_agent(team, agents, ticket.category, at, current, last_assigned)
        if agent is None:
            continue
        out.append((ticket.ticket_id, agent))
        current.setdefault(agent, []).append(ticket.priority)
        last_assigned = agent
    return out


def team_for_category(teams: Sequence[Team], category: str | None) -> Team | None:
    """The first team whose skills include ``category`` (or that has no skills)."""
    for team in teams:
        if not team.skills or (category is not None and category in team.skills):
            return team
    return None


@dataclass(frozen=True, slots=True)
class Route:
    """Where a ticket goes. ``assignee`` None with a ``team`` means: wait in its queue."""

    assignee: str | None
    team: str | None
    how: str


@dataclass(frozen=True, slots=True)
class RoutingState:
    """What routing reads from the store: open-ticket load and the last assignee per team."""

    load: Mapping[str, Sequence[str]] = field(default_factory=dict)
    last_assigned: Mapping[str, str] = field(default_factory=dict)


def route(
    *,
    category: str | None,
    teams: Sequence[Team],
    agents: Mapping[str, Agent],
    at: datetime,
    state: RoutingState,
    command_assignee: str | None = None,
    rule_assignee: str | None = None,
    rule_team: str | None = None,
) -> Route:
    """Decide the assignee of a ticket (see the module docstring for the order)."""
    if command_assignee:
        return Route(command_assignee.lower(), None, "#assign")
    if rule_assignee:
        return Route(rule_assignee.lower(), None, "rule")
    by_name = {t.name: t for t in teams}
    team = by_name.get(rule_team) if rule_team else team_for_category(teams, category)
    if team is None:
        return Route(None, None, "no team")
    how = "rule team" if rule_team else "category"
    last = state.last_assigned.get(team.name)
    agent = choose_agent(team, agents, category, at, state.load, last)
    if agent is None:
        return Route(None, team.name, f"{how}: nobody on shift, queued")
    return Route(agent, team.name, f"{how}: {team.mode.value}")
