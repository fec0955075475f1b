"""``mailbot imap check``: connect, list the folders, say what the poller would do.

Read-only by construction: folders are opened with EXAMINE, only
``RFC822.SIZE`` is fetched (which sets no flag), nothing is created, moved or
committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TextIO

from mailbot.config import ImapMailboxSettings, imap_password
from mailbot.errors import TransientError
from mailbot.ingest.imap import RETRYABLE, connect, describe, size_of
from mailbot.store import imap_state
from mailbot.store.db import Database


def check(
    mailboxes: Sequence[ImapMailboxSettings],
    db: Database | None,
    out: TextIO,
) -> int:
    """Describe each mailbox; 0 when every one answered and has its folders, else 1."""
    status = 0
    for mailbox in mailboxes:
        status |= _check_one(mailbox, db, out)
    return status


def _check_one(mailbox: ImapMailboxSettings, db: Database | None, out: TextIO) -> int:
    out.write(
        f"mailbox {mailbox.name}: {mailbox.username} at {mailbox.host}:{mailbox.port} "
        f"(tls: {mailbox.tls})\n"
    )
    if db is not None:
        with contextlib.suppress(TransientError):
            holder = imap_state.lease_holder(db, f"imap:{mailbox.name}")
            out.write(f"  lease: {'held by ' + holder if holder else 'free'}\n")
    try:
        client = connect(mailbox, imap_password(mailbox))
    except RETRYABLE as exc:
        out.write(f"  cannot connect: {describe(exc, mailbox)[1]}\n")
        return 1
    status = 0
    try:
        idle = mailbox.idle and b"IDLE" in client.capabilities()
        waiting = "IDLE" if idle else f"a poll every {mailbox.poll_seconds:g}s"
        out.write(f"  connected; waits for new mail with {waiting}\n")
        names = [name for _flags, _sep, name in client.list_folders()]
        out.write(f"  folders on the server: {', '.join(names)}\n")
        targets = [mailbox.oversize_folder]
        if mailbox.processed_action == "move":
            targets.insert(0, mailbox.processed_folder)
        for target in targets:
            state = "exists" if target in names else "missing: the poller would create it"
            out.write(f"  target folder {target}: {state}\n")
        after = (
            f"move them to {mailbox.processed_folder}"
            if mailbox.processed_action == "move"
            else f"flag them {mailbox.processed_flag}"
        )
        for folder in mailbox.folders:
            if folder not in names:
                out.write(f"  folder {folder}: missing; the poller would retry until it exists\n")
                status = 1
                continue
            info = client.select_folder(folder, readonly=True)
            uidvalidity = int(info[b"UIDVALIDITY"])
            cursor = None
            if db is not None:
                with contextlib.suppress(TransientError):
                    cursor = imap_state.get_cursor(db, mailbox.name, folder)
            last_uid = 0
            note = "no cursor yet: would read the whole folder"
            if cursor is not None and cursor.uidvalidity == uidvalidity:
                last_uid = cursor.last_uid
                note = f"cursor at UID {last_uid}"
            elif cursor is not None:
                note = (
                    f"UIDVALIDITY changed from {cursor.uidvalidity}: would read the whole "
                    "folder again (dedupe skips mail already taken)"
                )
            uids = [u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid]
            sizes = client.fetch(uids, ["RFC822.SIZE"]) if uids else {}
            large = sum(1 for item in sizes.values() if size_of(item) > mailbox.max_message_size)
            out.write(
                f"  folder {folder}: {info.get(b'EXISTS', 0)} message(s), "
                f"UIDVALIDITY {uidvalidity}, {note}\n"
                f"    would fetch {len(sizes) - large} new message(s) and {after}\n"
            )
            if large:
                out.write(
                    f"    {large} message(s) over {mailbox.max_message_size} bytes would stay "
                    f"on the server, moved to {mailbox.oversize_folder}\n"
                )
    except RETRYABLE as exc:
        out.write(f"  failed: {describe(exc, mailbox)[1]}\n")
        status = 1
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return status
