"""Runs AUTOMATIC1111 WebUI API calls (`/sdapi/v1/*`), reporting progress by polling.

A1111's API is synchronous: `POST /sdapi/v1/txt2img` answers only when the images are done,
so progress comes from a second loop polling `GET /sdapi/v1/progress` while the request is in
flight. The server runs one generation at a time under a global lock, and its interrupt is
global too, so this connector only interrupts while one of its own requests is in flight.

Settings: the A1111 section below (listed in release/.env.worker.example).

Payload, as the original emp-redis connector took it:
  {"endpoint": "txt2img", "method": "POST", "payload": {...A1111 request body...}}
endpoint and method are optional (txt2img, POST); without a "payload" object the remaining
fields are the body. A top-level "model" (or the body's override_settings.sd_model_checkpoint)
is checked against `/sdapi/v1/sd-models` and sent as the checkpoint override.

Warm models: the checkpoint A1111 has loaded, `sd_model_checkpoint` of `GET
/sdapi/v1/options`, read by every health check and after every generation (an override is
restored afterwards by default, so the job's own checkpoint is not assumed), reported in
the spellings a job may use for it (title, short name, file name).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

from shared.config import ConfigError
from shared.model_refs import bounded
from shared.setting import Setting, number
from shared.setting_section import Section
from worker.connectors.base import (
    Connector,
    Health,
    JobCancelled,
    JobContext,
    JobFailed,
    ProgressFn,
)
from worker.connectors.httpcommon import HttpService, body_excerpt, response_json
from worker.connectors.output_store import OutputStore, StoreError, bytes_source, inline
from worker.connectors.setting_kinds import http_url
from worker.connectors.util import bad_payload, payload_mapping, shorten

log = logging.getLogger(__name__)

PROBE_TIMEOUT: Final = 10.0
_ENDPOINT = re.compile(r"[A-Za-z0-9_-]{1,64}")
# 500s whose class says the request itself was bad: another attempt would fail the same way.
_INVALID_REQUEST_ERRORS: Final = frozenset(
    {"ValueError", "TypeError", "KeyError", "ValidationError", "RequestValidationError"}
)


def _credentials(name: str, value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ConfigError(name, "expected user:password")
    return (user, password)


A1111 = Section("AUTOMATIC1111 connector (SERVICES=a1111; start the WebUI with --api)")
A1111_URL = A1111.add(http_url("A1111_URL", "http://127.0.0.1:7860", doc="A1111's address"))
A1111_AUTH: Setting[tuple[str, str] | None] = A1111.add(
    Setting(
        "A1111_AUTH",
        None,
        "user:password when the WebUI runs with --api-auth; empty: none",
        _credentials,
        secret=True,
    )
)
A1111_POLL_SECONDS = A1111.add(
    number("A1111_POLL_SECONDS", 0.5, lo=0.01, doc="Progress polling interval")
)
A1111_TIMEOUT_SECONDS = A1111.add(
    number("A1111_TIMEOUT_SECONDS", 3600.0, lo=1, doc="Limit for one generation request")
)
A1111_CANCEL_GRACE_SECONDS = A1111.add(
    number(
        "A1111_CANCEL_GRACE_SECONDS",
        5.0,
        lo=0,
        doc="How long to wait for A1111 to confirm an interrupt",
    )
)


class A1111Connector(Connector):
    name = "a1111"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        values = env or {}
        self.base_url = A1111_URL.read(values)
        self.poll_seconds = A1111_POLL_SECONDS.read(values)
        self.timeout = A1111_TIMEOUT_SECONDS.read(values)
        self.cancel_grace = A1111_CANCEL_GRACE_SECONDS.read(values)
        self.http = HttpService(
            "A1111", self.base_url, timeout=self.timeout, auth=A1111_AUTH.read(values)
        )
        self._models: list[Mapping[str, Any]] | None = None
        self._warm: list[str] = []  # the loaded checkpoint's spellings
        self._in_flight: set[str] = set()
        self._interrupted: set[str] = set()
        self.store = OutputStore.from_env(values)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._load_models()
        except JobFailed as exc:
            log.warning("A1111 at %s is not usable yet: %s", self.base_url, exc.message)
            return
        log.info("A1111 at %s offers %d model(s)", self.base_url, len(self._models or ()))

    async def health(self) -> Health:
        try:
            response = await self.http.request(
                "GET", "/sdapi/v1/options", request_timeout=PROBE_TIMEOUT
            )
            if response.status_code not in (200, 401, 404):
                # A broken options file should not hide a server that can still generate.
                response = await self.http.request(
                    "GET", "/sdapi/v1/progress", request_timeout=PROBE_TIMEOUT
                )
        except JobFailed as exc:
            return Health(ok=False, detail=exc.message)
        if response.status_code != 200:
            return Health(ok=False, detail=_failure(response).message)
        body = response_json(response)
        model = self._note_options(body)
        if model is None:
            return Health(ok=True, detail="A1111 answers")
        return Health(ok=True, detail=f"model {model}", info={"model": model})

    def capabilities(self) -> Mapping[str, Any]:
        if not self._models:
            return {}
        return {"models": _model_names(self._models)}

    def warm_models(self) -> Sequence[str]:
        return self._warm

    def _note_options(self, options: Any) -> str | None:
        """Take the loaded checkpoint from an options body; None when it names none."""
        model = options.get("sd_model_checkpoint") if isinstance(options, Mapping) else None
        if not isinstance(model, str) or not model:
            return None
        self._warm = _loaded_spellings(model, self._models or [])
        return model

    async def _read_loaded_model(self) -> None:
        """Best effort: a failure leaves the last known checkpoint (the health check
        corrects it)."""
        with contextlib.suppress(JobFailed):
            response = await self.http.request(
                "GET", "/sdapi/v1/options", request_timeout=PROBE_TIMEOUT
            )
            if response.status_code == 200:
                self._note_options(response_json(response))

    async def close(self) -> None:
        await self.http.aclose()
        if self.store is not None:
            await self.store.aclose()

    async def interrupt(self, job_id: str) -> None:
        # /interrupt stops whatever A1111 is generating: only send it for our own request.
        if job_id not in self._in_flight or job_id in self._interrupted:
            return
        self._interrupted.add(job_id)
        try:
            await self.http.request(
                "POST", "/sdapi/v1/interrupt", json_body={}, request_timeout=PROBE_TIMEOUT
            )
        except JobFailed as exc:
            log.warning("could not interrupt A1111 for job %s: %s", job_id, exc.message)

    # --- one job -------------------------------------------------------------------------

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        endpoint, method, body, model = _parse_payload(job.payload)
        if model is not None:
            title = await self._resolve_model(model)
            overrides = dict(body.get("override_settings") or {})
            overrides["sd_model_checkpoint"] = title
            body = {**body, "override_settings": overrides}
        if cancel.is_set():
            raise JobCancelled("cancelled before the request was sent")

        path = f"/sdapi/v1/{endpoint}"
        self._in_flight.add(job.job_id)
        request = asyncio.ensure_future(
            self.http.request(method, path, json_body=body if method != "GET" else None)
        )
        poller = asyncio.ensure_future(self._poll_progress(progress))
        waiter = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait([request, waiter], return_when=asyncio.FIRST_COMPLETED)
            if not request.done():
                await self.interrupt(job.job_id)
                # Interrupted generations return early (with partial images); wait for that so
                # the server is idle before the worker hands it the next job.
                await asyncio.wait([request], timeout=self.cancel_grace)
                raise JobCancelled("cancelled; A1111 was interrupted")
            response = request.result()
        except asyncio.CancelledError:
            # The task itself was cancelled: still stop the generation we started.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.interrupt(job.job_id), PROBE_TIMEOUT)
            raise
        finally:
            self._in_flight.discard(job.job_id)
            self._interrupted.discard(job.job_id)
            for task in (waiter, poller, request):
                task.cancel()
            for task in (poller, request):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

        await self._read_loaded_model()
        if response.status_code != 200:
            raise _failure(response)
        result = _result(response)
        if self.store is not None and isinstance(result, dict) and result.get("images"):
            await progress(99.0, f"storing {len(result['images'])} image(s)")
            result["images"] = await store_images(self.store, job, result["images"])
        return result

    async def _poll_progress(self, progress: ProgressFn) -> None:
        last: tuple[float, str] | None = None
        best = 0.0
        while True:
            await asyncio.sleep(self.poll_seconds)  # a helper task: cancelled when run() ends
            try:
                response = await self.http.request(
                    "GET",
                    "/sdapi/v1/progress",
                    params={"skip_current_image": "true"},
                    request_timeout=PROBE_TIMEOUT,
                )
            except JobFailed:
                continue
            report = _progress_report(response_json(response))
            if report is None:
                continue
            percent, message = report
            best = max(best, percent)  # hires fix and batches can move the figure back
            if (best, message) != last:
                last = (best, message)
                try:
                    await progress(best, message)
                except Exception:
                    log.exception("progress callback failed")

    # --- models --------------------------------------------------------------------------

    async def _load_models(self) -> list[Mapping[str, Any]]:
        response = await self.http.request(
            "GET", "/sdapi/v1/sd-models", request_timeout=PROBE_TIMEOUT
        )
        if response.status_code != 200:
            raise _failure(response)
        body = response_json(response)
        models = [m for m in body if isinstance(m, Mapping)] if isinstance(body, list) else []
        self._models = models
        return models

    async def _resolve_model(self, wanted: str) -> str:
        """The checkpoint title A1111 wants for `wanted`, which may be spelled as the title,
        model name, file name or hash. The cached list is refreshed once before giving up,
        since checkpoints can be added while the worker runs."""
        if self._models is not None:
            title = _match_model(wanted, self._models)
            if title is not None:
                return title
        models = await self._load_models()
        title = _match_model(wanted, models)
        if title is None:
            names = ", ".join(_model_names(models)[:20]) or "none"
            raise JobFailed(
                f"A1111 does not have the model {wanted!r} (available: {names})",
                retryable=False,
                details={"model": wanted},
            )
        return title


def _parse_payload(
    payload: Mapping[str, Any],
) -> tuple[str, str, dict[str, Any], str | None]:
    endpoint = payload.get("endpoint", "txt2img")
    if not isinstance(endpoint, str):
        raise bad_payload("endpoint", "expected a string such as 'txt2img'")
    endpoint = endpoint.strip().removeprefix("/").removeprefix("sdapi/v1/")
    if not _ENDPOINT.fullmatch(endpoint):
        raise bad_payload("endpoint", f"expected an /sdapi/v1 endpoint name, got {endpoint!r}")
    method = payload.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise bad_payload("method", "expected GET or POST")
    if "payload" in payload:
        body = dict(payload_mapping(payload, "payload") or {})
    else:
        body = {k: v for k, v in payload.items() if k not in ("endpoint", "method", "model")}
    model = payload.get("model")
    overrides = body.get("override_settings")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise bad_payload("payload.override_settings", "expected an object")
    if model is None and overrides is not None:
        model = overrides.get("sd_model_checkpoint")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise bad_payload("model", "expected a checkpoint name")
    return endpoint, method.upper(), body, model.strip() if model else None


def _match_model(wanted: str, models: list[Mapping[str, Any]]) -> str | None:
    for fold in (False, True):  # an exact spelling wins over a case-insensitive one
        key = wanted.lower() if fold else wanted
        for model in models:
            spellings = {s.lower() for s in _spellings(model)} if fold else _spellings(model)
            if key in spellings:
                return str(model.get("title") or model.get("model_name"))
    return None


def _spellings(model: Mapping[str, Any]) -> set[str]:
    names = {str(model[k]) for k in ("title", "model_name", "hash", "sha256") if model.get(k)}
    title = str(model.get("title") or "")
    names.add(re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", title))  # "x.safetensors [6ce0161689]"
    filename = str(model.get("filename") or "").replace("\\", "/").rsplit("/", 1)[-1]
    if filename:
        names.update({filename, filename.rsplit(".", 1)[0]})
    names.discard("")
    return names


def _loaded_spellings(checkpoint: str, models: list[Mapping[str, Any]]) -> list[str]:
    """The names a job may give the loaded checkpoint: its title as the options give it,
    the short name of its model entry, and the title without its hash (the file name)."""
    names = {checkpoint: None}
    entry = next((m for m in models if m.get("title") == checkpoint), None)
    if entry is not None and entry.get("model_name"):
        names[str(entry["model_name"])] = None
    bare = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", checkpoint)  # "x.safetensors [6ce0161689]"
    names[bare] = None
    return [name for name in bounded(names) if name]


def _model_names(models: list[Mapping[str, Any]]) -> list[str]:
    """What the worker advertises: title and short name, so either spelling in a job's
    `requirements.models` matches."""
    names: dict[str, None] = {}
    for model in models:
        for key in ("title", "model_name"):
            if model.get(key):
                names[str(model[key])] = None
    return list(names)


def _progress_report(body: Any) -> tuple[float, str] | None:
    if not isinstance(body, Mapping):
        return None
    state = body.get("state")
    if not isinstance(state, Mapping):
        state = {}
    if state.get("job_count") == 0:  # idle, or our request still waits for the lock
        return None
    fraction = body.get("progress")
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        return None
    percent = min(99.0, max(0.0, float(fraction) * 100))
    parts = []
    step, steps = state.get("sampling_step"), state.get("sampling_steps")
    if isinstance(step, int) and isinstance(steps, int) and steps > 0:
        parts.append(f"step {step}/{steps}")
    job_no, job_count = state.get("job_no"), state.get("job_count")
    if isinstance(job_no, int) and isinstance(job_count, int) and job_count > 1:
        parts.append(f"batch {job_no + 1}/{job_count}")
    eta = body.get("eta_relative")
    if isinstance(eta, int | float) and eta > 0:
        parts.append(f"eta {eta:.1f}s")
    return percent, ", ".join(parts) or "generating"


def _result(response: httpx.Response) -> Any:
    body = response_json(response)
    if body is None:
        raise JobFailed(
            f"A1111 answered 200 with a body that is not JSON: {body_excerpt(response)}",
            retryable=True,
        )
    if not isinstance(body, Mapping) or "images" not in body:
        return body  # a non-generation endpoint: hand back what it said
    info: Any = body.get("info")
    if isinstance(info, str):
        with contextlib.suppress(ValueError):
            info = json.loads(info)
    return {"images": body.get("images") or [], "parameters": body.get("parameters"), "info": info}


def _failure(response: httpx.Response) -> JobFailed:
    """A1111's error bodies: 422 `{"detail": [{loc, msg, type}]}` from request validation;
    every other error `{"error": <exception class>, "detail", "body", "errors": str(exc)}`;
    404 `{"detail": "Not Found"}` when the route does not exist (no --api)."""
    status = response.status_code
    body = response_json(response)
    details = {"status": status, "body": body if body is not None else body_excerpt(response)}
    if status == 422 and isinstance(body, Mapping) and isinstance(body.get("detail"), list):
        problems = []
        for item in body["detail"]:
            if isinstance(item, Mapping):
                location = ".".join(str(p) for p in item.get("loc") or ())
                problems.append(f"{location}: {item.get('msg', 'invalid')}")
        message = "A1111 rejected the request: " + ("; ".join(problems) or "invalid")
        return JobFailed(message, retryable=False, details=details)
    if status == 401:
        return JobFailed(
            "A1111 refused the credentials (check A1111_AUTH against --api-auth)",
            retryable=True,
            details=details,
        )
    if isinstance(body, Mapping) and "error" in body:
        error = str(body.get("error") or "Error")
        text = str(body.get("errors") or body.get("detail") or "").strip()
        message = f"A1111 failed ({status}): {error}: {shorten(text)}" if text else error
        # Below 500 it is an HTTPException such as "Sampler not found": the request names
        # something the server does not have.
        retryable = error not in _INVALID_REQUEST_ERRORS if status >= 500 else status in (408, 429)
        return JobFailed(message, retryable=retryable, details=details)
    if status == 404:
        return JobFailed(
            f"A1111 at {response.request.url} answered 404 Not Found: the server probably runs "
            "without --api",
            retryable=True,
            details=details,
        )
    text = body_excerpt(response) if body is None else shorten(json.dumps(body, default=str))
    return JobFailed(f"A1111 answered {status}: {text}", retryable=status >= 500, details=details)


IMAGE_KINDS: Final = (
    (b"\x89PNG", "image/png", "png"),
    (b"\xff\xd8", "image/jpeg", "jpg"),
    (b"RIFF", "image/webp", "webp"),
    (b"GIF8", "image/gif", "gif"),
)


async def store_images(store: OutputStore, job: JobContext, images: list[Any]) -> list[Any]:
    """A1111's base64 images to the store, as `{n}-image.<ext>`; anything that is not base64
    text is kept as it came."""
    entries: list[Any] = []
    budget = store.inline_max
    for n, image in enumerate(images):
        try:
            data = base64.b64decode(image, validate=True) if isinstance(image, str) else None
        except ValueError:
            data = None
        if data is None:
            entries.append(image)
            continue
        content_type, extension = next(
            ((kind, ext) for magic, kind, ext in IMAGE_KINDS if data.startswith(magic)),
            ("application/octet-stream", "bin"),
        )
        name = f"image.{extension}"
        key = store.key_for(job.customer_id, job.job_id, n, name)
        try:
            stored = await store.put(key, functools.partial(bytes_source, data), content_type)
        except StoreError as exc:
            raise store.failure(f"{n}-{name}", exc) from exc
        entry = store.describe(stored)
        budget -= inline(entry, stored, budget)
        entries.append(entry)
    return entries
