"""The ``mailbot`` command line: entry points for operators.

Settings are loaded once here and passed down. Exit codes follow sysexits:
0 success, 1 a failed check, 2 usage or configuration error, 75 (EX_TEMPFAIL)
when ``mailbot ingest`` could not commit a mail, so the MTA keeps it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import mailbox
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from mailbot import __version__, cli_jobs, cli_ops, loaders, logsetup, views
from mailbot import parse as parser
from mailbot.classify import classify
from mailbot.config import Settings, load_settings, masked
from mailbot.errors import ConfigError, MailbotError, ParseError, SchemaError
from mailbot.process import Pipeline
from mailbot.store import credentials, inbox, schema
from mailbot.store.db import Database
from mailbot.store.models import InboundStatus, TicketStatus
from mailbot.store.people import sync_agents
from mailbot.store.types import utcnow

log = logging.getLogger(__name__)

EX_OK, EX_FAIL, EX_USAGE, EX_TEMPFAIL = 0, 1, 2, 75


def _print_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, ensure_ascii=False, default=str)
    out.write("\n")


def _database(settings: Settings, *, check: bool = True) -> Database:
    db = Database(settings.effective_database_url)
    if check:
        schema.check_schema(db)
    return db


# -- run, db, check-config ---------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the listeners, the web page and the scheduler load aiosmtpd,
    # FastAPI, uvicorn and APScheduler, which the other commands (above all
    # `mailbot ingest` behind an MTA, once per mail) need not pay for.
    from mailbot import daemon

    return daemon.run(settings)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    db = _database(settings, check=False)
    try:
        if args.db_command == "upgrade":
            schema.upgrade(db)
            print(f"database at revision {schema.current_revision(db)}")
        elif args.db_command == "check":
            schema.check_schema(db)
            print(f"database at revision {schema.current_revision(db)} (head)")
        else:
            print(f"current: {schema.current_revision(db)}  head: {schema.head_revision(db)}")
    finally:
        db.close()
    return EX_OK


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    _print_json(masked(settings), sys.stdout)
    return EX_OK


# -- inbox -----------------------------------------------------------------------------


def cmd_inbox(args: argparse.Namespace, settings: Settings) -> int:
    db = _database(settings)
    try:
        if args.inbox_command == "list":
            status = InboundStatus(args.status) if args.status else None
            rows = inbox.list_inbound(db, status=status, limit=args.limit)
            if args.json:
                _print_json([views.inbound_summary(r) for r in rows], sys.stdout)
            else:
                print(views.inbound_table(rows, inbox.counts(db)))
            return EX_OK
        if args.inbox_command == "show":
            found = inbox.get_inbound(db, args.id)
            if found is None:
                print(f"no inbound mail {args.id}", file=sys.stderr)
                return EX_FAIL
            summary, raw = found
            if args.raw:
                sys.stdout.buffer.write(raw)
                return EX_OK
            data = views.inbound_summary(summary)
            if args.json:
                _print_json(data, sys.stdout)
            else:
                print(views.key_values(data))
            return EX_OK
        if not args.ids and not args.all_shunted:
            print("give inbound ids or --all-shunted", file=sys.stderr)
            return EX_USAGE
        count = inbox.requeue(db, args.ids, all_shunted=args.all_shunted)
        print(f"requeued {count} mail(s); the running daemon will process them")
        return EX_OK
    finally:
        db.close()


# -- imap ------------------------------------------------------------------------------


def cmd_imap(args: argparse.Namespace, settings: Settings) -> int:
    mailboxes = [m for m in settings.imap if not args.mailbox or m.name == args.mailbox]
    if not mailboxes:
        print("no [[imap]] mailbox configured" + (f" named {args.mailbox}" if args.mailbox else ""))
        return EX_FAIL
    db: Database | None = _database(settings, check=False)
    try:
        assert db is not None
        schema.check_schema(db)
    except (SchemaError, MailbotError) as exc:
        print(f"database not usable, cursors not shown: {exc}")
        if db is not None:
            db.close()
        db = None
    from mailbot.ingest import imap_check  # imapclient: this command only

    try:
        return imap_check.check(mailboxes, db, sys.stdout)
    finally:
        if db is not None:
            db.close()


# -- ingest ------------------------------------------------------------------------------


@contextlib.contextmanager
def _mailbox(args: argparse.Namespace) -> Iterator[tuple[int, Iterator[bytes]]]:
    """The mails of ``--mbox`` or ``--maildir`` as raw bytes, closed afterwards."""
    box: mailbox.Mailbox[Any]
    try:
        if args.mbox:
            box = mailbox.mbox(args.mbox, factory=None, create=False)
        else:
            box = mailbox.Maildir(args.maildir, factory=None, create=False)
        keys = list(box.keys())
    except (mailbox.NoSuchMailboxError, OSError) as exc:
        raise MailbotError(f"cannot read {args.mbox or args.maildir}: {exc}") from exc
    try:
        yield len(keys), (box.get_bytes(k) for k in keys)
    finally:
        box.close()


class Progress:
    """A one-line progress counter on stderr (only when it is a terminal)."""

    def __init__(self, total: int, label: str, out: TextIO = sys.stderr) -> None:
        self.total, self.label, self.out = total, label, out
        self.enabled = out.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        width = 30
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        self.out.write(f"\r{self.label} [{bar}] {done}/{self.total} {rate:.0f}/s")
        if done >= self.total:
            self.out.write("\n")
        self.out.flush()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.mbox or args.maildir):
        return _ingest_pipe(settings)
    db = _database(settings)
    # Built first: its parser children load while the mailbox is read in.
    pipeline = None if args.no_process else Pipeline(db, settings)
    try:
        if pipeline is not None:
            pipeline.start()
        fresh = 0
        with _mailbox(args) as (total, messages):
            progress = Progress(total, "accepted")
            done = 0
            for batch in _batches(messages):
                accepted = inbox.accept_many(db, batch, source="import")
                fresh += sum(not a.duplicate for a in accepted)
                done += len(batch)
                progress.update(done)
        print(f"accepted {fresh} new mail(s), {total - fresh} already known", file=sys.stderr)
        if pipeline is None:
            return EX_OK
        pipeline.sync_people()
        progress = Progress(fresh, "processed")
        outcomes: dict[str, int] = {}
        for result in pipeline.drain(settings.inbox.workers):
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            progress.update(sum(outcomes.values()))
        summary = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "nothing to do"
        print(f"processed: {summary}", file=sys.stderr)
        return EX_OK
    finally:
        if pipeline is not None:
            pipeline.close()
        db.close()


#: An import commits this many mails, or this many bytes, per transaction.
IMPORT_BATCH_MAILS = 200
IMPORT_BATCH_BYTES = 8 * 1024 * 1024


def _batches(messages: Iterable[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for raw in messages:
        batch.append(raw)
        size += len(raw)
        if len(batch) >= IMPORT_BATCH_MAILS or size >= IMPORT_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _ingest_pipe(settings: Settings) -> int:
    """One mail on stdin (an MTA pipe transport): exit 0 only once it is committed."""
    raw = sys.stdin.buffer.read()
    if len(raw) > settings.smtp.max_message_size:
        print("message too large", file=sys.stderr)
        return EX_FAIL
    try:
        db = _database(settings)
        try:
            accepted = inbox.accept(db, raw, source="pipe")
        finally:
            db.close()
    except Exception as exc:  # anything: the MTA must keep the mail and retry
        log.error(
            "ingest failed, mail left with the MTA: %s",
            exc,
            extra={"action": "ingest_tempfail", "error": type(exc).__name__},
        )
        return EX_TEMPFAIL
    log.info(
        "accepted inbound %d from pipe",
        accepted.inbound_id,
        extra={"action": "inbound_accepted", "inbound_id": accepted.inbound_id, "source": "pipe"},
    )
    return EX_OK


# -- ticket, mail inspect -------------------------------------------------------------------


def cmd_ticket(args: argparse.Namespace, settings: Settings) -> int:
    db = _database(settings)
    try:
        with db.transaction() as session:
            if args.ticket_command == "list":
                status = TicketStatus(args.status) if args.status else None
                rows = views.ticket_rows(session, status=status, limit=args.limit, spam=args.spam)
                if args.json:
                    _print_json(rows, sys.stdout)
                else:
                    print(views.ticket_table(rows))
                return EX_OK
            data = views.ticket_document(session, args.number)
        if data is None:
            print(f"no ticket {args.number}", file=sys.stderr)
            return EX_FAIL
        if args.json:
            _print_json(data, sys.stdout)
        else:
            print(views.ticket_text(data))
        return EX_OK
    finally:
        db.close()


def cmd_mail_inspect(args: argparse.Namespace, settings: Settings) -> int:
    raw = Path(args.file).read_bytes()
    try:
        msg = parser.parse(raw, settings.parse.limits())
    except ParseError as exc:
        data: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
        if args.json:
            _print_json(data, sys.stdout)
        else:
            print(data["error"])
        return EX_FAIL
    data = views.parsed_document(msg)
    klass = classify(msg, our_addresses=settings.our_addresses)
    data["class"] = klass.mail_class.value
    data["class_reasons"] = list(klass.reasons)
    if args.json:
        _print_json(data, sys.stdout)
    else:
        print(views.key_values({k: v for k, v in data.items() if k != "text"}))
        print("\n" + data["text"])
    return EX_OK


# -- web login tokens --------------------------------------------------------------------


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    """``web token set|revoke EMAIL``: a staff login for the web page and the JSON API."""
    db = _database(settings)
    try:
        # The agents of agents.yaml may not be in the database yet (the daemon
        # writes them at start): write them now, so a token can be set at once.
        with db.transaction() as session:
            sync_agents(session, loaders.read_people(settings), utcnow())
        with db.transaction() as session:
            if args.token_command == "revoke":
                if not credentials.revoke(session, args.email):
                    print(f"{args.email} has no token", file=sys.stderr)
                    return EX_FAIL
                print(f"token of {args.email} revoked; its sessions have ended")
                return EX_OK
            if not credentials.agent_exists(session, args.email):
                print(
                    f"no active agent {args.email}: list agents in agents.yaml first",
                    file=sys.stderr,
                )
                return EX_FAIL
            token = credentials.set_token(session, args.email)
        print(token)
        print(f"(shown once; it replaces any earlier token of {args.email})", file=sys.stderr)
        return EX_OK
    finally:
        db.close()


# -- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailbot", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="TOML configuration file (default: $MAILBOT_CONFIG)")
    p.add_argument("--version", action="version", version=f"mailbot {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="run the daemon (listeners and pipeline worker)")

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="migrate the database to the current schema")
    db_sub.add_parser("check", help="exit 1 unless the schema is current")
    db_sub.add_parser("current", help="print the current and the head revision")

    sub.add_parser("check-config", help="validate and print the effective configuration")

    ib = sub.add_parser("inbox", help="the durable inbox: list, show, retry")
    ib_sub = ib.add_subparsers(dest="inbox_command", required=True)
    ib_list = ib_sub.add_parser("list", help="list inbound mail, newest first")
    ib_list.add_argument("--status", choices=[s.value for s in InboundStatus])
    ib_list.add_argument("--limit", type=int, default=50)
    ib_list.add_argument("--json", action="store_true")
    ib_show = ib_sub.add_parser("show", help="show one inbound mail and its error")
    ib_show.add_argument("id", type=int)
    ib_show.add_argument("--json", action="store_true")
    ib_show.add_argument("--raw", action="store_true", help="write the raw mail to stdout")
    ib_retry = ib_sub.add_parser("retry", help="send quarantined mail through the pipeline again")
    ib_retry.add_argument("ids", type=int, nargs="*")
    ib_retry.add_argument("--all-shunted", action="store_true", help="every quarantined mail")

    ing = sub.add_parser("ingest", help="read one mail from stdin, or import an mbox or Maildir")
    src = ing.add_mutually_exclusive_group()
    src.add_argument("--mbox", help="import every mail of this mbox file")
    src.add_argument("--maildir", help="import every mail of this Maildir")
    ing.add_argument(
        "--no-process", action="store_true", help="only accept; leave processing to the daemon"
    )

    tk = sub.add_parser("ticket", help="tickets: list, show")
    tk_sub = tk.add_subparsers(dest="ticket_command", required=True)
    tk_list = tk_sub.add_parser("list", help="list tickets, newest first")
    tk_list.add_argument("--status", choices=[s.value for s in TicketStatus])
    tk_list.add_argument("--limit", type=int, default=50)
    tk_list.add_argument("--spam", action="store_true", help="list the spam instead")
    tk_list.add_argument("--json", action="store_true")
    tk_show = tk_sub.add_parser("show", help="a ticket with its messages, history, attachments")
    tk_show.add_argument("number", type=int)
    tk_show.add_argument("--json", action="store_true")

    im = sub.add_parser("imap", help="the IMAP mailboxes")
    im_sub = im.add_subparsers(dest="imap_command", required=True)
    im_check = im_sub.add_parser(
        "check", help="connect, list folders, print what the poller would do (changes nothing)"
    )
    im_check.add_argument("--mailbox", help="only the [[imap]] mailbox of this name")

    mail = sub.add_parser("mail", help="look at a mail file")
    mail_sub = mail.add_subparsers(dest="mail_command", required=True)
    insp = mail_sub.add_parser("inspect", help="print what the parser sees in a mail file")
    insp.add_argument("file")
    insp.add_argument("--json", action="store_true")
    web = sub.add_parser("web", help="the web page: staff login tokens")
    web_sub = web.add_subparsers(dest="web_command", required=True)
    token = web_sub.add_parser("token", help="set or revoke an agent's login token")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_set = token_sub.add_parser("set", help="print a new token for an agent (shown once)")
    token_set.add_argument("email")
    token_revoke = token_sub.add_parser("revoke", help="remove an agent's token and sessions")
    token_revoke.add_argument("email")
    cli_ops.add_parsers(sub)
    cli_jobs.add_parsers(sub)
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": cmd_run,
    "db": cmd_db,
    "check-config": cmd_check_config,
    "inbox": cmd_inbox,
    "ingest": cmd_ingest,
    "ticket": cmd_ticket,
    "mail": cmd_mail_inspect,
    "imap": cmd_imap,
    "rules": cli_ops.cmd_rules,
    "outbox": cli_ops.cmd_outbox,
    "web": cmd_web,
    "job": cli_jobs.cmd_job,
    "digest": cli_jobs.cmd_digest,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "ingest" else EX_USAGE
    logsetup.configure(settings.log_level, settings.log_format)
    try:
        return COMMANDS[args.command](args, settings)
    except SchemaError as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "ingest" else EX_FAIL
    except MailbotError as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return EX_FAIL
