"""BentoML service: one pipeline + its schedule bank; per request, the best schedule that fits.

    bentoml serve                      # from the repo root: the bundled model and its bank
    ECAD_MODEL=... ECAD_BANK=... bentoml serve

Routes: POST /generate (JSON envelope, base64 PNGs), POST /generate/png (one PNG, metadata in
X-ECAD-* headers), GET /schedules, GET /select?latency_ms=..., /readyz, /livez, /metrics.
All the logic lives in ``ecad.serving``; this file only speaks HTTP.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import time

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import anyio  # noqa: E402
import bentoml  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.responses import RedirectResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from ecad.deadline import DeadlineExceeded  # noqa: E402
from ecad.serving import (  # noqa: E402
    GenerateRequest,
    GenerationResult,
    Overloaded,
    RequestError,
    ScheduleServer,
    ServingConfig,
)

logger = logging.getLogger("ecad.server")

TIMEOUT_S = float(os.environ.get("ECAD_TIMEOUT_S", "120"))
MAX_CONCURRENCY = int(os.environ.get("ECAD_MAX_CONCURRENCY", "16"))
# Our own deadline fires a little before BentoML's traffic timeout, so the client gets our clear
# 504 and the pipeline stops between steps instead of running on behind the client's back.
DEADLINE_MARGIN_S = min(1.0, TIMEOUT_S * 0.1)

REQUESTS = bentoml.metrics.Counter(
    name="ecad_requests", documentation="Generation requests by chosen schedule and outcome",
    labelnames=["schedule", "outcome"],
)
GENERATION_SECONDS = bentoml.metrics.Histogram(
    name="ecad_generation_seconds", documentation="Pipeline wall-clock time by schedule",
    labelnames=["schedule"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
BUDGET = bentoml.metrics.Counter(
    name="ecad_budget_requests", documentation="Requests with a latency budget, by whether it was met",
    labelnames=["met"],
)


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": message} if field is None else {"error": message, "field": field}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_error(err: ValidationError) -> JSONResponse:
    details = [
        {"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]}
        for e in err.errors(include_context=False, include_input=False)
    ]
    message = "; ".join(f"{d['field']}: {d['error']}" for d in details)
    return JSONResponse({"error": message, "detail": details}, status_code=400)


def _headers(result: GenerationResult) -> dict[str, str]:
    s = result.summary()
    headers = {
        "X-ECAD-Schedule-Id": s["schedule_id"],
        "X-ECAD-Predicted-Ms": f"{s['predicted_ms']:.1f}",
        "X-ECAD-Actual-Ms": f"{s['actual_ms']:.1f}",
        "X-ECAD-Queue-Ms": f"{s['queue_ms']:.1f}",
        "X-ECAD-Seed": str(s["seed"]),
    }
    if s["budget_met"] is not None:
        headers["X-ECAD-Budget-Met"] = "true" if s["budget_met"] else "false"
    if s["notes"]:
        headers["X-ECAD-Notes"] = " | ".join(s["notes"])
    return headers


# -- read-only routes (GET), mounted beside the BentoML APIs -------------------------------------


def _server() -> ScheduleServer:
    return bentoml.get_current_service().server


async def schedules_route(request: Request) -> Response:
    return JSONResponse(_server().bank_view())


async def select_route(request: Request) -> Response:
    params = dict(request.query_params)
    allowed = {"latency_ms", "width", "height", "num_inference_steps", "num_images"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        return _error(400, f"unknown query parameter(s) {unknown}; allowed: {sorted(allowed)}", unknown[0])
    try:
        shape = GenerateRequest.model_validate({"prompt": "-", **params}).model_dump(exclude={"prompt", "seed"})
        latency = shape.pop("latency_ms")
        shape = {k: v for k, v in shape.items() if k in allowed and v is not None}
        return JSONResponse(_server().select_view(latency, **shape))
    except ValidationError as err:
        return _validation_error(err)
    except RequestError as err:
        return _error(400, str(err), err.field)


UI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")


async def root_route(request: Request) -> Response:
    return RedirectResponse("/ui/")


read_only_app = Starlette(
    routes=[
        Route("/", root_route),
        Route("/schedules", schedules_route),
        Route("/select", select_route),
        # The playground page: plain files shipped in the repo, no CDN (works offline).
        Mount("/ui", StaticFiles(directory=UI_DIR, html=True, check_dir=False), name="ui"),
    ]
)


@bentoml.service(
    name="ecad",
    workers=1,
    traffic={"timeout": TIMEOUT_S, "max_concurrency": MAX_CONCURRENCY},
)
@bentoml.asgi_app(read_only_app, path="/")
class ECAD:
    def __init__(self) -> None:
        logging.basicConfig(level=logging.INFO)
        self.server = ScheduleServer(ServingConfig.from_env())
        logger.info("serving %s with bank %s (%d schedules, profile %s)", self.server.config.model,
                    self.server.bank_path, len(self.server.schedules), self.server.profile.key)

    async def _run(self, body: object) -> GenerationResult | Response:
        arrival = time.monotonic()
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object with at least a 'prompt'")
        try:
            request = self.server.resolve(GenerateRequest.model_validate(body))
        except ValidationError as err:
            return _validation_error(err)
        except RequestError as err:
            return _error(400, str(err), err.field)
        deadline = arrival + TIMEOUT_S - DEADLINE_MARGIN_S
        call = functools.partial(self.server.generate, request, arrival=arrival, deadline=deadline)
        try:
            result = await anyio.to_thread.run_sync(call)
        except Overloaded as err:
            REQUESTS.labels(schedule="none", outcome="overloaded").inc()
            return _error(503, f"server busy: {err}", headers={"Retry-After": "1"})
        except DeadlineExceeded as err:
            REQUESTS.labels(schedule="none", outcome="timeout").inc()
            return _error(504, f"request exceeded the {TIMEOUT_S:.0f} s timeout: {err}")
        REQUESTS.labels(schedule=result.schedule_id, outcome="ok").inc()
        GENERATION_SECONDS.labels(schedule=result.schedule_id).observe(result.actual_ms / 1000.0)
        if result.budget_met is not None:
            BUDGET.labels(met=str(result.budget_met).lower()).inc()
        return result

    # The body is taken whole (positional-only parameter) and validated by GenerateRequest here, so
    # errors name the field in our format rather than BentoML's generic one.
    @bentoml.api(route="/generate")
    async def generate(self, body: dict, /) -> dict:
        """Generate images; JSON envelope with base64 PNGs and the schedule decision.

        Body: GenerateRequest (prompt, latency_ms, seed, negative_prompt, num_images, width, height,
        num_inference_steps, guidance_scale)."""
        result = await self._run(body)
        if isinstance(result, Response):
            return result
        body = {**result.summary(), "images": [base64.b64encode(p).decode() for p in result.png_bytes()]}
        return JSONResponse(body, headers=_headers(result))

    @bentoml.api(route="/generate/png")
    async def generate_png(self, body: dict, /) -> dict:
        """Generate one image; the PNG is the body and the decision is in X-ECAD-* headers."""
        if isinstance(body, dict) and body.get("num_images", 1) != 1:
            return _error(400, "num_images must be 1 for /generate/png; use /generate for several", "num_images")
        result = await self._run(body)
        if isinstance(result, Response):
            return result
        return Response(result.png_bytes()[0], media_type="image/png", headers=_headers(result))
