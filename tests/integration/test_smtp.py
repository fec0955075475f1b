"""The SMTP and LMTP listener in-process, with real smtplib clients, on SQLite and PostgreSQL.

Each test starts ``serve(...)`` inside its own event loop on an ephemeral port;
the blocking smtplib clients run in threads (``asyncio.to_thread``) so the
server can answer them. The invariants under test (DESIGN.md, STYLE.md "Never
lose a message", BAD_INPUTS B-40..B-43):

* ``250`` only once the raw bytes are committed, and then byte-for-byte;
* ``451`` (never ``500``/``250``) when the database cannot take the mail;
* ``550`` for recipients that are not ours, ``552`` above the size limit,
  ``452`` after the recipient limit;
* no second message smuggled through bare-LF end-of-data tricks;
* LMTP answers one status line per accepted recipient.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from mailbot.config import Settings
from mailbot.errors import StorageUnavailableError
from mailbot.ingest.smtp import InboxHandler, serve
from mailbot.process import Pipeline
from mailbot.store import inbox, schema
from mailbot.store.db import Database
from mailbot.store.models import InboundStatus
from tests.conftest import free_port

SUPPORT = "support@localhost"
CUSTOMER = "customer@example.com"


@dataclass
class Listener:
    port: int
    handler: InboxHandler
    server: asyncio.Server


Start = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def start_listener() -> AsyncIterator[Start]:
    """Start ``serve(...)`` in the test's loop on a free port; closed at teardown."""
    servers: list[asyncio.Server] = []

    async def start(
        db: Database,
        *,
        lmtp: bool = False,
        max_message_size: int = 1024 * 1024,
        max_recipients: int = 100,
    ) -> Listener:
        handler = InboxHandler(db, frozenset({SUPPORT}), max_recipients=max_recipients)
        server = await serve(
            handler,
            host="127.0.0.1",
            port=0,
            lmtp=lmtp,
            max_message_size=max_message_size,
            hostname="mailbot.test",
            idle_timeout=30,
        )
        servers.append(server)
        port = int(server.sockets[0].getsockname()[1])
        return Listener(port=port, handler=handler, server=server)

    yield start
    for server in servers:
        server.close()
    for server in servers:
        await asyncio.wait_for(server.wait_closed(), timeout=10)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    return make_settings(db_url)


def make_mail(subject: str = "Printer on fire", body: str = "Please help.\r\n") -> bytes:
    mid = f"<{uuid.uuid4().hex}@client.example.com>"
    return (
        f"From: Customer <{CUSTOMER}>\r\n"
        f"To: {SUPPORT}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {mid}\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def inbound_rows(db: Database) -> list[tuple[int, str | None, str]]:
    with db.transaction() as session:
        return [
            (int(r[0]), r[1], str(r[2]))
            for r in session.execute(
                text("SELECT id, message_id, status FROM inbound ORDER BY id")
            ).all()
        ]


def stored_raw(db: Database, inbound_id: int) -> bytes:
    found = inbox.get_inbound(db, inbound_id)
    assert found is not None
    return bytes(found[1])


def queued_id(reply: bytes) -> int:
    """The inbound id from ``250 2.0.0 OK: queued as N`` (or LMTP ``delivered as N``)."""
    return int(reply.decode().rsplit(" as ", 1)[1].split()[0])


def smtp_send(
    port: int, msg: bytes | str, rcpts: list[str] | None = None
) -> tuple[dict[str, tuple[int, bytes]], int, bytes]:
    """One transaction over smtplib.SMTP; returns (refused, data code, data reply)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.com")
        client.mail(CUSTOMER)
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in rcpts or [SUPPORT]:
            code, reply = client.rcpt(rcpt)
            if code != 250:
                refused[rcpt] = (code, reply)
        code, reply = client.data(msg)
        return refused, code, reply


# -- mail in, row in, ticket out ------------------------------------------------------------


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_mail_in_row_in_ticket_out(
    db: Database, settings: Settings, start_listener: Start, lmtp: bool
) -> None:
    listener = await start_listener(db, lmtp=lmtp)
    raw = make_mail()
    client_cls = smtplib.LMTP if lmtp else smtplib.SMTP

    def send() -> dict[str, tuple[int, bytes]]:
        with client_cls("127.0.0.1", listener.port, timeout=30) as client:
            return client.sendmail(CUSTOMER, [SUPPORT], raw)

    assert await asyncio.to_thread(send) == {}
    rows = inbound_rows(db)
    assert len(rows) == 1
    inbound_id, _mid, status = rows[0]
    assert status == InboundStatus.received.value
    assert stored_raw(db, inbound_id) == raw
    summary, _ = inbox.get_inbound(db, inbound_id) or (None, b"")
    assert summary is not None
    assert summary.source == ("lmtp" if lmtp else "smtp")
    assert summary.envelope_from == CUSTOMER
    assert summary.envelope_to == (SUPPORT,)

    result = Pipeline(db, settings).process_next()
    assert result is not None
    assert result.outcome == "created", result.error
    assert result.ticket_number is not None
    summary, _ = inbox.get_inbound(db, inbound_id) or (None, b"")
    assert summary is not None
    assert summary.status is InboundStatus.done
    assert summary.ticket_id is not None
    with db.transaction() as session:
        subject = session.execute(
            text("SELECT subject FROM ticket WHERE number = :n"), {"n": result.ticket_number}
        ).scalar_one()
    assert subject == "Printer on fire"


# -- byte-for-byte ------------------------------------------------------------------------

BYTE_CASES: dict[str, tuple[bytes | str, bytes]] = {
    # bytes are sent as they are, apart from dot-stuffing, which the server undoes
    "crlf-bytes": (
        b"Subject: dots\r\nMessage-ID: <dots@client.example.com>\r\n\r\n"
        b".leading dot\r\n..two dots\r\n.\r\n. \r\nend\r\n",
        b"Subject: dots\r\nMessage-ID: <dots@client.example.com>\r\n\r\n"
        b".leading dot\r\n..two dots\r\n.\r\n. \r\nend\r\n",
    ),
    # a str message: smtplib turns bare LF and bare CR into CRLF
    "lf-str": (
        "Subject: lf\nMessage-ID: <lf@client.example.com>\n\n.dot\nline\rtwo\n",
        b"Subject: lf\r\nMessage-ID: <lf@client.example.com>\r\n\r\n.dot\r\nline\r\ntwo\r\n",
    ),
    # no final line break: the client adds CRLF before the terminating dot
    "no-final-eol": (
        b"Subject: eol\r\nMessage-ID: <eol@client.example.com>\r\n\r\nno newline",
        b"Subject: eol\r\nMessage-ID: <eol@client.example.com>\r\n\r\nno newline\r\n",
    ),
    "8bit-utf8": (
        "Subject: =?utf-8?b?0J/RgNC40LLQtdGC?=\r\nMessage-ID: <u8@client.example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Принтер горит\r\n\x00nul and \xff\r\n".encode("utf-8", "surrogateescape"),
        "Subject: =?utf-8?b?0J/RgNC40LLQtdGC?=\r\nMessage-ID: <u8@client.example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Принтер горит\r\n\x00nul and \xff\r\n".encode("utf-8", "surrogateescape"),
    ),
}


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
@pytest.mark.parametrize("case", sorted(BYTE_CASES))
async def test_every_250_is_stored_byte_for_byte(
    db: Database, start_listener: Start, case: str, lmtp: bool
) -> None:
    sent, expected = BYTE_CASES[case]
    listener = await start_listener(db, lmtp=lmtp)
    client_cls = smtplib.LMTP if lmtp else smtplib.SMTP

    def send() -> tuple[int, bytes]:
        with client_cls("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            assert client.mail(CUSTOMER)[0] == 250
            assert client.rcpt(SUPPORT)[0] == 250
            return client.data(sent)

    code, reply = await asyncio.to_thread(send)
    assert code == 250, reply
    inbound_id = queued_id(reply)
    assert stored_raw(db, inbound_id) == expected
    assert [r[0] for r in inbound_rows(db)] == [inbound_id]


async def test_many_messages_on_one_connection_each_stored_as_acknowledged(
    db: Database, start_listener: Start
) -> None:
    listener = await start_listener(db)
    mails = [make_mail(subject=f"n{i}", body=f".{i}\r\n" * (i + 1)) for i in range(20)]

    def send() -> list[tuple[int, bytes]]:
        replies = []
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo("client.example.com")
            for raw in mails:
                client.mail(CUSTOMER)
                client.rcpt(SUPPORT)
                replies.append(client.data(raw))
        return replies

    replies = await asyncio.to_thread(send)
    assert [code for code, _ in replies] == [250] * len(mails)
    for raw, (_, reply) in zip(mails, replies, strict=True):
        assert stored_raw(db, queued_id(reply)) == raw
    assert len(inbound_rows(db)) == len(mails)


# -- LMTP: one reply per recipient ------------------------------------------------------------


async def test_lmtp_two_recipients_one_250_each(db: Database, start_listener: Start) -> None:
    listener = await start_listener(db, lmtp=True)
    rcpts = [SUPPORT, "support+billing@localhost"]
    raw_low, raw_high = make_mail(subject="low level"), make_mail(subject="high level")

    def low_level() -> list[tuple[int, bytes]]:
        with smtplib.LMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            assert client.mail(CUSTOMER)[0] == 250
            for rcpt in rcpts:
                assert client.rcpt(rcpt)[0] == 250
            # data() reads the first status line; LMTP sends one per recipient
            replies = [client.data(raw_low)]
            replies.append(client.getreply())
            # the connection is in step again: the next command gets its own reply
            assert client.noop()[0] == 250
            return replies

    replies = await asyncio.to_thread(low_level)
    assert [code for code, _ in replies] == [250, 250]
    for (_, reply), rcpt in zip(replies, rcpts, strict=True):
        assert f"<{rcpt}>".encode() in reply
    ids = {queued_id(reply) for _, reply in replies}
    assert len(ids) == 1  # one stored mail, delivered to both recipients
    (inbound_id,) = ids
    assert stored_raw(db, inbound_id) == raw_low
    summary, _ = inbox.get_inbound(db, inbound_id) or (None, b"")
    assert summary is not None
    assert summary.envelope_to == tuple(rcpts)

    def high_level() -> dict[str, tuple[int, bytes]]:
        with smtplib.LMTP("127.0.0.1", listener.port, timeout=30) as client:
            refused = client.sendmail(CUSTOMER, rcpts, raw_high)
            client.getreply()  # the second recipient's status line
            return refused

    assert await asyncio.to_thread(high_level) == {}
    assert len(inbound_rows(db)) == 2


async def test_lmtp_one_refused_recipient_gets_no_status_line(
    db: Database, start_listener: Start
) -> None:
    listener = await start_listener(db, lmtp=True)
    raw = make_mail()

    def send() -> tuple[dict[str, tuple[int, bytes]], int]:
        with smtplib.LMTP("127.0.0.1", listener.port, timeout=30) as client:
            refused = client.sendmail(CUSTOMER, [SUPPORT, "someone@example.org"], raw)
            # exactly one status line was due: the next reply is NOOP's own
            return refused, client.noop()[0]

    refused, noop = await asyncio.to_thread(send)
    assert list(refused) == ["someone@example.org"]
    assert refused["someone@example.org"][0] == 550
    assert noop == 250
    assert len(inbound_rows(db)) == 1


# -- recipients: plus addresses, relaying, limits ---------------------------------------------


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_plus_address_is_accepted(db: Database, start_listener: Start, lmtp: bool) -> None:
    listener = await start_listener(db, lmtp=lmtp)
    client_cls = smtplib.LMTP if lmtp else smtplib.SMTP

    def send() -> dict[str, tuple[int, bytes]]:
        with client_cls("127.0.0.1", listener.port, timeout=30) as client:
            return client.sendmail(CUSTOMER, ["Support+42@LOCALHOST"], make_mail())

    assert await asyncio.to_thread(send) == {}
    assert len(inbound_rows(db)) == 1


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("someone@example.org", 550),
        ("support@example.org", 550),
        ("support@localhost.example.org", 550),
        ("supportx@localhost", 550),
        ("support+42@example.org", 550),
        # a source route: refused by aiosmtpd's address syntax check already
        ("@localhost:someone@example.org", 553),
    ],
)
async def test_relaying_refused_550(
    db: Database, start_listener: Start, rcpt: str, expected: int
) -> None:
    """B-40: never an open relay."""
    listener = await start_listener(db)

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo("client.example.com")
            assert client.mail(CUSTOMER)[0] == 250
            return client.rcpt(rcpt)

    code, _reply = await asyncio.to_thread(send)
    assert code == expected
    assert inbound_rows(db) == []

    def sendmail() -> None:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.sendmail(CUSTOMER, [rcpt], make_mail())

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(sendmail)
    assert refused.value.recipients[rcpt][0] == expected
    assert inbound_rows(db) == []


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_oversize_552_and_nothing_stored(
    db: Database, start_listener: Start, lmtp: bool
) -> None:
    listener = await start_listener(db, lmtp=lmtp, max_message_size=2000)
    big = make_mail(body="x" * 70 + "\r\n" + ("y" * 76 + "\r\n") * 100)
    small = make_mail()
    client_cls = smtplib.LMTP if lmtp else smtplib.SMTP

    def send() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with client_cls("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            # the SIZE parameter is checked at MAIL FROM ...
            declared = client.mail(CUSTOMER, [f"SIZE={len(big)}"])
            client.rset()
            # ... and the real size during DATA, for a client that does not declare it
            client.mail(CUSTOMER)
            client.rcpt(SUPPORT)
            reply = client.data(big)
            client.rset()
            # the session goes on: the next (small) mail is taken
            client.mail(CUSTOMER)
            client.rcpt(SUPPORT)
            assert client.data(small)[0] == 250
            return declared, reply

    declared, reply = await asyncio.to_thread(send)
    assert declared[0] == 552
    assert reply[0] == 552
    rows = inbound_rows(db)
    assert len(rows) == 1
    assert stored_raw(db, rows[0][0]) == small


async def test_thousands_of_rcpt_get_452_after_the_limit(
    db: Database, start_listener: Start
) -> None:
    """B-42: a recipient limit, with 4xx so that the sender retries the rest."""
    limit = 50
    listener = await start_listener(db, max_recipients=limit)

    def send() -> tuple[list[int], tuple[int, bytes]]:
        codes = []
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=60) as client:
            client.ehlo("client.example.com")
            client.mail(CUSTOMER)
            for i in range(3000):
                codes.append(client.rcpt(f"support+{i}@localhost")[0])
            return codes, client.data(make_mail())

    codes, data_reply = await asyncio.to_thread(send)
    assert codes[:limit] == [250] * limit
    assert set(codes[limit:]) == {452}
    assert data_reply[0] == 250
    rows = inbound_rows(db)
    assert len(rows) == 1
    summary, _ = inbox.get_inbound(db, rows[0][0]) or (None, b"")
    assert summary is not None
    assert len(summary.envelope_to) == limit


# -- duplicates -----------------------------------------------------------------------------


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_duplicate_delivery_250_twice_one_row(
    db: Database, settings: Settings, start_listener: Start, lmtp: bool
) -> None:
    listener = await start_listener(db, lmtp=lmtp)
    first = make_mail()
    # the same Message-ID with other bytes (a resend with a new Received header)
    second = b"Received: from relay.example.com by mx.example.com\r\n" + first
    client_cls = smtplib.LMTP if lmtp else smtplib.SMTP

    def send(raw: bytes) -> tuple[int, bytes]:
        with client_cls("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            client.mail(CUSTOMER)
            client.rcpt(SUPPORT)
            return client.data(raw)

    replies = [await asyncio.to_thread(send, raw) for raw in (first, first, second)]
    assert [code for code, _ in replies] == [250, 250, 250]
    assert len({queued_id(reply) for _, reply in replies}) == 1
    assert len(inbound_rows(db)) == 1
    assert stored_raw(db, queued_id(replies[0][1])) == first
    pipeline = Pipeline(db, settings)
    assert pipeline.process_next() is not None
    assert pipeline.process_next() is None
    # a redelivery after processing is still a no-op success
    assert (await asyncio.to_thread(send, first))[0] == 250
    assert len(inbound_rows(db)) == 1
    with db.transaction() as session:
        assert session.execute(text("SELECT count(*) FROM ticket")).scalar_one() == 1


# -- B-41: end-of-data smuggling -----------------------------------------------------------


def _read_reply(sock_file: socket.SocketIO, buffer: bytearray) -> bytes:
    """Read one complete (possibly multi-line) SMTP reply from a raw socket."""
    lines = []
    while True:
        while b"\r\n" not in buffer:
            chunk = sock_file.read(4096)
            if not chunk:
                raise ConnectionError(f"connection closed; got {bytes(buffer)!r}")
            buffer.extend(chunk)
        line, _, rest = bytes(buffer).partition(b"\r\n")
        buffer[:] = rest
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"\r\n".join(lines)


def _drain_replies(sock: socket.socket, buffer: bytearray, seconds: float) -> list[bytes]:
    """Every further reply line the server sends within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buffer.extend(chunk)
    except TimeoutError:
        pass
    return [line for line in bytes(buffer).split(b"\r\n") if line]


SMUGGLED = (
    b"MAIL FROM:<evil@attacker.example>\r\n"
    b"RCPT TO:<support@localhost>\r\n"
    b"DATA\r\n"
    b"From: evil@attacker.example\r\n"
    b"Subject: SMUGGLED-SECOND-MESSAGE\r\n"
    b"Message-ID: <smuggled@attacker.example>\r\n"
    b"\r\n"
    b"smuggled body\r\n"
)

SMUGGLE_TRICKS = {
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-cr": b"\r\n.\r",
    "lf-dot-crlf-crlf": b"\n.\r\n\r\n",
}


@pytest.mark.parametrize("trick", sorted(SMUGGLE_TRICKS))
async def test_bare_lf_end_of_data_smuggling(
    db: Database, start_listener: Start, trick: str
) -> None:
    """B-41: a bare-LF end-of-data must not end the mail and start a second one."""
    listener = await start_listener(db)
    first = (
        b"From: customer@example.com\r\n"
        b"To: support@localhost\r\n"
        b"Subject: innocent\r\n"
        b"Message-ID: <innocent@client.example.com>\r\n"
        b"\r\n"
        b"innocent body"
    )
    payload = first + SMUGGLE_TRICKS[trick] + SMUGGLED + b".\r\n"

    def converse() -> tuple[list[bytes], list[bytes]]:
        replies = []
        with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
            reader = sock.makefile("rb", buffering=0)
            buffer = bytearray()
            try:
                replies.append(_read_reply(reader, buffer))  # 220
                for command in (
                    b"EHLO client.example.com\r\n",
                    b"MAIL FROM:<customer@example.com>\r\n",
                    b"RCPT TO:<support@localhost>\r\n",
                    b"DATA\r\n",
                ):
                    sock.sendall(command)
                    replies.append(_read_reply(reader, buffer))
                sock.sendall(payload)
                replies.append(_read_reply(reader, buffer))  # end of the real DATA
                sock.sendall(b"QUIT\r\n")
                rest = _drain_replies(sock, buffer, 2.0)
            finally:
                reader.close()
        return replies, rest

    replies, rest = await asyncio.to_thread(converse)
    assert replies[4].startswith(b"354"), replies
    final = replies[5]
    # rejected or normalised: either a refusal, or one 250 for one mail
    assert final[:1] in (b"2", b"5"), final
    # after the one DATA reply, only QUIT's 221: no reply to smuggled commands
    assert [line[:3] for line in rest] == [b"221"], rest
    rows = inbound_rows(db)
    assert len(rows) <= 1
    assert all(mid != "smuggled@attacker.example" for _, mid, _ in rows)
    if final.startswith(b"250"):
        assert len(rows) == 1
        raw = stored_raw(db, rows[0][0])
        assert raw.startswith(first)
        assert b"SMUGGLED-SECOND-MESSAGE" in raw
        assert b"MAIL FROM:<evil@attacker.example>" in raw
    else:
        assert rows == []


# -- group commit: concurrent sessions share a transaction -------------------------------------


@pytest.mark.parametrize("poisoned", [False, True], ids=["all-good", "one-refused"])
async def test_sessions_ending_during_a_commit_share_the_next_one(
    db: Database, start_listener: Start, monkeypatch: pytest.MonkeyPatch, poisoned: bool
) -> None:
    """Five mails that end DATA while a commit runs go in together; each gets its own answer.

    When the database refuses one of them, the commit is tried mail by mail and
    only that mail's sender gets ``451``.
    """
    entered, release = threading.Event(), threading.Event()
    batches: list[int] = []
    commit = inbox.accept_deliveries

    def slow_first(db_: Database, deliveries: list[inbox.Delivery]) -> list[inbox.Accepted]:
        batches.append(len(deliveries))
        if len(batches) == 1:
            entered.set()
            assert release.wait(10)
        if any(b"X-Poison: yes" in d.raw for d in deliveries):
            raise StorageUnavailableError("refused")
        return commit(db_, deliveries)

    monkeypatch.setattr(inbox, "accept_deliveries", slow_first)
    listener = await start_listener(db)
    mails = [make_mail(subject=f"mail {n}") for n in range(6)]
    if poisoned:
        mails[3] = mails[3].replace(b"\r\n\r\n", b"\r\nX-Poison: yes\r\n\r\n", 1)

    def send(raw: bytes) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            client.mail(CUSTOMER)
            client.rcpt(SUPPORT)
            return client.data(raw)

    # The clients get threads of their own: the loop's default executor runs the commits.
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=len(mails)) as clients:
        first = loop.run_in_executor(clients, send, mails[0])
        assert await asyncio.to_thread(entered.wait, 10)
        others = [loop.run_in_executor(clients, send, raw) for raw in mails[1:]]
        for _ in range(1000):
            if listener.handler.commits.waiting == 5:
                break
            await asyncio.sleep(0.01)
        assert listener.handler.commits.waiting == 5
        release.set()
        answers = [await first] + [await task for task in others]

    expected = [451 if poisoned and n == 3 else 250 for n in range(6)]
    assert [code for code, _ in answers] == expected
    assert batches == ([1, 5, 1, 1, 1, 1, 1] if poisoned else [1, 5])
    stored = {
        queued_id(reply): raw
        for (code, reply), raw in zip(answers, mails, strict=True)
        if code == 250
    }
    assert len(stored) == expected.count(250)
    for inbound_id, raw in stored.items():
        assert stored_raw(db, inbound_id) == raw
    assert len(inbound_rows(db)) == len(stored)


# -- B-43: database down -> 451, nothing acknowledged -----------------------------------------


def _dead_postgres() -> Database:
    """A PostgreSQL URL whose port has nothing listening."""
    return Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")


def _sqlite_on_a_directory(tmp_path: Path) -> Database:
    path = tmp_path / "is-a-directory.db"
    path.mkdir()
    return Database(f"sqlite:///{path}")


def _sqlite_read_only(tmp_path: Path) -> Database:
    path = tmp_path / "ro" / "mailbot.db"
    writable = Database(f"sqlite:///{path}")
    schema.upgrade(writable)
    writable.close()
    # root ignores file modes, so open the file read-only through SQLite itself
    return Database(f"sqlite:///file:{path}?mode=ro&uri=true")


def _sqlite_without_schema(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'empty.db'}")


BROKEN_DATABASES: dict[str, Callable[[Path], Database]] = {
    "postgres-nothing-listening": lambda _tmp: _dead_postgres(),
    "sqlite-file-is-a-directory": _sqlite_on_a_directory,
    "sqlite-read-only": _sqlite_read_only,
    "sqlite-no-schema": _sqlite_without_schema,
}


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
@pytest.mark.parametrize("broken", sorted(BROKEN_DATABASES))
async def test_database_down_451_and_nothing_acknowledged(
    start_listener: Start, tmp_path: Path, broken: str, lmtp: bool
) -> None:
    """B-43: no 250 without a commit; 451 (never 5xx) so that the MTA keeps the mail."""
    db = BROKEN_DATABASES[broken](tmp_path)
    try:
        listener = await start_listener(db, lmtp=lmtp)
        client_cls = smtplib.LMTP if lmtp else smtplib.SMTP

        def send() -> None:
            with client_cls("127.0.0.1", listener.port, timeout=30) as client:
                client.sendmail(CUSTOMER, [SUPPORT], make_mail())

        with pytest.raises(smtplib.SMTPResponseException) as failed:
            await asyncio.to_thread(send)
        assert isinstance(failed.value, smtplib.SMTPDataError)
        assert failed.value.smtp_code == 451
    finally:
        db.close()


async def test_database_down_then_up_again(
    db: Database, settings: Settings, start_listener: Start
) -> None:
    """The same mail refused with 451 while the database is away is taken after it is back."""
    dead = _dead_postgres()
    raw = make_mail()
    try:
        down = await start_listener(dead)

        def send(port: int) -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo_or_helo_if_needed()
                client.mail(CUSTOMER)
                client.rcpt(SUPPORT)
                return client.data(raw)

        assert (await asyncio.to_thread(send, down.port))[0] == 451
        up = await start_listener(db)
        code, reply = await asyncio.to_thread(send, up.port)
        assert code == 250
        assert stored_raw(db, queued_id(reply)) == raw
    finally:
        dead.close()


async def test_lmtp_database_down_one_451_per_recipient(
    start_listener: Start, tmp_path: Path
) -> None:
    """RFC 2033 4.2: a failed DATA still gets one status line per accepted recipient."""
    db = _dead_postgres()
    try:
        listener = await start_listener(db, lmtp=True)

        def send() -> list[int]:
            with smtplib.LMTP("127.0.0.1", listener.port, timeout=3) as client:
                client.ehlo_or_helo_if_needed()
                client.mail(CUSTOMER)
                client.rcpt(SUPPORT)
                client.rcpt("support+2@localhost")
                codes = [client.data(make_mail())[0]]
                try:
                    codes.append(client.getreply()[0])
                except smtplib.SMTPServerDisconnected:
                    codes.append(-1)  # timed out waiting for the second line
                return codes

        assert await asyncio.to_thread(send) == [451, 451]
    finally:
        db.close()


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_after_a_451_the_session_takes_the_next_mail_without_rset(
    start_listener: Start, lmtp: bool
) -> None:
    """RFC 5321 4.1.1.4: after the reply to the end of DATA the transaction is over."""
    dead = _dead_postgres()
    try:
        listener = await start_listener(dead, lmtp=lmtp)
        client_cls = smtplib.LMTP if lmtp else smtplib.SMTP

        def send() -> tuple[int, int]:
            with client_cls("127.0.0.1", listener.port, timeout=10) as client:
                client.ehlo_or_helo_if_needed()
                client.mail(CUSTOMER)
                client.rcpt(SUPPORT)
                code = client.data(make_mail())[0]
                return code, client.mail(CUSTOMER)[0]

        assert await asyncio.to_thread(send) == (451, 250)
    finally:
        dead.close()
