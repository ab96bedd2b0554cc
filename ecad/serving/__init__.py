"""Serving core, independent of BentoML.

- ``config``: the server's knobs (``ServingConfig``) and where its banks come from
- ``request``: the request body, the server's limits (defined once), the resolved request
- ``startup``: load pipeline and banks, learn the model's limits, profile, warm up (once)
- ``executor``: the queue in front of the pipeline, admission, cancellation, running a request
- ``server``: ``ScheduleServer``, which ties them together and answers the read-only views
The policy itself (which schedule for which request) is ``ecad.planning``, a pure module.
"""

from ecad.serving.config import ServingConfig, load_banks
from ecad.serving.executor import GenerationResult, Infeasible, Overloaded, tensor_to_png
from ecad.serving.request import MAX_SEED, GenerateRequest, RequestError, RequestLimits, ResolvedRequest
from ecad.serving.server import ScheduleServer

__all__ = [
    "GenerateRequest", "GenerationResult", "Infeasible", "MAX_SEED", "Overloaded", "RequestError", "RequestLimits",
    "ResolvedRequest", "ScheduleServer", "ServingConfig", "load_banks", "tensor_to_png",
]
