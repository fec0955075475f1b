"""SLA arithmetic: calendars, holidays, DST, pauses, priority changes, breaches, reminders.

Every expected instant is worked out by hand in the comment next to it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest

from mailbot.sla import (
    ALWAYS,
    Calendar,
    DueTimes,
    add_business_time,
    breached,
    business_time_between,
    choose_calendar,
    due,
    due_times,
    on_priority_change,
    parse_calendar,
    paused_time,
    reminder_at,
)

FIRST = {"critical": 1.0, "high": 4.0, "medium": 8.0, "low": 24.0}
RESOLUTION = {"critical": 4.0, "high": 8.0, "medium": 24.0, "low": 48.0}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def h(hours: float) -> timedelta:
    return timedelta(hours=hours)


OFFICE = parse_calendar({"hours": {"mon-fri": ["09:00-18:00"]}}, where="office")
LUNCH = parse_calendar({"hours": {"mon-fri": ["09:00-13:00", "14:00-18:00"]}}, where="lunch")
NIGHTS = parse_calendar({"hours": {"mon-fri": ["22:00-06:00"]}}, where="nights")
OVERLAP = parse_calendar({"hours": {"mon": ["09:00-12:00", "11:00-14:00"]}}, where="overlap")
BERLIN = parse_calendar(
    {
        "time_zone": "Europe/Berlin",
        "hours": {"mon-fri": ["09:00-18:00"]},
        "holidays": ["2026-01-01", "2026-04-03", "2026-04-06", "2026-12-25"],
    },
    where="berlin",
)
BERLIN_ALL_DAY = parse_calendar(
    {
        "time_zone": "Europe/Berlin",
        "hours": {"mon-sun": ["00:00-24:00"]},
        "holidays": ["2026-12-25"],
    },
    where="berlin-all-day",
)
BERLIN_EVENINGS = parse_calendar(
    {"time_zone": "Europe/Berlin", "hours": {"mon-sun": ["20:00-24:00"]}}, where="evenings"
)
BERLIN_EARLY = parse_calendar(
    {"time_zone": "Europe/Berlin", "hours": {"mon-sun": ["02:30-10:00"]}}, where="early"
)
NEW_YORK = parse_calendar(
    {"time_zone": "America/New_York", "hours": {"mon-fri": ["09:00-17:00"]}}, where="new-york"
)


ADD_CASES = [
    # 24/7: plain wall-clock arithmetic, any input offset, UTC out.
    pytest.param(ALWAYS, utc(2026, 3, 4, 10), h(5), utc(2026, 3, 4, 15), id="always"),
    pytest.param(
        ALWAYS,
        datetime(2026, 3, 4, 12, tzinfo=timezone(timedelta(hours=2))),  # 10:00 UTC
        h(1),
        utc(2026, 3, 4, 11),
        id="always-offset-input",
    ),
    # Mon-Fri 09-18 UTC; 2026-03-04 is a Wednesday.
    pytest.param(OFFICE, utc(2026, 3, 4, 10), h(4), utc(2026, 3, 4, 14), id="within-a-day"),
    # Wed 16-18 (2 h), Thu 09-11 (2 h).
    pytest.param(OFFICE, utc(2026, 3, 4, 16), h(4), utc(2026, 3, 5, 11), id="overnight"),
    # Fri 16-18 (2 h), weekend, Mon 09-11 (2 h).
    pytest.param(OFFICE, utc(2026, 3, 6, 16), h(4), utc(2026, 3, 9, 11), id="over-weekend"),
    # Starts Saturday: nothing until Mon 09:00.
    pytest.param(OFFICE, utc(2026, 3, 7, 12), h(1), utc(2026, 3, 9, 10), id="start-on-weekend"),
    pytest.param(OFFICE, utc(2026, 3, 4, 7), h(1), utc(2026, 3, 4, 10), id="start-before-hours"),
    pytest.param(OFFICE, utc(2026, 3, 4, 20), h(1), utc(2026, 3, 5, 10), id="start-after-hours"),
    # A budget that ends exactly at closing time is due at closing, not next morning.
    pytest.param(OFFICE, utc(2026, 3, 4, 9), h(9), utc(2026, 3, 4, 18), id="ends-at-closing"),
    # Mon 2026-03-02 09:00 + 48 h: Mon..Fri = 45 h (Fri 18:00), then Mon 03-09 09-12.
    pytest.param(OFFICE, utc(2026, 3, 2, 9), h(48), utc(2026, 3, 9, 12), id="many-days"),
    # 200 h: four weeks of 45 h end Fri 03-27 18:00 (180 h); Mon 03-30 and
    # Tue 03-31 take 18 h more; the last 2 h are Wed 04-01 09-11.
    pytest.param(OFFICE, utc(2026, 3, 2, 9), h(200), utc(2026, 4, 1, 11), id="four-weeks"),
    # Lunch break 13-14: Wed 12-13 (1 h), 14-15 (1 h).
    pytest.param(LUNCH, utc(2026, 3, 4, 12), h(2), utc(2026, 3, 4, 15), id="two-shifts"),
    # Overlapping shifts 09-12 and 11-14 count once: 09-14.
    pytest.param(OVERLAP, utc(2026, 3, 2, 9), h(5), utc(2026, 3, 2, 14), id="overlap-once"),
    # Overnight 22:00-06:00 Mon-Fri. Fri 23:00 -> Sat 06:00 (7 h), Mon 22:00-23:00.
    pytest.param(NIGHTS, utc(2026, 3, 6, 23), h(8), utc(2026, 3, 9, 23), id="overnight-shift"),
    # Sat 02:00 is inside Friday's shift, which runs to Sat 06:00.
    pytest.param(NIGHTS, utc(2026, 3, 7, 2), h(1), utc(2026, 3, 7, 3), id="yesterdays-shift"),
    # Berlin (CET, UTC+1) with holidays. Wed 2025-12-31 17:00 local: 1 h to 18:00,
    # Thu 01-01 holiday, Fri 01-02 09:00-10:00 local = 09:00 UTC.
    pytest.param(BERLIN, utc(2025, 12, 31, 16), h(2), utc(2026, 1, 2, 9), id="over-holiday"),
    # Starts on the holiday at 12:00 local: Fri 01-02 09-10 local.
    pytest.param(BERLIN, utc(2026, 1, 1, 11), h(1), utc(2026, 1, 2, 9), id="start-on-holiday"),
    # Easter (CEST, UTC+2): Thu 04-02 17:00 local, 1 h; Good Friday, weekend and
    # Easter Monday off; Tue 04-07 09:00-10:00 local = 08:00 UTC.
    pytest.param(BERLIN, utc(2026, 4, 2, 15), h(2), utc(2026, 4, 7, 8), id="easter"),
    # DST starts 2026-03-29 in Berlin. Fri 03-27 17:00 CET (16:00 UTC): 1 h,
    # Mon 03-30 09:00-10:00 CEST = 08:00 UTC (wall-clock arithmetic would say 09:00).
    pytest.param(BERLIN, utc(2026, 3, 27, 16), h(2), utc(2026, 3, 30, 8), id="berlin-spring"),
    # DST ends 2026-10-25. Fri 10-23 17:00 CEST (15:00 UTC): 1 h,
    # Mon 10-26 09:00-10:00 CET = 09:00 UTC.
    pytest.param(BERLIN, utc(2026, 10, 23, 15), h(2), utc(2026, 10, 26, 9), id="berlin-autumn"),
    # Whole days in Berlin are continuous: 24 h across the short day is 24 h.
    pytest.param(
        BERLIN_ALL_DAY, utc(2026, 3, 28, 12), h(24), utc(2026, 3, 29, 12), id="all-day-dst"
    ),
    # Thu 12-24 13:00 CET to 24:00 = 11 h; 12-25 (23:00 UTC 12-24 .. 23:00 UTC 12-25)
    # is a holiday; 13 h more from 12-25 23:00 UTC = 12-26 12:00 UTC.
    pytest.param(
        BERLIN_ALL_DAY, utc(2026, 12, 24, 12), h(24), utc(2026, 12, 26, 12), id="all-day-holiday"
    ),
    # An end of 24:00: Sat 03-28 20:00-24:00 CET = 19:00-23:00 UTC, exactly used up.
    pytest.param(BERLIN_EVENINGS, utc(2026, 3, 28, 19), h(4), utc(2026, 3, 28, 23), id="end-24:00"),
    # One more hour: Sun 03-29 20:00 CEST = 18:00 UTC, + 1 h.
    pytest.param(
        BERLIN_EVENINGS, utc(2026, 3, 28, 19), h(5), utc(2026, 3, 29, 19), id="end-24:00-dst"
    ),
    # 02:30 does not exist on 2026-03-29 (02:00 CET -> 03:00 CEST at 01:00 UTC):
    # the shift starts at the jump and runs to 10:00 CEST = 08:00 UTC, 7 h.
    pytest.param(
        BERLIN_EARLY, utc(2026, 3, 29, 0), h(7), utc(2026, 3, 29, 8), id="start-in-dst-gap"
    ),
    # 02:30 happens twice on 2026-10-25: the first (CEST, 00:30 UTC) counts.
    pytest.param(
        BERLIN_EARLY, utc(2026, 10, 25, 0), h(1), utc(2026, 10, 25, 1, 30), id="start-in-dst-fold"
    ),
    # New York 09-17, DST starts 2026-03-08. Fri 03-06 16:00 EST (21:00 UTC): 1 h,
    # Mon 03-09 09:00-10:00 EDT = 14:00 UTC.
    pytest.param(NEW_YORK, utc(2026, 3, 6, 21), h(2), utc(2026, 3, 9, 14), id="new-york-spring"),
    # DST ends 2026-11-01. Fri 10-30 16:00 EDT (20:00 UTC): 1 h,
    # Mon 11-02 09:00-10:00 EST = 15:00 UTC.
    pytest.param(NEW_YORK, utc(2026, 10, 30, 20), h(2), utc(2026, 11, 2, 15), id="new-york-autumn"),
    pytest.param(OFFICE, utc(2026, 3, 7, 12), h(0), utc(2026, 3, 7, 12), id="zero-duration"),
]


@pytest.mark.parametrize(("calendar", "start", "duration", "expected"), ADD_CASES)
def test_add_business_time(calendar, start, duration, expected):
    result = add_business_time(start, duration, calendar)
    assert result == expected
    assert result.tzinfo is UTC


BETWEEN_CASES = [
    pytest.param(ALWAYS, utc(2026, 3, 6, 17), utc(2026, 3, 9, 10), h(65), id="always"),
    # Fri 17-18 and Mon 09-10.
    pytest.param(OFFICE, utc(2026, 3, 6, 17), utc(2026, 3, 9, 10), h(2), id="office-weekend"),
    pytest.param(OFFICE, utc(2026, 3, 6, 18, 30), utc(2026, 3, 9, 8), h(0), id="weekend-only"),
    pytest.param(OFFICE, utc(2026, 3, 4, 12), utc(2026, 3, 4, 12), h(0), id="empty"),
    pytest.param(OVERLAP, utc(2026, 3, 2), utc(2026, 3, 3), h(5), id="overlap-once"),
    # Sat 2026-03-28 00:00 CET .. Mon 03-30 00:00 CEST: 24 h + the 23-hour Sunday.
    pytest.param(BERLIN_ALL_DAY, utc(2026, 3, 27, 23), utc(2026, 3, 29, 22), h(47), id="short-day"),
    # Sun 2026-10-25 00:00 CEST (22:00 UTC the day before) .. 24:00 CET: 25 h.
    pytest.param(
        BERLIN_ALL_DAY, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), h(25), id="long-day"
    ),
    # Sat 03-28 02:30-10:00 CET = 7.5 h; Sun 03-29 from the jump to 10:00 CEST = 7 h.
    pytest.param(BERLIN_EARLY, utc(2026, 3, 28), utc(2026, 3, 30), h(14.5), id="dst-gap-shift"),
    # 02:30 CEST (00:30 UTC) .. 10:00 CET (09:00 UTC) = 8.5 h.
    pytest.param(
        BERLIN_EARLY, utc(2026, 10, 25), utc(2026, 10, 25, 12), h(8.5), id="dst-fold-shift"
    ),
    # Mon-Fri nights 22-06: Fri 22:00 .. Sat 06:00 only.
    pytest.param(NIGHTS, utc(2026, 3, 7), utc(2026, 3, 8), h(6), id="saturday-morning"),
]


@pytest.mark.parametrize(("calendar", "start", "end", "expected"), BETWEEN_CASES)
def test_business_time_between(calendar, start, end, expected):
    assert business_time_between(start, end, calendar) == expected


def test_between_rejects_an_end_before_the_start():
    with pytest.raises(ValueError, match="before"):
        business_time_between(utc(2026, 3, 5), utc(2026, 3, 4), OFFICE)


# -- the ticket clock --------------------------------------------------------------


def test_spec_defaults_under_24_7():
    opened = utc(2026, 3, 4, 10)
    assert due_times(opened, "critical", FIRST, RESOLUTION) == (
        utc(2026, 3, 4, 11),
        utc(2026, 3, 4, 14),
    )
    assert due_times(opened, "high", FIRST, RESOLUTION) == (
        utc(2026, 3, 4, 14),
        utc(2026, 3, 4, 18),
    )
    assert due_times(opened, "medium", FIRST, RESOLUTION) == (
        utc(2026, 3, 4, 18),
        utc(2026, 3, 5, 10),
    )
    assert due_times(opened, "low", FIRST, RESOLUTION) == (
        utc(2026, 3, 5, 10),
        utc(2026, 3, 6, 10),
    )


def test_medium_under_office_hours():
    # Wed 10:00: 8 h is Wed 10-18; 24 h is Wed 8 + Thu 9 + Fri 7 = Fri 16:00.
    result = due_times(utc(2026, 3, 4, 10), "medium", FIRST, RESOLUTION, OFFICE)
    assert result == DueTimes(first_response=utc(2026, 3, 4, 18), resolution=utc(2026, 3, 6, 16))


def test_pause_adds_business_time_under_a_calendar():
    opened = utc(2026, 3, 4, 10)  # Wed
    # Pending Thu 17:00 .. Mon 10:00: Thu 1 h + Fri 9 h + Mon 1 h = 11 h.
    paused = paused_time(utc(2026, 3, 5, 17), utc(2026, 3, 9, 10), OFFICE)
    assert paused == h(11)
    # Resolution: 16 h used before the pause (Wed 8, Thu 8), 8 h left from Mon 10:00.
    # First response: 19 h = Wed 8 + Thu 9 + Fri 2.
    assert due_times(opened, "medium", FIRST, RESOLUTION, OFFICE, paused) == (
        utc(2026, 3, 6, 11),
        utc(2026, 3, 9, 18),
    )


def test_pause_over_a_weekend_moves_nothing_under_a_calendar():
    assert paused_time(utc(2026, 3, 6, 18, 30), utc(2026, 3, 9, 8), OFFICE) == h(0)


def test_pause_under_24_7_is_wall_time():
    paused = paused_time(utc(2026, 3, 4, 11), utc(2026, 3, 4, 14, 30))
    assert paused == h(3.5)
    assert due_times(utc(2026, 3, 4, 10), "high", FIRST, RESOLUTION, paused=paused) == (
        utc(2026, 3, 4, 17, 30),
        utc(2026, 3, 4, 21, 30),
    )


def test_negative_pause_is_rejected():
    with pytest.raises(ValueError, match="paused"):
        due_times(utc(2026, 3, 4, 10), "high", FIRST, RESOLUTION, paused=-h(1))


def test_priority_change_recomputes_from_the_opening_time():
    opened = utc(2026, 3, 4, 10)
    assert due_times(opened, "low", FIRST, RESOLUTION) == (utc(2026, 3, 5, 10), utc(2026, 3, 6, 10))
    assert on_priority_change(opened, "critical", FIRST, RESOLUTION) == (
        utc(2026, 3, 4, 11),
        utc(2026, 3, 4, 14),
    )
    # Paused time is kept.
    assert on_priority_change(opened, "critical", FIRST, RESOLUTION, paused=h(0.5)) == (
        utc(2026, 3, 4, 11, 30),
        utc(2026, 3, 4, 14, 30),
    )


def test_priority_change_keeps_a_settled_first_response_due():
    opened = utc(2026, 3, 4, 10)
    result = on_priority_change(
        opened,
        "critical",
        FIRST,
        RESOLUTION,
        first_responded_at=utc(2026, 3, 4, 10, 45),
        first_response_due=utc(2026, 3, 5, 10),
    )
    assert result == (utc(2026, 3, 5, 10), utc(2026, 3, 4, 14))


def test_priority_change_under_a_calendar():
    # Fri 16:00 low -> high: 4 h = Fri 16-18 + Mon 09-11; 8 h = Mon 09-15.
    result = on_priority_change(utc(2026, 3, 6, 16), "high", FIRST, RESOLUTION, OFFICE)
    assert result == (utc(2026, 3, 9, 11), utc(2026, 3, 9, 15))


def test_unknown_priority_is_rejected():
    with pytest.raises(ValueError, match="urgent"):
        due_times(utc(2026, 3, 4), "urgent", FIRST, RESOLUTION)


def test_the_old_due_keeps_its_behaviour():
    start = datetime(2026, 3, 4, 12, tzinfo=timezone(timedelta(hours=3)))
    assert due(start, "high", FIRST) == datetime(2026, 3, 4, 16, tzinfo=timezone(h(3)))
    with pytest.raises(KeyError):
        due(start, "urgent", FIRST)


def test_choose_calendar_prefers_priority_then_team():
    by_priority = {"critical": ALWAYS}
    by_team = {"billing": BERLIN}
    pick = choose_calendar
    assert pick("critical", "billing", by_priority=by_priority, by_team=by_team) is ALWAYS
    assert pick("low", "billing", by_priority=by_priority, by_team=by_team) is BERLIN
    assert pick("low", None, by_priority=by_priority, by_team=by_team, default=OFFICE) is OFFICE
    assert pick("low", "sales", by_priority=by_priority, by_team=by_team) is ALWAYS


# -- breaches and reminders ----------------------------------------------------------

DUE = utc(2026, 3, 4, 12)


@pytest.mark.parametrize(
    ("due_at", "at", "done_at", "expected"),
    [
        pytest.param(None, utc(2026, 3, 9), None, False, id="no-due"),
        pytest.param(DUE, utc(2026, 3, 4, 11), None, False, id="open-before-due"),
        pytest.param(DUE, DUE, None, False, id="open-at-due"),
        pytest.param(DUE, utc(2026, 3, 4, 12, 1), None, True, id="open-after-due"),
        pytest.param(DUE, utc(2026, 3, 9), utc(2026, 3, 4, 11), False, id="done-in-time"),
        pytest.param(DUE, utc(2026, 3, 9), DUE, False, id="done-at-due"),
        pytest.param(DUE, utc(2026, 3, 9), utc(2026, 3, 4, 13), True, id="done-late"),
        pytest.param(
            DUE,
            datetime(2026, 3, 4, 14, 30, tzinfo=timezone(h(3))),  # 11:30 UTC
            None,
            False,
            id="other-offset",
        ),
    ],
)
def test_breached(due_at, at, done_at, expected):
    assert breached(due_at, at, done_at) is expected


def test_reminder_at_three_quarters():
    assert reminder_at(utc(2026, 3, 4, 10), utc(2026, 3, 4, 18), 0.75) == utc(2026, 3, 4, 16)
    assert reminder_at(utc(2026, 3, 4, 10), utc(2026, 3, 4, 18), 0) == utc(2026, 3, 4, 10)
    assert reminder_at(utc(2026, 3, 4, 10), utc(2026, 3, 4, 18), 1) == utc(2026, 3, 4, 18)


def test_reminder_at_counts_business_time():
    # Fri 14:00 .. Mon 14:00 is 9 business hours; 75 % = 6 h 45 min:
    # Fri 14-18 (4 h), Mon 09:00 + 2 h 45.
    result = reminder_at(utc(2026, 3, 6, 14), utc(2026, 3, 9, 14), 0.75, OFFICE)
    assert result == utc(2026, 3, 9, 11, 45)


def test_reminder_share_out_of_range():
    with pytest.raises(ValueError, match="share"):
        reminder_at(utc(2026, 3, 4, 10), utc(2026, 3, 4, 18), 1.5)


# -- rejected input ----------------------------------------------------------------

NAIVE = datetime(2026, 3, 4, 10)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: add_business_time(NAIVE, h(1), OFFICE), id="add"),
        pytest.param(lambda: add_business_time(NAIVE, h(1), ALWAYS), id="add-always"),
        pytest.param(lambda: business_time_between(NAIVE, utc(2026, 3, 5), OFFICE), id="between"),
        pytest.param(lambda: business_time_between(utc(2026, 3, 3), NAIVE, OFFICE), id="between2"),
        pytest.param(lambda: due_times(NAIVE, "low", FIRST, RESOLUTION), id="due-times"),
        pytest.param(lambda: paused_time(NAIVE, utc(2026, 3, 5)), id="paused"),
        pytest.param(lambda: breached(NAIVE, utc(2026, 3, 5), None), id="breached-due"),
        pytest.param(lambda: breached(DUE, NAIVE, None), id="breached-at"),
        pytest.param(lambda: breached(DUE, utc(2026, 3, 5), NAIVE), id="breached-done"),
        pytest.param(lambda: reminder_at(NAIVE, DUE, 0.5), id="reminder"),
        pytest.param(
            lambda: on_priority_change(DUE, "low", FIRST, RESOLUTION, first_responded_at=NAIVE),
            id="priority-change",
        ),
        pytest.param(lambda: due(NAIVE, "low", FIRST), id="old-due"),
    ],
)
def test_naive_datetimes_are_rejected(call):
    with pytest.raises(ValueError, match="aware"):
        call()


def test_negative_duration_is_rejected():
    with pytest.raises(ValueError, match="negative"):
        add_business_time(utc(2026, 3, 4), -h(1), OFFICE)


def test_a_calendar_without_working_hours_is_rejected():
    with pytest.raises(ValueError, match="no working hours"):
        Calendar("UTC", ((),) * 7)
    with pytest.raises(ValueError, match=r"^cal\.hours: no working time"):
        parse_calendar({"hours": {}}, where="cal")
    with pytest.raises(ValueError, match=r"^cal\.hours: no working time"):
        parse_calendar({"hours": {"mon-fri": []}}, where="cal")


def test_the_walk_is_bounded():
    # Ten years of office hours hold about 23 000 hours, not 240 000.
    with pytest.raises(ValueError, match="within"):
        add_business_time(utc(2026, 3, 4), timedelta(days=10_000), OFFICE)


# -- calendars -------------------------------------------------------------------


def test_parse_calendar_reads_the_config_shape():
    cal = parse_calendar(
        {
            "time_zone": "Europe/Moscow",
            "hours": {"mon-fri": ["09:00-18:00"], "sat": ["10:00-14:00"]},
            "holidays": ["2026-01-01", date(2026, 1, 7)],
        },
        where="sla.calendars.default",
    )
    office = ((time(9), time(18)),)
    assert cal.time_zone == "Europe/Moscow"
    assert cal.hours == (*(office,) * 5, ((time(10), time(14)),), ())
    assert cal.holidays == frozenset({date(2026, 1, 1), date(2026, 1, 7)})
    assert not cal.is_always


def test_parse_calendar_ranges_wrap_and_24_00():
    cal = parse_calendar({"hours": {"fri-mon": ["18:00-24:00"]}}, where="c")
    evening = ((time(18), time(0)),)
    assert cal.hours == (evening, (), (), (), evening, evening, evening)


def test_parse_calendar_defaults_to_every_day_in_full():
    assert parse_calendar({}, where="c").is_always
    assert parse_calendar({}, where="c") == ALWAYS
    with_holiday = parse_calendar({"holidays": ["2026-01-01"]}, where="c")
    assert not with_holiday.is_always
    # Thu 2026-01-01 is skipped entirely.
    assert add_business_time(utc(2025, 12, 31, 23), h(2), with_holiday) == utc(2026, 1, 2, 1)


def test_calendar_weekly_matches_the_routing_shape():
    cal = Calendar.weekly("UTC", {0: [(time(9), time(18))]}, [date(2026, 3, 9)])
    assert cal.hours[0] == ((time(9), time(18)),)
    assert cal.hours[1:] == ((),) * 6
    # Mon 2026-03-02 17:00: 1 h, then Mon 03-09 is a holiday, then Mon 03-16.
    assert add_business_time(utc(2026, 3, 2, 17), h(2), cal) == utc(2026, 3, 16, 10)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param([], r"^c: expected a mapping", id="not-a-mapping"),
        pytest.param({"timezone": "UTC"}, r"^c: unknown key\(s\) timezone", id="unknown-key"),
        pytest.param({"time_zone": "Mars/Olympus"}, r"^c\.time_zone: unknown", id="bad-zone"),
        pytest.param({"time_zone": 3}, r"^c\.time_zone: unknown", id="zone-not-text"),
        pytest.param({"hours": ["09:00-18:00"]}, r"^c\.hours: expected a mapping", id="hours-list"),
        pytest.param({"hours": {"mo-fr": ["09:00-18:00"]}}, r"^c\.hours\.mo-fr: unknown", id="day"),
        pytest.param({"hours": {"mon": ["9-18"]}}, r"^c\.hours\.mon: expected a shift", id="shape"),
        pytest.param({"hours": {"mon": ["09:00-25:00"]}}, r"^c\.hours\.mon: bad time", id="25h"),
        pytest.param(
            {"hours": {"mon": ["24:00-02:00"]}}, r"^c\.hours\.mon: bad time", id="start24"
        ),
        pytest.param({"hours": {"mon": ["09:00-09:00"]}}, r"^c\.hours\.mon: empty", id="empty"),
        pytest.param({"hours": {"mon": [9]}}, r"^c\.hours\.mon: expected a list", id="not-text"),
        pytest.param({"holidays": "2026-01-01"}, r"^c\.holidays: expected a list", id="hol-str"),
        pytest.param({"holidays": ["2026-13-01"]}, r"^c\.holidays\[0\]: expected", id="hol-date"),
        pytest.param(
            {"holidays": ["2026-01-01", "01.01.2026"]}, r"^c\.holidays\[1\]", id="hol-fmt"
        ),
        pytest.param({"holidays": [datetime(2026, 1, 1)]}, r"^c\.holidays\[0\]", id="hol-datetime"),
    ],
)
def test_parse_calendar_errors_name_where_and_field(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_calendar(spec, where="c")


def test_a_single_shift_may_be_written_without_a_list():
    cal = parse_calendar({"hours": {"mon-fri": "09:00-18:00"}}, where="c")
    assert cal == OFFICE
