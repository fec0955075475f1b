"""``/metrics`` (Prometheus text format) and ``/healthz``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlmodel import Session

from mailbot.errors import StorageUnavailableError
from mailbot.reports import AT_RISK
from mailbot.store import reports as queries
from mailbot.web.deps import Db, State, WebState

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_text(s: Session, state: WebState) -> str:
    inbound = queries.inbound_counts(s)
    outbound = queries.outbound_counts(s)
    breached = queries.open_queue(s, state.clock(), AT_RISK).breached
    buckets, count, total = queries.latency_histogram(s)
    lines = [
        "# HELP mailbot_inbox_depth Inbound mail waiting for or in processing.",
        "# TYPE mailbot_inbox_depth gauge",
        f"mailbot_inbox_depth {inbound.get('received', 0) + inbound.get('processing', 0)}",
        "# HELP mailbot_inbox_quarantined Inbound mail quarantined after failures.",
        "# TYPE mailbot_inbox_quarantined gauge",
        f"mailbot_inbox_quarantined {inbound.get('shunted', 0)}",
        "# HELP mailbot_outbox_pending Outgoing mail not yet sent.",
        "# TYPE mailbot_outbox_pending gauge",
        f"mailbot_outbox_pending {outbound.get('pending', 0) + outbound.get('sending', 0)}",
        "# HELP mailbot_outbox_failed Outgoing mail given up on.",
        "# TYPE mailbot_outbox_failed gauge",
        f"mailbot_outbox_failed {outbound.get('failed', 0)}",
        "# HELP mailbot_sla_breached_tickets Open tickets past an SLA target.",
        "# TYPE mailbot_sla_breached_tickets gauge",
        f"mailbot_sla_breached_tickets {breached}",
        "# HELP mailbot_processing_latency_seconds From receipt to processed, per inbound mail.",
        "# TYPE mailbot_processing_latency_seconds histogram",
    ]
    for bound, n in zip(queries.LATENCY_BUCKETS, buckets, strict=True):
        lines.append(f'mailbot_processing_latency_seconds_bucket{{le="{bound}"}} {n}')
    lines += [
        f'mailbot_processing_latency_seconds_bucket{{le="+Inf"}} {count}',
        f"mailbot_processing_latency_seconds_sum {total:.6f}",
        f"mailbot_processing_latency_seconds_count {count}",
    ]
    return "\n".join(lines) + "\n"


def add_routes(app: FastAPI) -> None:
    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(s: Db, state: State) -> PlainTextResponse:
        """Queue depths, SLA breaches and the processing-latency histogram (Prometheus)."""
        return PlainTextResponse(metrics_text(s, state), media_type=PROMETHEUS_TYPE)

    @app.get("/healthz")
    def healthz(state: State) -> JSONResponse:
        """200 when the database answers and every worker runs; 503 otherwise."""
        try:
            with state.db.transaction() as s:
                queries.ping(s)
            database = True
        except StorageUnavailableError:
            database = False
        workers = dict(state.workers())
        ok = database and all(workers.values())
        return JSONResponse(
            {"ok": ok, "database": database, "workers": workers}, status_code=200 if ok else 503
        )
