"""APScheduler 3 runs the jobs inside ``mailbot run``: the only module that imports it.

Each job of ``mailbot.jobs`` runs every ``jobs.interval_seconds`` on a
background thread, once at start-up too (a missed run is caught up at once),
never twice at the same time (``max_instances=1``, runs that piled up while
the daemon was busy are coalesced). What a run does is decided by the
database's state, not by the scheduler's memory, so a restart loses nothing
and repeats nothing; several daemons on one PostgreSQL may run the same job at
the same time, because every act is claimed in the database first.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from mailbot.jobs import Jobs
from mailbot.process import Pipeline
from mailbot.store.db import Database

log = logging.getLogger(__name__)
# APScheduler logs every run at INFO; mailbot logs what a run did (job_ran).
logging.getLogger("apscheduler").setLevel(logging.WARNING)


def build_jobs(db: Database, pipeline: Pipeline) -> Jobs:
    """The jobs, sharing the pipeline's settings, notifier, SLA clock, people and clock."""
    conversation = pipeline.conversation
    return Jobs(
        db,
        pipeline.settings,
        conversation.notifier,
        conversation.sla_clock,
        lambda: conversation.people,
        pipeline.clock,
    )


class JobScheduler:
    def __init__(self, jobs: Jobs, interval_seconds: float) -> None:
        self.jobs = jobs
        self.interval = interval_seconds
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        first = datetime.now(UTC)
        for name in self.jobs.NAMES:
            if not self.jobs.enabled(name):
                continue
            self.scheduler.add_job(
                self._run,
                "interval",
                seconds=self.interval,
                args=[name],
                id=name,
                name=name,
                next_run_time=first,
            )
        self.scheduler.start()
        log.info(
            "scheduler started: %d jobs every %g s",
            len(self.scheduler.get_jobs()),
            self.interval,
            extra={"action": "scheduler_started"},
        )

    def shutdown(self) -> None:
        """Stop scheduling and wait for a running job to finish its transaction."""
        self.scheduler.shutdown(wait=True)
        log.info("scheduler stopped", extra={"action": "scheduler_stopped"})

    def _run(self, name: str) -> None:
        try:
            self.jobs.run(name)
        except Exception:  # a failing job is logged; the next run tries again
            log.exception("job %s failed", name, extra={"action": "job_failed", "job": name})
