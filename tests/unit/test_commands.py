"""Agents' command tags: every command, value aliases, bad values, suggestions, conflicts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbot import lifecycle
from mailbot.commands import (
    ALIASES,
    STATUS_WORDS,
    USAGE,
    Command,
    CommandName,
    Problem,
    check,
    plain_address,
    read_commands,
    valid_commands,
)
from mailbot.rules.actions import CATEGORIES
from mailbot.states import Priority
from mailbot.states import TicketStatus as S

DOCS = Path(__file__).parents[2] / "docs" / "commands.md"
TEMPLATES = ["password-reset", "Billing.Refund"]
C = CommandName


def one(line, **kwargs):
    """The single command read from ``line``; fails on problems."""
    read = read_commands(line, categories=CATEGORIES, templates=TEMPLATES, **kwargs)
    assert read.problems == (), read.problems
    assert len(read.commands) == 1, read.commands
    return read.commands[0]


def problem(line):
    """The single problem read from ``line``; fails if a command got through."""
    read = read_commands(line, categories=CATEGORIES, templates=TEMPLATES)
    assert read.commands == (), read.commands
    assert len(read.problems) == 1, read.problems
    assert read.problems[0].line == line.strip()
    assert not read.ok
    return read.problems[0]


# -- every command -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#status resolved", Command(C.status, "#status resolved", status=S.resolved)),
        ("#pending", Command(C.pending, "#pending", status=S.pending)),
        (
            "#pending waiting for the logs",
            Command(
                C.pending,
                "#pending waiting for the logs",
                status=S.pending,
                reason="waiting for the logs",
            ),
        ),
        ("#resolve", Command(C.resolve, "#resolve", status=S.resolved)),
        ("#close", Command(C.close, "#close", status=S.closed)),
        ("#reopen", Command(C.reopen, "#reopen", status=S.reopened)),
        ("#priority high", Command(C.priority, "#priority high", priority=Priority.high)),
        (
            "#category technical/api",
            Command(C.category, "#category technical/api", category="technical", subcategory="api"),
        ),
        ("#category other", Command(C.category, "#category other", category="other")),
        (
            "#category Account / Billing",
            Command(
                C.category,
                "#category Account / Billing",
                category="account",
                subcategory="billing",
            ),
        ),
        (
            "#assign olga@example.org",
            Command(C.assign, "#assign olga@example.org", assignee="olga@example.org"),
        ),
        (
            "#assign Olga  Petrova",
            Command(C.assign, "#assign Olga  Petrova", assignee="olga petrova"),
        ),
        ("#assign me", Command(C.assign, "#assign me", assignee="me")),
        ("#assign ME", Command(C.assign, "#assign ME", assignee="me")),
        ("#assign none", Command(C.assign, "#assign none", unassign=True)),
        ("#assign nobody", Command(C.assign, "#assign nobody", unassign=True)),
        ("#internal", Command(C.internal, "#internal")),
        ("#merge 12", Command(C.merge, "#merge 12", merge_into=12)),
        ("#merge #12", Command(C.merge, "#merge #12", merge_into=12)),
        ("#merge [#12]", Command(C.merge, "#merge [#12]", merge_into=12)),
        ("#escalate", Command(C.escalate, "#escalate")),
        (
            "#escalate customer  threatens to cancel",
            Command(
                C.escalate,
                "#escalate customer  threatens to cancel",
                reason="customer threatens to cancel",
            ),
        ),
        (
            "#tag +vip -waiting urgent",
            Command(
                C.tag,
                "#tag +vip -waiting urgent",
                add_tags=("vip", "urgent"),
                remove_tags=("waiting",),
            ),
        ),
        ("#tag a, b,c", Command(C.tag, "#tag a, b,c", add_tags=("a", "b", "c"))),
        ("#tag -Old", Command(C.tag, "#tag -Old", remove_tags=("old",))),
        ("#cc anna@example.org", Command(C.cc, "#cc anna@example.org", address="anna@example.org")),
        (
            "#cc <Anna@Example.ORG>",
            Command(C.cc, "#cc <Anna@Example.ORG>", address="Anna@example.org"),
        ),
        (
            "#template password-reset",
            Command(C.template, "#template password-reset", template="password-reset"),
        ),
        (
            "#template billing.refund",
            Command(C.template, "#template billing.refund", template="billing.refund"),
        ),
        ("#help", Command(C.help, "#help")),
        ("#new", Command(C.new, "#new")),
    ],
)
def test_every_command(line, expected):
    assert one(line) == expected


def test_every_command_name_is_covered_by_usage_and_a_reader():
    assert set(USAGE) == set(CommandName)
    for name in CommandName:
        read = read_commands(USAGE[name].split(" <")[0].split(" [")[0])
        assert read.commands or read.problems
        assert read.text == ""


# -- aliases: case, Russian, spelling ----------------------------------------------------------

STATUS_VALUES = [
    ("new", S.new),
    ("NEW", S.new),
    ("новый", S.new),
    ("Открыт", S.new),
    ("assigned", S.assigned),
    ("назначен", S.assigned),
    ("in progress", S.in_progress),
    ("in-progress", S.in_progress),
    ("in_progress", S.in_progress),
    ("In  Progress", S.in_progress),
    ("в работе", S.in_progress),
    ("pending", S.pending),
    ("ожидает", S.pending),
    ("ожидает ответа", S.pending),
    ("resolved", S.resolved),
    ("решен", S.resolved),
    ("решён", S.resolved),
    ("РЕШЁН", S.resolved),
    ("closed", S.closed),
    ("закрыт", S.closed),
    ("reopened", S.reopened),
    ("переоткрыт", S.reopened),
]


@pytest.mark.parametrize(("value", "status"), STATUS_VALUES)
def test_status_values(value, status):
    assert one(f"#status {value}").status is status


def test_every_status_has_an_english_and_a_russian_name():
    assert set(STATUS_WORDS.values()) == set(S)
    for status in S:
        names = [w for w, s in STATUS_WORDS.items() if s is status]
        assert any(re.search("[а-я]", n) for n in names), status
        assert any(re.fullmatch("[a-z ]+", n) for n in names), status


@pytest.mark.parametrize(
    ("value", "priority"),
    [
        ("critical", Priority.critical),
        ("CRITICAL", Priority.critical),
        ("критический", Priority.critical),
        ("high", Priority.high),
        ("Высокий", Priority.high),
        ("medium", Priority.medium),
        ("средний", Priority.medium),
        ("low", Priority.low),
        ("низкий", Priority.low),
    ],
)
def test_priority_values(value, priority):
    assert one(f"#priority {value}").priority is priority


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("#STATUS closed", C.status),
        ("#Resolve", C.resolve),
        ("  #close", C.close),
        ("\t#close", C.close),
        ("\u200b#close", C.close),
        ("\xa0#close\xa0", C.close),
        ("#status: closed", C.status),
        ("#status:closed", C.status),
        ("#статус закрыт", C.status),
        ("#Статус: в работе", C.status),
        ("#решено", C.resolve),
        ("#закрыть", C.close),
        ("#переоткрыть", C.reopen),
        ("#приоритет высокий", C.priority),
        ("#назначить себе", C.assign),
        ("#заметка", C.internal),
        ("#внутреннее", C.internal),
        ("#объединить 5", C.merge),
        ("#эскалация", C.escalate),
        ("#тег +a", C.tag),
        ("#копия a@example.org", C.cc),
        ("#справка", C.help),
        ("#помощь", C.help),
        ("#новый", C.new),
    ],
)
def test_names_are_case_insensitive_and_have_russian_aliases(line, name):
    assert one(line).name is name


def test_russian_aliases_name_real_commands():
    assert set(ALIASES.values()) == set(CommandName)
    assert all(re.fullmatch("[а-я]+", alias) for alias in ALIASES)


@pytest.mark.parametrize(
    ("line", "assignee", "unassign"),
    [
        ("#assign я", "me", False),
        ("#assign себе", "me", False),
        ("#assign никто", None, True),
        ("#assign -", None, True),
        ("#assign team:tech", "team:tech", False),
    ],
)
def test_assign_values(line, assignee, unassign):
    command = one(line)
    assert (command.assignee, command.unassign) == (assignee, unassign)


# -- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "text", "suggestion"),
    [
        ("#status", "#status needs a status", None),
        ("#status resolvd", "unknown status 'resolvd'", "#status resolved"),
        ("#status in progres", "unknown status", "#status in progress"),
        ("#status foo", "unknown status 'foo' (use new, assigned,", None),
        ("#статус закрытт", "unknown status", "#статус закрыт"),
        ("#priority", "#priority needs a priority", None),
        ("#priority urgentest", "unknown priority 'urgentest' (use critical, high,", None),
        ("#priority hihg", "unknown priority 'hihg'", "#priority high"),
        ("#priority высокй", "unknown priority", "#priority высокий"),
        ("#category", "#category needs a category", None),
        ("#category a b", "#category needs a category", None),
        ("#category tecnical/api", "unknown category 'tecnical'", "#category technical/api"),
        ("#category tecnical/nope", "unknown category 'tecnical'", "#category technical"),
        (
            "#category technical/apii",
            "unknown subcategory 'apii' of technical",
            "#category technical/api",
        ),
        ("#category zzz", "unknown category 'zzz'", None),
        ("#assign", "#assign needs an agent", None),
        ("#assign Olga <olga@example.org>", "write the bare address", "#assign olga@example.org"),
        ("#merge", "#merge needs the number", None),
        ("#merge abc", "#merge needs the number", None),
        ("#merge 0", "#merge needs the number", None),
        ("#merge -3", "#merge needs the number", None),
        ("#merge 1234567890", "#merge needs the number", None),
        ("#tag", "#tag needs tags", None),
        ("#tag +", "bad tag ''", None),
        ("#tag +a -a", "tag 'a' is both added and removed", None),
        ("#tag +has space!", "bad tag 'space!'", None),
        ("#cc", "#cc needs an address", None),
        ("#cc nope", "'nope' is not an email address", None),
        ("#cc Bob <bob@example.org>", "without a name", "#cc bob@example.org"),
        ('#cc "a@b.org" <bob@example.org>', "one address per line", None),
        ("#cc a@example.org, b@example.org", "one address per line", None),
        ("#cc a@example.org <mailto:b@example.org>", "one address per line", None),
        ("#template", "#template needs a template name", None),
        ("#template pasword-reset", "unknown template 'pasword-reset'", "#template password-reset"),
        ("#template ../etc/passwd", "bad template name", None),
        ("#template whatever", "unknown template 'whatever'", None),
        ("#internal some note", "#internal takes no arguments", "#internal"),
        ("#help me", "#help takes no arguments", "#help"),
        ("#new ticket", "#new takes no arguments", "#new"),
    ],
)
def test_bad_values(line, text, suggestion):
    found = problem(line)
    assert text in found.problem
    assert found.suggestion == suggestion


def test_suggestions_are_valid_command_lines():
    for line in ["#internl", "#priority hihg", "#status resolvd", "#category tecnical/api"]:
        suggestion = problem(line).suggestion
        assert suggestion is not None
        assert read_commands(suggestion, categories=CATEGORIES).ok, suggestion


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("a@example.org", "a@example.org"),
        ("<a@example.org>", "a@example.org"),
        ("mailto:a@example.org", "a@example.org"),
        ("a@example.org <mailto:a@example.org>", "a@example.org"),
        ("a@Example.ORG<mailto:a@example.org>", "a@example.org"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("иван@почта.рф", "иван@почта.рф"),
    ],
)
def test_plain_address(address, expected):
    assert plain_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org\r\nBcc: evil@example.org",
        "a@example.org\nb",
        "Bob <a@example.org>",
        '"a@example.org" <evil@example.org>',
        "a@example.org, b@example.org",
        "a@@example.org",
        "a@example",
        ".a@example.org",
        "a..b@example.org",
        "a@-example.org",
        "a b@example.org",
        "@example.org",
        "a@example.org>",
        "x" * 250 + "@example.org",
    ],
)
def test_plain_address_refuses(address):
    assert isinstance(plain_address(address), Problem)


# -- unknown commands --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "suggestion"),
    [
        ("#internl", "#internal"),
        ("#Internl", "#internal"),
        ("#priorty high", "#priority high"),
        ("#resolv", "#resolve"),
        ("#asign me", "#assign me"),
        ("#statu closed", "#status closed"),
        ("#escalte now", "#escalate now"),
        ("#приорите высокий", "#приоритет высокий"),
        ("#tag+x", "#tag"),
        ("#xyzzy", None),
        ("#python", None),
    ],
)
def test_unknown_commands_are_problems_with_suggestions(line, suggestion):
    found = problem(line)
    assert found.problem == f"unknown command {line.split()[0]}"
    assert found.suggestion == suggestion


# -- which lines are commands ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "#1 is the ticket you mean",
        "# Heading",
        "## Subheading",
        "##resolve",
        "#",
        "  #  ",
        "#_underscore",
        "#-dash",
        "#5 resolve",
        "see #resolve in the middle of a line",
        "text with #close at the end #close",
        "> #resolve",
        "* #resolve",
    ],
)
def test_lines_that_are_not_commands_stay_text(text):
    read = read_commands(text)
    assert read.commands == ()
    assert read.problems == ()
    assert read.text == text.rstrip()
    assert not read.only_commands


def test_command_lines_leave_the_text_and_blank_lines_are_trimmed():
    text = "\n\n#priority high\nHello Anna,\n\n#resolve\n\nit works now.\n\n#tag +fixed\n\n"
    read = read_commands(text)
    assert read.text == "Hello Anna,\n\nit works now."
    assert [c.name for c in read.commands] == [C.priority, C.resolve, C.tag]
    assert read.ok


def test_crlf_and_indentation_are_kept_in_the_text():
    read = read_commands("#close\r\nLine one\r\n    indented\r\n#tag a\r\nend")
    assert read.text == "Line one\n    indented\nend"


def test_only_commands_and_internal():
    read = read_commands("#internal\n#assign me\n")
    assert read.only_commands
    assert read.internal
    assert read.get(C.assign) == Command(C.assign, "#assign me", assignee="me")
    assert read.get(C.merge) is None
    assert not read_commands("#resolve\nDone.").internal


def test_problem_lines_leave_the_text_too():
    read = read_commands("Secret note for the team\n#internl")
    assert read.text == "Secret note for the team"
    assert not read.ok
    assert not read.internal  # the caller must not send anything: read.ok is False


def test_without_categories_or_templates_any_well_formed_name_passes():
    read = read_commands("#category whatever/thing\n#template any-name")
    assert read.ok
    assert read.get(C.category) == Command(
        C.category, "#category whatever/thing", category="whatever", subcategory="thing"
    )
    assert read.get(C.template) == Command(C.template, "#template any-name", template="any-name")


# -- repeats and conflicts ---------------------------------------------------------------------


def test_the_same_command_twice_counts_once():
    read = read_commands("#resolve\n#Resolve\n#tag a\n#tag a\n#help\n#help")
    assert read.ok
    assert [c.line for c in read.commands] == ["#resolve", "#tag a", "#help"]


def test_status_commands_run_in_order():
    read = read_commands("#reopen\n#status pending")
    assert read.ok
    assert read.statuses == (S.reopened, S.pending)
    assert check(read, S.closed) == ()


@pytest.mark.parametrize(
    "text",
    [
        "#priority high\n#priority low",
        "#priority high\n#приоритет низкий",
        "#category technical\n#category usage",
        "#assign me\n#assign none",
        "#merge 5\n#merge 6",
        "#template password-reset\n#template billing.refund",
        "#merge 5\n#close",
        "#merge 5\n#status in progress",
        "#merge 5\n#new",
        "#tag +a\n#tag -a",
    ],
)
def test_conflicts_drop_all_the_conflicting_commands(text):
    read = read_commands(text, templates=TEMPLATES)
    assert read.commands == ()
    assert len(read.problems) == 1
    assert "conflicting commands" in read.problems[0].problem or "both" in read.problems[0].problem


def test_a_conflict_keeps_the_other_commands():
    read = read_commands("#priority high\n#priority low\n#resolve\n#cc a@example.org")
    assert [c.name for c in read.commands] == [C.resolve, C.cc]
    assert read.problems == (
        Problem("#priority low", "conflicting commands: #priority high and #priority low"),
    )


def test_internal_wins_over_template():
    read = read_commands("#internal\n#template password-reset", templates=TEMPLATES)
    assert read.internal
    assert [c.name for c in read.commands] == [C.internal]
    assert "#internal keeps this reply internal" in read.problems[0].problem


def test_internal_goes_with_merge_and_status_changes():
    read = read_commands("#internal\n#merge 7\nduplicate of 7")
    assert read.ok
    assert read.internal
    assert read.text == "duplicate of 7"
    assert read_commands("#internal\n#pending").ok


def test_escalations_and_copies_add_up():
    read = read_commands("#escalate a\n#escalate b\n#cc x@example.org\n#cc y@example.org")
    assert read.ok
    assert [c.reason for c in read.all(C.escalate)] == ["a", "b"]
    assert [c.address for c in read.all(C.cc)] == ["x@example.org", "y@example.org"]


# -- what an agent may do now ------------------------------------------------------------------


def _status_of(line):
    read = read_commands(line)
    assert read.ok, line
    return read.commands[0].status


@pytest.mark.parametrize("status", list(S))
def test_valid_commands_follow_the_transition_table(status):
    lines = valid_commands(status)
    assert lines
    targets = {_status_of(line) for line in lines if line.startswith(("#status", *_SHORTCUTS))}
    assert targets == lifecycle.TRANSITIONS[status]
    assert "#help" in lines
    assert "#new" not in lines
    for line in lines:
        name = line.split()[0][1:]
        assert CommandName(name) in CommandName


_SHORTCUTS = ("#pending", "#resolve", "#close", "#reopen")


def test_valid_commands_prefer_shortcuts_and_read_back():
    assert valid_commands(S.resolved)[:3] == ["#status in_progress", "#close", "#reopen"]
    assert valid_commands(S.closed) == [
        "#reopen",
        "#category <category>[/<subcategory>]",
        "#internal",
        "#tag +x -y",
        "#help",
    ]
    assert valid_commands(None) == ["#new", "#help"]
    for status in S:
        for line in valid_commands(status):
            if "<" not in line and "[" not in line:
                read = read_commands(line)
                assert read.ok, line
                assert check(read, status) == (), line


@pytest.mark.parametrize(
    ("text", "status", "problems"),
    [
        ("#resolve", S.in_progress, []),
        ("#resolve", S.resolved, []),  # the same status: no change, no error
        ("#pending", S.closed, ["cannot change status from closed to pending (allowed: reopened)"]),
        ("#reopen", S.in_progress, ["cannot change status from in_progress to reopened"]),
        ("#status new", S.in_progress, ["cannot change status from in_progress to new"]),
        ("#priority high", S.closed, ["#priority does not work on a closed ticket"]),
        ("#assign me", S.closed, ["#assign does not work on a closed ticket"]),
        ("#reopen\n#assign me\n#priority high", S.closed, []),
        ("#tag +x\n#internal\n#category other\n#help", S.closed, []),
        ("#close\n#priority high", S.in_progress, []),
        ("#category other\n#close\n#tag +x", S.pending, []),
        ("#close\n#priority high", S.closed, ["#priority does not work on a closed ticket"]),
        ("#pending\n#priority high", S.closed, ["closed to pending", "#priority does not"]),
        ("#new", S.in_progress, ["#new opens a ticket from a forwarded mail"]),
        ("#new\n#priority high\n#assign me", None, []),
        ("#help", None, []),
        ("#priority high", None, ["#priority high needs a ticket"]),
        ("#resolve", None, ["#resolve needs a ticket"]),
    ],
)
def test_check(text, status, problems):
    found = check(read_commands(text), status)
    assert len(found) == len(problems), found
    for got, want in zip(found, problems, strict=True):
        assert want in got.problem


def test_check_suggests_the_only_way_out_of_a_closed_ticket():
    (found,) = check(read_commands("#pending"), S.closed)
    assert found.suggestion == "#reopen"
    (found,) = check(read_commands("#priority low"), S.closed)
    assert found.suggestion == "#reopen"


# -- docs --------------------------------------------------------------------------------------


def test_every_command_has_a_heading_in_the_docs():
    text = DOCS.read_text()
    missing = [n for n in CommandName if not re.search(rf"^## #{n}$", text, re.MULTILINE)]
    assert not missing, f"undocumented commands: {missing}"


def test_the_docs_table_matches_the_transition_table():
    text = DOCS.read_text()
    order = list(S)
    for current in S:
        row = re.search(rf"^\| \*\*{current}\*\* \|(.*)\|$", text, re.MULTILINE)
        assert row is not None, current
        cells = [c.strip() for c in row.group(1).split("|")]
        allowed = {order[i] for i, c in enumerate(cells) if c == "✓"}
        assert allowed == lifecycle.TRANSITIONS[current], current
        assert cells[order.index(current)] == "="


def test_the_docs_list_every_russian_alias():
    text = DOCS.read_text()
    missing = [a for a in ALIASES if f"`#{a}`" not in text]
    assert not missing
