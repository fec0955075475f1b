"""Outgoing mail: well-formed MIME, and no header built from raw user input (B-44)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from mailbot.compose import HeaderInjectionError, Outgoing, Recipient, clean_text, compose

NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


def outgoing(**changes):
    values = {
        "sender": Recipient("support@example.org", "Support"),
        "to": [Recipient("ann@example.org", "Ann")],
        "subject": "[#7] Printer",
        "text": "Hello Ann,\nwe are on it.\n",
        "message_id": "mb.7.abcdef012345.0123456789abcdef@example.org",
        "date": NOW,
    }
    values.update(changes)
    return Outgoing(**values)


def parsed(raw: bytes):
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_plain_mail_round_trips():
    msg = parsed(compose(outgoing()))
    assert msg["From"].addresses[0].addr_spec == "support@example.org"
    assert msg["From"].addresses[0].display_name == "Support"
    assert msg["To"].addresses[0].addr_spec == "ann@example.org"
    assert msg["Subject"] == "[#7] Printer"
    assert msg["Message-ID"] == "<mb.7.abcdef012345.0123456789abcdef@example.org>"
    assert msg["Date"].datetime == NOW
    assert msg.get_content_type() == "text/plain"
    assert (
        msg.get_content() == "Hello Ann,\r\nwe are on it.\r\n"
        or msg.get_content().replace("\r\n", "\n") == "Hello Ann,\nwe are on it.\n"
    )
    assert msg["Auto-Submitted"] is None
    assert not msg.defects


def test_automatic_mail_says_so_and_threads():
    raw = compose(outgoing(auto=True, in_reply_to="orig@customer.example", references=["a@b.c"]))
    msg = parsed(raw)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == "<orig@customer.example>"
    assert msg["References"].split() == ["<a@b.c>"]


def test_non_ascii_subject_names_and_bodies():
    raw = compose(
        outgoing(
            subject="[#7] Принтер не работает — " + "очень " * 30,
            to=[Recipient("ann@example.org", "Анна Ärger")],
            text="Здравствуйте!\n" * 50,
            html="<p>Здравствуйте &amp; привет</p>",
        )
    )
    assert raw.isascii()
    msg = parsed(raw)
    assert msg["Subject"].startswith("[#7] Принтер не работает")
    assert msg["To"].addresses[0].display_name == "Анна Ärger"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_payload()
    assert text.get_content().startswith("Здравствуйте!")
    assert "привет" in html.get_content()
    assert not msg.defects
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


@pytest.mark.parametrize(
    "name",
    ['Eve "the boss"', "Bob\r\nBcc: victim@example.org", "Mallory, Inc. <x@y.z>", "a\x00b"],
)
def test_display_names_cannot_inject(name):
    msg = parsed(compose(outgoing(to=[Recipient("ann@example.org", name)])))
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.org"]
    assert msg["Bcc"] is None


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.org\r\nBcc: victim@example.org",
        "ann@example.org, eve@example.org",
        "Ann <ann@example.org>",
        '"quoted"@example.org',
        "ann@",
        "",
        "ann@exa mple.org",
        "анна@example.org",
    ],
)
def test_bad_addresses_are_refused(address):
    with pytest.raises(HeaderInjectionError):
        compose(outgoing(to=[Recipient(address)]))


def test_subject_with_line_breaks_is_one_line():
    msg = parsed(compose(outgoing(subject="Hi\r\nBcc: victim@example.org\nX-Evil: 1")))
    assert msg["Bcc"] is None
    assert msg["X-Evil"] is None
    assert msg["Subject"] == "Hi Bcc: victim@example.org X-Evil: 1"


def test_bad_message_ids_and_header_names_are_refused():
    with pytest.raises(HeaderInjectionError):
        compose(outgoing(message_id="x@y>\r\nBcc: <v@example.org"))
    with pytest.raises(HeaderInjectionError):
        compose(outgoing(extra_headers={"Bcc: v@example.org\r\nX": "1"}))
    raw = compose(outgoing(extra_headers={"X-Mailbot-Ticket": "7\r\nBcc: v@example.org"}))
    assert parsed(raw)["Bcc"] is None


def test_clean_text():
    assert clean_text("a\tb\r\n  c\u2028d") == "a b c d"
    assert len(clean_text("x" * 1000)) == 250


@pytest.mark.parametrize(
    ("filename", "content_type", "name", "ctype"),
    [
        ("report.pdf", "application/pdf", "report.pdf", "application/pdf"),
        (
            "Отчёт за март.xlsx",
            "application/vnd.ms-excel",
            "Отчёт за март.xlsx",
            "application/vnd.ms-excel",
        ),
        ('a"b\r\nX-Evil: 1.txt', "text/plain", 'a"b X-Evil: 1.txt', "text/plain"),
        ("x.bin", "text/plain\r\nX-Evil: 1", "x.bin", "application/octet-stream"),
        ("x.eml", "multipart/mixed", "x.eml", "application/octet-stream"),
        ("", "image/png", "attachment", "image/png"),
    ],
)
def test_attachments_are_encoded_safely(
    filename: str, content_type: str, name: str, ctype: str
) -> None:
    from email import policy
    from email.parser import BytesParser

    from mailbot.compose import Outgoing, OutgoingFile, Recipient, compose

    raw = compose(
        Outgoing(
            sender=Recipient("support@example.org", "Support"),
            to=[Recipient("anna@example.com")],
            subject="Re: [#1] Files",
            text="See attached.",
            message_id="mb.1.abc.0123456789abcdef@example.org",
            date=datetime(2030, 1, 1, tzinfo=UTC),
            attachments=[OutgoingFile(filename, content_type, b"\x00\x01payload")],
        )
    )
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert "X-Evil" not in msg
    (part,) = list(msg.iter_attachments())  # type: ignore[attr-defined]
    assert part.get_filename() == name
    assert part.get_content_type() == ctype
    assert part.get_payload(decode=True) == b"\x00\x01payload"
    assert msg.get_body(("plain",)).get_content().strip() == "See attached."  # type: ignore[attr-defined]
