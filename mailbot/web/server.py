"""Serving the web app with uvicorn inside the daemon's asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve(app: FastAPI, host: str, port: int, stopping: asyncio.Event) -> None:
    """Serve ``app`` until ``stopping`` is set.

    A port that cannot be bound is logged and the web page stays off: mail
    intake must not depend on a read-only page.
    """
    try:
        sock = bind(host, port)
    except OSError as exc:
        log.error(
            "web page not served: cannot bind %s:%s: %s",
            host,
            port,
            exc,
            extra={"action": "web_bind_failed", "host": host, "port": port},
        )
        return
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", server_header=False
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    log.info(
        "web page on http://%s:%s",
        host,
        sock.getsockname()[1],
        extra={"action": "web_started", "host": host, "port": sock.getsockname()[1]},
    )
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([stop, task], return_when="FIRST_COMPLETED")
    finally:
        server.should_exit = True
        stop.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, timeout=5)
        sock.close()
