"""Agents' command tags: ``#resolve``, ``#priority high``... in a reply. Pure.

An agent steers a ticket from the mail client: every line of the agent's new
text (the quote already stripped) whose first non-blank character is ``#``
followed at once by a letter (Latin or Cyrillic) is a command line. ``#1``,
``# heading``, ``##`` and a lone ``#`` are ordinary text.

:func:`read_commands` turns the text into :class:`Commands`: the text without
the command lines, the commands understood and the :class:`Problem` s (an
unknown command, a bad value, a conflict), each with the nearest valid line
as a suggestion where there is one. :func:`check` then holds the commands
against the ticket's status (the transition table of :mod:`mailbot.lifecycle`),
and :func:`valid_commands` lists what an agent may write now.

Decisions (docs/commands.md says the same for agents):

* Names and values are case-insensitive; ``ё`` is ``е``; statuses and priorities
  also take their Russian names, statuses also ``in progress``/``in-progress``.
  The command names have Russian aliases too (:data:`ALIASES`).
* A command line with a problem is still taken out of the text. A caller must
  not send the text to the customer while :attr:`Commands.ok` is false (a
  mistyped ``#internl`` must not leak a note); answer the agent with the
  problems instead, and apply nothing.
* The same command written twice counts once. Status commands (``#status``,
  ``#pending``, ``#resolve``, ``#close``, ``#reopen``) run in the order written,
  each one a step of the transition table (``#reopen`` then ``#pending`` on a
  closed ticket). Two different priorities, categories, assignees, merge
  targets or templates conflict: all of them are dropped and reported.
  ``#merge`` sets the status itself (and opens nothing), so it conflicts with a
  status command and with ``#new``. A tag both added and removed drops the
  ``#tag`` lines. ``#escalate`` and ``#cc`` add up.
* ``#internal`` always wins: with ``#template`` (which answers the customer)
  the template is dropped and reported, the reply stays internal.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from mailbot import lifecycle
from mailbot.states import Priority, TicketStatus


class CommandName(enum.StrEnum):
    status = "status"
    pending = "pending"
    resolve = "resolve"
    close = "close"
    reopen = "reopen"
    priority = "priority"
    category = "category"
    assign = "assign"
    internal = "internal"
    merge = "merge"
    escalate = "escalate"
    tag = "tag"
    cc = "cc"
    template = "template"
    help = "help"
    new = "new"


_C = CommandName

#: Russian names of the commands; the English ones always work.
ALIASES: Final[Mapping[str, CommandName]] = {
    "статус": _C.status, "ожидание": _C.pending, "решено": _C.resolve, "решить": _C.resolve,
    "закрыть": _C.close, "переоткрыть": _C.reopen, "приоритет": _C.priority,
    "категория": _C.category, "назначить": _C.assign, "внутреннее": _C.internal,
    "заметка": _C.internal, "объединить": _C.merge, "эскалация": _C.escalate, "тег": _C.tag,
    "теги": _C.tag, "копия": _C.cc, "шаблон": _C.template, "помощь": _C.help,
    "справка": _C.help, "новый": _C.new,
}  # fmt: skip
_NAMES: Final[Mapping[str, CommandName]] = {c.value: c for c in CommandName} | dict(ALIASES)

#: The commands that only set a status, and the status each sets.
STATUS_SHORTCUTS: Final[Mapping[CommandName, TicketStatus]] = {
    _C.pending: TicketStatus.pending,
    _C.resolve: TicketStatus.resolved,
    _C.close: TicketStatus.closed,
    _C.reopen: TicketStatus.reopened,
}
STATUS_COMMANDS: Final = frozenset({_C.status, *STATUS_SHORTCUTS})

_S, _P = TicketStatus, Priority
#: The words ``#status`` takes (normalised: lower case, ``ё`` → ``е``, ``_``/``-`` → space).
STATUS_WORDS: Final[Mapping[str, TicketStatus]] = {
    "new": _S.new, "новый": _S.new, "открыт": _S.new,
    "assigned": _S.assigned, "назначен": _S.assigned,
    "in progress": _S.in_progress, "в работе": _S.in_progress,
    "pending": _S.pending, "ожидает": _S.pending, "ожидает ответа": _S.pending,
    "resolved": _S.resolved, "решен": _S.resolved,
    "closed": _S.closed, "закрыт": _S.closed,
    "reopened": _S.reopened, "переоткрыт": _S.reopened,
}  # fmt: skip
PRIORITY_WORDS: Final[Mapping[str, Priority]] = {
    "critical": _P.critical, "критический": _P.critical, "high": _P.high, "высокий": _P.high,
    "medium": _P.medium, "средний": _P.medium, "low": _P.low, "низкий": _P.low,
}  # fmt: skip
UNASSIGN_WORDS: Final = frozenset({"none", "nobody", "no one", "-", "никто", "никому"})
ME_WORDS: Final = frozenset({"me", "myself", "я", "мне", "себе"})

#: How each command is written, for the footer of notifications and ``#help``.
USAGE: Final[Mapping[CommandName, str]] = {
    _C.status: "#status <status>",
    _C.pending: "#pending",
    _C.resolve: "#resolve",
    _C.close: "#close",
    _C.reopen: "#reopen",
    _C.priority: "#priority <critical|high|medium|low>",
    _C.category: "#category <category>[/<subcategory>]",
    _C.assign: "#assign <agent|me|none>",
    _C.internal: "#internal",
    _C.merge: "#merge <N>",
    _C.escalate: "#escalate [reason]",
    _C.tag: "#tag +x -y",
    _C.cc: "#cc <address>",
    _C.template: "#template <name>",
    _C.help: "#help",
    _C.new: "#new",
}
#: What an agent may do to a ticket besides changing its status.
_OTHERS: Final = (
    _C.priority, _C.category, _C.assign, _C.internal, _C.merge, _C.escalate, _C.tag, _C.cc,
    _C.template, _C.help,
)  # fmt: skip
#: A closed ticket is history: notes and reporting fields only, or ``#reopen`` it.
_OTHERS_WHEN_CLOSED: Final = (_C.category, _C.internal, _C.tag, _C.help)


@dataclass(frozen=True, slots=True)
class Command:
    """One command line understood; only the fields of its kind are set."""

    name: CommandName
    #: The line as written (surrounding blanks stripped).
    line: str
    #: For #status, #pending, #resolve, #close and #reopen: the target status.
    status: TicketStatus | None = None
    priority: Priority | None = None
    category: str | None = None
    subcategory: str | None = None
    #: As typed, in lower case: an address, a name, or "me" (also for я/мне/себе).
    assignee: str | None = None
    #: ``#assign none``: take the ticket away from its agent (assignee is None).
    unassign: bool = False
    merge_into: int | None = None
    #: #escalate's reason, or the words after #pending/#resolve/#close/#reopen.
    reason: str = ""
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    #: #cc: one plain address (domain in lower case).
    address: str | None = None
    template: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    line: str
    #: Plain English: "unknown command #internl", "unknown priority 'urgentest' (...)".
    problem: str
    #: The nearest valid command line ("#internal", "#priority high"), if any is near.
    suggestion: str | None = None


@dataclass(frozen=True, slots=True)
class Commands:
    #: The text without the command lines, surrounding blank lines trimmed.
    text: str
    commands: tuple[Command, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """No problems: the commands may run and the text may go out."""
        return not self.problems

    @property
    def internal(self) -> bool:
        """The reply is an internal note (``#internal``): never sent to the customer."""
        return self.get(_C.internal) is not None

    @property
    def only_commands(self) -> bool:
        """Nothing but commands: there is no text to record or send."""
        return not self.text

    @property
    def statuses(self) -> tuple[TicketStatus, ...]:
        """The statuses asked for, in the order written (each a step from the previous)."""
        return tuple(c.status for c in self.commands if c.status is not None)

    def get(self, name: CommandName) -> Command | None:
        """The first command of that name."""
        return next((c for c in self.commands if c.name is name), None)

    def all(self, name: CommandName) -> tuple[Command, ...]:
        return tuple(c for c in self.commands if c.name is name)


# -- reading one line ------------------------------------------------------------------------

_COMMAND_START = re.compile(r"#[A-Za-zА-Яа-яЁё]")
#: The command word, an optional colon ("#status: closed"), the arguments.
_WORD = re.compile(r"#([^\s:]+):?(.*)", re.DOTALL)
_INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff"
_TAG = re.compile(r"\w[\w.:/-]{0,63}")
_CATEGORY = re.compile(r"(\w[\w-]*)(?:/(\w[\w-]*))?")
_TEMPLATE = re.compile(r"\w[\w.-]*(?:/\w[\w.-]*)*")
_MERGE = re.compile(r"\[?#?(\d{1,9})\]?")
_LOCAL = r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
_DOMAIN = r"(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_](?:[\w-]*[^\W_])?"
_ADDRESS = re.compile(f"{_LOCAL}@{_DOMAIN}")
_AUTOLINKED = re.compile(rf"({_LOCAL}@{_DOMAIN})\s*<mailto:({_LOCAL}@{_DOMAIN})>", re.IGNORECASE)
MAX_ADDRESS_CHARS: Final = 254


def _fold(value: str) -> str:
    """Case- and spelling-insensitive form of a name or value."""
    return value.strip().lower().replace("ё", "е")


def _key(value: str) -> str:
    """A status or priority word: folded, with ``_``, ``-`` and blanks as one space."""
    return re.sub(r"[\s_-]+", " ", _fold(value)).strip()


def _nearest(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class _Line:
    line: str
    typed: str  # the command word as written, folded ("статус", "priority")
    name: CommandName
    args: str
    categories: Mapping[str, Collection[str]] | None
    templates: Collection[str] | None

    def command(self, **fields: Any) -> Command:
        return Command(self.name, self.line, **fields)

    def problem(self, text: str, suggested_args: str | None = None) -> Problem:
        suggestion = None
        if suggested_args is not None:
            suggestion = f"#{self.typed} {suggested_args}".rstrip()
        return Problem(self.line, text, suggestion)

    def needs(self, what: str) -> Problem:
        return self.problem(f"#{self.typed} needs {what}")


def _no_arguments(ln: _Line) -> Command | Problem:
    if ln.args:
        return ln.problem(f"#{ln.typed} takes no arguments", "")
    return ln.command()


def _status_shortcut(ln: _Line) -> Command | Problem:
    return ln.command(status=STATUS_SHORTCUTS[ln.name], reason=ln.args)


def _status(ln: _Line) -> Command | Problem:
    if not ln.args:
        return ln.needs(f"a status ({', '.join(TicketStatus)})")
    status = STATUS_WORDS.get(_key(ln.args))
    if status is None:
        text = f"unknown status {ln.args!r} (use {', '.join(TicketStatus)})"
        return ln.problem(text, _nearest(_key(ln.args), STATUS_WORDS))
    return ln.command(status=status)


def _priority(ln: _Line) -> Command | Problem:
    if not ln.args:
        return ln.needs(f"a priority ({', '.join(Priority)})")
    priority = PRIORITY_WORDS.get(_key(ln.args))
    if priority is None:
        text = f"unknown priority {ln.args!r} (use {', '.join(Priority)})"
        return ln.problem(text, _nearest(_key(ln.args), PRIORITY_WORDS))
    return ln.command(priority=priority)


def _category(ln: _Line) -> Command | Problem:
    value = re.sub(r"\s*/\s*", "/", _fold(ln.args))
    match = _CATEGORY.fullmatch(value)
    if match is None:
        return ln.needs("a category, optionally /subcategory: #category technical/api")
    category, subcategory = match.group(1), match.group(2)
    known = ln.categories
    if known is not None:
        subs = {k.lower(): {s.lower() for s in v} for k, v in known.items()}
        if category not in subs:
            near = _nearest(category, subs)
            suggested = near
            if near is not None and subcategory in subs[near]:
                suggested = f"{near}/{subcategory}"
            return ln.problem(f"unknown category {category!r} (use {', '.join(subs)})", suggested)
        if subcategory is not None and subcategory not in subs[category]:
            allowed = ", ".join(sorted(subs[category])) or "none"
            near = _nearest(subcategory, subs[category])
            return ln.problem(
                f"unknown subcategory {subcategory!r} of {category} (use {allowed})",
                None if near is None else f"{category}/{near}",
            )
    return ln.command(category=category, subcategory=subcategory)


def _assign(ln: _Line) -> Command | Problem:
    who = " ".join(_fold(ln.args).split())
    if not who:
        return ln.needs("an agent, me or none: #assign olga@example.org")
    if who in UNASSIGN_WORDS:
        return ln.command(unassign=True)
    if who in ME_WORDS:
        return ln.command(assignee="me")
    if "@" in who:
        address = plain_address(who)
        if isinstance(address, Problem):
            return ln.problem(address.problem, address.suggestion)
        who = address
    return ln.command(assignee=who)


def _merge(ln: _Line) -> Command | Problem:
    match = _MERGE.fullmatch(ln.args.replace(" ", ""))
    if match is None or int(match.group(1)) == 0:
        return ln.needs("the number of the ticket to merge into: #merge 123")
    return ln.command(merge_into=int(match.group(1)))


def _escalate(ln: _Line) -> Command | Problem:
    return ln.command(reason=" ".join(ln.args.split()))


def _tag(ln: _Line) -> Command | Problem:
    add: list[str] = []
    remove: list[str] = []
    for item in re.split(r"[\s,]+", _fold(ln.args)):
        if not item:
            continue
        target, tag = (remove, item[1:]) if item[0] == "-" else (add, item.removeprefix("+"))
        if not _TAG.fullmatch(tag):
            return ln.problem(f"bad tag {tag!r}: letters, digits and . : / - _ without spaces")
        if tag not in target:
            target.append(tag)
    if not add and not remove:
        return ln.needs("tags: #tag +x -y")
    both = [t for t in add if t in remove]
    if both:
        return ln.problem(f"tag {both[0]!r} is both added and removed")
    return ln.command(add_tags=tuple(add), remove_tags=tuple(remove))


def _cc(ln: _Line) -> Command | Problem:
    if not ln.args:
        return ln.needs("an address: #cc anna@example.org")
    address = plain_address(ln.args)
    if isinstance(address, Problem):
        return ln.problem(address.problem, address.suggestion)
    return ln.command(address=address)


def _template(ln: _Line) -> Command | Problem:
    name = _fold(ln.args)
    if not name:
        return ln.needs("a template name")
    if not _TEMPLATE.fullmatch(name):
        return ln.problem(f"bad template name {ln.args!r}")
    if ln.templates is not None:
        known = sorted({t.lower() for t in ln.templates})
        if name not in known:
            return ln.problem(f"unknown template {name!r}", _nearest(name, known))
    return ln.command(template=name)


#: How each command reads its arguments.
_READERS: Final[Mapping[CommandName, Callable[[_Line], Command | Problem]]] = {
    _C.status: _status, _C.pending: _status_shortcut, _C.resolve: _status_shortcut,
    _C.close: _status_shortcut, _C.reopen: _status_shortcut, _C.priority: _priority,
    _C.category: _category, _C.assign: _assign, _C.internal: _no_arguments, _C.merge: _merge,
    _C.escalate: _escalate, _C.tag: _tag, _C.cc: _cc, _C.template: _template,
    _C.help: _no_arguments, _C.new: _no_arguments,
}  # fmt: skip


def plain_address(value: str) -> str | Problem:
    """One bare address (``a@b.c``, ``<a@b.c>``, ``mailto:a@b.c``), domain lower-cased.

    Mail clients turn ``a@b.c`` into ``a@b.c <mailto:a@b.c>``; that is accepted
    when both halves agree. Display names, lists and control characters are not.
    The :class:`Problem` returned has an empty ``line`` and, where one address
    can be picked out, that address as the suggestion.
    """
    text = value.strip()
    if any(ch in text for ch in "\r\n\0"):
        return Problem("", "an address must fit on one line")
    bare = text.removeprefix("<").removesuffix(">") if text.startswith("<") else text
    bare = re.sub(r"^mailto:", "", bare, flags=re.IGNORECASE)
    linked = _AUTOLINKED.fullmatch(text)
    if linked and linked.group(1).lower() == linked.group(2).lower():
        bare = linked.group(1)
    if _ADDRESS.fullmatch(bare) and len(bare) <= MAX_ADDRESS_CHARS:
        local, _, domain = bare.rpartition("@")
        return f"{local}@{domain.lower()}"
    found = list(dict.fromkeys(a.lower() for a in _ADDRESS.findall(text)))
    if len(found) > 1:
        return Problem("", "one address per line, please")
    if found:
        return Problem("", f"write the bare address, without a name: {found[0]}", found[0])
    return Problem("", f"{text!r} is not an email address")


def _read_line(
    line: str,
    categories: Mapping[str, Collection[str]] | None,
    templates: Collection[str] | None,
) -> Command | Problem:
    match = _WORD.match(line)
    assert match is not None  # the line starts with _COMMAND_START
    word, args = match.group(1), " ".join(match.group(2).split())
    typed = _fold(word)
    name = _NAMES.get(typed)
    if name is None:
        near = _nearest(typed, _NAMES)
        suggestion = None if near is None else f"#{near} {args}".rstrip()
        return Problem(line, f"unknown command #{word}", suggestion)
    return _READERS[name](_Line(line, typed, name, args, categories, templates))


# -- reading a reply ---------------------------------------------------------------------------

#: Settings with one value: two different values conflict.
_SINGLE: Final = (_C.merge, _C.priority, _C.category, _C.assign, _C.template)
#: Commands that cannot go together: #merge closes the ticket and opens none.
_EXCLUSIVE: Final = ((frozenset({_C.merge}), STATUS_COMMANDS | {_C.new}),)


def _conflict(commands: list[Command]) -> Problem:
    lines = " and ".join(dict.fromkeys(c.line for c in commands))
    return Problem(commands[-1].line, f"conflicting commands: {lines}")


def _resolve_conflicts(commands: list[Command]) -> tuple[list[Command], list[Problem]]:
    """Drop repeats, then the commands that conflict (reported); see the module docstring."""
    unique: dict[Command, Command] = {}
    for command in commands:
        unique.setdefault(replace(command, line=""), command)
    kept = list(unique.values())
    problems: list[Problem] = []
    dropped: set[int] = set()

    def drop(members: list[Command], problem: Problem) -> None:
        problems.append(problem)
        dropped.update(id(c) for c in members)

    for name in _SINGLE:
        members = [c for c in kept if c.name is name]
        if len(members) > 1:
            drop(members, _conflict(members))
    for left, right in _EXCLUSIVE:
        lefts = [c for c in kept if c.name in left]
        rights = [c for c in kept if c.name in right]
        if lefts and rights:
            drop(lefts + rights, _conflict(lefts + rights))
    tags = [c for c in kept if c.name is _C.tag]
    added = {t for c in tags for t in c.add_tags}
    both = sorted(added.intersection(t for c in tags for t in c.remove_tags))
    if both:
        drop(tags, Problem(tags[-1].line, f"tag {both[0]!r} is both added and removed"))
    if any(c.name is _C.internal for c in kept):
        for c in kept:
            if c.name is _C.template:
                text = f"{c.line} answers the customer, but #internal keeps this reply internal"
                drop([c], Problem(c.line, text))
    return [c for c in kept if id(c) not in dropped], problems


def _trim(lines: list[str | None]) -> str:
    """Join the kept lines (None: a removed command line) without doubled gaps."""
    out: list[str] = []
    removed = False
    for line in lines:
        if line is None:
            removed = True
            continue
        if removed and not line.strip() and out and not out[-1].strip():
            continue
        removed = False
        out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return "\n".join(out)


def read_commands(
    text: str,
    *,
    categories: Mapping[str, Collection[str]] | None = None,
    templates: Collection[str] | None = None,
) -> Commands:
    """Split an agent's new text into commands, problems and the remaining text.

    ``categories`` (category → subcategories) checks ``#category`` and
    ``templates`` checks ``#template`` when given; otherwise any well-formed
    name passes and the caller checks it.
    """
    commands: list[Command] = []
    problems: list[Problem] = []
    kept: list[str | None] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip().strip(_INVISIBLE).strip()
        if not _COMMAND_START.match(line):
            kept.append(raw)
            continue
        kept.append(None)
        found = _read_line(line, categories, templates)
        if isinstance(found, Problem):
            problems.append(found)
        else:
            commands.append(found)
    commands, conflicts = _resolve_conflicts(commands)
    return Commands(_trim(kept), tuple(commands), (*problems, *conflicts))


# -- what an agent may do now ----------------------------------------------------------------


_NO_TICKET: Final = "answer a ticket's notification, or put #new on top of a forwarded mail"


def _others(status: TicketStatus) -> tuple[CommandName, ...]:
    return _OTHERS_WHEN_CLOSED if status is TicketStatus.closed else _OTHERS


def _status_line(target: TicketStatus) -> str:
    shortcut = next((c for c, s in STATUS_SHORTCUTS.items() if s is target), None)
    return f"#{shortcut}" if shortcut is not None else f"#status {target}"


def valid_commands(status: TicketStatus | None) -> list[str]:
    """The command lines an agent may use on a ticket in ``status``, status changes first.

    ``None``: a mail that answers no ticket, where only ``#new`` (on top of a
    forwarded customer's mail) and ``#help`` work.
    """
    if status is None:
        return [USAGE[_C.new], USAGE[_C.help]]
    changes = [_status_line(t) for t in lifecycle.allowed_targets(status)]
    return [*changes, *(USAGE[c] for c in _others(status))]


def check(commands: Commands, status: TicketStatus | None) -> tuple[Problem, ...]:
    """The commands that may not run on a ticket in ``status`` (None: no ticket).

    Status changes are checked, in order, with :func:`mailbot.lifecycle.transition`.
    The other commands must be allowed in the status before or after them, so
    ``#reopen`` with ``#assign me`` works on a closed ticket, and so does
    ``#priority high`` with ``#close`` on an open one. With no ticket only
    ``#new`` and ``#help`` work, and with ``#new`` the others apply to the new
    ticket.
    """
    problems: list[Problem] = []
    if status is None:
        start = effective = TicketStatus.new if commands.get(_C.new) else None
    else:
        start = status
        effective = status
        text = "#new opens a ticket from a forwarded mail, not in a reply to one"
        problems.extend(Problem(c.line, text) for c in commands.all(_C.new))
    for c in commands.commands:
        if c.name in (_C.new, _C.help):
            continue
        if effective is None:
            problems.append(Problem(c.line, f"{c.line} needs a ticket: {_NO_TICKET}"))
        elif c.status is not None:
            try:
                effective = lifecycle.transition(effective, c.status)
            except lifecycle.TransitionError as error:
                only = error.allowed[0] if len(error.allowed) == 1 else None
                suggestion = None if only is None else _status_line(only)
                problems.append(Problem(c.line, str(error), suggestion))
    for c in commands.commands:
        if start is None or effective is None or c.status is not None or c.name is _C.new:
            continue
        if c.name not in _others(start) and c.name not in _others(effective):
            text = f"#{c.name} does not work on a {effective} ticket; #reopen it first"
            problems.append(Problem(c.line, text, "#reopen"))
    return tuple(problems)
