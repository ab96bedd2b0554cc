"""Stop a pipeline call between denoising steps once its deadline has passed or it is cancelled.

A server that gave up on a request (traffic timeout, client gone) must not keep the pipeline busy
behind the client's back. Pipelines differ in their callbacks (PixArt ignores
``callback_on_step_end``), so the check is a diffusers hook on the transformer, which every
step calls.

Times are ms on ``monotonic_ms()``, the serving clock (requests, the queue, the planner and the
response headers all count in ms).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ecad.adapters import split_pipeline

DEADLINE_HOOK = "ecad_deadline"


def monotonic_ms() -> float:
    """The serving clock: ``time.monotonic()`` in ms."""
    return time.monotonic() * 1000.0


class DeadlineExceeded(RuntimeError):
    """Raised inside the pipeline call when its deadline passed before a transformer call."""


class RequestCancelled(RuntimeError):
    """Raised inside the pipeline call (or before it starts) when its request was cancelled."""


class DeadlineHook(ModelHook):
    def __init__(self, deadline_ms: float | None, cancelled: threading.Event | None = None) -> None:
        super().__init__()
        self.deadline_ms = deadline_ms  # on monotonic_ms()
        self.cancelled = cancelled

    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        if self.cancelled is not None and self.cancelled.is_set():
            raise RequestCancelled("request cancelled; pipeline call stopped between steps")
        if self.deadline_ms is not None and monotonic_ms() > self.deadline_ms:
            raise DeadlineExceeded("deadline passed; pipeline call stopped between steps")
        return args, kwargs


@contextmanager
def pipeline_deadline(pipe_or_transformer, deadline_ms: float | None,
                      cancelled: threading.Event | None = None) -> Iterator[None]:
    """Within the block, transformer calls after ``deadline_ms`` (on ``monotonic_ms()``) raise
    ``DeadlineExceeded`` and, once ``cancelled`` is set, ``RequestCancelled``."""
    if deadline_ms is None and cancelled is None:
        yield
        return
    registry = HookRegistry.check_if_exists_or_initialize(split_pipeline(pipe_or_transformer)[1])
    registry.register_hook(DeadlineHook(deadline_ms, cancelled), DEADLINE_HOOK)
    try:
        yield
    finally:
        registry.remove_hook(DEADLINE_HOOK, recurse=False)
