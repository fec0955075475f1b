"""End-to-end ingest benchmark for mailbot: mbox import and SMTP, SQLite and PostgreSQL.

Generates a deterministic mail corpus (60 % new mails, 40 % replies threading
onto earlier tickets, 10 % with a 5-50 KB binary attachment, English, German
and Russian text), then for each backend and mode:

* mbox: ``python -m mailbot ingest --mbox FILE`` as a child process on a fresh
  database; wall time from spawn to exit (accept + process); peak memory is the
  larger of the child's ``ru_maxrss`` from ``os.wait4`` and the SUM of ``VmHWM``
  over the child and its parser processes, sampled every 0.1 s. With ``--processes N``: the same
  accept with ``--no-process``, then N ``mailbot ingest`` processes (one worker
  each) drain the inbox together; peak memory is the SUM of their peaks.
* smtp: ``python -m mailbot run`` as a child process; 8 client threads send
  every mail with smtplib; the clock runs from the first send until the inbox
  is drained (no row ``received`` or ``processing``); peak memory is the SUM of
  ``VmHWM`` over the daemon and any process it started, read just before SIGTERM.

``--workers N`` sets ``inbox.workers`` (pipeline threads) of every child.
``--parse-processes N`` sets ``parse.processes`` (parser children) of every child.

It also runs the *floor*: an in-process loop that parses each mail with the
standard library and commits one row per mail to a fresh SQLite file (WAL,
``synchronous=NORMAL``, like the inbox). Every run is checked afterwards:
tickets == new mails, messages == mails, every inbound row ``done``.

    .venv/bin/python bench/ingest.py --count 2000 --backend sqlite --mode mbox
    .venv/bin/python bench/ingest.py                 # 10,000 mails, everything
    .venv/bin/python bench/ingest.py --workers 1     # one pipeline thread
    .venv/bin/python bench/ingest.py --mode mbox --processes 2   # two processes instead
    .venv/bin/python bench/ingest.py --profile 2000  # cProfile of one mbox ingest
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import email
import email.policy
import io
import mailbox
import os
import platform
import pstats
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path
from random import Random

from sqlalchemy import create_engine, text

from mailbot.testing import PostgresServer, free_port

SUPPORT = "support@localhost"
CLIENTS = 8
#: Give up on a run when the inbox makes no progress for this long.
STALL_SECONDS = 120.0
TARGET_RATIO = 0.5
TARGET_RSS_MB = 150.0

# -- corpus ----------------------------------------------------------------------------

FIRST = ["Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Henry", "Ivy", "Jack"]
LAST = ["Smith", "Jones", "Brown", "Taylor", "Wilson", "Evans", "Clark", "Hall", "Wright"]
FIRST_DE = ["Jürgen", "Käthe", "Björn", "Günther", "Sören", "Jörg", "Mäx", "Uwe", "Lütfiye"]
LAST_DE = ["Müller", "Schäfer", "Groß", "Weiß", "Köhler", "Bäcker", "Döring", "Krüger"]
FIRST_RU = ["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Наталья", "Сергей", "Юлия"]
LAST_RU = ["Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов", "Лебедева", "Козлов"]

SUBJECTS = {
    "en": [
        "Cannot log in to my account",
        "Invoice {n} is wrong",
        "Order {n} has not arrived",
        "Password reset link expired",
        "Question about my subscription",
        "App crashes on start",
        "Refund for order {n}",
        "How do I change my e-mail address?",
    ],
    "de": [
        "Rechnung {n} ist fehlerhaft – bitte prüfen",
        "Bestellung {n} nicht angekommen, Lieferadresse geändert",
        "Passwort zurücksetzen funktioniert nicht (Größe der Schrift)",
        "Frage zur Kündigung meines Abonnements",
        "Rückerstattung für Bestellung {n} – Überweisung fehlt",
        "Anmeldung schlägt fehl: „ungültiger Schlüssel“",
    ],
    "ru": [
        "Не могу войти в личный кабинет",
        "Счёт {n} выставлен неверно",
        "Заказ {n} не доставлен",
        "Ссылка для сброса пароля устарела",
        "Вопрос по подписке и оплате",
        "Возврат средств за заказ {n}",
    ],
}

SENTENCES = {
    "en": [
        "I have been trying to sort this out for a few days now.",
        "The error message says that something went wrong, nothing more.",
        "Could you please have a look and tell me what to do next?",
        "I already cleared the cache and restarted the application twice.",
        "My customer number is {n}, in case you need it.",
        "This is quite urgent for us because the month closes on Friday.",
        "Thanks in advance for your help.",
    ],
    "de": [
        "Ich versuche seit Tagen, das Problem zu lösen, leider ohne Erfolg.",
        "Die Fehlermeldung lautet nur „Vorgang fehlgeschlagen“.",
        "Könnten Sie bitte prüfen, woran das liegt? Vielen Dank für Ihre Mühe.",
        "Meine Kundennummer ist {n}; die Straße hat sich geändert (Größenweg 5).",
        "Es ist ziemlich dringend, weil der Monatsabschluss bevorsteht.",
        "Mit freundlichen Grüßen und schönen Grüßen aus Köln.",
    ],
    "ru": [
        "Уже несколько дней пытаюсь решить эту проблему, но безуспешно.",
        "Сообщение об ошибке говорит только «что-то пошло не так».",
        "Подскажите, пожалуйста, что мне делать дальше?",
        "Мой номер клиента {n}, если это поможет.",
        "Это довольно срочно, так как в пятницу закрывается месяц.",
        "Заранее спасибо за помощь. С уважением.",
    ],
}

LANGS = ["en"] * 6 + ["de"] * 2 + ["ru"] * 2
ATTACHMENT_NAMES = ["screenshot.png", "rechnung_März.pdf", "счёт.pdf", "log.zip", "scan.jpg"]
ATTACHMENT_TYPES = {
    "png": ("image", "png"),
    "pdf": ("application", "pdf"),
    "zip": ("application", "zip"),
    "jpg": ("image", "jpeg"),
}
# Charsets a real German or Russian mail client might still pick.
LEGACY_CHARSET = {"de": "windows-1252", "ru": "windows-1251"}


@dataclass(frozen=True, slots=True)
class Mail:
    raw: bytes
    sender: str
    is_new: bool
    #: Index of the ticket (0-based among the new mails) this mail belongs to.
    thread: int
    has_attachment: bool


@dataclass(slots=True)
class Corpus:
    mails: list[Mail] = field(default_factory=list)

    @property
    def new(self) -> int:
        return sum(m.is_new for m in self.mails)

    @property
    def size(self) -> int:
        return sum(len(m.raw) for m in self.mails)


def _person(rng: Random, lang: str, i: int) -> tuple[str, str]:
    if lang == "de":
        name = f"{rng.choice(FIRST_DE)} {rng.choice(LAST_DE)}"
    elif lang == "ru":
        name = f"{rng.choice(FIRST_RU)} {rng.choice(LAST_RU)}"
    else:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    return name, f"customer{i}@example.{rng.choice(['com', 'de', 'ru', 'org'])}"


def _body(rng: Random, lang: str, paragraphs: int) -> str:
    out = []
    for _ in range(paragraphs):
        sentences = rng.choices(SENTENCES[lang], k=rng.randint(2, 5))
        out.append(" ".join(s.format(n=rng.randint(10000, 99999)) for s in sentences))
    return "\n\n".join(out) + "\n"


def _set_text(msg: EmailMessage, rng: Random, lang: str, body: str) -> None:
    roll = rng.random()
    if lang in LEGACY_CHARSET and roll < 0.2:
        msg.set_content(body, charset=LEGACY_CHARSET[lang], cte="quoted-printable")
    elif lang != "en" and roll < 0.5:
        msg.set_content(body, cte=rng.choice(["quoted-printable", "base64"]))
    else:
        msg.set_content(body)  # 7bit or 8bit UTF-8


def generate(count: int, seed: int) -> Corpus:
    """``count`` mails; the k-th new mail (0-based) becomes ticket k+1 when processed in order."""
    rng = Random(seed)
    customers = [_person(rng, rng.choice(LANGS), i) for i in range(max(count // 4, 1))]
    tickets: list[tuple[str, str, str, str, str]] = []  # (name, addr, subject, mid, lang)
    corpus = Corpus()
    start = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    for i in range(count):
        is_new = not tickets or rng.random() < 0.6
        msg = EmailMessage()
        mid = f"<bench-{seed}-{i}@example.com>"
        if is_new:
            lang = rng.choice(LANGS)
            name, addr = rng.choice(customers)
            subject = rng.choice(SUBJECTS[lang]).format(n=rng.randint(100000, 999999))
            thread = len(tickets)
            tickets.append((name, addr, subject, mid, lang))
            body = _body(rng, lang, rng.randint(1, 4))
        else:
            thread = rng.randrange(len(tickets))
            name, addr, subject, first_mid, lang = tickets[thread]
            # "[#N]" with N the ticket this thread became (sequential in acceptance order).
            prefix = {"en": "Re:", "de": rng.choice(["AW:", "Re:"]), "ru": "Re:"}[lang]
            subject = f"{prefix} [#{thread + 1}] {subject}"
            msg["In-Reply-To"] = f"<reply-{seed}-{thread}@mailbot.example>"
            msg["References"] = f"{first_mid} <reply-{seed}-{thread}@mailbot.example>"
            quoted = "\n".join("> " + line for line in _body(rng, lang, 1).splitlines())
            body = _body(rng, lang, rng.randint(1, 2)) + "\n" + quoted + "\n"
        msg["From"] = formataddr((name, addr))
        msg["To"] = SUPPORT
        msg["Subject"] = subject
        msg["Date"] = format_datetime(start + timedelta(seconds=37 * i))
        msg["Message-ID"] = mid
        _set_text(msg, rng, lang, body)
        attach = rng.random() < 0.10
        if attach:
            fname = rng.choice(ATTACHMENT_NAMES)
            maintype, subtype = ATTACHMENT_TYPES[fname.rsplit(".", 1)[1]]
            data = rng.randbytes(rng.randint(5 * 1024, 50 * 1024))
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=fname)
        raw = msg.as_bytes()
        corpus.mails.append(Mail(raw, addr, is_new, thread, attach))
    return corpus


def write_mbox(corpus: Corpus, path: Path) -> None:
    box = mailbox.mbox(str(path), create=True)
    box.lock()
    try:
        for mail in corpus.mails:
            box.add(mail.raw)
        box.flush()
    finally:
        box.unlock()
        box.close()


# -- running mailbot ---------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    backend: str
    mode: str
    messages: int
    seconds: float
    peak_rss_mb: float | None
    check: str = ""
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class Backend:
    """A fresh database URL per run: a SQLite file or a database on a private server."""

    def __init__(self, name: str, pg: PostgresServer | None) -> None:
        self.name, self.pg = name, pg

    def fresh(self, data_dir: Path) -> str:
        if self.name == "postgres":
            assert self.pg is not None
            return self.pg.create_database()
        return f"sqlite:///{(data_dir / 'mailbot.db').resolve()}"


#: ``inbox.workers`` for the children; None leaves mailbot's default.
WORKERS: int | None = None
#: ``parse.processes`` for the children; None leaves mailbot's default.
PARSE_PROCESSES: int | None = None


def child_env(data_dir: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_DATA_DIR=str(data_dir), MAILBOT_DATABASE_URL=url, **extra)
    if WORKERS is not None and "MAILBOT_INBOX__WORKERS" not in extra:
        env["MAILBOT_INBOX__WORKERS"] = str(WORKERS)
    if PARSE_PROCESSES is not None:
        env["MAILBOT_PARSE__PROCESSES"] = str(PARSE_PROCESSES)
    return env


def mailbot(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailbot", *args]


def upgrade(env: dict[str, str]) -> None:
    subprocess.run(mailbot("db", "upgrade"), env=env, check=True, capture_output=True)


class StderrTail:
    """Reads a child's stderr in a thread: keeps the tail, timestamps a marker line."""

    def __init__(self, stream: io.BufferedReader, marker: bytes = b"") -> None:
        self.lines: list[bytes] = []
        self.count = 0
        self.marker, self.marker_at = marker, None
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: io.BufferedReader) -> None:
        for line in stream:
            self.count += 1
            if self.marker and self.marker_at is None and self.marker in line:
                self.marker_at = time.perf_counter()
            self.lines.append(line)
            del self.lines[:-40]

    def tail(self, n: int = 15) -> str:
        return b"".join(self.lines[-n:]).decode("utf-8", "replace")


def verify(url: str, corpus: Corpus) -> tuple[bool, str]:
    """Tickets == new mails, messages == mails, every inbound row done, nothing shunted."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tickets = conn.execute(text("SELECT count(*) FROM ticket")).scalar_one()
            messages = conn.execute(
                text("SELECT count(*) FROM message WHERE direction = 'inbound'")
            ).scalar_one()
            attachments = conn.execute(text("SELECT count(*) FROM attachment")).scalar_one()
            status = dict(
                conn.execute(text("SELECT status, count(*) FROM inbound GROUP BY status")).all()
            )
    finally:
        engine.dispose()
    want_att = sum(m.has_attachment for m in corpus.mails)
    ok = (
        tickets == corpus.new
        and messages == len(corpus.mails)
        and status.get("done", 0) == len(corpus.mails)
        and attachments == want_att
    )
    detail = (
        f"tickets {tickets}/{corpus.new}, messages {messages}/{len(corpus.mails)}, "
        f"attachments {attachments}/{want_att}, inbound {dict(sorted(status.items()))}"
    )
    return ok, ("OK   " if ok else "FAIL ") + detail


def run_mbox_processes(
    backend: Backend, corpus: Corpus, mbox: Path, work: Path, processes: int
) -> Result:
    """Accept with ``--no-process``, then ``processes`` ingest processes drain the inbox.

    Each process runs one pipeline worker; ``mailbot ingest`` on an empty mbox
    processes whatever the inbox holds. Peak memory: the larger of the accept
    process's peak and the SUM of the draining processes' peaks.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="mboxp-", dir=work))
    url = backend.fresh(data_dir)
    env = child_env(data_dir, url, MAILBOT_INBOX__WORKERS="1")
    upgrade(env)
    empty = work / "empty.mbox"
    empty.touch()
    start = time.perf_counter()
    accept = subprocess.Popen(
        mailbot("ingest", "--mbox", str(mbox), "--no-process"), env=env, stderr=subprocess.PIPE
    )
    assert accept.stderr is not None
    tail = StderrTail(accept.stderr)
    _, status, usage = os.wait4(accept.pid, 0)
    accepted = time.perf_counter()
    accept_peak = usage.ru_maxrss / 1024
    result = Result(backend.name, f"mbox x{processes}p", len(corpus.mails), 0.0, None)
    if os.waitstatus_to_exitcode(status) != 0:
        result.ok, result.check = False, f"FAIL accept: {tail.tail()}"
        return result
    drains = [
        subprocess.Popen(mailbot("ingest", "--mbox", str(empty)), env=env, stderr=subprocess.PIPE)
        for _ in range(processes)
    ]
    tails = [StderrTail(d.stderr) for d in drains if d.stderr is not None]
    peaks, codes = [], []
    for drain in drains:
        _, status, usage = os.wait4(drain.pid, 0)
        peaks.append(usage.ru_maxrss / 1024)
        codes.append(os.waitstatus_to_exitcode(status))
    result.seconds = time.perf_counter() - start
    result.peak_rss_mb = max(accept_peak, sum(peaks))
    phase = result.seconds - (accepted - start)
    result.notes.append(
        f"accept phase {accepted - start:.1f} s, process phase {phase:.1f} s "
        f"({len(corpus.mails) / max(phase, 1e-9):.0f}/s); "
        f"peaks: accept {accept_peak:.0f} MB, drains {' + '.join(f'{p:.0f}' for p in peaks)} MB"
    )
    if any(codes):
        result.ok = False
        result.check = f"FAIL exit {codes}: {' '.join(t.tail(5) for t in tails)}"
        return result
    result.ok, result.check = verify(url, corpus)
    return result


def run_mbox(backend: Backend, corpus: Corpus, mbox: Path, work: Path) -> Result:
    data_dir = Path(tempfile.mkdtemp(prefix="mbox-", dir=work))
    url = backend.fresh(data_dir)
    env = child_env(data_dir, url)
    upgrade(env)
    start = time.perf_counter()
    proc = subprocess.Popen(mailbot("ingest", "--mbox", str(mbox)), env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    tail = StderrTail(proc.stderr, marker=b"accepted ")
    tree = TreePeak(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail.thread.join(timeout=10)
    peak = max(usage.ru_maxrss / 1024, tree.stop())
    result = Result(backend.name, "mbox", len(corpus.mails), seconds, peak)
    if tail.marker_at is not None:
        accept = tail.marker_at - start
        result.notes.append(
            f"accept phase {accept:.1f} s ({len(corpus.mails) / accept:.0f}/s incl. start-up), "
            f"process phase {seconds - accept:.1f} s "
            f"({len(corpus.mails) / max(seconds - accept, 1e-9):.0f}/s)"
        )
    if proc.returncode != 0:
        result.ok, result.check = False, f"FAIL exit {proc.returncode}: {tail.tail()}"
        return result
    result.ok, result.check = verify(url, corpus)
    return result


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"daemon did not listen on port {port} within {timeout:.0f} s")


def _vm_hwm_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                text = (task / "children").read_text()
                children = [int(c) for c in text.split()]
                found += children
                todo += children
    return found


def _tree_hwm_mb(pid: int) -> float | None:
    """SUM of the peak RSS (VmHWM) of ``pid`` and of every process it started.

    mailbot's parser children (``parse.processes``) count here, each whole
    (shared pages included).
    """
    own = _vm_hwm_mb(pid)
    if own is None:
        return None
    return own + sum(_vm_hwm_mb(child) or 0.0 for child in _descendants(pid))


class TreePeak:
    """Samples ``_tree_hwm_mb`` of a running process every 0.1 s; ``stop`` gives the largest.

    For ``mailbot ingest``, whose parser children (``parse.processes``) the
    child's own ``ru_maxrss`` does not include.
    """

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, _tree_hwm_mb(self.pid) or 0.0)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return self.peak


def shards(corpus: Corpus, clients: int) -> list[list[Mail]]:
    """Mails per client; a thread's mails all go through one client, in order.

    Each client commits a ticket's first mail before its replies, so every reply
    is accepted (and processed) after the mail it answers, whatever the
    interleaving between clients. Ticket numbers then follow acceptance order,
    not generation order, so replies thread by In-Reply-To/References.
    """
    out: list[list[Mail]] = [[] for _ in range(clients)]
    for mail in corpus.mails:
        out[mail.thread % clients].append(mail)
    return out


def _client(port: int, mails: list[Mail], barrier: threading.Barrier, errors: list[str]) -> None:
    # smtplib sends bytes as they are: the wire needs CRLF line ends.
    wire = [(m.sender, m.raw.replace(b"\n", b"\r\n")) for m in mails]
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        barrier.wait()
        for sender, raw in wire:
            for attempt in range(5):
                try:
                    client.sendmail(sender, [SUPPORT], raw)
                    break
                except smtplib.SMTPResponseException as exc:
                    if exc.smtp_code // 100 != 4 or attempt == 4:
                        errors.append(f"{exc.smtp_code} {exc.smtp_error!r}")
                        break
                    time.sleep(0.5)


def _inbox_state(engine) -> tuple[int, int]:
    """(rows, rows still received or processing)."""
    with engine.connect() as conn:
        total, pending = conn.execute(
            text(
                "SELECT count(*), coalesce(sum(CASE WHEN status IN ('received', 'processing') "
                "THEN 1 ELSE 0 END), 0) FROM inbound"
            )
        ).one()
    return int(total), int(pending)


def run_smtp(backend: Backend, corpus: Corpus, work: Path) -> Result:
    data_dir = Path(tempfile.mkdtemp(prefix="smtp-", dir=work))
    url = backend.fresh(data_dir)
    port = free_port()
    env = child_env(data_dir, url, MAILBOT_SMTP__PORT=str(port))
    upgrade(env)
    proc = subprocess.Popen(mailbot("run"), env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    tail = StderrTail(proc.stderr)
    engine = create_engine(url)
    errors: list[str] = []
    n = len(corpus.mails)
    result = Result(backend.name, "smtp", n, 0.0, None)
    try:
        _wait_port(port, proc)
        barrier = threading.Barrier(CLIENTS + 1)
        threads = [
            threading.Thread(target=_client, args=(port, part, barrier, errors), daemon=True)
            for part in shards(corpus, CLIENTS)
        ]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        sent = time.perf_counter() - start
        last_change, last_state = time.monotonic(), (-1, -1)
        while True:
            state = _inbox_state(engine)
            if state[0] >= n - len(errors) and state[1] == 0:
                break
            if state != last_state:
                last_change, last_state = time.monotonic(), state
            elif time.monotonic() - last_change > STALL_SECONDS or proc.poll() is not None:
                raise RuntimeError(f"inbox stalled at {state}: {tail.tail()}")
            time.sleep(0.1)
        result.seconds = time.perf_counter() - start
        result.peak_rss_mb = _tree_hwm_mb(proc.pid)
        result.notes.append(
            f"all {n} sent (8 clients) in {sent:.1f} s = {n / sent:.0f}/s; "
            f"drained {result.seconds - sent:.1f} s later"
        )
    except Exception as exc:
        result.ok, result.check = False, f"FAIL {exc}"
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        tail.thread.join(timeout=10)
    if errors:
        result.notes.append(f"{len(errors)} send errors, first: {errors[0]}")
    if result.ok:
        result.ok, result.check = verify(url, corpus)
        if proc.returncode != 0:
            result.ok = False
            result.check += f"; daemon exit {proc.returncode}"
    return result


def run_floor(corpus: Corpus, work: Path) -> Result:
    """Stdlib parse + one committed SQLite row per mail: the floor to approach."""
    path = work / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE mail (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, sender TEXT, "
        "subject TEXT, body TEXT, raw BLOB NOT NULL)"
    )
    start = time.perf_counter()
    for mail in corpus.mails:
        msg = email.message_from_bytes(mail.raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if part is not None else ""
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO mail (message_id, sender, subject, body, raw) VALUES (?, ?, ?, ?, ?)",
            (str(msg["message-id"]), str(msg["from"]), str(msg["subject"]), body, mail.raw),
        )
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    rows = conn.execute("SELECT count(*) FROM mail").fetchone()[0]
    conn.close()
    n = len(corpus.mails)
    return Result(
        "sqlite",
        "floor",
        n,
        seconds,
        None,
        ("OK   " if rows == n else "FAIL ") + (f"rows {rows}/{n}"),
        rows == n,
    )


# -- report ------------------------------------------------------------------------------


def table(results: list[Result], floor: Result | None) -> str:
    head = ("backend", "mode", "messages", "seconds", "msgs/s", "peak RSS MB", "ratio to floor")
    rows = [head]
    for r in results:
        ratio = f"{r.rate / floor.rate:.2f}" if floor and floor.rate and r is not floor else "-"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "-"
        rows.append(
            (r.backend, r.mode, str(r.messages), f"{r.seconds:.1f}", f"{r.rate:.0f}", rss, ratio)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for j, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets(results: list[Result], floor: Result | None) -> Iterator[str]:
    for r in results:
        if r.mode == "floor":
            continue
        parts = []
        if floor:
            ratio = r.rate / floor.rate
            verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
            parts.append(f"rate {ratio:.2f} x floor (target >= {TARGET_RATIO}): {verdict}")
        if r.peak_rss_mb is not None:
            verdict = "met" if r.peak_rss_mb < TARGET_RSS_MB else "MISSED"
            parts.append(f"peak {r.peak_rss_mb:.0f} MB (target < {TARGET_RSS_MB:.0f}): {verdict}")
        yield f"{r.backend}/{r.mode}: " + "; ".join(parts)


def machine() -> str:
    return (
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"{platform.processor() or platform.machine()}"
    )


# -- profile -----------------------------------------------------------------------------


def profile(count: int, seed: int, top: int) -> None:
    """cProfile of ``mailbot.cli.main(["ingest", "--mbox", ...])`` in-process, on SQLite."""
    from mailbot import cli

    corpus = generate(count, seed)
    work = Path(tempfile.mkdtemp(prefix="mailbot-prof-"))
    try:
        mbox = work / "bench.mbox"
        write_mbox(corpus, mbox)
        for key in [k for k in os.environ if k.startswith("MAILBOT_")]:
            del os.environ[key]
        os.environ["MAILBOT_DATA_DIR"] = str(work / "data")
        saved, sys.stderr = sys.stderr, open(work / "log", "w")  # noqa: SIM115
        try:
            assert cli.main(["db", "upgrade"]) == 0
            prof = cProfile.Profile()
            start = time.perf_counter()
            prof.enable()
            code = cli.main(["ingest", "--mbox", str(mbox)])
            prof.disable()
            seconds = time.perf_counter() - start
        finally:
            sys.stderr.close()
            sys.stderr = saved
        print(
            f"{machine()}\nprofiled ingest of {count} mails: exit {code}, {seconds:.1f} s "
            f"under cProfile ({count / seconds:.0f}/s)\n"
        )
        for order in ("cumulative", "tottime"):
            print(f"-- top {top} by {order} --")
            stats = pstats.Stats(prof, stream=sys.stdout)
            stats.sort_stats(order).print_stats(top)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=10_000, help="mails to generate (10000)")
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--mode", choices=["mbox", "smtp", "both"], default="both")
    p.add_argument("--seed", type=int, default=1, help="corpus seed (1)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="inbox.workers (pipeline threads) of mailbot; default: mailbot's default",
    )
    p.add_argument(
        "--parse-processes",
        type=int,
        metavar="N",
        help="parse.processes (parser children) of mailbot; default: mailbot's default",
    )
    p.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="mbox: accept, then drain with N one-worker ingest processes (memory summed)",
    )
    p.add_argument(
        "--profile",
        type=int,
        metavar="COUNT",
        help="instead: cProfile one in-process mbox ingest of COUNT mails (SQLite)",
    )
    p.add_argument("--top", type=int, default=15, help="profile rows to print (15)")
    args = p.parse_args(argv)
    global WORKERS, PARSE_PROCESSES
    WORKERS, PARSE_PROCESSES = args.workers, args.parse_processes
    if args.profile:
        profile(args.profile, args.seed, args.top)
        return 0

    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    modes = ["mbox", "smtp"] if args.mode == "both" else [args.mode]
    print(machine())
    print(
        f"inbox.workers: {args.workers or 'default'}; "
        f"parse.processes: {'default' if args.parse_processes is None else args.parse_processes}"
        + (f"; mbox drained by {args.processes} processes" if args.processes else "")
    )
    t = time.perf_counter()
    corpus = generate(args.count, args.seed)
    n = len(corpus.mails)
    print(
        f"corpus: {n} mails, seed {args.seed}, {corpus.new} new / {n - corpus.new} replies, "
        f"{sum(m.has_attachment for m in corpus.mails)} with attachment, "
        f"{corpus.size / 1e6:.1f} MB, generated in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    pg: PostgresServer | None = None
    results: list[Result] = []
    try:
        mbox = work / "bench.mbox"
        write_mbox(corpus, mbox)
        floor = run_floor(corpus, work)
        results.append(floor)
        print(f"floor: {floor.rate:.0f} msgs/s  [{floor.check}]", flush=True)
        if "postgres" in backends:
            pg = PostgresServer()
        for name in backends:
            backend = Backend(name, pg)
            for mode in modes:
                if mode == "mbox" and args.processes:
                    r = run_mbox_processes(backend, corpus, mbox, work, args.processes)
                elif mode == "mbox":
                    r = run_mbox(backend, corpus, mbox, work)
                else:
                    r = run_smtp(backend, corpus, work)
                results.append(r)
                print(f"{name}/{mode}: {r.rate:.0f} msgs/s  [{r.check}]", flush=True)
                for note in r.notes:
                    print(f"    {note}", flush=True)
    finally:
        if pg is not None:
            pg.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(results, floor))
    print()
    for line in targets(results, floor):
        print(line)
    print()
    for r in results:
        print(f"check {r.backend}/{r.mode}: {r.check}")
    if pg is not None:
        print("(PostgreSQL runs with fsync=off, synchronous_commit=off: mailbot.testing's server)")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
