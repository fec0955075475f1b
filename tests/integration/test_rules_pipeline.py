"""The rules and routing inside the pipeline: what a processed mail gets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from mailbot import cli, loaders
from mailbot.errors import ConfigError
from mailbot.process import Pipeline
from mailbot.store import inbox
from mailbot.store.models import Agent, History, Outbound, RuleHit, Ticket

ROOT = Path(__file__).resolve().parents[2]
MONDAY_NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def mail(subject: str, body: str, sender: str = "ann@example.org", extra: str = "") -> bytes:
    return (
        f"From: Ann <{sender}>\r\nTo: support@localhost\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((subject, body, sender)))}@example.org>\r\n{extra}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def process(db, settings, raw: bytes, clock=lambda: MONDAY_NOON) -> Ticket:
    pipeline = Pipeline(db, settings, clock=clock)
    pipeline.sync_people()
    inbox.accept(db, raw, source="test")
    result = pipeline.process_next()
    assert result is not None
    assert result.outcome == "created", result.error
    with db.transaction() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == result.ticket_number)).one()
        session.expunge(ticket)
        return ticket


def test_the_packaged_rules_are_the_repository_rules():
    assert (ROOT / "rules.yaml").read_bytes() == loaders.BUILTIN_RULES.read_bytes()


def test_default_rules_classify_and_escalate(db, settings_for):
    settings = settings_for()
    ticket = process(
        db,
        settings,
        mail("Платформа недоступна", "С утра платформа недоступна, ничего не работает."),
    )
    assert ticket.priority == "critical"
    assert ticket.escalation_level >= 1
    assert ticket.sla_first_response_due_at == MONDAY_NOON.replace(hour=13)
    with db.transaction() as session:
        hits = [
            h.rule_id for h in session.exec(select(RuleHit).where(RuleHit.ticket_id == ticket.id))
        ]
        escalations = session.exec(
            select(History).where(History.ticket_id == ticket.id, History.field == "escalation")
        ).all()
    assert "critical-platform-unavailable" in hits
    assert escalations


def test_default_rules_escalate_a_reopening(db, settings_for):
    settings = settings_for()
    ticket = process(db, settings, mail("Export question", "How do I export my scenarios?"))
    with db.transaction() as session:
        row = session.get(Ticket, ticket.id)
        assert row is not None
        row.status = "resolved"
        row.resolved_at = MONDAY_NOON
        session.add(row)
    pipeline = Pipeline(db, settings, clock=lambda: MONDAY_NOON.replace(hour=15))
    inbox.accept(
        db,
        mail(f"Re: [#{ticket.number}] Export question", "The export fails again."),
        source="test",
    )
    result = pipeline.process_next()
    assert result is not None
    assert result.outcome == "appended", result
    with db.transaction() as session:
        row = session.get(Ticket, ticket.id)
        escalations = session.exec(
            select(History.new_value).where(
                History.ticket_id == ticket.id, History.field == "escalation"
            )
        ).all()
        hits = session.exec(select(RuleHit.rule_id).where(RuleHit.ticket_id == ticket.id)).all()
    assert row is not None
    assert row.status == "reopened"
    assert "reopened" in row.tags
    assert escalations == ["1: reopened by the customer"]
    assert "escalate-reopened" in hits


def test_question_is_low_priority_usage(db, settings_for):
    ticket = process(
        db, settings_for(), mail("How to set up a connector?", "How do I configure the connector?")
    )
    assert ticket.priority == "low"
    assert ticket.category == "usage"


def test_spam_is_kept_out_of_the_queue_and_never_answered(db, settings_for):
    settings = settings_for()
    ticket = process(db, settings, mail("Cheap pills", "buy now", extra="X-Spam-Flag: YES\r\n"))
    assert ticket.spam is True
    with db.transaction() as session:
        assert session.exec(select(Outbound)).all() == []


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_auto_reply_action_sends_the_named_template(db, settings_for, tmp_path):
    templates = tmp_path / "templates" / "mail" / "customer"
    templates.mkdir(parents=True)
    (templates / "billing-hours.en.txt.j2").write_text(
        "Subject: {{ token }} Billing hours\n\nBilling answers on weekdays, {{ customer_name }}.\n"
    )
    rules = write(
        tmp_path / "rules.yaml",
        "- id: billing\n  when:\n    subject-contains: [invoice]\n"
        "  then:\n    set-category: account/billing\n    auto-reply: billing-hours\n",
    )
    settings = settings_for(
        rules_file=rules, conversation={"templates_dir": str(tmp_path / "templates")}
    )
    ticket = process(db, settings, mail("My invoice is wrong", "see subject"))
    assert (ticket.category, ticket.subcategory) == ("account", "billing")
    with db.transaction() as session:
        events = sorted(o.event for o in session.exec(select(Outbound)))
        raw = session.exec(select(Outbound).where(Outbound.event == "billing-hours")).one().raw
    assert events == ["billing-hours", "ticket-opened"]
    assert b"Billing answers on weekdays, Ann." in raw


AGENTS = """
agents:
  - email: night@example.org
    skills: [technical]
    time_zone: Asia/Tokyo
    working_hours: {mon-fri: ["09:00-17:00"]}
  - email: day@example.org
    skills: [technical]
    time_zone: Europe/Berlin
    working_hours: {mon-fri: ["09:00-17:00"]}
teams:
  - name: tech
    members: [night@example.org, day@example.org]
    skills: [technical]
"""


def test_routing_assigns_a_member_on_shift(db, settings_for, tmp_path):
    settings = settings_for(agents_file=write(tmp_path / "agents.yaml", AGENTS))
    ticket = process(db, settings, mail("API error 500", "The API returns error 500 on /v1/run."))
    assert ticket.category == "technical"
    assert ticket.team == "tech"
    assert ticket.status == "assigned"
    with db.transaction() as session:
        agent = session.get(Agent, ticket.assignee_id)
        assert agent is not None
        assert agent.email == "day@example.org"  # 13:00 in Berlin; 21:00 in Tokyo


def test_nobody_on_shift_leaves_the_ticket_in_the_team_queue(db, settings_for, tmp_path):
    settings = settings_for(agents_file=write(tmp_path / "agents.yaml", AGENTS))
    sunday = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    ticket = process(
        db, settings, mail("API error", "The API returns error 500."), clock=lambda: sunday
    )
    assert ticket.team == "tech"
    assert ticket.assignee_id is None
    assert ticket.status == "new"


def test_an_invalid_rules_file_stops_the_pipeline_and_the_daemon(
    db, db_url, settings_for, tmp_path, monkeypatch, capsys
):
    bad = write(tmp_path / "bad.yaml", "- id: x\n  when:\n    no-such-condition: 1\n  then: {}\n")
    with pytest.raises(ConfigError, match="no-such-condition"):
        Pipeline(db, settings_for(rules_file=bad))
    monkeypatch.setenv("MAILBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("MAILBOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MAILBOT_RULES_FILE", bad)
    monkeypatch.setenv("MAILBOT_SMTP__PORT", "0")
    assert cli.main(["run"]) != 0
    assert "no-such-condition" in capsys.readouterr().err


def test_reload_keeps_the_last_good_rules(db, settings_for, tmp_path):
    path = tmp_path / "rules.yaml"
    good = "- id: one\n  then:\n    add-tags: [first]\n"
    path.write_text(good)
    settings = settings_for(rules_file=str(path))
    pipeline = Pipeline(db, settings)
    assert pipeline.rules.rules.ids == ("one",)
    path.write_text("- id: broken\n  when: {subject-matches: '('}\n  then: {}\n")
    assert pipeline.rules.reload("test") is False
    assert pipeline.rules.rules.ids == ("one",)
    path.write_text("- id: two\n  then:\n    add-tags: [second]\n")
    assert pipeline.rules.reload("test") is True
    assert pipeline.rules.rules.ids == ("two",)


def test_ticket_show_lists_the_rules_that_matched(
    db, db_url, settings_for, tmp_path, monkeypatch, capsys
):
    process(db, settings_for(), mail("Payment failed", "My card payment failed twice."))
    monkeypatch.setenv("MAILBOT_DATABASE_URL", db_url)
    assert cli.main(["ticket", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert "rules that matched" in out
    assert "fallback" in out
