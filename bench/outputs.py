"""Output store: what storing a job's outputs costs the worker (worker/connectors/output_store.py).

Against moto's S3 server on loopback (tests/s3_support.py): per job, one 2 MB PNG stored the
way a ComfyUI job stores it (HEAD for an earlier attempt's copy, one signed PUT, a presigned
URL), timed from the first request to the URL; then one large file as a multipart upload.
moto is a Python server, so these numbers are mostly its cost: a bound on what the client
adds, not what S3 or R2 would take (their throughput is the network's).
"""

from __future__ import annotations

import os
import struct
import time
import zlib

from bench.common import median, percentile, table
from tests.s3_support import loopback_s3
from worker.connectors.output_store import MIB, OutputStore, bytes_source

PNG_BYTES = 2_000_000


def png(size: int) -> bytes:
    """A valid PNG of about `size` bytes: random grey pixels, stored uncompressed."""
    width = 1000
    height = size // (width + 1)
    rows = b"".join(b"\x00" + os.urandom(width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 0))
        + chunk(b"IEND", b"")
    )


async def run(quick: bool) -> str:
    jobs = 20 if quick else 100
    big = (32 if quick else 128) * MIB
    image = png(PNG_BYTES)
    rows = []
    with loopback_s3("bench-outputs") as s3:
        store = OutputStore.from_env(s3.env("bench"))
        assert store is not None
        try:
            per_job = []
            started = time.perf_counter()
            for n in range(jobs):
                t0 = time.perf_counter()
                key = store.key_for("bench", f"job-{n}", 0, "image.png")
                stored = await store.put(key, lambda: bytes_source(image), "image/png")
                store.describe(stored)
                per_job.append((time.perf_counter() - t0) * 1000)
            total = time.perf_counter() - started
            rows.append(
                [
                    f"2 MB PNG, one per job ({jobs} jobs)",
                    len(image) * jobs / total / 1e6,
                    median(per_job),
                    percentile(per_job, 99),
                ]
            )
            data = os.urandom(big)
            t0 = time.perf_counter()
            await store.put(
                store.key_for("bench", "big", 0, "video.mp4"),
                lambda: bytes_source(data),
                "video/mp4",
            )
            seconds = time.perf_counter() - t0
            rows.append(
                [
                    f"{big // MIB} MiB file, multipart ({store.part_size // MIB} MiB parts)",
                    big / seconds / 1e6,
                    seconds * 1000,
                    seconds * 1000,
                ]
            )
            # A retried job: the file is hashed and compared with the stored ETag, not re-sent.
            t0 = time.perf_counter()
            key = store.key_for("bench", "job-0", 0, "image.png")
            await store.put(key, lambda: bytes_source(image), "image/png")
            seconds = time.perf_counter() - t0
            rows.append(
                [
                    "2 MB PNG, next attempt (already stored)",
                    len(image) / seconds / 1e6,
                    seconds * 1000,
                    seconds * 1000,
                ]
            )
        finally:
            await store.aclose()
    return table(
        "outputs: storing job outputs in an S3-compatible store (moto on loopback)",
        ["case", "MB/s", "ms per job p50", "ms per job p99"],
        rows,
    )
