"""Between denoising steps: stop a pipeline call once its deadline has passed or it is cancelled,
and let it pause while another request runs.

A server that gave up on a request (traffic timeout, client gone) must not keep the pipeline busy
behind the client's back; a server that wants a short request served before a long one has
finished lets the long one wait at its next step (``between_steps``, see ``ecad.serving.queue``).
Pipelines differ in their callbacks (PixArt ignores ``callback_on_step_end``), so the check is a
diffusers hook on the transformer, which every step calls.

Times are ms on ``monotonic_ms()``, the serving clock (requests, the queue, the planner and the
response headers all count in ms).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

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
    def __init__(self, deadline_ms: float | None, cancelled: threading.Event | None = None,
                 between_steps: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.deadline_ms = deadline_ms  # on monotonic_ms()
        self.cancelled = cancelled
        self.between_steps = between_steps

    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        if self.between_steps is not None:
            self.between_steps()  # may wait (paused for another request): the checks below come after
        if self.cancelled is not None and self.cancelled.is_set():
            raise RequestCancelled("request cancelled; pipeline call stopped between steps")
        if self.deadline_ms is not None and monotonic_ms() > self.deadline_ms:
            raise DeadlineExceeded("deadline passed; pipeline call stopped between steps")
        return args, kwargs


@contextmanager
def pipeline_deadline(pipe_or_transformer, deadline_ms: float | None, cancelled: threading.Event | None = None,
                      between_steps: Callable[[], None] | None = None) -> Iterator[None]:
    """Within the block, before each transformer call: ``between_steps()`` (which may block), then
    calls after ``deadline_ms`` (on ``monotonic_ms()``) raise ``DeadlineExceeded`` and, once
    ``cancelled`` is set, ``RequestCancelled``."""
    if deadline_ms is None and cancelled is None and between_steps is None:
        yield
        return
    registry = HookRegistry.check_if_exists_or_initialize(split_pipeline(pipe_or_transformer)[1])
    registry.register_hook(DeadlineHook(deadline_ms, cancelled, between_steps), DEADLINE_HOOK)
    try:
        yield
    finally:
        registry.remove_hook(DEADLINE_HOOK, recurse=False)
