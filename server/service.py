"""BentoML service: one pipeline + its schedule banks; per request, the best schedule that fits.

    bentoml serve                      # from the repo root: the bundled model and its bank
    ECAD_MODEL=... ECAD_BANK=... bentoml serve

Routes: POST /generate (JSON: base64 PNGs, or MP4s for a video model, and how they were served),
POST /generate/png (an image model's PNG, how it was served in X-ECAD-* headers), POST
/generate/video (a video model's MP4, the same headers), GET /schedules, GET /select?latency_ms=...,
/readyz, /livez, /metrics. The POST routes take the fields of ``ecad.serving.GenerateRequest`` (the
schema /docs shows), so ``bentoml.SyncHTTPClient(url).generate(prompt=..., latency_ms=300)`` works.
All the logic lives in ``ecad.serving``; this file only speaks HTTP.
"""

from __future__ import annotations

import base64
import functools
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
from ecad.serving.config import ServingConfig  # noqa: E402

CONFIG = ServingConfig.from_env()
# Per-server Prometheus files: `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir at
# start, so a second server with the same home would wipe the first one's counters. The serve
# process makes a folder of its own (``preflight``) and hands it to its worker in this variable;
# set before any metric value exists (prometheus_client reads it when it opens its files).
METRICS_DIR_VAR = "ECAD_METRICS_DIR"
if CONFIG.metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = CONFIG.metrics_dir

import anyio  # noqa: E402
import bentoml  # noqa: E402
from PIL import Image  # noqa: E402
from bentoml.validators import ContentType  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, RedirectResponse, Response  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from ecad.bank import BankError  # noqa: E402
from ecad.deadline import DeadlineExceeded, RequestCancelled, monotonic_ms  # noqa: E402
from ecad.serving import (  # noqa: E402
    MP4,
    GeneratePngRequest,
    GenerateRequest,
    GenerateResponse,
    GenerateVideoRequest,
    GenerationReport,
    GenerationResult,
    Infeasible,
    Overloaded,
    RequestError,
    ScheduleServer,
    load_banks,
    tensor_to_image,
)
from server.guard import CLIENT_GONE, RequestGuard, RouteMetrics, error_response, validation_error_response  # noqa: E402

logger = logging.getLogger("ecad.server")

TIMEOUT_MS = CONFIG.timeout_s * 1000.0
# Our own deadline fires a little before BentoML's traffic timeout, so the client gets our clear
# 504 and the pipeline stops between steps instead of running on behind the client's back.
DEADLINE_MARGIN_MS = min(1000.0, TIMEOUT_MS * 0.1)
# BentoML's traffic timeout must not fire before ours.
TRAFFIC_TIMEOUT_S = CONFIG.timeout_s + 5.0

REQUESTS = bentoml.metrics.Counter(
    name="ecad_requests", documentation="Generation requests by chosen schedule and outcome",
    labelnames=["schedule", "outcome"],
)
GENERATION_SECONDS = bentoml.metrics.Histogram(
    name="ecad_generation_seconds", documentation="Pipeline wall-clock time by schedule",
    labelnames=["schedule"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
HTTP_REQUESTS = bentoml.metrics.Counter(
    name="ecad_http_requests", documentation="HTTP answers by route template and status code",
    labelnames=["route", "status"],
)
ROUTES = ("/generate", "/generate/png", "/generate/video", "/schedules", "/select", "/metrics", "/readyz", "/livez",
          "/healthz", "/", "/ui/*", "/docs", "/docs.json")
BUDGET = bentoml.metrics.Counter(
    name="ecad_budget_requests", documentation="Requests with a latency budget, by whether it was met",
    labelnames=["met"],
)


def _headers(report: GenerationReport) -> dict[str, str]:
    headers = {
        "X-ECAD-Schedule-Id": report.schedule_id,
        "X-ECAD-Bank": report.bank,
        "X-ECAD-Predicted-Ms": f"{report.predicted_ms:.1f}",
        "X-ECAD-Actual-Ms": f"{report.actual_ms:.1f}",
        "X-ECAD-Queue-Ms": f"{report.queue_ms:.1f}",
        "X-ECAD-Paused-Ms": f"{report.paused_ms:.1f}",
        "X-ECAD-Batch-Images": str(report.batch_images),
        "X-ECAD-Seed": str(report.seed),
    }
    if report.num_frames is not None:
        headers["X-ECAD-Num-Frames"] = str(report.num_frames)
    q = report.quality
    interval = f" [{q.low:.4g}, {q.high:.4g}]" if q.low is not None and q.high is not None else ""
    headers["X-ECAD-Quality"] = f"{q.metric} {q.value:.4g}{interval} ({'estimated' if q.estimated else 'measured'}: {q.basis})"
    if report.budget_met is not None:
        headers["X-ECAD-Budget-Met"] = "true" if report.budget_met else "false"
    if report.notes:
        headers["X-ECAD-Notes"] = " | ".join(report.notes)
    return headers


# -- read-only routes (GET), mounted beside the BentoML APIs -------------------------------------


def _server() -> ScheduleServer:
    return bentoml.get_current_service().server


async def schedules_route(request: Request) -> Response:
    return JSONResponse(_server().bank_view())


SELECT_PARAMS = ("latency_ms", "width", "height", "num_inference_steps", "num_images", "num_frames")


async def select_route(request: Request) -> Response:
    """The planner's choice for a request of this budget and shape arriving now (the playground's
    preview: the same planner and live state as POST /generate)."""
    params = dict(request.query_params)
    unknown = sorted(set(params) - set(SELECT_PARAMS))
    if unknown:
        return error_response(400, f"unknown query parameter(s) {unknown}; allowed: {sorted(SELECT_PARAMS)}",
                              unknown[0])
    try:
        # Query values are strings: parsed by the same types as the JSON body, then checked by the
        # same limits (no prompt needed to ask about a shape).
        fields = GenerateRequest.model_validate_strings({"prompt": "", **params}).model_dump(include=set(params))
        latency = fields.pop("latency_ms", None)
        return JSONResponse(_server().select_view(latency, **fields))
    except ValidationError as err:
        return validation_error_response(err)
    except RequestError as err:
        return error_response(400, str(err), err.field)


UI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")


async def root_route(request: Request) -> Response:
    return RedirectResponse("/ui/")


async def metrics_route(request: Request) -> Response:
    from bentoml._internal.configuration.containers import BentoMLContainer

    client = BentoMLContainer.metrics_client.get()
    return Response(client.generate_latest(), media_type=client.CONTENT_TYPE_LATEST)


read_only_app = Starlette(
    routes=[
        Route("/", root_route),
        Route("/schedules", schedules_route),
        Route("/select", select_route),
        Route("/metrics", metrics_route),
        # The playground page: plain files shipped in the repo, no CDN (works offline).
        Mount("/ui", StaticFiles(directory=UI_DIR, html=True, check_dir=False), name="ui"),
    ]
)


def transformer_config(model: str) -> dict:
    """The config the model's transformer reports once built (defaults filled in, as
    ``pipe.transformer.config`` has them), read from its config files alone: no weights are read.
    BankError, with the cause, if the model cannot be found or read."""
    from ecad.generate import transformer_skeleton

    if (os.path.isabs(model) or model.startswith(".")) and not os.path.isdir(model):
        raise BankError(f"model folder {model} not found (ECAD_MODEL)")
    try:
        transformer, _ = transformer_skeleton(model)
    except Exception as err:  # a missing/unreadable config or an unknown class: diffusers' own message
        raise BankError(f"cannot read the transformer config of {model!r} (ECAD_MODEL): "
                        f"{type(err).__name__}: {err}") from None
    return dict(transformer.config)


@bentoml.service(
    name="ecad",
    workers=1,
    traffic={"timeout": TRAFFIC_TIMEOUT_S, "max_concurrency": CONFIG.max_concurrency},
    # BentoML's HTTP metrics label requests by raw path (every random 404 URL a new series);
    # ours (server/guard.py RouteMetrics) label by route template and /metrics is served below.
    metrics={"enabled": False},
)
@bentoml.asgi_app(read_only_app, path="/")
class ECAD:
    @bentoml.on_deployment
    def preflight() -> None:
        """Runs once in the `bentoml serve` process before any worker: a bank that cannot be used
        stops the server here, with its cause and a non-zero exit, instead of a worker restart loop."""
        try:
            banks = load_banks(CONFIG, transformer_config(CONFIG.model))
        except BankError as err:
            logger.error("cannot serve: %s", err)
            raise SystemExit(f"ecad: cannot serve: {err}") from None
        logger.info("bank(s) valid for %s: %s", CONFIG.model, ", ".join(str(path) for path in banks))
        if not CONFIG.metrics_dir:
            parent = os.path.join(os.environ.get("BENTOML_HOME") or os.path.expanduser("~/bentoml"), "ecad-metrics")
            os.makedirs(parent, exist_ok=True)
            os.environ[METRICS_DIR_VAR] = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent)

    def __init__(self) -> None:
        logging.basicConfig(level=logging.INFO)
        self.server = ScheduleServer(CONFIG)
        for served in self.server.banks.values():
            logger.info("serving %s with bank %s (%d schedules, profile %s)", CONFIG.model, served.path,
                        len(served.schedules), served.profile.key)

    def _wrong_route(self, ctx: bentoml.Context, video_route: bool) -> Response | None:
        """A 400 naming the route to use when this route's medium is not the model's, else None."""
        makes_video = self.server.limits.frames is not None
        if makes_video == video_route:
            return None
        ctx.response.status_code = 400
        if makes_video:
            return error_response(400, "this model makes videos, not images: POST /generate/video answers the MP4 "
                                       "(or POST /generate: JSON with base64 MP4s)")
        return error_response(400, "this model makes images, not videos: POST /generate/png answers the PNG "
                                   "(or POST /generate: JSON with base64 PNGs)")

    async def _run(self, ctx: bentoml.Context, body: GenerateRequest) -> GenerationResult | Response:
        """Resolve, queue and run one request; a refusal is the JSON error response (its status
        set on ``ctx``, which BentoML applies to whatever an API returns)."""
        arrival_ms = monotonic_ms()

        def refuse(status: int, message: str, field: str | None = None, headers: dict | None = None) -> Response:
            ctx.response.status_code = status
            return error_response(status, message, field, headers)

        try:
            request = self.server.resolve(body)
        except RequestError as err:
            return refuse(400, str(err), err.field)
        call = functools.partial(self.server.generate, request, arrival_ms=arrival_ms,
                                 deadline_ms=arrival_ms + TIMEOUT_MS - DEADLINE_MARGIN_MS,
                                 cancelled=CLIENT_GONE.get(None))
        try:
            result = await anyio.to_thread.run_sync(call)
        except RequestError as err:  # refused by admission: predicted over the timeout
            REQUESTS.labels(schedule="none", outcome="too_large").inc()
            return refuse(400, str(err), err.field)
        except Infeasible as err:
            REQUESTS.labels(schedule="none", outcome="infeasible").inc()
            ctx.response.status_code = 429
            retry_s = max(1, math.ceil(err.predicted_wait_ms / 1000.0))
            return JSONResponse({"error": str(err), "predicted_wait_ms": round(err.predicted_wait_ms, 1)},
                                status_code=429, headers={"Retry-After": str(retry_s)})
        except Overloaded as err:
            REQUESTS.labels(schedule="none", outcome="overloaded").inc()
            return refuse(503, f"server busy: {err}", headers={"Retry-After": "1"})
        except RequestCancelled as err:
            REQUESTS.labels(schedule="none", outcome="cancelled").inc()
            return refuse(499, f"request cancelled: {err}")
        except DeadlineExceeded as err:
            REQUESTS.labels(schedule="none", outcome="timeout").inc()
            return refuse(504, f"request exceeded its deadline: {err}")
        except Exception:
            REQUESTS.labels(schedule="none", outcome="error").inc()
            raise
        REQUESTS.labels(schedule=result.schedule_id, outcome="ok").inc()
        GENERATION_SECONDS.labels(schedule=result.schedule_id).observe(result.actual_ms / 1000.0)
        if result.budget_met is not None:
            BUDGET.labels(met=str(result.budget_met).lower()).inc()
        ctx.response.headers.update(_headers(result.report()))
        return result

    # The body was validated by RequestGuard with the same model (errors in our format), and
    # BentoML hands its fields over as keyword arguments.
    @bentoml.api(route="/generate", input_spec=GenerateRequest)
    async def generate(self, ctx: bentoml.Context, **fields: Any) -> GenerateResponse:
        """Generate images (base64 PNGs) or, with a video model, videos (base64 MP4s): the schedule that ran
        and its times (also in X-ECAD-* headers)."""
        result = await self._run(ctx, GenerateRequest.model_construct(**fields))
        if isinstance(result, Response):
            return result
        encoded = await anyio.to_thread.run_sync(result.encoded)  # an MP4 takes a while: off the event loop
        images = [base64.b64encode(item).decode() for item in encoded]
        return GenerateResponse(**result.report().model_dump(), media_type=result.media_type, images=images)

    @bentoml.api(route="/generate/png", input_spec=GeneratePngRequest)
    async def generate_png(self, ctx: bentoml.Context, **fields: Any) -> Image.Image:
        """Generate one image: the PNG; the schedule that ran and its times are in X-ECAD-* headers."""
        result = self._wrong_route(ctx, video_route=False) or await self._run(
            ctx, GeneratePngRequest.model_construct(**fields))
        if isinstance(result, Response):
            return result
        return tensor_to_image(result.images[0])

    # The annotation is what /docs shows (an MP4 file); the answer is the bytes as a Response.
    @bentoml.api(route="/generate/video", input_spec=GenerateVideoRequest)
    async def generate_video(self, ctx: bentoml.Context, **fields: Any) -> Annotated[Path, ContentType(MP4)]:
        """Generate one video (a video model): the MP4 (H.264); the schedule that ran and its times are in
        X-ECAD-* headers."""
        result = self._wrong_route(ctx, video_route=True) or await self._run(
            ctx, GenerateVideoRequest.model_construct(**fields))
        if isinstance(result, Response):
            return result
        (mp4,) = await anyio.to_thread.run_sync(result.encoded)
        return Response(mp4, media_type=MP4)


# Malformed or invalid bodies are answered 400 before BentoML parses them; the client leaving
# cancels. Every answer, 5xx included, is counted by route template.
ECAD.add_asgi_middleware(RequestGuard, models={"/generate": GenerateRequest, "/generate/png": GeneratePngRequest,
                                               "/generate/video": GenerateVideoRequest})
ECAD.add_asgi_middleware(RouteMetrics, counter=HTTP_REQUESTS, routes=ROUTES)
