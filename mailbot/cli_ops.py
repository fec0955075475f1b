"""``mailbot rules ...`` and ``mailbot outbox ...``: the operator commands for
behaviour files and outgoing mail. Registered by ``cli.build_parser``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mailbot import loaders, views
from mailbot import parse as parser
from mailbot.classify import classify
from mailbot.config import Settings
from mailbot.errors import ConfigError, ParseError
from mailbot.render import MailRenderer
from mailbot.routing import RoutingState, route
from mailbot.rules import RuleInput, evaluate, explain, load_rules
from mailbot.states import OutboundStatus
from mailbot.store import outbox, schema
from mailbot.store.db import Database
from mailbot.store.types import utcnow

EX_OK, EX_FAIL, EX_USAGE = 0, 1, 2


def add_parsers(sub: Any) -> None:
    rules = sub.add_parser("rules", help="check rules.yaml, or try it on a mail")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate the rules file (and agents.yaml)")
    check.add_argument("file", nargs="?", help="rules file (default: the configured one)")
    test = rules_sub.add_parser("test", help="dry run of the rules on a mail file")
    test.add_argument("mail", help="a mail file (.eml)")
    test.add_argument("--reply", action="store_true", help="as a reply to a ticket")
    test.add_argument("--known-customer", action="store_true", help="as from a known customer")
    test.add_argument("--json", action="store_true")

    out = sub.add_parser("outbox", help="outgoing mail: list, retry")
    out_sub = out.add_subparsers(dest="outbox_command", required=True)
    out_list = out_sub.add_parser("list", help="outgoing mail, newest first")
    out_list.add_argument("--status", choices=[s.value for s in OutboundStatus])
    out_list.add_argument("--limit", type=int, default=50)
    out_list.add_argument("--json", action="store_true")
    retry = out_sub.add_parser("retry", help="send failed mail again")
    retry.add_argument("ids", type=int, nargs="*")
    retry.add_argument("--all-failed", action="store_true", help="every failed mail")


def _renderer(settings: Settings) -> MailRenderer:
    templates = settings.conversation.templates_dir
    return MailRenderer(Path(templates) if templates else None)


def cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    people = loaders.read_people(settings)
    directory = loaders.directory_of(people, _renderer(settings).events("customer"))
    if args.rules_command == "check":
        path = Path(args.file) if args.file else loaders.rules_path(settings)
        try:
            rules = load_rules(
                path.read_text(encoding="utf-8"), source=str(path), directory=directory
            )
        except OSError as exc:
            print(f"cannot read {path}: {exc}", file=sys.stderr)
            return EX_FAIL
        except ConfigError as exc:
            print(f"{path}: invalid:\n{exc}", file=sys.stderr)
            return EX_FAIL
        print(
            f"{path}: {len(rules)} rules OK; {len(people.agents)} agents, {len(people.teams)} teams"
        )
        return EX_OK
    rules = loaders.read_rules(settings, directory)
    try:
        msg = parser.parse(Path(args.mail).read_bytes(), settings.parse.limits())
    except ParseError as exc:
        print(f"cannot parse {args.mail}: {exc}", file=sys.stderr)
        return EX_FAIL
    klass = classify(msg, our_addresses=settings.our_addresses)
    now = utcnow()
    decision = evaluate(
        rules,
        RuleInput(
            msg=msg,
            recipients=tuple(a.email for a in msg.to),
            is_new_ticket=not args.reply,
            customer_known=args.known_customer,
            mail_class=klass.mail_class.value,
            received_at=now,
        ),
    )
    routed = route(
        category=decision.category,
        teams=people.teams,
        agents=people.routing_agents,
        at=now,
        state=RoutingState(),
        rule_assignee=decision.assignee,
        rule_team=decision.team,
    )
    if args.json:
        data = {
            "mail_class": klass.mail_class.value,
            "class_reasons": list(klass.reasons),
            "rules": [
                {
                    "id": o.rule_id,
                    "line": o.line,
                    "verdict": str(o.verdict),
                    "explanation": o.explanation,
                    "actions": list(o.actions),
                }
                for o in decision.outcomes
            ],
            "category": decision.category,
            "subcategory": decision.subcategory,
            "priority": decision.priority,
            "tags": list(decision.tags),
            "escalations": list(decision.escalations),
            "auto_reply": decision.auto_reply,
            "spam": decision.spam,
            "assignee": routed.assignee,
            "team": routed.team,
            "routing": routed.how,
        }
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return EX_OK
    print(f"mail class: {klass.mail_class.value} {'; '.join(klass.reasons)}")
    print(explain(decision))
    assignee, team = routed.assignee or "-", routed.team or "-"
    print(f"routing: {assignee} (team {team}; {routed.how}; load not counted)")
    return EX_OK


def cmd_outbox(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings.effective_database_url)
    try:
        schema.check_schema(db)
        if args.outbox_command == "list":
            status = OutboundStatus(args.status) if args.status else None
            rows = outbox.list_outbound(db, status=status, limit=args.limit)
            if args.json:
                json.dump(rows, sys.stdout, indent=2, default=str)
                print()
            else:
                print(views.outbound_table(rows, outbox.counts(db)))
            return EX_OK
        if not args.ids and not args.all_failed:
            print("give outbound ids or --all-failed", file=sys.stderr)
            return EX_USAGE
        count = outbox.requeue(db, args.ids, all_failed=args.all_failed)
        print(f"requeued {count} mail(s); the running daemon will send them")
        return EX_OK
    finally:
        db.close()
