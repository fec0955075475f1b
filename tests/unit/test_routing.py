"""Routing: round robin fairness, weighted least-loaded, shifts across zones and DST, queues."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time

import pytest

from mailbot.routing import (
    PRIORITY_WEIGHTS,
    Agent,
    RoutingMode,
    RoutingState,
    Team,
    Waiting,
    assign_waiting,
    choose_agent,
    load_weight,
    on_shift,
    parse_working_hours,
    route,
    team_for_category,
)

NOON = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)  # a Wednesday
EMAILS = [f"a{i}@example.com" for i in range(5)]
AGENTS = {e: Agent(e) for e in EMAILS}


def team(mode=RoutingMode.round_robin, members=EMAILS, skills=frozenset()):
    return Team("support", tuple(members), skills, mode)


def test_round_robin_1000_tickets_over_5_agents_differ_by_at_most_one():
    counts: Counter[str] = Counter()
    last = None
    for _ in range(1000):
        last = choose_agent(team(), AGENTS, "technical", NOON, {}, last)
        assert last is not None
        counts[last] += 1
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sum(counts.values()) == 1000
    assert len(counts) == 5


def test_round_robin_skips_inactive_unskilled_and_off_shift_members():
    agents = dict(AGENTS)
    agents[EMAILS[1]] = Agent(EMAILS[1], active=False)
    agents[EMAILS[2]] = Agent(EMAILS[2], skills=frozenset({"account"}))
    agents[EMAILS[3]] = Agent(EMAILS[3], working_hours={})  # never on shift
    picks, last = [], EMAILS[0]
    for _ in range(4):
        last = choose_agent(team(), agents, "technical", NOON, {}, last)
        picks.append(last)
    assert picks == [EMAILS[4], EMAILS[0], EMAILS[4], EMAILS[0]]


def test_round_robin_state_is_deterministic_and_survives_an_unknown_last():
    assert choose_agent(team(), AGENTS, None, NOON, {}, EMAILS[2]) == EMAILS[3]
    assert choose_agent(team(), AGENTS, None, NOON, {}, EMAILS[4]) == EMAILS[0]
    assert choose_agent(team(), AGENTS, None, NOON, {}, "gone@example.com") == EMAILS[0]


def test_priority_weights_are_documented_values():
    assert dict(PRIORITY_WEIGHTS) == {"critical": 4, "high": 3, "medium": 2, "low": 1}
    assert load_weight(["critical", "low", "bogus"]) == 4 + 1 + 2


def test_least_loaded_respects_priority_weights():
    t = team(RoutingMode.least_loaded, EMAILS[:3])
    load = {
        EMAILS[0]: ["critical", "critical"],  # 2 tickets, weight 8
        EMAILS[1]: ["low"] * 5,  # 5 tickets, weight 5
        EMAILS[2]: ["high", "medium"],  # 2 tickets, weight 5
    }
    # The fewest tickets is not the lightest load: a0 has 2 tickets but weight 8.
    # a1 and a2 tie on weight 5; the tie goes to fewer tickets (a2).
    assert choose_agent(t, AGENTS, None, NOON, load) == EMAILS[2]
    load[EMAILS[2]].append("low")  # weight 6
    assert choose_agent(t, AGENTS, None, NOON, load) == EMAILS[1]


def test_least_loaded_balances_weights_over_many_tickets():
    t = team(RoutingMode.least_loaded)
    load: dict[str, list[str]] = {e: [] for e in EMAILS}
    priorities = ["critical", "high", "medium", "low"] * 50
    last = None
    for p in priorities:
        last = choose_agent(t, AGENTS, None, NOON, load, last)
        load[last].append(p)
    weights = [load_weight(v) for v in load.values()]
    assert max(weights) - min(weights) <= max(PRIORITY_WEIGHTS.values())


def test_least_loaded_tie_goes_round_robin():
    t = team(RoutingMode.least_loaded)
    assert choose_agent(t, AGENTS, None, NOON, {}, EMAILS[1]) == EMAILS[2]


def test_parse_working_hours():
    hours = parse_working_hours({"mon-fri": ["09:00-13:00", "14:00-18:00"], "sun": ["22:00-24:00"]})
    assert hours[0] == ((time(9), time(13)), (time(14), time(18)))
    assert 5 not in hours
    assert hours[6] == ((time(22), time(0)),)
    assert parse_working_hours({"sat-mon": ["10:00-11:00"]}).keys() == {5, 6, 0}
    for bad in ({"funday": ["09:00-10:00"]}, {"mon": ["9-10"]}, {"mon": ["10:00-10:00"]}):
        with pytest.raises(ValueError, match=r".+"):
            parse_working_hours(bad)


NINE_TO_FIVE = parse_working_hours({"mon-fri": ["09:00-17:00"]})


@pytest.mark.parametrize(
    ("zone", "utc", "expected"),
    [
        # Berlin: CET (UTC+1) until 2025-03-30 01:00 UTC, then CEST (UTC+2).
        ("Europe/Berlin", datetime(2025, 3, 28, 7, 30, tzinfo=UTC), False),  # Fri 08:30 CET
        ("Europe/Berlin", datetime(2025, 3, 28, 8, 30, tzinfo=UTC), True),  # Fri 09:30 CET
        ("Europe/Berlin", datetime(2025, 3, 31, 7, 30, tzinfo=UTC), True),  # Mon 09:30 CEST
        ("Europe/Berlin", datetime(2025, 3, 31, 15, 30, tzinfo=UTC), False),  # Mon 17:30 CEST
        ("Europe/Berlin", datetime(2025, 3, 28, 15, 30, tzinfo=UTC), True),  # Fri 16:30 CET
        # New York switched on 2025-03-09: EDT (UTC-4).
        ("America/New_York", datetime(2025, 3, 10, 13, 30, tzinfo=UTC), True),  # 09:30 EDT
        ("America/New_York", datetime(2025, 3, 7, 13, 30, tzinfo=UTC), False),  # 08:30 EST
        # Tokyo is Tuesday morning while UTC is still Monday.
        ("Asia/Tokyo", datetime(2025, 3, 3, 23, 0, tzinfo=UTC), True),  # Tue 08:00 JST
        ("Asia/Tokyo", datetime(2025, 3, 2, 1, 0, tzinfo=UTC), False),  # Sun 10:00 JST
    ],
)
def test_on_shift_in_the_agents_time_zone(zone, utc, expected):
    hours = (
        NINE_TO_FIVE if zone != "Asia/Tokyo" else parse_working_hours({"mon-fri": ["08:00-17:00"]})
    )
    assert on_shift(Agent("x@example.com", time_zone=zone, working_hours=hours), utc) is expected


def test_night_shift_crosses_midnight():
    agent = Agent(
        "n@example.com",
        time_zone="Europe/Moscow",
        working_hours=parse_working_hours({"fri": ["22:00-06:00"]}),
    )
    assert on_shift(agent, datetime(2025, 3, 7, 20, 0, tzinfo=UTC))  # Fri 23:00 MSK
    assert on_shift(agent, datetime(2025, 3, 8, 2, 0, tzinfo=UTC))  # Sat 05:00 MSK
    assert not on_shift(agent, datetime(2025, 3, 8, 4, 0, tzinfo=UTC))  # Sat 07:00 MSK
    assert not on_shift(agent, datetime(2025, 3, 7, 2, 0, tzinfo=UTC))  # Fri 05:00 MSK


def test_on_shift_needs_an_aware_datetime_and_a_known_zone():
    with pytest.raises(ValueError, match="aware"):
        on_shift(Agent("x@example.com"), datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="time zone"):
        Agent("x@example.com", time_zone="Nowhere/City")


def test_nobody_on_shift_then_somebody():
    agents = {
        "berlin@example.com": Agent(
            "berlin@example.com", time_zone="Europe/Berlin", working_hours=NINE_TO_FIVE
        ),
        "ny@example.com": Agent(
            "ny@example.com", time_zone="America/New_York", working_hours=NINE_TO_FIVE
        ),
    }
    t = Team("support", ("berlin@example.com", "ny@example.com"), mode=RoutingMode.least_loaded)
    night = datetime(2025, 3, 31, 5, 0, tzinfo=UTC)  # 07:00 Berlin, 01:00 New York
    assert choose_agent(t, agents, None, night, {}) is None
    queued = [Waiting(1, "low"), Waiting(2, "critical"), Waiting(3, "medium")]
    assert assign_waiting(t, agents, queued, night, {}) == []
    berlin_morning = datetime(2025, 3, 31, 7, 5, tzinfo=UTC)  # 09:05 CEST, New York asleep
    assigned = assign_waiting(t, agents, queued, berlin_morning, {})
    assert assigned == [
        (2, "berlin@example.com"),
        (3, "berlin@example.com"),
        (1, "berlin@example.com"),
    ]
    both = datetime(2025, 3, 31, 14, 0, tzinfo=UTC)  # 16:00 Berlin, 10:00 New York
    spread = assign_waiting(t, agents, queued, both, {"berlin@example.com": ["high"]})
    assert spread[0] == (2, "ny@example.com")
    assert {agent for _, agent in spread} == {"berlin@example.com", "ny@example.com"}


def test_route_order_command_then_rule_then_team():
    teams = [Team("billing", (EMAILS[0],), frozenset({"account"})), Team("all", tuple(EMAILS))]
    state = RoutingState(last_assigned={"all": EMAILS[0]})
    common = {"teams": teams, "agents": AGENTS, "at": NOON, "state": state}
    assert (
        route(
            category="account",
            command_assignee="Boss@example.com",
            rule_assignee=EMAILS[3],
            **common,
        ).assignee
        == "boss@example.com"
    )
    assert route(category="account", rule_assignee=EMAILS[3], **common).how == "rule"
    by_rule_team = route(category="account", rule_team="all", **common)
    assert (by_rule_team.assignee, by_rule_team.team) == (EMAILS[1], "all")
    by_category = route(category="account", **common)
    assert (by_category.assignee, by_category.team) == (EMAILS[0], "billing")
    assert route(category="technical", **common).team == "all"
    assert team_for_category(teams[:1], "technical") is None
    assert route(category="technical", **{**common, "teams": teams[:1]}).how == "no team"


def test_route_queues_when_nobody_is_on_shift():
    agents = {e: Agent(e, working_hours={}) for e in EMAILS}
    result = route(category=None, teams=[team()], agents=agents, at=NOON, state=RoutingState())
    assert (result.assignee, result.team) == (None, "support")
    assert "queued" in result.how
