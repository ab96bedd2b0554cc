"""The queue in front of the one pipeline: admission, planning, cancellation, running a request.

Each request waits in its own thread (the HTTP layer's worker thread). Whenever the pipeline frees
up, and whenever a request arrives at an idle pipeline, the planner (``ecad.planning``) is asked
for a plan over everything waiting and the first request of that plan starts with its entry.
Admission uses the same plan: a request that would be late is refused at once if it asked for
that (``on_infeasible="reject"``), and one that cannot finish within the server's timeout even
with the fastest entry is refused whatever it asked. Every time is ms on ``monotonic_ms()``.
"""

from __future__ import annotations

import io
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from ecad.deadline import DeadlineExceeded, RequestCancelled, monotonic_ms, pipeline_deadline
from ecad.generate import generate
from ecad.planning import PLANNERS, Assignment, PredictedEntry, RequestShape, Waiting, missed_budget_note
from ecad.serving.config import ServingConfig
from ecad.serving.request import GenerationReport, RequestError, ResolvedRequest

POLL_MS = 20.0  # how often a waiting request checks for its turn, cancellation and deadline
LOAD_WINDOW_MS = 10_000.0  # the planner's expected load: the most requests held at once this recently


class Overloaded(RuntimeError):
    """Too many requests already waiting for the pipeline (HTTP 503)."""


class Infeasible(RuntimeError):
    """The budget cannot be met behind the queue and the request asked to be refused (HTTP 429)."""

    def __init__(self, message: str, predicted_wait_ms: float) -> None:
        super().__init__(message)
        self.predicted_wait_ms = predicted_wait_ms


@dataclass
class GenerationResult:
    images: torch.Tensor  # [N, 3, H, W] in [0, 1]
    request: ResolvedRequest
    schedule_id: str
    predicted_ms: float
    actual_ms: float
    queue_ms: float
    budget_met: bool | None  # None: no budget was given
    notes: list[str] = field(default_factory=list)

    def png_bytes(self) -> list[bytes]:
        return [tensor_to_png(image) for image in self.images]

    def report(self) -> GenerationReport:
        r = self.request
        return GenerationReport(
            schedule_id=self.schedule_id, bank=r.served.id, predicted_ms=round(self.predicted_ms, 2),
            actual_ms=round(self.actual_ms, 2), queue_ms=round(self.queue_ms, 2), latency_ms=r.latency_ms,
            budget_met=self.budget_met, seed=r.seed, **r.shape.setting.to_dict(), num_images=r.shape.num_images,
            notes=list(self.notes),
        )


def tensor_to_image(image: torch.Tensor):
    """One [3, H, W] image in [0, 1] as an 8-bit RGB PIL image."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def tensor_to_png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    tensor_to_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(eq=False)
class QueuedRequest:
    request: ResolvedRequest
    arrival_ms: float
    deadline_ms: float | None  # the server's timeout for this request
    cancelled: threading.Event
    key: int = 0
    go: threading.Event = field(default_factory=threading.Event)
    assignment: Assignment | None = None

    @property
    def budget_deadline_ms(self) -> float | None:
        latency = self.request.latency_ms
        return None if latency is None else self.arrival_ms + latency

    def stop_at_ms(self) -> float | None:
        """When the pipeline gives up on it: the timeout, or its budget if it asked to be refused."""
        times = [self.deadline_ms]
        if self.request.on_infeasible == "reject":
            times.append(self.budget_deadline_ms)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def entries(self) -> tuple[PredictedEntry, ...]:
        """Its bank's entries (only the pinned one if any) predicted for its shape."""
        r = self.request
        return r.served.predict(r.shape, None if r.schedule_id is None else [r.schedule_id])


def shape_notes(profiled: RequestShape, shape: RequestShape) -> list[str]:
    """What the prediction for ``shape`` extrapolates from the profile."""
    p, s = profiled.setting, shape.setting
    notes = []
    if s.num_inference_steps != p.num_inference_steps:
        notes.append(f"schedule moved by noise level from {p.num_inference_steps} to {s.num_inference_steps} "
                     "steps; latency predicted by scaling")
    if (s.height, s.width) != (p.height, p.width):
        notes.append(f"resolution {s.width}x{s.height} differs from the bank's {p.width}x{p.height}; "
                     "latency predicted by scaling with tokens")
    if shape.num_images != profiled.num_images:
        notes.append(f"latency predicted by scaling from batch {profiled.num_images} to {shape.num_images}")
    return notes


class PipelineQueue:
    """The waiting requests and the running one: the server's state."""

    def __init__(self, pipe, config: ServingConfig) -> None:
        if config.planner not in PLANNERS:
            raise ValueError(f"planner must be one of {sorted(PLANNERS)}, got {config.planner!r}")
        self.pipe = pipe
        self.config = config
        self.plan_fn = PLANNERS[config.planner]
        self._lock = threading.Lock()
        self._waiting: list[QueuedRequest] = []
        self._running: QueuedRequest | None = None
        self._running_until_ms = 0.0
        self._keys = itertools.count()
        self._load_seen: deque[tuple[float, int]] = deque()  # (monotonic ms, requests held then)

    # -- plans (pure given the state) ------------------------------------------------------------

    def _plan_locked(self, extra: QueuedRequest | None = None, now_ms: float | None = None) -> list[Assignment]:
        queued = [*self._waiting, *([extra] if extra is not None else [])]
        free_at_ms = self._running_until_ms if self._running is not None else None
        now_ms = monotonic_ms() if now_ms is None else now_ms
        waiting = [Waiting(q.key, q.arrival_ms, q.budget_deadline_ms, q.entries()) for q in queued]
        return self.plan_fn(waiting, now_ms, free_at_ms, self._expected_load_locked(now_ms))

    def _note_load_locked(self, now_ms: float) -> None:
        held = len(self._waiting) + (self._running is not None)
        self._load_seen.append((now_ms, held))

    def _expected_load_locked(self, now_ms: float) -> int:
        while self._load_seen and self._load_seen[0][0] < now_ms - LOAD_WINDOW_MS:
            self._load_seen.popleft()
        return max([1, *(held for _, held in self._load_seen)])

    def preview(self, request: ResolvedRequest) -> Assignment:
        """What the planner would do with this request if it arrived now (nothing is queued)."""
        now_ms = monotonic_ms()
        queued = QueuedRequest(request, now_ms, None, threading.Event(), key=-1)
        with self._lock:
            return next(a for a in self._plan_locked(queued, now_ms) if a.key == queued.key)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._waiting)

    # -- execution -------------------------------------------------------------------------------

    def run(self, request: ResolvedRequest, *, arrival_ms: float | None = None, deadline_ms: float | None = None,
            cancelled: threading.Event | None = None) -> GenerationResult:
        """Queue, wait for the planner to start it, generate. ``arrival_ms``/``deadline_ms`` are on
        ``monotonic_ms()``; ``cancelled`` (the client left) stops it queued or between steps."""
        queued = QueuedRequest(request, monotonic_ms() if arrival_ms is None else arrival_ms, deadline_ms,
                               cancelled or threading.Event(), key=next(self._keys))
        self._admit(queued)
        try:
            self._wait_for_turn(queued)
        except BaseException:
            self._leave(queued)
            raise
        return self._execute(queued)

    def _admit(self, queued: QueuedRequest) -> None:
        fastest_ms = min(e.predicted_ms for e in queued.entries())
        if fastest_ms > self.config.timeout_s * 1000.0:
            raise RequestError(None, f"predicted {fastest_ms:.0f} ms with the fastest schedule, over this server's "
                                     f"{self.config.timeout_s:.0f} s limit; ask for fewer images, steps or pixels")
        with self._lock:
            if len(self._waiting) >= self.config.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests already waiting; retry later")
            now_ms = monotonic_ms()
            mine = next(a for a in self._plan_locked(queued, now_ms) if a.key == queued.key)
            if not mine.on_time and queued.request.on_infeasible == "reject":
                wait_ms = max(0.0, mine.start_ms - now_ms)
                raise Infeasible(missed_budget_note(mine, queued.request.latency_ms, wait_ms), wait_ms)
            self._waiting.append(queued)
            self._note_load_locked(now_ms)
            self._dispatch_locked()

    def _dispatch_locked(self) -> None:
        """If the pipeline is free, start the first request of a fresh plan."""
        if self._running is not None or not self._waiting:
            return
        head = self._plan_locked()[0]
        queued = next(q for q in self._waiting if q.key == head.key)
        self._waiting.remove(queued)
        self._running, self._running_until_ms = queued, head.finish_ms
        queued.assignment = head
        queued.go.set()

    def _wait_for_turn(self, queued: QueuedRequest) -> None:
        while not queued.go.wait(POLL_MS / 1000.0):
            if queued.cancelled.is_set():
                raise RequestCancelled("client disconnected while queued")
            stop_ms = queued.stop_at_ms()
            if stop_ms is not None and monotonic_ms() >= stop_ms:
                raise DeadlineExceeded(f"request waited {monotonic_ms() - queued.arrival_ms:.0f} ms, "
                                       "past its deadline; not started")

    def _leave(self, queued: QueuedRequest) -> None:
        """A request that gives up: out of the queue, or the pipeline handed on if it got it."""
        with self._lock:
            if queued in self._waiting:
                self._waiting.remove(queued)
            elif self._running is queued:
                self._running = None
                self._dispatch_locked()

    def _execute(self, queued: QueuedRequest) -> GenerationResult:
        request, a = queued.request, queued.assignment
        served, setting = request.served, request.shape.setting
        started_ms = monotonic_ms()
        queue_ms = started_ms - queued.arrival_ms
        try:
            stop_ms = queued.stop_at_ms()
            if stop_ms is not None and started_ms >= stop_ms:
                raise DeadlineExceeded(f"request waited {queue_ms:.0f} ms, past its deadline; not started")
            schedule = served.schedule_for(a.entry_id, setting)
            with pipeline_deadline(self.pipe, stop_ms, queued.cancelled):
                images = generate(self.pipe, [request.prompt] * request.shape.num_images, request.seeds(),
                                  setting, schedule, negative_prompt=request.negative_prompt)
            actual_ms = monotonic_ms() - started_ms
        finally:
            with self._lock:
                self._running = None
                self._dispatch_locked()
        served.observe(a.entry_id, request.shape, actual_ms)
        notes = [*request.notes, *shape_notes(served.profiled_shape, request.shape)]
        if not a.on_time:
            notes.append(missed_budget_note(a, request.latency_ms, queue_ms))
        met = None if request.latency_ms is None else queue_ms + actual_ms <= request.latency_ms
        return GenerationResult(images, request, a.entry_id, a.predicted_ms, actual_ms, queue_ms, met, notes)
