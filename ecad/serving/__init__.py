"""Serving core, independent of BentoML.

- ``config``: the server's knobs (``ServingConfig``, every ``ECAD_*`` variable) and where its banks come from
- ``banks``: ``ServedBank``, a bank as served (schedules per setting, profile, latency tail, any shape)
- ``latency``: the latency model: the work of a pipeline call at any setting, priced by a fit at start-up
- ``request``: the request body, the server's limits (defined once), the resolved request, the report
- ``slots``: views of the pipeline that share every weight, so a request can pause between steps
- ``startup``: load pipeline and banks, learn the model's limits, profile, fit the latency model, warm up
- ``media``: what an answer is made of: PNG for an image, MP4 (H.264, PyAV) for a video
- ``queue``: the queue in front of the pipeline: admission, planning, preemption, batching, cancellation
- ``server``: ``ScheduleServer``, which ties them together and answers the read-only views
The policy itself (which schedule for which request) is ``ecad.planning``, a pure module.
"""

from ecad.serving.banks import ServedBank
from ecad.serving.config import ServingConfig, load_banks
from ecad.serving.media import MP4, PNG, VideoEncoderMissing, tensor_to_image, tensor_to_mp4, tensor_to_png
from ecad.serving.queue import GenerationResult, Infeasible, Overloaded
from ecad.serving.request import (
    MAX_SEED, FrameLimits, GeneratePngRequest, GenerateRequest, GenerateResponse, GenerateVideoRequest,
    GenerationReport, RequestError, RequestLimits, ResolvedRequest, ServedQuality,
)
from ecad.serving.server import ScheduleServer

__all__ = [
    "FrameLimits", "GeneratePngRequest", "GenerateRequest", "GenerateResponse", "GenerateVideoRequest",
    "GenerationReport", "GenerationResult", "Infeasible", "MAX_SEED", "MP4", "Overloaded", "PNG", "RequestError",
    "RequestLimits", "ResolvedRequest", "ScheduleServer", "ServedBank", "ServedQuality", "ServingConfig",
    "VideoEncoderMissing", "load_banks", "tensor_to_image", "tensor_to_mp4", "tensor_to_png",
]
