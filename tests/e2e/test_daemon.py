"""`mailbot run` as a subprocess: mail in, ticket out; clean SIGTERM; SIGKILL under load.

The KILL test is the end-to-end proof of invariants 1 and 2 of DESIGN.md: a
burst of mail from concurrent SMTP clients, the daemon killed with SIGKILL at
random moments and restarted, the clients retrying whatever did not get a
``250`` (as an MTA would). Afterwards every acknowledged Message-ID is stored
exactly once, processed once, and has one ticket; replaying the whole burst
creates nothing new.
"""

from __future__ import annotations

import contextlib
import email.policy
import json
import mailbox
import os
import queue
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import text

from mailbot.store.db import Database
from tests.conftest import PostgresServer, free_port

pytestmark = pytest.mark.e2e

SUPPORT = "support@localhost"
START_TIMEOUT = 30.0


class DaemonProcess:
    """One data dir, one database, and the `mailbot run` process serving them."""

    def __init__(self, tmp: Path, database_url: str = "", **extra_env: str) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "var"
        self.cwd = tmp / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "daemon.log"
        self.smtp_port = free_port()
        self.lmtp_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
        self.env.update(
            {
                "MAILBOT_DATA_DIR": str(self.data_dir),
                "MAILBOT_SMTP__PORT": str(self.smtp_port),
                "MAILBOT_LMTP__ENABLED": "true",
                "MAILBOT_LMTP__PORT": str(self.lmtp_port),
                "MAILBOT_INBOX__POLL_SECONDS": "0.5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if database_url:
            self.env["MAILBOT_DATABASE_URL"] = database_url
        self.env.update(extra_env)
        self.database_url = database_url or f"sqlite:///{(self.data_dir / 'mailbot.db').resolve()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- the CLI and the process ---------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "mailbot", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            pytest.fail(f"mailbot {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def upgrade(self) -> None:
        self.cli("db", "upgrade")

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log_path.open("ab") as log:
            log.write(f"---- start {self.starts} ----\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailbot", "run"],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.starts += 1
        self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until both listeners accept connections; fail with the log if the daemon dies."""
        deadline = time.monotonic() + timeout
        for port in (self.smtp_port, self.lmtp_port):
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    pytest.fail(f"daemon exited {self.proc.returncode}:\n{self.log()[-5000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"port {port} not open after {timeout}s:\n{self.log()[-5000:]}")
                    time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- looking into the database ----------------------------------------------------

    def database(self) -> Database:
        return Database(self.database_url)

    def wait_idle(self, db: Database, timeout: float) -> dict[str, int]:
        """Until no inbound row is ``received`` or ``processing``; the status counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = status_counts(db)
            if not counts.get("received") and not counts.get("processing"):
                return counts
            if not self.alive():
                pytest.fail(f"daemon died:\n{self.log()[-5000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"inbox not drained after {timeout}s: {counts}")
            time.sleep(0.25)


def status_counts(db: Database) -> dict[str, int]:
    with db.transaction() as session:
        rows = session.execute(text("SELECT status, count(*) FROM inbound GROUP BY status"))
        return {str(s): int(n) for s, n in rows.all()}


def scalar(db: Database, sql: str) -> int:
    with db.transaction() as session:
        return int(session.execute(text(sql)).scalar_one())


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(database_url: str = "", **extra_env: str) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"d{len(made)}", database_url, **extra_env)
        made.append(daemon)
        daemon.upgrade()
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


def build_mail(
    mid: str, subject: str, body: str = "Hello, support.\n", sender: str = "c@example.com"
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer <{sender}>"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{mid}>"
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


# -- (a) mail in, ticket out ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_mail_in_ticket_out(daemons: Callable[..., DaemonProcess], protocol: str) -> None:
    daemon = daemons()
    daemon.start()
    subject = f"Cannot log in over {protocol}"
    raw = build_mail(f"a-{protocol}@client.example.com", subject, sender="anna@example.com")
    client_cls = smtplib.LMTP if protocol == "lmtp" else smtplib.SMTP
    port = daemon.lmtp_port if protocol == "lmtp" else daemon.smtp_port
    with client_cls("127.0.0.1", port, timeout=30) as client:
        assert client.sendmail("anna@example.com", [SUPPORT], raw) == {}

    found: list[dict[str, object]] = []

    def ticket_listed() -> bool:
        rows = json.loads(daemon.cli("ticket", "list", "--json").stdout)
        found[:] = [r for r in rows if r["subject"] == subject]
        return bool(found)

    wait_for(ticket_listed, 30, "the ticket to be listed")
    assert found[0]["requester"] == "anna@example.com"
    assert found[0]["status"] == "new"
    inbound = json.loads(daemon.cli("inbox", "list", "--json", "--limit", "5").stdout)
    assert len(inbound) == 1
    assert inbound[0]["status"] == "done"
    assert daemon.alive()


# -- (b) SIGTERM ------------------------------------------------------------------------------


def test_sigterm_exits_0_with_stable_events(daemons: Callable[..., DaemonProcess]) -> None:
    daemon = daemons()
    daemon.start()
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
        client.sendmail("b@example.com", [SUPPORT], build_mail("b@client.example.com", "x"))
    started = time.monotonic()
    assert daemon.terminate(timeout=10) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 10
    log = daemon.log()
    assert "daemon_started" in log
    assert log.index("daemon_stopping") < log.index("daemon_stopped")
    assert "Traceback" not in log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", daemon.smtp_port), 1).close()
    # the acknowledged mail is in the database (processed before or after the stop)
    db = daemon.database()
    try:
        assert scalar(db, "SELECT count(*) FROM inbound") == 1
    finally:
        db.close()


# -- (b2) several pipeline workers keep conversations in order ----------------------------------


def test_workers_keep_every_conversation_on_its_ticket(
    daemons: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """4 workers start on a backlog in which each customer's first mail is followed at
    once by two replies that thread only by References: a reply processed before
    its first mail committed would open a ticket of its own."""
    daemon = daemons(MAILBOT_INBOX__WORKERS="4")
    customers = 40
    box = mailbox.mbox(str(tmp_path / "backlog.mbox"))
    for n in range(customers):
        sender = f"cust{n}@example.com"
        first_id = f"first-{n}@client.example.com"
        box.add(build_mail(first_id, f"Problem {n}", sender=sender))
        for r in range(2):
            reply = EmailMessage()
            reply["From"] = f"Customer <{sender}>"
            reply["To"] = SUPPORT
            reply["Subject"] = f"more about problem {n}"
            reply["Message-ID"] = f"<reply-{n}-{r}@client.example.com>"
            reply["References"] = f"<{first_id}>"
            reply.set_content(f"Reply {r}.\n")
            box.add(reply.as_bytes(policy=email.policy.SMTP))
    box.close()
    daemon.cli("ingest", "--mbox", str(tmp_path / "backlog.mbox"), "--no-process")
    daemon.start()
    db = daemon.database()
    try:
        assert daemon.wait_idle(db, timeout=60) == {"done": customers * 3}
        assert scalar(db, "SELECT count(*) FROM ticket") == customers
        full = scalar(
            db,
            "SELECT count(*) FROM (SELECT ticket_id FROM message WHERE direction = 'inbound' "
            "GROUP BY ticket_id HAVING count(*) = 3) AS full_tickets",
        )
        assert full == customers
    finally:
        db.close()
    assert daemon.terminate(timeout=10) == 0
    assert "Traceback" not in daemon.log()


# -- (c) SIGKILL under load, (d) replay ----------------------------------------------------------

BURST_SIZE = 1000
CLIENTS = 8
KILLS = 3
RUSSIAN_SUBJECTS = [
    "Не работает принтер",
    "Ошибка при входе в личный кабинет",
    "Срочно: сервер недоступен",
    "Вопрос по счёту № 42",
]


def make_burst(seed: int, size: int = BURST_SIZE) -> list[tuple[str, bytes]]:
    """Distinct mail: unique Message-IDs, some attachments, some RFC 2047 Russian subjects."""
    rng = random.Random(seed)
    burst = []
    for i in range(size):
        mid = f"burst-{seed}-{i}@client.example.com"
        if i % 3 == 0:
            subject = f"{rng.choice(RUSSIAN_SUBJECTS)} ({i})"
        else:
            subject = f"Burst mail {i} of seed {seed}"
        msg = EmailMessage()
        msg["From"] = f"Клиент {i % 37} <customer{i % 37}@example.com>"
        msg["To"] = SUPPORT
        msg["Subject"] = subject
        msg["Message-ID"] = f"<{mid}>"
        msg["Date"] = "Tue, 02 Jan 2024 09:00:00 +0300"
        msg.set_content(f"Message {i}.\n" + "Текст письма. " * rng.randint(1, 40) + "\n")
        if i % 5 == 0:
            msg.add_attachment(
                rng.randbytes(rng.randint(100, 20_000)),
                maintype="application",
                subtype="octet-stream",
                filename=f"отчёт-{i}.bin",
            )
        raw = msg.as_bytes(policy=email.policy.SMTP)
        assert b"=?utf-8?" in raw or i % 3 != 0  # the Russian subject is RFC 2047 encoded
        burst.append((mid, raw))
    return burst


@dataclass
class BurstResult:
    acked: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    gave_up: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_burst(
    port: int,
    burst: list[tuple[str, bytes]],
    *,
    clients: int = CLIENTS,
    retry: bool = True,
    deadline: float = 180.0,
    result: BurstResult | None = None,
) -> tuple[BurstResult, list[threading.Thread]]:
    """Start ``clients`` sender threads; each keeps a connection and retries like an MTA."""
    result = result or BurstResult()
    work: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    for item in burst:
        work.put(item)
    give_up_at = time.monotonic() + deadline

    def close(client: smtplib.SMTP | None) -> None:
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()

    def worker() -> None:
        client: smtplib.SMTP | None = None
        while True:
            try:
                mid, raw = work.get_nowait()
            except queue.Empty:
                break
            while True:
                try:
                    if client is None:
                        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
                        client.ehlo("client.example.com")
                    client.sendmail("sender@example.com", [SUPPORT], raw)
                except (smtplib.SMTPException, OSError) as exc:
                    close(client)
                    client = None
                    code = getattr(exc, "smtp_code", None)
                    with result.lock:
                        result.failures[f"{type(exc).__name__}:{code}"] += 1
                    if not retry or time.monotonic() > give_up_at:
                        with result.lock:
                            result.gave_up.append(mid)
                        break
                    time.sleep(0.05)
                    continue
                with result.lock:
                    result.acked.append(mid)
                break
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                close(client)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return result, threads


def kill_test(daemon: DaemonProcess, seed: int) -> None:
    rng = random.Random(seed)
    burst = make_burst(seed)
    by_mid = dict(burst)
    timings: dict[str, float] = {}
    started = time.monotonic()
    daemon.start()
    # kill when the acknowledged count passes random marks (always mid-burst),
    # plus a random few milliseconds so the kill lands anywhere in a transaction
    marks = sorted(rng.sample(range(BURST_SIZE // 10, BURST_SIZE * 9 // 10), KILLS))
    result, threads = send_burst(daemon.smtp_port, burst)
    kills = []
    for mark in marks:
        while len(result.acked) < mark and any(t.is_alive() for t in threads):
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        kills.append(len(result.acked))
        daemon.kill()
        time.sleep(rng.uniform(0, 0.3))  # clients meet a closed port for a while
        daemon.start()
    for thread in threads:
        thread.join(timeout=180)
        assert not thread.is_alive(), "a sender thread hung"
    timings["send"] = time.monotonic() - started
    assert len(kills) == KILLS
    assert daemon.starts == KILLS + 1
    assert result.gave_up == [], f"gave up on {len(result.gave_up)}: {result.failures}"

    db = daemon.database()
    try:
        counts = daemon.wait_idle(db, timeout=120)
        timings["drain"] = time.monotonic() - started - timings["send"]
        acked = Counter(result.acked)
        # every message was acknowledged (retries until 250), once per client success
        assert set(acked) == set(by_mid)
        with db.transaction() as session:
            stored_rows = session.execute(
                text("SELECT id, message_id, status, ticket_id, last_error FROM inbound")
            ).all()
            ticket_numbers = [
                int(n) for n in session.execute(text("SELECT number FROM ticket")).scalars()
            ]
            message_inbound = [
                int(i)
                for i in session.execute(
                    text("SELECT inbound_id FROM message WHERE inbound_id IS NOT NULL")
                ).scalars()
            ]
        stored = Counter(str(r.message_id) for r in stored_rows)
        assert not [m for m in acked if stored[m] != 1], "acknowledged but not stored once"
        assert set(stored) == set(by_mid), "stored mail that was never sent"
        shunted = [(r.message_id, r.last_error) for r in stored_rows if r.status == "shunted"]
        assert shunted == [], f"quarantined: {shunted[:3]}"
        assert counts == {"done": len(by_mid)}
        assert all(r.ticket_id is not None for r in stored_rows)
        assert len({r.ticket_id for r in stored_rows}) == len(by_mid)
        assert len(ticket_numbers) == len(by_mid)
        assert len(set(ticket_numbers)) == len(ticket_numbers), "a ticket number repeats"
        # each inbound row was turned into exactly one ticket message: processed once
        assert sorted(message_inbound) == sorted(r.id for r in stored_rows)
        attachments = scalar(db, "SELECT count(*) FROM attachment")
        assert attachments == sum(1 for i in range(BURST_SIZE) if i % 5 == 0)

        # (d) the same bytes again: 250 for all, nothing new
        replay_started = time.monotonic()
        replay, threads = send_burst(daemon.smtp_port, burst, retry=False)
        for thread in threads:
            thread.join(timeout=180)
            assert not thread.is_alive(), "a sender thread hung"
        assert replay.gave_up == [], f"replay refused: {replay.failures}"
        assert sorted(replay.acked) == sorted(by_mid)
        assert daemon.wait_idle(db, timeout=60) == {"done": len(by_mid)}
        assert scalar(db, "SELECT count(*) FROM inbound") == len(by_mid)
        assert scalar(db, "SELECT count(*) FROM ticket") == len(by_mid)
        assert scalar(db, "SELECT count(*) FROM message WHERE direction = 'inbound'") == len(by_mid)
        timings["replay"] = time.monotonic() - replay_started
    finally:
        db.close()
    assert daemon.alive()
    assert daemon.terminate(timeout=10) == 0
    print(
        f"\nkill test seed={seed} db={daemon.database_url.split(':')[0]} "
        f"messages={len(by_mid)} kills at acked={kills} "
        f"client errors={dict(result.failures)} "
        + " ".join(f"{k}={v:.1f}s" for k, v in timings.items())
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_under_load_loses_nothing_sqlite(
    daemons: Callable[..., DaemonProcess], seed: int
) -> None:
    kill_test(daemons(), seed)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("workers", ["2", "4"])
def test_sigkill_under_load_loses_nothing_postgres(
    daemons: Callable[..., DaemonProcess], pg_server: PostgresServer, workers: str
) -> None:
    # On PostgreSQL a dead daemon's claims are taken back only after the lease,
    # so the lease is short here; processing one of these mails takes milliseconds.
    # The workers' transactions run side by side here (on SQLite they take turns).
    daemon = daemons(
        pg_server.create_database(),
        MAILBOT_INBOX__LEASE_SECONDS="4",
        MAILBOT_INBOX__WORKERS=workers,
    )
    kill_test(daemon, 4)
