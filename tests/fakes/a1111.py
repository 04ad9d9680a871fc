"""A fake AUTOMATIC1111 WebUI API (`--api`), after A1111's own `modules/api/api.py`, `models.py`
and `modules/shared_state.py`.

txt2img/img2img hold a global lock (like A1111's queue_lock) and take `steps * step_delay`,
updating the state `/sdapi/v1/progress` reports; `/interrupt` ends the loop early and the
request still answers 200 with (partial) images. Error bodies use A1111's shapes: 422 from
request validation, `{"error", "detail", "body", "errors"}` for exceptions, and Starlette's
`{"detail": "Not Found"}` for unknown routes (e.g. `api=False`, a server without --api).

    with FakeA1111(step_delay=0.002) as fake:
        connector = A1111Connector({"A1111_URL": fake.url})
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import FakeService, png_bytes

MODELS: list[dict[str, Any]] = [
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None,
    },
    {
        "title": "sd_xl_base_1.0.safetensors [31e35c80fc]",
        "model_name": "sd_xl_base_1.0",
        "hash": "31e35c80fc",
        "sha256": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        "filename": "/models/Stable-diffusion/sd_xl_base_1.0.safetensors",
        "config": None,
    },
]


def _error_body(exc_class: str, errors: str, detail: str = "") -> dict[str, Any]:
    return {"error": exc_class, "detail": detail, "body": "", "errors": errors}


class FakeA1111(FakeService):
    def __init__(
        self,
        *,
        step_delay: float = 0.002,
        fail: str | None = None,
        api: bool = True,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.step_delay = step_delay  # the "slow variant": raise it
        self.fail = fail  # "oom": every generation fails with a CUDA out-of-memory 500
        self.api = api
        self.auth = auth
        self.checkpoint = MODELS[0]["title"]
        self.requests: list[tuple[str, Any]] = []  # (endpoint, body) of generations
        self.interrupts = 0
        self.progress_polls = 0
        self._state = self._idle_state()
        self._interrupted = False
        self._lock: asyncio.Lock | None = None
        super().__init__(self._app())

    @property
    def generating(self) -> bool:
        return bool(self._state["job_count"])

    @staticmethod
    def _idle_state() -> dict[str, Any]:
        return {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }

    def _app(self) -> Starlette:
        routes = []
        if self.api:
            routes = [
                Route("/sdapi/v1/txt2img", self._txt2img, methods=["POST"]),
                Route("/sdapi/v1/img2img", self._img2img, methods=["POST"]),
                Route("/sdapi/v1/progress", self._progress, methods=["GET"]),
                Route("/sdapi/v1/interrupt", self._interrupt, methods=["POST"]),
                Route("/sdapi/v1/sd-models", self._sd_models, methods=["GET"]),
                Route("/sdapi/v1/options", self._get_options, methods=["GET"]),
                Route("/sdapi/v1/options", self._set_options, methods=["POST"]),
            ]
        return Starlette(routes=routes, exception_handlers={HTTPException: self._http_error})

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and exc.detail == "Not Found":
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse(
            _error_body("HTTPException", f"{exc.status_code}: {exc.detail}", str(exc.detail)),
            status_code=exc.status_code,
        )

    def _check_auth(self, request: Request) -> Response | None:
        if self.auth is None:
            return None
        expected = base64.b64encode(":".join(self.auth).encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"detail": "Incorrect username or password"}, status_code=401)
        return None

    async def _txt2img(self, request: Request) -> Response:
        return await self._generate(request, "txt2img")

    async def _img2img(self, request: Request) -> Response:
        return await self._generate(request, "img2img")

    async def _generate(self, request: Request, endpoint: str) -> Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            detail = [{"loc": ["body"], "msg": "invalid JSON", "type": "value_error.jsondecode"}]
            return JSONResponse({"detail": detail}, status_code=422)
        steps = body.get("steps", 20)
        if isinstance(steps, bool) or not isinstance(steps, int):
            detail = [
                {
                    "loc": ["body", "steps"],
                    "msg": "value is not a valid integer",
                    "type": "type_error.integer",
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        if endpoint == "img2img" and not body.get("init_images"):
            raise HTTPException(404, "Init image not found")
        self.requests.append((endpoint, body))
        checkpoint = (body.get("override_settings") or {}).get("sd_model_checkpoint")
        if checkpoint is not None and checkpoint not in [m["title"] for m in MODELS]:
            return JSONResponse(
                _error_body("RuntimeError", f"model {checkpoint!r} not found"), status_code=500
            )
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # A1111 runs one generation at a time
            return await self._sample(endpoint, body, steps)

    async def _sample(self, endpoint: str, body: dict[str, Any], steps: int) -> Response:
        self._interrupted = False
        batch = int(body.get("batch_size", 1)) * int(body.get("n_iter", 1))
        self._state = {
            **self._idle_state(),
            "job": f"scripts_{endpoint}",
            "job_count": -1,  # between job start and the first step, as upstream
            "job_timestamp": "20260101120000",
            "sampling_steps": steps,
        }
        try:
            for step in range(steps):
                if self._interrupted:
                    break
                await asyncio.sleep(self.step_delay)
                self._state.update(job_count=1, sampling_step=step + 1)
                if self.fail == "oom" and step + 1 == max(1, steps // 2):
                    message = "CUDA out of memory. Tried to allocate 2.00 GiB"
                    return JSONResponse(_error_body("OutOfMemoryError", message), status_code=500)
        finally:
            self._state = self._idle_state()
        image = base64.b64encode(png_bytes(8, 8)).decode()
        model = body.get("override_settings", {}).get("sd_model_checkpoint", self.checkpoint)
        info = {
            "prompt": body.get("prompt", ""),
            "all_prompts": [body.get("prompt", "")] * batch,
            "seed": body.get("seed", 1234),
            "all_seeds": [body.get("seed", 1234)] * batch,
            "width": body.get("width", 512),
            "height": body.get("height", 512),
            "sampler_name": body.get("sampler_name", "Euler"),
            "steps": steps,
            "cfg_scale": body.get("cfg_scale", 7.0),
            "sd_model_name": model.split(".")[0],
            "sd_model_hash": model.rsplit("[", 1)[-1].rstrip("]"),
            "infotexts": [f"{body.get('prompt', '')}\nSteps: {steps}"] * batch,
            "job_timestamp": "20260101120000",
            "interrupted": self._interrupted,
        }
        return JSONResponse(
            {"images": [image] * batch, "parameters": body, "info": json.dumps(info)}
        )

    async def _progress(self, request: Request) -> Response:
        self.progress_polls += 1
        state = dict(self._state)
        steps = state["sampling_steps"] or 1
        progress = min(1.0, state["sampling_step"] / steps) if state["job_count"] else 0.0
        eta = (steps - state["sampling_step"]) * self.step_delay if state["job_count"] else 0.0
        return JSONResponse(
            {
                "progress": progress,
                "eta_relative": eta,
                "state": state,
                "current_image": None,
                "textinfo": None,
            }
        )

    async def _interrupt(self, request: Request) -> Response:
        self.interrupts += 1
        self._interrupted = True
        self._state["interrupted"] = True
        return JSONResponse({})

    async def _sd_models(self, request: Request) -> Response:
        return self._check_auth(request) or JSONResponse(MODELS)

    async def _get_options(self, request: Request) -> Response:
        return self._check_auth(request) or JSONResponse(
            {"sd_model_checkpoint": self.checkpoint, "samples_format": "png"}
        )

    async def _set_options(self, request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        wanted = body.get("sd_model_checkpoint")
        if wanted is not None:
            if wanted not in [m["title"] for m in MODELS]:
                return JSONResponse(
                    _error_body("RuntimeError", f"model {wanted!r} not found"), status_code=500
                )
            self.checkpoint = wanted
        return JSONResponse(None)
