"""The Python SDK of emp-redis: submit jobs to a hub, wait for them, follow their events.

    from emp import Client

    with Client("http://hub:3001", token="...") as emp:       # or EMP_HUB_URL / EMP_TOKEN
        job = emp.run("simulation", {"steps": 3}, timeout=60)
        print(job.status, job.result)

`AsyncClient` offers the same methods for asyncio. This package talks to the hub over its
public HTTP and WebSocket API only: it imports nothing from the hub, the worker or their
shared code, and needs just httpx and websockets.
"""

from emp._calls import Submitted
from emp._config import package_version
from emp._stream_async import AsyncEventStream
from emp._stream_sync import EventStream
from emp.async_client import AsyncClient, AsyncJobHandle
from emp.client import Client, JobHandle
from emp.errors import (
    ApiError,
    BadRequest,
    Conflict,
    EmpError,
    Forbidden,
    HubUnreachable,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    ServerError,
    Unauthorized,
    WaitTimeout,
)
from emp.events import Event, JobEvent, Snapshot, StreamGap, WorkerEvent
from emp.fleet import Gpu, Percentiles, Stats, Worker
from emp.images import Image
from emp.models import Job, JobPage, JobRequest, JobStatus, Waiting
from emp.retry import RetryPolicy

__version__ = package_version()

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncJobHandle",
    "BadRequest",
    "Client",
    "Conflict",
    "EmpError",
    "Event",
    "EventStream",
    "Forbidden",
    "Gpu",
    "HubUnreachable",
    "Image",
    "Job",
    "JobEvent",
    "JobFailed",
    "JobHandle",
    "JobPage",
    "JobRequest",
    "JobStatus",
    "NotFound",
    "PayloadTooLarge",
    "Percentiles",
    "ProtocolError",
    "RetryPolicy",
    "ServerError",
    "Snapshot",
    "Stats",
    "StreamGap",
    "Submitted",
    "Unauthorized",
    "WaitTimeout",
    "Waiting",
    "Worker",
    "WorkerEvent",
    "__version__",
]
