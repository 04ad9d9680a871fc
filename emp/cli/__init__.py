"""`emp`: the command line of emp-redis, built on the SDK's blocking Client.

    emp submit --service comfyui --workflow wf.json --require gpu.memory_gb=24 --wait
    emp status ID | emp watch ID | emp jobs --status failed | emp cancel ID | emp retry ID
    emp workers | emp stats | emp top

The hub and token come from --hub / --token, else EMP_HUB_URL / EMP_TOKEN. Text goes to
people (tables; a progress bar on a terminal); --json prints the hub's JSON instead.

Exit codes: 0 done; 1 the job failed or was cancelled (submit --wait, watch); 2 bad
input (flags, files, or a request the hub refused with a 4xx); 3 the hub cannot be
reached (or answered 5xx, or something this client cannot read); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final

from emp._config import TOKEN_ENV, URL_ENV, package_version
from emp.cli import commands
from emp.cli.commands import BAD_INPUT, JOB_FAILED, UNREACHABLE
from emp.cli.inputs import UsageError
from emp.cli.output import Output
from emp.client import Client
from emp.errors import ApiError, HubUnreachable, JobFailed, ProtocolError
from emp.models import JobStatus

INTERRUPTED: Final = 130

Command = Callable[[Client, argparse.Namespace, Output], int]


def _common() -> argparse.ArgumentParser:
    """Options every subcommand takes, before or after its name. SUPPRESS keeps a
    subcommand's unset option from overwriting one given before the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--hub", default=argparse.SUPPRESS, metavar="URL", help=f"hub URL (default ${URL_ENV})"
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"bearer token (default ${TOKEN_ENV}; prefer the variable, flags show in ps)",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="emp",
        parents=[common],
        description="Submit and follow jobs on an emp-redis hub.",
        epilog="exit codes: 0 ok, 1 job failed, 2 bad input, 3 cannot reach the hub",
    )
    parser.add_argument("--version", action="version", version=f"emp {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(run=run)
        return p

    p = command("submit", commands.submit, "submit a job (prints its id)")
    p.add_argument("--service", required=True, help="service type, e.g. comfyui")
    p.add_argument("--workflow", metavar="FILE", help="ComfyUI API-format workflow (- for stdin)")
    p.add_argument("--payload", metavar="JSON", help="the payload as JSON, or @FILE")
    p.add_argument("--priority", type=int, help="0-100 (default: the hub's, 50)")
    p.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a requirement, e.g. gpu.memory_gb=24, models=a.safetensors,b.pt, region=eu "
        "(repeatable)",
    )
    p.add_argument("--customer", help="customer id")
    p.add_argument(
        "--pool", help="the pool to queue it in (default: the hub's HUB_POOL_RULES, else its own)"
    )
    p.add_argument("--id", help="job id (default: the hub's)")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    p.add_argument("--max-retries", type=int)
    p.add_argument("--timeout-seconds", type=float, help="the job's execution time limit")
    p.add_argument("--deadline", help="ISO-8601 time the job should be done by")
    p.add_argument("--idempotency-key", help="default: a fresh one, reused across retries")
    p.add_argument("--wait", action="store_true", help="follow the job until it finishes")

    p = command("status", commands.status, "show one job")
    p.add_argument("job_id", metavar="ID")

    p = command("watch", commands.watch, "follow a job's progress until it finishes")
    p.add_argument("job_id", metavar="ID")

    p = command("jobs", commands.jobs, "list jobs, live ones first")
    p.add_argument("--status", choices=[str(s) for s in JobStatus])
    p.add_argument("--service", help="service type")
    p.add_argument("--customer", help="customer id")
    p.add_argument("--pool", help="only this pool (default: every pool the hub serves)")
    p.add_argument("--limit", type=_positive, default=50, help="at most this many (50)")

    p = command("cancel", commands.cancel, "cancel a pending or active job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--reason")

    p = command("retry", commands.retry, "send a failed job back to the queue (operator)")
    p.add_argument("job_id", metavar="ID")

    p = command("workers", commands.workers, "list live workers (operator)")
    p.add_argument("--pool", help="only this pool's (default: every pool the hub serves)")
    p = command("stats", commands.stats, "queue, throughput and timings (operator)")
    p.add_argument("--pool", help="only this pool (default: the sum over every pool)")
    p = command("top", commands.top, "a live view of the fleet (operator)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between frames (2)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    out = Output(json_mode=getattr(args, "json", False))
    run: Command = args.run
    try:
        client = Client(getattr(args, "hub", None), token=getattr(args, "token", None))
    except ValueError as exc:  # a malformed hub URL
        return _fail(f"emp: {exc}", BAD_INPUT, out)
    try:
        with client:
            return run(client, args, out)
    except UsageError as exc:
        return _fail(f"emp: {exc}", BAD_INPUT, out)
    except ApiError as exc:
        return _fail(f"emp: {exc}", BAD_INPUT if exc.status < 500 else UNREACHABLE, out)
    except (HubUnreachable, ProtocolError) as exc:
        return _fail(f"emp: {exc}", UNREACHABLE, out)
    except JobFailed as exc:
        return _fail(f"emp: {exc}", JOB_FAILED, out)
    except KeyboardInterrupt:
        out.end_status()
        return INTERRUPTED
    except BrokenPipeError:  # `emp jobs | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return commands.OK


def _fail(message: str, code: int, out: Output) -> int:
    out.end_status()
    print(message, file=sys.stderr, flush=True)
    return code
