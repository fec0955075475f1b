"""The ticket lifecycle: the agents' transition table, customers' replies, confirmations."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from mailbot.lifecycle import (
    CONFIRMATION_MAX_CHARS,
    TRANSITIONS,
    ReplyAction,
    ReplyEffect,
    TransitionError,
    allowed_targets,
    can_transition,
    confirms_resolution,
    customer_reply,
    transition,
)
from mailbot.states import TicketStatus as S

ORDER = [S.new, S.assigned, S.in_progress, S.pending, S.resolved, S.closed, S.reopened]
# Written out by hand, independently of TRANSITIONS: rows are the current status,
# columns the target in ORDER; "x" allowed, "=" the same status, "." forbidden.
EXPECTED = {
    S.new: "=xxxxx.",
    S.assigned: "x=xxxx.",
    S.in_progress: ".x=xxx.",
    S.pending: "..x=xx.",
    S.resolved: "..x.=xx",
    S.closed: ".....=x",
    S.reopened: ".xxxxx=",
}
PAIRS = list(itertools.product(ORDER, ORDER))


def test_the_table_covers_the_seven_statuses():
    assert list(S) == ORDER
    assert set(TRANSITIONS) == set(S)
    assert all(current not in targets for current, targets in TRANSITIONS.items())


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair_against_the_hand_written_matrix(current, target):
    mark = EXPECTED[current][ORDER.index(target)]
    assert (target in TRANSITIONS[current]) is (mark == "x")
    assert can_transition(current, target) is (mark != ".")
    if mark == ".":
        with pytest.raises(TransitionError) as caught:
            transition(current, target)
        error = caught.value
        assert isinstance(error, ValueError)
        assert (error.current, error.target) == (current, target)
        assert f"from {current} to {target}" in str(error)
        assert error.allowed == allowed_targets(current)
        for allowed in error.allowed:
            assert str(allowed) in str(error).partition("allowed:")[2]
    else:
        assert transition(current, target) is target


def test_the_same_status_is_no_change_not_an_error():
    for status in S:
        assert transition(status, status) is status


def test_plain_strings_read_back_from_the_database_work_too():
    assert transition("closed", "closed") is S.closed
    assert transition("resolved", "closed") is S.closed
    with pytest.raises(TransitionError, match="from closed to pending"):
        transition("closed", "pending")
    assert reply("pending") == ReplyEffect(ReplyAction.append, S.in_progress)
    assert reply("resolved", confirms=True) == ReplyEffect(ReplyAction.close, S.closed)


def test_allowed_targets_are_in_the_spec_order():
    assert allowed_targets(S.resolved) == (S.in_progress, S.closed, S.reopened)
    assert allowed_targets(S.closed) == (S.reopened,)
    assert str(TransitionError(S.closed, S.pending)) == (
        "cannot change status from closed to pending (allowed: reopened)"
    )


def test_a_closed_ticket_only_reopens_and_nothing_returns_to_new_but_a_handback():
    assert TRANSITIONS[S.closed] == {S.reopened}
    assert [s for s in S if S.new in TRANSITIONS[s]] == [S.assigned]
    assert {s for s in S if S.reopened in TRANSITIONS[s]} == {S.resolved, S.closed}


# -- customer replies --------------------------------------------------------------------------

NOW = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=14)


def reply(status, *, closed_ago=None, confirms=False):
    closed_at = None if closed_ago is None else NOW - closed_ago
    return customer_reply(
        status, closed_at=closed_at, now=NOW, reopen_window=WINDOW, confirms=confirms
    )


@pytest.mark.parametrize(
    ("status", "closed_ago", "confirms", "expected"),
    [
        (S.new, None, False, ReplyEffect(ReplyAction.append, None)),
        (S.assigned, None, False, ReplyEffect(ReplyAction.append, None)),
        (S.in_progress, None, False, ReplyEffect(ReplyAction.append, None)),
        (S.reopened, None, False, ReplyEffect(ReplyAction.append, None)),
        (S.pending, None, False, ReplyEffect(ReplyAction.append, S.in_progress)),
        (S.resolved, None, False, ReplyEffect(ReplyAction.append, S.reopened)),
        (S.resolved, None, True, ReplyEffect(ReplyAction.close, S.closed)),
        (S.closed, timedelta(days=1), False, ReplyEffect(ReplyAction.reopen, S.reopened)),
        (S.closed, WINDOW, False, ReplyEffect(ReplyAction.reopen, S.reopened)),
        (S.closed, WINDOW + timedelta(seconds=1), False, ReplyEffect(ReplyAction.new_linked, None)),
        (S.closed, None, False, ReplyEffect(ReplyAction.new_linked, None)),
        # a confirmation matters only on a resolved ticket
        (S.pending, None, True, ReplyEffect(ReplyAction.append, S.in_progress)),
        (S.in_progress, None, True, ReplyEffect(ReplyAction.append, None)),
        (S.closed, timedelta(days=1), True, ReplyEffect(ReplyAction.reopen, S.reopened)),
    ],
)
def test_customer_reply(status, closed_ago, confirms, expected):
    assert reply(status, closed_ago=closed_ago, confirms=confirms) == expected


def test_customer_reply_keeps_the_old_call_and_the_close_action_is_distinct():
    effect = customer_reply(S.resolved, closed_at=None, now=NOW, reopen_window=WINDOW)
    assert effect == ReplyEffect(ReplyAction.append, S.reopened)
    assert ReplyAction.close.value == "close"
    assert len(set(ReplyAction)) == 4


def test_a_confirmed_resolution_follows_the_table():
    effect = reply(S.resolved, confirms=True)
    assert effect.status is not None
    assert transition(S.resolved, effect.status) is S.closed


# -- "thanks, it works" --------------------------------------------------------------------------

CONFIRMING = [
    "Thanks, it works!",
    "thanks, it works",
    "Yes, solved.",
    "yes",
    "You can close it.",
    "Please close the ticket, thank you",
    "Fixed, thank you very much!",
    "That did it, thanks",
    "Works now 👍",
    "All good now, thanks!",
    "Thanks, it works!\n\nBest regards,\nJohn Smith",
    "Спасибо, всё работает",
    "спасибо, все работает!",
    "Да, решено",
    "да",
    "Можно закрывать",
    "Можно закрыть, спасибо",
    "Всё заработало, спасибо!",
    "Помогло, спасибо большое",
    "Вопрос снят",
    "Всё в порядке, спасибо",
    "ДА, РЕШЕНО",
]
NOT_CONFIRMING = [
    "",
    "   ",
    "Thanks!",
    "Спасибо!",
    "ok",
    "Still not working",
    "It doesn't work",
    "It doesn’t work",
    "doesnt work",
    "No, it is still broken",
    "Works, but the export fails",
    "Thanks, it works? Not sure",
    "Does it work now?",
    "Can you close it?",
    "I will try it tomorrow",
    "Thanks, I'll check later",
    "Please don't close it yet",
    "It works again, then fails again",
    "Не работает",
    "Всё ещё не работает",
    "Спасибо, но не работает",
    "Нет, не решено",
    "Опять ошибка",
    "Попробую завтра",
    "Работает по-прежнему плохо",
    "Не закрывайте, пожалуйста",
    "К сожалению, не помогло",
    "Ошибка 500 снова",
    "Решено? Проверьте ещё раз",
    "Thanks, it works. " + "Here is a long story about what happened. " * 6,
]


@pytest.mark.parametrize("text", CONFIRMING)
def test_confirms_resolution(text):
    assert confirms_resolution(text)


@pytest.mark.parametrize("text", NOT_CONFIRMING)
def test_does_not_confirm_resolution(text):
    assert not confirms_resolution(text)


def test_a_long_text_never_confirms():
    text = "Thanks, it works. " + "x" * CONFIRMATION_MAX_CHARS
    assert not confirms_resolution(text)
    assert confirms_resolution("Thanks, it works." + " " * 500)
