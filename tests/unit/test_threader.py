from collections.abc import Sequence

import pytest

from mailbot import signing
from mailbot.message import Address, ParsedMessage
from mailbot.threader import SubjectToken, ThreadedBy, find_ticket, plus_ticket_numbers


class FakeLookup:
    def __init__(self, by_mid=None, by_number=None, participants=None):
        self.by_mid = by_mid or {}
        self.by_number = by_number or {}
        self.people = participants or {}
        self.asked: list[Sequence[str]] = []

    def ticket_for_message_ids(self, message_ids):
        self.asked.append(list(message_ids))
        for mid in message_ids:
            if mid in self.by_mid:
                return self.by_mid[mid]
        return None

    def ticket_id_for_number(self, number):
        return self.by_number.get(number)

    def participants(self, ticket_id):
        return frozenset(self.people.get(ticket_id, ()))


def mail(subject="Hello", sender="ann@example.org", in_reply_to=(), references=()):
    return ParsedMessage(
        message_id="new@example.org",
        subject=subject,
        sender=Address(sender) if sender else None,
        from_header=sender or "",
        in_reply_to=tuple(in_reply_to),
        references=tuple(references),
    )


TOKEN = SubjectToken("[#{number}]")


@pytest.mark.parametrize(
    "subject",
    [
        "Re: [#42] Printer",
        "RE: RE: [#42] Printer",
        "AW: WG: [#42] Drucker",
        "Отв: Ответ: [#42] Принтер",
        "Fwd: [ListTag] Re: [#42] Printer",
        "回复: [#42] 打印机",
        "SV: Antw: [# 42 ] Printer",
        "Printer [#42]",
    ],
)
def test_token_found_after_any_prefix(subject):
    assert TOKEN.find(subject) == 42


@pytest.mark.parametrize(
    "subject", ["#42 Printer", "[42] x", "[#] x", "[#0] x", "[#99999999999] x"]
)
def test_no_token(subject):
    assert TOKEN.find(subject) is None


def test_custom_token_format():
    token = SubjectToken("[HD-{number}]")
    assert token.find("Re: [HD-7] x") == 7
    assert token.find("Re: [#7] x") is None
    assert token.add("Help", 7) == "[HD-7] Help"
    assert token.add("Re: [HD-7] Help", 7) == "Re: [HD-7] Help"


def test_references_win_over_the_subject():
    lookup = FakeLookup(
        by_mid={"old@x": 5}, by_number={42: 9}, participants={5: {"ann@example.org"}}
    )
    match = find_ticket(mail("Re: [#42] x", references=["old@x"]), lookup, TOKEN)
    assert (match.ticket_id, match.how) == (5, ThreadedBy.references)


def test_in_reply_to_then_references_newest_first():
    lookup = FakeLookup(by_mid={"b@x": 2, "a@x": 1}, participants={2: {"ann@example.org"}})
    find_ticket(mail(in_reply_to=["c@x"], references=["a@x", "b@x"]), lookup, TOKEN)
    assert lookup.asked == [["c@x", "b@x", "a@x"]]


def test_subject_token_threads_for_the_requester():
    lookup = FakeLookup(by_number={42: 9}, participants={9: {"ann@example.org"}})
    match = find_ticket(mail("Re: [#42] x"), lookup, TOKEN)
    assert (match.ticket_id, match.how) == (9, ThreadedBy.subject_token)


def test_stranger_with_a_valid_token_is_not_a_participant():
    lookup = FakeLookup(by_number={42: 9}, participants={9: {"ann@example.org"}})
    match = find_ticket(mail("Re: [#42] x", sender="mallory@evil.example"), lookup, TOKEN)
    assert (match.ticket_id, match.participant) == (9, False)


def test_unknown_sender_is_never_a_participant():
    lookup = FakeLookup(by_number={42: 9}, participants={9: {"ann@example.org"}})
    match = find_ticket(mail("Re: [#42] x", sender=None), lookup, TOKEN)
    assert (match.ticket_id, match.participant) == (9, False)


def test_participant_flag():
    lookup = FakeLookup(by_number={42: 9}, participants={9: {"ann@example.org"}})
    assert find_ticket(mail("Re: [#42] x"), lookup, TOKEN).participant is True


def test_plus_address_threads_after_the_subject():
    lookup = FakeLookup(by_number={7: 3, 8: 4}, participants={3: {"ann@example.org"}})
    match = find_ticket(mail("no token"), lookup, TOKEN, plus_numbers=[7])
    assert (match.ticket_id, match.how) == (3, ThreadedBy.plus_address)
    match = find_ticket(mail("Re: [#8] x"), lookup, TOKEN, plus_numbers=[7])
    assert (match.ticket_id, match.how) == (4, ThreadedBy.subject_token)


@pytest.mark.parametrize(
    ("addresses", "numbers"),
    [
        (["support+42@localhost"], [42]),
        (["Support+42@LOCALHOST"], [42]),
        (["support+abc@localhost", "support+0@localhost"], []),
        (["other+42@localhost", "support+42@elsewhere.org"], []),
        (["help+7@example.org", "support@localhost"], [7]),
        (["support+99999999999@localhost"], []),
    ],
)
def test_plus_ticket_numbers(addresses, numbers):
    ours = {"support@localhost", "help@example.org"}
    assert plus_ticket_numbers(addresses, ours) == numbers


def test_forged_signed_ids_are_ignored_and_valid_ones_name_the_ticket():
    key = b"k" * 32
    good = signing.make_message_id(key, 42, "localhost")
    forged = "mb.42.aaaaaaaa.0123456789abcdef@localhost"
    lookup = FakeLookup(by_number={42: 9}, participants={9: {"ann@example.org"}})
    kwargs = {
        "signed_ticket": lambda mid: signing.ticket_of_message_id(key, mid),
        "looks_signed": signing.looks_like_ours,
    }
    match = find_ticket(mail("rewritten", references=[forged]), lookup, TOKEN, **kwargs)
    assert match.ticket_id is None
    assert lookup.asked == []  # the forged ID was never even looked up
    match = find_ticket(mail("rewritten", references=[good]), lookup, TOKEN, **kwargs)
    assert (match.ticket_id, match.how) == (9, ThreadedBy.references)


def test_unknown_token_is_a_new_ticket():
    match = find_ticket(mail("Re: [#42] x"), FakeLookup(), TOKEN)
    assert (match.ticket_id, match.how) == (None, ThreadedBy.new)
