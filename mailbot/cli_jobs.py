"""``mailbot job ...`` and ``mailbot digest``: scheduled jobs run by hand.

``mailbot job run NAME --dry-run`` does the job's work in a transaction that
is rolled back and deletes no file: it prints what would happen and changes
nothing. Registered by ``cli.build_parser``.
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailbot.config import Settings
from mailbot.jobs import DryRun, Jobs
from mailbot.process import Pipeline
from mailbot.store import schema
from mailbot.store.db import Database

EX_OK, EX_FAIL, EX_USAGE = 0, 1, 2


def add_parsers(sub: Any) -> None:
    job = sub.add_parser("job", help="scheduled jobs: list, run one now")
    job_sub = job.add_subparsers(dest="job_command", required=True)
    job_sub.add_parser("list", help="the jobs mailbot run schedules")
    run = job_sub.add_parser("run", help="run one job now")
    run.add_argument("name", choices=Jobs.NAMES)
    run.add_argument("--dry-run", action="store_true", help="show what it would do; change nothing")

    dig = sub.add_parser("digest", help="the managers' daily digest: print it, or send it now")
    mode = dig.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="print each manager's digest")
    mode.add_argument("--send", action="store_true", help="queue each manager's digest now")
    dig.add_argument("--day", type=date.fromisoformat, help="the day (default: yesterday)")
    dig.add_argument("--manager", help="only this manager's address")


def _jobs(settings: Settings) -> tuple[Database, Jobs]:
    db = Database(settings.effective_database_url)
    schema.check_schema(db)
    pipeline = Pipeline(db, settings)
    pipeline.sync_people()
    from mailbot.scheduler import build_jobs  # APScheduler: job commands only

    return db, build_jobs(db, pipeline)


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    if args.job_command == "list":
        every = settings.jobs.interval_seconds
        for name in Jobs.NAMES:
            print(f"{name:16} every {every:g} s")
        return EX_OK
    db, jobs = _jobs(settings)
    try:
        report = jobs.run(args.name, dry_run=args.dry_run)
    finally:
        db.close()
    prefix = "would do" if args.dry_run else "done"
    for line in report.done:
        print(f"{prefix}: {line}")
    note = " (dry run, nothing changed)" if args.dry_run else ""
    print(f"{args.name}: {len(report.done)} act(s){note}")
    return EX_OK


def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    db, jobs = _jobs(settings)
    try:
        managers = [
            m
            for m in jobs.people().managers
            if args.manager is None or m.email == args.manager.lower()
        ]
        if not managers:
            print(
                "no active manager in agents.yaml"
                + (f" named {args.manager}" if args.manager else "")
            )
            return EX_FAIL
        now = jobs.clock()
        try:
            with db.transaction() as session:
                for manager in managers:
                    local = now.astimezone(ZoneInfo(manager.agent.time_zone))
                    day = args.day or local.date() - timedelta(days=1)
                    text = jobs.send_digest(session, manager, day, now)
                    if args.dry_run:
                        print(f"==== digest of {day} for {manager.email} ====")
                        print(text)
                    else:
                        print(f"queued the digest of {day} to {manager.email}")
                if args.dry_run:
                    raise DryRun
        except DryRun:
            pass
    finally:
        db.close()
    return EX_OK
