"""What kind of mail this is: human, auto-reply, bounce or loop, and why.

Pure decisions over a parsed mail. Only human mail ever gets an automatic
answer (RFC 3834); bounces of our own mail mark the outgoing row and never open
a ticket; loops (our own mail coming back) cause nothing at all.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailbot.headers import extract_message_id, split_message_ids
from mailbot.message import ParsedMessage


class MailClass(enum.StrEnum):
    human = "human"
    auto_reply = "auto-reply"
    bounce = "bounce"
    loop = "loop"


@dataclass(frozen=True, slots=True)
class Classification:
    mail_class: MailClass
    reasons: tuple[str, ...]

    @property
    def may_auto_answer(self) -> bool:
        return self.mail_class is MailClass.human


_BOUNCE_SENDER = re.compile(
    r"^(mailer[-_.]?daemon|post[-_.]?master|mail[-_.]?daemon|mail[-_.]delivery[-_.]system)$"
)
_NOREPLY = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|bounces?)([-+_.].*)?$"
    r"|^(owner-.+|.+-(owner|admin|request|bounces?))$"
)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver(ed|able)|delivery (status notification|failure|has failed)|"
    r"mail delivery (failed|subsystem)|returned mail|failure notice|"
    r"non[- ]?delivery|nicht zustellbar|unzustellbar|недоставленное|не доставлено)",
    re.IGNORECASE,
)
_OOO_SUBJECT = re.compile(
    r"(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto:|"
    r"abwesenheit|automatische antwort|r[ée]ponse automatique|absent|"
    r"respuesta autom[áa]tica|fuera de la oficina|risposta automatica|fuori ufficio|"
    r"automatisch antwoord|afwezig|poza biurem|odpowied[źz] automatyczna|"
    r"автоответ|автоматический ответ|нет на месте|в отпуске|отсутств)",
    re.IGNORECASE,
)
_LIST_HEADER = re.compile(
    r"^(list-(id|unsubscribe|subscribe|post|help|owner|archive)|mailing-list|x-ml-name|"
    r"x-mlserver|x-mailman-version|x-loop-list)$",
    re.IGNORECASE,
)
_PRECEDENCE_AUTO = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})


def _local(address: str) -> str:
    return address.rpartition("@")[0].lower() if "@" in address else address.lower()


def classify(
    msg: ParsedMessage,
    *,
    our_addresses: Iterable[str],
    envelope_from: str | None = None,
    is_our_message_id: Callable[[str], bool] = lambda _: False,
) -> Classification:
    """Classify ``msg``; the reasons say which signals decided it.

    ``envelope_from`` is the SMTP MAIL FROM when known ("" is the null
    sender of bounces; None means unknown, e.g. an import).
    ``is_our_message_id`` recognises the (signed) IDs of mail we sent.
    """
    ours = {a.lower() for a in our_addresses}
    sender = msg.sender.email.lower() if msg.sender else ""

    loop: list[str] = []
    if sender and (sender in ours or _is_plus_of(sender, ours)):
        loop.append(f"from our own address {sender}")
    if msg.message_id and is_our_message_id(msg.message_id):
        loop.append("carries our own Message-ID")
    x_loop = (msg.header("X-Loop") or "").lower()
    if x_loop and any(a in x_loop for a in ours):
        loop.append("X-Loop names our address")
    if loop:
        return Classification(MailClass.loop, tuple(loop))

    bounce: list[str] = []
    content_type = (msg.header("Content-Type") or "").lower()
    if "multipart/report" in content_type:
        kind = "delivery-status" if "delivery-status" in content_type else "other"
        bounce.append(f"multipart/report ({kind})")
    if envelope_from == "" or (msg.header("Return-Path") or "").strip() == "<>":
        bounce.append("null return path")
    if sender and _BOUNCE_SENDER.search(_local(sender)):
        bounce.append(f"from {_local(sender)}")
    if msg.header("X-Failed-Recipients"):
        bounce.append("X-Failed-Recipients")
    if _BOUNCE_SUBJECT.search(msg.subject) and (not sender or bounce):
        bounce.append("delivery-failure subject")
    if bounce and bounce != ["null return path"]:
        return Classification(MailClass.bounce, tuple(bounce))

    auto: list[str] = []
    submitted = (msg.header("Auto-Submitted") or "").strip().lower()
    if submitted and submitted != "no":
        auto.append(f"Auto-Submitted: {submitted}")
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Response-Suppress"):
        if msg.header(name) is not None:
            auto.append(name)
    precedence = (msg.header("Precedence") or "").strip().lower()
    if precedence in _PRECEDENCE_AUTO:
        auto.append(f"Precedence: {precedence}")
    if any(_LIST_HEADER.match(name) for name, _ in msg.headers):
        auto.append("mailing list headers")
    if _OOO_SUBJECT.search(msg.subject):
        auto.append("out-of-office subject")
    if sender and _NOREPLY.match(_local(sender)):
        auto.append(f"no-reply sender {sender}")
    if bounce:  # a null return path alone: automatic, not a delivery report
        auto.extend(bounce)
    if auto:
        return Classification(MailClass.auto_reply, tuple(auto))
    return Classification(MailClass.human, ())


def _is_plus_of(address: str, ours: set[str]) -> bool:
    local, _, domain = address.partition("@")
    base = local.split("+", 1)[0]
    return f"{base}@{domain}" in ours


@dataclass(frozen=True, slots=True)
class BounceReport:
    """What a delivery report says about our mail."""

    original_message_ids: tuple[str, ...]
    failed_recipients: tuple[str, ...]
    reason: str


_FINAL_RECIPIENT = re.compile(
    r"^(?:final|original)-recipient:\s*(?:rfc822;)?\s*<?([^\s>]+)>?", re.I | re.M
)
_STATUS = re.compile(r"^status:\s*([245]\.\d{1,3}\.\d{1,3})", re.I | re.M)
_DIAGNOSTIC = re.compile(r"^diagnostic-code:\s*(.+(?:\n[ \t].+)*)", re.I | re.M)
_MSGID_LINE = re.compile(r"^message-id:\s*(<[^>\s]+>)", re.I | re.M)


def read_bounce(msg: ParsedMessage) -> BounceReport:
    """The original Message-IDs, failed recipients and reason in a bounce."""
    ids: list[str] = [*msg.in_reply_to, *msg.references]
    recipients: list[str] = []
    status: list[str] = []
    diagnostic: list[str] = []
    texts = [msg.text]
    for part in msg.attachments:
        kind = part.content_type
        if kind in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            found = extract_message_id(part.payload)
            if found:
                ids.append(found)
        elif kind in ("message/delivery-status", "message/global-delivery-status", "text/plain"):
            texts.append(part.payload[:200_000].decode("utf-8", "replace"))
    for text in texts:
        ids.extend(i for m in _MSGID_LINE.findall(text) for i in split_message_ids(m))
        recipients.extend(_FINAL_RECIPIENT.findall(text))
        status.extend(_STATUS.findall(text))
        diagnostic.extend(d.strip() for d in _DIAGNOSTIC.findall(text))
    failed = msg.header("X-Failed-Recipients")
    if failed:
        recipients.extend(a.strip() for a in failed.split(",") if "@" in a)
    reason = "; ".join(dict.fromkeys([*status, *diagnostic])) or msg.subject or "bounce"
    return BounceReport(
        original_message_ids=tuple(dict.fromkeys(ids)),
        failed_recipients=tuple(dict.fromkeys(r.lower() for r in recipients)),
        reason=reason[:1000],
    )
