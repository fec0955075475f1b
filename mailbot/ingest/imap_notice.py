"""The notice that stands in the inbox for an IMAP message too large to download."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

from mailbot.config import ImapMailboxSettings

OVERSIZE_SUBJECT = "Oversized message left on the IMAP server"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def oversize_notice(
    mailbox: ImapMailboxSettings,
    folder: str,
    uidvalidity: int,
    uid: int,
    size: int,
    envelope: Any,
) -> bytes:
    """The synthetic mail that stands in the inbox for a message too large to download.

    Its Message-ID depends only on the mailbox, folder, UIDVALIDITY and UID,
    so a re-scan finds it already accepted.
    """
    folder_key = hashlib.sha256(folder.encode()).hexdigest()[:12]
    senders = getattr(envelope, "from_", None) or ()
    msg = EmailMessage()
    msg["From"] = f"mailer-daemon@{mailbox.host}"
    msg["To"] = mailbox.username
    msg["Subject"] = OVERSIZE_SUBJECT
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = (
        f"<oversize.{mailbox.name}.{folder_key}.{uidvalidity}.{uid}@mailbot.invalid>"
    )
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        "A message larger than the limit was left on the IMAP server.\n\n"
        f"Mailbox:      {mailbox.name} ({mailbox.username} at {mailbox.host})\n"
        f"Folder:       {folder} (moved to {mailbox.oversize_folder})\n"
        f"UID:          {uid} (UIDVALIDITY {uidvalidity})\n"
        f"Size:         {size} bytes (limit {mailbox.max_message_size})\n"
        f"From:         {', '.join(_text(a) for a in senders)}\n"
        f"Subject:      {_text(getattr(envelope, 'subject', None))}\n"
        f"Message-ID:   {_text(getattr(envelope, 'message_id', None))}\n"
    )
    return msg.as_bytes(policy=SMTP)
