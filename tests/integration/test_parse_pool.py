"""Parser children (``parse.processes``): same results as parsing in place, and a wall.

The pool is tested on its own (every fixture mail parses to the same
``ParsedMessage``; errors come back; a killed child costs a retry, never the
worker; children die with their parent) and inside the pipeline, where a
worker keeps two mails claimed ahead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailbot.config import Settings
from mailbot.errors import LimitExceededError, TransientError
from mailbot.message import ParseLimits
from mailbot.parse import parse
from mailbot.parsepool import ParsePool
from mailbot.process import Pipeline
from mailbot.store import inbox
from mailbot.store.db import Database
from mailbot.store.models import InboundStatus
from tests.conftest import EMAILS
from tests.integration.test_process import (
    FakeClock,
    _conversations,
    inbound_row,
    make_mail,
)

FIXTURES = sorted(EMAILS.glob("*.eml"))


@pytest.fixture
def pool() -> Iterator[ParsePool]:
    parsing = ParsePool(1, ParseLimits())
    try:
        yield parsing
    finally:
        parsing.close()


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie of ours still answers kill(0); it has exited all the same.
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"):
            return True
        time.sleep(0.05)
    return False


def test_every_fixture_mail_parses_as_in_place(pool: ParsePool) -> None:
    assert len(FIXTURES) > 50
    # Submitted together: answers come back in order and each finds its caller.
    pending = [(path, pool.submit(path.read_bytes())) for path in FIXTURES]
    for path, parsing in pending:
        assert parsing.result() == parse(path.read_bytes(), ParseLimits()), path.name


def test_a_child_that_gives_no_answer_in_time_is_killed_and_replaced() -> None:
    """``parse.timeout_seconds``: a parse that never ends costs a retry, not a worker."""
    raw = FIXTURES[0].read_bytes()
    pool = ParsePool(1, ParseLimits(), timeout=0.5)
    try:
        pool.start(wait=True)
        (stuck,) = pool.pids()
        os.kill(stuck, signal.SIGSTOP)  # as good as a parse that never ends
        raised: list[BaseException] = []

        def wait() -> None:
            try:
                pool.submit(raw).result()
            except BaseException as exc:
                raised.append(exc)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(20)  # without the timeout it would wait for ever
        assert not waiter.is_alive()
        (error,) = raised
        assert isinstance(error, TransientError)
        assert "no answer within 0.5 s, killed" in str(error)
        assert _gone(stuck)
        assert pool.submit(raw).result() == parse(raw, ParseLimits())
        assert pool.pids() != [stuck]
    finally:
        pool.close()


def test_answers_in_time_keep_the_child() -> None:
    raw = FIXTURES[0].read_bytes()
    pool = ParsePool(1, ParseLimits(), timeout=2)
    try:
        for _ in range(3):
            assert pool.submit(raw).result() == parse(raw, ParseLimits())
        (pid,) = pool.pids()
        time.sleep(2.5)  # longer than the timeout, with nobody waiting: no kill
        assert pool.submit(raw).result() == parse(raw, ParseLimits())
        assert pool.pids() == [pid]
    finally:
        pool.close()


def test_what_the_parser_raises_comes_back_with_the_childs_traceback() -> None:
    pool = ParsePool(2, ParseLimits(max_parts=2))
    try:
        raw = (EMAILS / "store-attachments.eml").read_bytes()
        with pytest.raises(LimitExceededError, match="max_parts") as caught:
            pool.submit(raw).result()
        notes = "".join(getattr(caught.value, "__notes__", []))
        assert "in the parser process" in notes
        assert "_prescan" in notes
        # The child is still there for the next mail.
        plain = make_mail("plain")[0]
        assert pool.submit(plain).result() == parse(plain, ParseLimits(max_parts=2))
    finally:
        pool.close()


def _big_mail(megabytes: int = 12) -> bytes:
    """A plain mail that takes the parser a good fraction of a second."""
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    body = line * (megabytes * 1024 * 1024 // len(line))
    return make_mail("big")[0].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body


def _kill_soon(pool: ParsePool, delay: float = 0.05) -> threading.Timer:
    (pid,) = pool.pids()
    timer = threading.Timer(delay, os.kill, (pid, signal.SIGKILL))
    timer.start()
    return timer


def test_a_killed_child_fails_its_mail_as_transient_and_is_replaced(pool: ParsePool) -> None:
    raw = (EMAILS / "client-gmail.eml").read_bytes()
    assert pool.submit(raw).result() is not None  # started and warm
    (first,) = pool.pids()
    in_flight = pool.submit(_big_mail())
    _kill_soon(pool).join()
    with pytest.raises(TransientError, match="parser process died"):
        in_flight.result()
    assert _gone(first)
    assert pool.submit(raw).result() == parse(raw, ParseLimits())
    (second,) = pool.pids()
    assert second != first


def test_close_stops_the_children(pool: ParsePool) -> None:
    assert not pool.loaded()
    pool.start(wait=True)  # as the daemon does, before its workers claim mail
    assert pool.loaded()
    pids = pool.pids()
    assert len(pids) == 1
    pool.close()
    assert all(_gone(pid) for pid in pids)
    assert pool.pids() == []


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    """A SIGKILLed parent (the daemon) leaves no parser behind (PR_SET_PDEATHSIG)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, sys\n"
        "from mailbot.message import ParseLimits\n"
        "from mailbot.parsepool import ParsePool\n"
        "pool = ParsePool(2, ParseLimits())\n"
        "pool.start()\n"
        "print(' '.join(map(str, pool.pids())), flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        children = [int(p) for p in parent.stdout.readline().split()]
        assert len(children) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    assert all(_gone(pid) for pid in children)


# -- in the pipeline ----------------------------------------------------------------------


PooledFactory = Callable[..., Pipeline]


@pytest.fixture
def make_pooled(
    db: Database, settings_for: Callable[..., Settings], tmp_path: Path
) -> Iterator[PooledFactory]:
    """Pipelines with one parser child and no rules, with ``parse`` settings of the test's."""
    (tmp_path / "no-rules.yaml").write_text("[]\n")
    made: list[Pipeline] = []

    def make(**parse: object) -> Pipeline:
        settings = settings_for(
            parse={"processes": 1, **parse},
            inbox={"max_attempts": 3, "retry_seconds": 30},
            rules_file=str(tmp_path / "no-rules.yaml"),
        )
        made.append(Pipeline(db, settings, clock=FakeClock()))
        return made[-1]

    try:
        yield make
    finally:
        for pipeline in made:
            pipeline.close()


@pytest.fixture
def pooled(make_pooled: PooledFactory) -> Pipeline:
    return make_pooled()


def _accept_topics(db: Database, count: int) -> list[inbox.Accepted]:
    """``count`` new mails, each from its own sender (so none waits for another)."""
    return [
        inbox.accept(db, make_mail(f"topic {n}", sender=f"c{n}@example.com")[0], source="smtp")
        for n in range(count)
    ]


@pytest.mark.parametrize("workers", [1, 3])
def test_a_pooled_pipeline_keeps_every_conversation_on_its_ticket(
    db: Database, pooled: Pipeline, workers: int
) -> None:
    customers, replies = 15, 2
    for raw in _conversations(customers, replies):
        inbox.accept(db, raw, source="import")
    outcomes = Tally(r.outcome for r in pooled.drain(workers))
    assert outcomes == {"created": customers, "appended": customers * replies}


def test_a_pooled_worker_holds_two_mails_ahead_and_gives_them_back(
    db: Database, pooled: Pipeline
) -> None:
    ids = _accept_topics(db, 5)
    worker = pooled.worker()
    first = worker.step()
    assert first is not None
    assert first.inbound_id == ids[0].inbound_id
    assert [item.id for item, _ in worker.holding] == [ids[1].inbound_id, ids[2].inbound_id]
    # The next row's attempt is counted; the one further ahead is not yet.
    assert [inbound_row(db, i.inbound_id).attempts for i in ids] == [1, 1, 0, 0, 0]
    assert [item.charged for item, _ in worker.holding] == [True, False]
    second = worker.step()
    assert second is not None
    assert second.outcome == "created"
    held = [item.id for item, _ in worker.holding]
    assert held == [ids[2].inbound_id, ids[3].inbound_id]
    assert [inbound_row(db, i.inbound_id).attempts for i in ids] == [1, 1, 1, 0, 0]
    worker.release()
    for inbound_id in held:
        row = inbound_row(db, inbound_id)
        assert row.status == InboundStatus.received
        assert row.attempts == 0


def test_a_worker_killed_while_holding_counts_no_try_against_the_row_further_ahead(
    db: Database, pooled: Pipeline
) -> None:
    ids = _accept_topics(db, 4)
    worker = pooled.worker()
    assert worker.step() is not None
    # The worker dies here, holding rows 2 and 3; the next start takes its claims back.
    assert inbox.recover_stale(db, lease=None, max_attempts=3) == (2, 0)
    attempts = [inbound_row(db, i.inbound_id).attempts for i in ids[1:3]]
    assert attempts == [1, 0]  # the next row counted a try; the one further ahead did not


def test_a_held_row_after_a_failed_mail_is_counted_on_its_own(
    db: Database, make_pooled: PooledFactory
) -> None:
    pipeline = make_pooled(max_parts=2)
    bomb = (EMAILS / "store-attachments.eml").read_bytes()
    mails = [make_mail("a")[0], bomb, make_mail("c", sender="c@example.com")[0]]
    ids = [inbox.accept(db, raw, source="smtp").inbound_id for raw in mails]
    worker = pipeline.worker()
    try:
        outcomes = [r.outcome for r in iter(worker.step, None)]
    finally:
        worker.release()
    assert outcomes == ["created", "quarantined", "created"]
    assert [inbound_row(db, i).attempts for i in ids] == [1, 1, 1]


def test_a_mail_the_parser_rejects_is_quarantined_through_the_pool(
    db: Database, make_pooled: PooledFactory
) -> None:
    pipeline = make_pooled(max_parts=2)
    bomb = inbox.accept(db, (EMAILS / "store-attachments.eml").read_bytes(), source="smtp")
    fine = inbox.accept(db, make_mail("plain")[0], source="smtp")
    results = {r.inbound_id: r for r in pipeline.drain()}
    assert results[bomb.inbound_id].outcome == "quarantined"
    assert "max_parts" in (results[bomb.inbound_id].error or "")
    assert results[fine.inbound_id].outcome == "created"


def test_a_killed_parser_costs_a_retry_not_the_mail(db: Database, pooled: Pipeline) -> None:
    assert pooled.parsing is not None
    assert pooled.parsing.submit(make_mail("warm up")[0]).result() is not None
    accepted = inbox.accept(db, _big_mail(), source="smtp")
    item = pooled.claim()
    assert item is not None
    parsing = pooled.start_parsing(item)
    _kill_soon(pooled.parsing).join()
    first, chained = pooled.process_chained(item, claim_next=1, parsing=parsing)
    assert chained.claimed == []  # a failed mail claims nothing ahead
    assert first.outcome == "retry"
    row = inbound_row(db, accepted.inbound_id)
    assert row.status == InboundStatus.received
    assert "parser process died" in (row.last_error or "")
    assert inbox.requeue(db, [accepted.inbound_id]) == 1
    again = pooled.process_next()
    assert again is not None
    assert again.outcome == "created"
