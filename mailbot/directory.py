"""The people: agents and teams from ``agents.yaml``. Pure (the caller reads the file).

Shape::

    agents:
      - email: bob@example.org
        name: Bob Builder
        role: agent            # agent | manager | admin
        skills: [technical, usage]
        time_zone: Europe/Berlin
        working_hours: {mon-fri: ["09:00-18:00"]}   # omitted: always on shift
        active: true
        language: ru           # mail to this agent; omitted: desk.agent_language
    teams:
      - name: tech
        members: [bob@example.org]
        skills: [technical]
        mode: least-loaded     # or round-robin

Errors name the entry and the field; unknown keys are errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from mailbot.errors import ConfigError
from mailbot.routing import Agent, RoutingMode, Team, parse_working_hours
from mailbot.states import AgentRole

_AGENT_KEYS = {
    "email",
    "name",
    "role",
    "skills",
    "time_zone",
    "working_hours",
    "active",
    "language",
}
_TEAM_KEYS = {"name", "members", "skills", "mode"}


@dataclass(frozen=True, slots=True)
class AgentRecord:
    agent: Agent
    role: AgentRole
    working_hours_spec: Mapping[str, Sequence[str]] | None = None
    language: str | None = None

    @property
    def email(self) -> str:
        return self.agent.email

    @property
    def active(self) -> bool:
        return self.agent.active


@dataclass(frozen=True, slots=True)
class People:
    agents: Mapping[str, AgentRecord] = field(default_factory=dict)
    teams: tuple[Team, ...] = ()

    @property
    def routing_agents(self) -> dict[str, Agent]:
        return {email: record.agent for email, record in self.agents.items()}

    def find(self, email: str) -> AgentRecord | None:
        """The agent with this address (case-insensitive), active or not."""
        return self.agents.get(email.lower())

    def team_members(self, team: str | None) -> list[AgentRecord]:
        """Active members of ``team``; every active agent when there is no such team."""
        for t in self.teams:
            if t.name == team:
                return [self.agents[m] for m in t.members if self.agents[m].agent.active]
        return [r for r in self.agents.values() if r.agent.active]

    def escalation_audience(self, team: str | None, assignee: str | None) -> list[AgentRecord]:
        """Who hears of an escalation, once each: the managers, the members of
        the ticket's team, and its assignee."""
        chosen: dict[str, AgentRecord] = {m.email: m for m in self.managers}
        members = self.team_members(team) if team is not None else []
        found = self.find(assignee) if assignee else None
        for person in [*members, *([found] if found is not None and found.active else [])]:
            chosen.setdefault(person.email, person)
        return list(chosen.values())

    @property
    def managers(self) -> list[AgentRecord]:
        return [
            r
            for r in self.agents.values()
            if r.role in (AgentRole.manager, AgentRole.admin) and r.agent.active
        ]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return tuple(value)


def load_people(text: str, *, source: str = "agents.yaml") -> People:
    """Parse ``agents.yaml``; raises ConfigError naming the entry and field."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"agents", "teams"}:
        raise ConfigError(f"{source}: expected only the keys 'agents' and 'teams'")
    agents: dict[str, AgentRecord] = {}
    for index, entry in enumerate(data.get("agents") or []):
        where = f"{source}: agents[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - _AGENT_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        email = entry.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise ConfigError(f"{where}.email: expected an address")
        where = f"{source}: agent {email}"
        try:
            role = AgentRole(entry.get("role", "agent"))
        except ValueError:
            raise ConfigError(f"{where}.role: expected agent, manager or admin") from None
        hours_spec = entry.get("working_hours")
        try:
            hours = parse_working_hours(hours_spec) if hours_spec is not None else None
            agent = Agent(
                email=email,
                name=str(entry.get("name", "")),
                active=bool(entry.get("active", True)),
                skills=frozenset(_strings(entry.get("skills"), f"{where}.skills")),
                time_zone=str(entry.get("time_zone", "UTC")),
                working_hours=hours,
            )
        except (ValueError, AttributeError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if agent.email in agents:
            raise ConfigError(f"{where}: listed twice")
        lang = entry.get("language")
        if lang is not None and lang not in ("en", "ru"):
            raise ConfigError(f"{where}.language: expected en or ru")
        agents[agent.email] = AgentRecord(agent, role, hours_spec, lang)
    teams: list[Team] = []
    for index, entry in enumerate(data.get("teams") or []):
        where = f"{source}: teams[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - _TEAM_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: expected a name")
        members = tuple(m.lower() for m in _strings(entry.get("members"), f"{where}.members"))
        strangers = [m for m in members if m not in agents]
        if strangers:
            raise ConfigError(f"{source}: team {name}.members: unknown agent(s) {strangers}")
        try:
            mode = RoutingMode(entry.get("mode", RoutingMode.least_loaded.value))
        except ValueError:
            raise ConfigError(
                f"{source}: team {name}.mode: expected least-loaded or round-robin"
            ) from None
        skills = frozenset(_strings(entry.get("skills"), f"{where}.skills"))
        if any(t.name == name for t in teams):
            raise ConfigError(f"{source}: team {name} is listed twice")
        teams.append(Team(name=name, members=members, skills=skills, mode=mode))
    return People(agents=agents, teams=tuple(teams))
