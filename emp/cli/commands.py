"""What each `emp` subcommand does, on the blocking SDK client.

Every command returns its exit code: 0 done, 1 the job failed or was cancelled (only
commands that wait for a job say so). Errors from the hub are raised and turned into
exit codes in one place, emp/cli/__init__.py.
"""

from __future__ import annotations

import argparse
import time
from typing import Final

from emp.cli import inputs, render
from emp.cli.output import Output, event_json
from emp.client import Client
from emp.models import Job

OK: Final = 0
JOB_FAILED: Final = 1
BAD_INPUT: Final = 2
UNREACHABLE: Final = 3


def outcome(job: Job) -> int:
    return OK if job.succeeded else JOB_FAILED


def follow(client: Client, job_id: str, out: Output, *, records: bool) -> Job:
    """Show a job's progress until it finishes, then read it back in full (the stream's
    last word does not carry the result)."""
    progress = render.Progress(job_id)
    with client.events(job_id) as stream:
        for item in stream:
            if records:
                out.record(event_json(item))
            elif out.json:
                continue  # only the finished job is printed
            elif out.tty:
                progress.update(item)
                out.status(progress.line())
            else:
                out.line(render.event_line(item))
    out.end_status()
    return client.get(job_id)


def show_job(job: Job, out: Output) -> None:
    if out.json:
        out.document(dict(job.raw))
    else:
        out.lines(render.job_details(job))


def submit(client: Client, args: argparse.Namespace, out: Output) -> int:
    handle = client.submit(
        args.service,
        inputs.payload(args.payload, args.workflow),
        customer_id=args.customer,
        priority=args.priority,
        requirements=inputs.requirements(args.require),
        id=args.id,
        max_retries=args.max_retries,
        timeout_seconds=args.timeout_seconds,
        deadline=inputs.deadline(args.deadline),
        tags=args.tag,
        idempotency_key=args.idempotency_key,
        pool=args.pool,
    )
    if not args.wait:
        if out.json:
            out.document(dict(handle.job.raw))
        else:
            out.line(handle.id)  # alone on its line: ID=$(emp submit ...)
        return OK
    job = follow(client, handle.id, out, records=False)
    show_job(job, out)
    return outcome(job)


def status(client: Client, args: argparse.Namespace, out: Output) -> int:
    show_job(client.get(args.job_id), out)
    return OK


def watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = follow(client, args.job_id, out, records=out.json)
    if not out.json:
        out.line(f"{job.id} {job.status}" + (f": {job.error}" if job.error else ""))
    return outcome(job)


def jobs(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = list(
        client.jobs(
            status=args.status,
            service_type=args.service,
            customer_id=args.customer,
            pool=args.pool,
            page_size=min(args.limit, 500),
            limit=args.limit,
        )
    )
    if out.json:
        out.document([dict(job.raw) for job in found])
    elif found:
        out.lines(render.job_rows(found))
    else:
        out.line("no jobs")
    return OK


def cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.cancel(args.job_id, args.reason)
    if out.json:
        out.document(dict(job.raw))
    else:
        out.line(f"{job.id} {job.status}")
    return OK


def retry(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.retry(args.job_id)
    if out.json:
        out.document(dict(job.raw))
    else:
        out.line(f"{job.id} {job.status} again (attempts reset)")
    return OK


def workers(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.workers(args.pool)
    if out.json:
        out.document([dict(w.raw) for w in found])
    elif found:
        out.lines(render.worker_rows(found))
    else:
        out.line("no live workers")
    return OK


def stats(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.stats(args.pool)
    if out.json:
        out.document(dict(found.raw))
    else:
        out.lines(render.stats_lines(found))
    return OK


def top(client: Client, args: argparse.Namespace, out: Output) -> int:
    """Redraw the fleet every `--interval` seconds until Ctrl-C (`--once`: one frame)."""
    while True:
        found, fleet = client.stats(), client.workers()
        if out.json:
            out.record({"stats": dict(found.raw), "workers": [dict(w.raw) for w in fleet]})
        else:
            if out.tty and not args.once:
                out.clear_screen()
            out.lines(render.top_frame(client.url, found, fleet))
        if args.once:
            return OK
        time.sleep(args.interval)
