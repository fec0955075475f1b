"""Parsing in child processes: the pipeline's second core, and a wall around the parser.

Parsing a mail is pure work on bytes (``parse.parse``) and a quarter of a
mail's processing time. With ``parse.processes`` children, a pipeline worker
hands the next mail it holds to a child and stores the current one while the
child parses, so on a machine with two cores the parse costs the worker
little (docs/performance.md).

Each child is a fresh interpreter (``python -c``, started with
``subprocess``: the daemon has threads, and forking them is unsafe; it loads
only the parser, about 30 MB) that reads requests on its stdin and answers on
its stdout: a frame is a length, a request number and the raw bytes, or the
pickled ``ParsedMessage`` or exception. No thread of this process moves the
data (a ``concurrent.futures`` pool does, and its threads contend with the
workers for the interpreter: measured slower than parsing in place); a thread
in the child reads requests as they come, so neither side can block the
other.

The children ignore SIGINT and SIGTERM (the parent decides when they stop: a
Ctrl-C or systemd's SIGTERM to the whole group must not kill a parse a worker
is waiting for) and exit as soon as their input ends: when the parent closes
it, or dies (a SIGKILLed daemon leaves none behind; ``PR_SET_PDEATHSIG``
would follow the thread that started the child, not the process). What the
parser raises in a child is raised again in the worker, with the child's
traceback as a note, and handled there as before (quarantine). A child that
dies (a crash in the parser, the out-of-memory killer) fails the mails it
held with a ``TransientError`` (tried again later, quarantined after
``inbox.max_attempts``); the next mail starts a new child. A parse that never
ends (a pathological input the limits do not catch) would hold its worker:
when a worker has waited ``parse.timeout_seconds`` for an answer, the child
is killed, which fails its mails the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict
from typing import IO

from mailbot import parse
from mailbot.errors import TransientError
from mailbot.message import ParsedMessage, ParseLimits

log = logging.getLogger(__name__)

#: A request or answer frame starts with the body's length and the request's number.
_HEAD = struct.Struct("!IQ")
_NUMBER = struct.Struct("!Q")
#: The number of the empty frame a child sends once it has loaded the parser.
_READY = 0
#: How long ``ParsePool.start(wait=True)`` waits for a child to load.
READY_TIMEOUT_SECONDS = 60.0


def _main(limits: str) -> None:
    """Entry point of a child (``python -c``): the parse limits come as JSON."""
    serve(ParseLimits(**json.loads(limits)))


# -- the child ----------------------------------------------------------------------------


def serve(limits: ParseLimits) -> None:
    """The child's main: parse what comes in on stdin, answer on stdout, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Answers go out on a copy of stdout; anything a library prints goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests: queue.SimpleQueue[tuple[bytes, bytes]] = queue.SimpleQueue()

    def read() -> None:
        source = sys.stdin.buffer
        while (frame := _read_frame(source)) is not None:
            requests.put(frame)
        # The parent closed our input, or died: nobody waits for an answer any more.
        os._exit(0)

    threading.Thread(target=read, name="parse-requests", daemon=True).start()
    answers.write(_HEAD.pack(0, _READY))  # loaded: the parent may count on us now
    answers.flush()
    while True:
        head, raw = requests.get()
        answer: tuple[bool, object]
        try:
            answer = (True, parse.parse(raw, limits))
        except BaseException as exc:  # every error goes back to the worker
            exc.add_note("in the parser process:\n" + "".join(traceback.format_exception(exc)))
            answer = (False, exc)
        try:
            body = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception that does not pickle
            body = pickle.dumps((False, RuntimeError(f"{type(answer[1]).__name__}: {exc}")))
        try:
            answers.write(_HEAD.pack(len(body), *_NUMBER.unpack(head)) + body)
            answers.flush()
        except OSError:
            return


def _read_frame(source: IO[bytes]) -> tuple[bytes, bytes] | None:
    """(number, body) of the next frame, or None at the end of the stream."""
    head = _read_exactly(source, _HEAD.size)
    if head is None:
        return None
    size, number = _HEAD.unpack(head)
    body = _read_exactly(source, size)
    return None if body is None else (_NUMBER.pack(number), body)


def _read_exactly(source: IO[bytes], size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = source.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- the parent ---------------------------------------------------------------------------


class _Child:
    """One child process and its pipes; answers read by whichever worker waits first."""

    def __init__(self, limits: ParseLimits) -> None:
        code = f"from mailbot.parsepool import _main; _main({json.dumps(asdict(limits))!r})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.requests: IO[bytes] = self.process.stdin
        self.replies: IO[bytes] = self.process.stdout
        self.sending = threading.Lock()
        self.receiving = threading.Lock()
        self.answers: dict[int, tuple[bool, object]] = {}
        self.forgotten: set[int] = set()
        self.ready = threading.Event()
        self.dead: str | None = None
        #: Request number -> when a worker began to wait for its answer.
        self.waiting_since: dict[int, float] = {}

    def alive(self) -> bool:
        return self.dead is None and self.process.poll() is None

    def send(self, number: int, raw: bytes) -> None:
        with self.sending:
            if self.dead is None:
                try:
                    self.requests.write(_HEAD.pack(len(raw), number) + raw)
                    self.requests.flush()
                except (OSError, ValueError) as exc:
                    self.dead = f"{type(exc).__name__}: {exc}"

    def answer(self, number: int) -> tuple[bool, object]:
        self.waiting_since[number] = time.monotonic()  # for the pool's watchdog
        try:
            with self.receiving:
                while number not in self.answers:
                    if self.dead is not None:
                        raise TransientError(f"the parser process died ({self.dead})")
                    self._receive()
                return self.answers.pop(number)
        finally:
            del self.waiting_since[number]

    def overdue(self, timeout: float) -> bool:
        """Whether a worker has waited longer than ``timeout`` for an answer."""
        since = list(self.waiting_since.values())
        return bool(since) and time.monotonic() - min(since) > timeout

    def kill_stuck(self, timeout: float) -> None:
        """No answer in time: a parse that does not end. Killing the child ends the waits."""
        if self.process.poll() is not None:
            return
        self.dead = f"no answer within {timeout:g} s, killed"
        log.warning(
            "a parser process gave no answer within %g s; killed",
            timeout,
            extra={"action": "parse_process_killed", "pid": self.process.pid},
        )
        self.process.kill()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the child has loaded (its first frame); False if it died or timed out."""
        if self.ready.is_set():
            return True
        reader = threading.Thread(target=self._read_ready, daemon=True)
        reader.start()
        reader.join(timeout)
        return self.ready.is_set()

    def _read_ready(self) -> None:
        with self.receiving:
            while not self.ready.is_set() and self.dead is None:
                self._receive()

    def _receive(self) -> None:
        """Read one frame and file it (``receiving`` held): ready, an answer, or dead."""
        try:
            frame = _read_frame(self.replies)
        except (OSError, ValueError) as exc:
            frame, self.dead = None, f"{type(exc).__name__}: {exc}"
        if frame is None:
            self.dead = self.dead or f"exit code {self.process.poll()}"
            return
        (got,) = _NUMBER.unpack(frame[0])
        if got == _READY:
            self.ready.set()
        elif got in self.forgotten:
            self.forgotten.discard(got)
        else:
            try:
                self.answers[got] = pickle.loads(frame[1])
            except Exception as exc:  # the answer may be another worker's: never lose it
                self.answers[got] = (False, RuntimeError(f"unreadable parser answer: {exc!r}"))

    def forget(self, number: int) -> None:
        """A parse nobody will wait for: its answer is dropped when it comes."""
        with self.receiving:
            if self.answers.pop(number, None) is None:
                self.forgotten.add(number)

    def close(self, wait: float = 5) -> None:
        """Close the pipes; the child ends at the end of its input, or is killed after ``wait``."""
        self.dead = self.dead or "closed"
        with contextlib.suppress(OSError, ValueError):
            self.requests.close()
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            self.replies.close()


class Parsing:
    """A parse of one mail under way in a child; ``result`` waits for it."""

    __slots__ = ("_child", "_number")

    def __init__(self, child: _Child, number: int) -> None:
        self._child = child
        self._number = number

    def result(self) -> ParsedMessage:
        ok, value = self._child.answer(self._number)
        if ok:
            assert isinstance(value, ParsedMessage)
            return value
        assert isinstance(value, BaseException)
        raise value

    def cancel(self) -> None:
        self._child.forget(self._number)


class ParsePool:
    """``processes`` parser children, started at the first mail and shared by all workers."""

    def __init__(
        self, processes: int, limits: ParseLimits, *, timeout: float | None = None
    ) -> None:
        self.processes = processes
        self.limits = limits
        #: Longest wait for an answer before its child is killed (None: no limit).
        self.timeout = timeout
        self._lock = threading.Lock()
        self._children: list[_Child | None] = [None] * processes
        self._numbers = itertools.count(1)
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self, *, wait: bool = False) -> None:
        """Start the children now rather than at the first mail (they take a moment to load).

        With ``wait``, return once each has loaded: the daemon does, so that its
        workers do not claim mail and then sit on it while a child loads.
        """
        with self._lock:
            children = [self._child(slot) for slot in range(self.processes)]
        if wait:
            for child in children:
                if not child.wait_ready(READY_TIMEOUT_SECONDS):
                    log.warning(
                        "a parser process did not start (%s)",
                        child.dead or "timed out",
                        extra={"action": "parse_process_slow_start"},
                    )

    def submit(self, raw: bytes) -> Parsing:
        """Hand a mail to a child (round robin); a dead child is replaced first."""
        with self._lock:
            number = next(self._numbers)
            child = self._child(number % self.processes)
        child.send(number, raw)
        return Parsing(child, number)

    def _child(self, slot: int) -> _Child:
        child = self._children[slot]
        if child is None or not child.alive():
            if child is not None:
                log.warning(
                    "a parser process died (%s); starting a new one",
                    child.dead or f"exit code {child.process.poll()}",
                    extra={"action": "parse_process_restarted"},
                )
                child.dead = child.dead or "exited"
                child.close(wait=0)
            child = self._children[slot] = _Child(self.limits)
            if self.timeout is not None and self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, args=(self.timeout,), name="parse-watchdog", daemon=True
                )
                self._watchdog.start()
        return child

    def _watch(self, timeout: float) -> None:
        """The watchdog: kill a child that keeps a worker waiting longer than ``timeout``."""
        while not self._closed.wait(min(1.0, timeout / 4)):
            for child in list(self._children):
                if child is not None and child.dead is None and child.overdue(timeout):
                    child.kill_stuck(timeout)

    def loaded(self) -> bool:
        """Whether every child has started and loaded the parser."""
        with self._lock:
            return all(c is not None and c.ready.is_set() for c in self._children)

    def pids(self) -> list[int]:
        """The children's process ids (for operators and tests)."""
        with self._lock:
            return [c.process.pid for c in self._children if c is not None]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            children, self._children = self._children, [None] * self.processes
            watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.join()
        self._closed = threading.Event()  # a pool used again gets a new watchdog
        for child in children:
            if child is not None:
                child.close()
