"""Execution: the queue in front of the one pipeline, admission, cancellation, running a request.

Each request waits in its own thread (the HTTP layer's worker thread). Whenever the pipeline frees
up, and whenever a request arrives at an idle pipeline, the planner (``ecad.planning``) is asked
for a plan over everything waiting and the first request of that plan starts with its entry.
Admission uses the same plan: a request that would be late is refused at once if it asked for
that (``on_infeasible="reject"``), and one that cannot finish within the server's timeout even
with the fastest entry is refused whatever it asked.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from ecad.deadline import DeadlineExceeded, RequestCancelled, pipeline_deadline
from ecad.generate import generate
from ecad.planning import (
    PLANNERS, Assignment, Candidate, LatencyQuantiles, RequestShape, Waiting, predict_candidates, scale_latency,
)
from ecad.serving.config import ServingConfig
from ecad.serving.request import RequestError, ResolvedRequest
from ecad.serving.startup import LoadedModel, ServedBank

POLL_S = 0.02  # how often a waiting request checks for its turn, cancellation and deadline
LOAD_WINDOW_S = 10.0  # the planner's expected load: the most requests held at once this recently


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
    bank: str | None = None  # the id of the bank whose entry served it

    def png_bytes(self) -> list[bytes]:
        return [tensor_to_png(image) for image in self.images]

    def summary(self) -> dict[str, Any]:
        r = self.request
        return {
            "schedule_id": self.schedule_id,
            "bank": self.bank,
            "predicted_ms": round(self.predicted_ms, 2),
            "actual_ms": round(self.actual_ms, 2),
            "queue_ms": round(self.queue_ms, 2),
            "latency_ms": r.latency_ms,
            "budget_met": self.budget_met,
            "seed": r.seed,
            **r.setting.to_dict(),
            "num_images": r.num_images,
            "notes": list(self.notes),
        }


def tensor_to_png(image: torch.Tensor) -> bytes:
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(eq=False)
class Job:
    request: ResolvedRequest
    arrival: float  # time.monotonic() s
    deadline: float | None  # the server's timeout for this request, monotonic s
    cancelled: threading.Event
    key: int = 0
    go: threading.Event = field(default_factory=threading.Event)
    assignment: Assignment | None = None

    @property
    def budget_deadline(self) -> float | None:
        latency = self.request.latency_ms
        return None if latency is None else self.arrival + latency / 1000.0

    def stop_at(self) -> float | None:
        """When the pipeline gives up on it: the timeout, or its budget if it asked to be refused."""
        times = [self.deadline]
        if self.request.on_infeasible == "reject":
            times.append(self.budget_deadline)
        times = [t for t in times if t is not None]
        return min(times) if times else None


def shape_notes(profiled: RequestShape, shape: RequestShape) -> list[str]:
    """What the prediction for ``shape`` extrapolates from the profile."""
    p, s = profiled.setting, shape.setting
    notes = []
    if s.num_inference_steps != p.num_inference_steps:
        notes.append(f"schedule resampled from {p.num_inference_steps} to {s.num_inference_steps} steps; "
                     "latency predicted by scaling")
    if (s.height, s.width) != (p.height, p.width):
        notes.append(f"resolution {s.width}x{s.height} differs from the bank's {p.width}x{p.height}; "
                     "latency predicted by scaling with tokens")
    if shape.num_images != profiled.num_images:
        notes.append(f"latency predicted by scaling from batch {profiled.num_images} to {shape.num_images}")
    return notes


class PipelineQueue:
    """The waiting requests, the running one, and the live latency estimate: the server's state."""

    def __init__(self, loaded: LoadedModel, config: ServingConfig) -> None:
        if config.planner not in PLANNERS:
            raise ValueError(f"planner must be one of {sorted(PLANNERS)}, got {config.planner!r}")
        self.loaded = loaded
        self.config = config
        self.plan_fn = PLANNERS[config.planner]
        # Per bank: entry ids repeat across banks, and each bank has its own profile to correct.
        self.latency = {b.id: LatencyQuantiles(config.latency_quantile, config.latency_window, config.latency_margin)
                        for b in loaded.banks}
        self._lock = threading.Lock()
        self._waiting: list[Job] = []
        self._running: Job | None = None
        self._running_until_ms = 0.0
        self._keys = itertools.count()
        self._load_seen: deque[tuple[float, int]] = deque()  # (monotonic s, requests held then)

    # -- predictions and plans (pure given the state) --------------------------------------------

    def candidates(self, request: ResolvedRequest) -> tuple[Candidate, ...]:
        """Tail-latency predictions of its bank's entries for the request's shape (only the pinned
        one if any)."""
        served = self._bank_of(request)
        ids = [request.schedule_id] if request.schedule_id is not None else list(served.schedules)
        entries = [(i, served.quality[i], served.profile.latency_ms[i]) for i in ids]
        factors = self.latency[served.id].factors(ids)
        return tuple(predict_candidates(entries, served.profiled_shape, request.shape, factors))

    def _bank_of(self, request: ResolvedRequest) -> ServedBank:
        return self.loaded.default if request.bank is None else self.loaded.served(request.bank)

    def _as_waiting(self, job: Job) -> Waiting:
        budget = job.budget_deadline
        return Waiting(job.key, job.arrival * 1000.0, None if budget is None else budget * 1000.0,
                       self.candidates(job.request))

    def _plan_locked(self, extra: Job | None = None, now: float | None = None) -> list[Assignment]:
        jobs = [*self._waiting, *([extra] if extra is not None else [])]
        free_at = self._running_until_ms if self._running is not None else None
        now = time.monotonic() if now is None else now
        load = self._expected_load_locked(now)
        return self.plan_fn([self._as_waiting(j) for j in jobs], now * 1000.0, free_at, load)

    def _note_load_locked(self, now: float) -> None:
        held = len(self._waiting) + (self._running is not None)
        self._load_seen.append((now, held))

    def _expected_load_locked(self, now: float) -> int:
        while self._load_seen and self._load_seen[0][0] < now - LOAD_WINDOW_S:
            self._load_seen.popleft()
        return max([1, *(held for _, held in self._load_seen)])

    def preview(self, request: ResolvedRequest) -> Assignment:
        """What the planner would do with this request if it arrived now (nothing is queued)."""
        now = time.monotonic()
        job = Job(request, now, None, threading.Event(), key=-1)
        with self._lock:
            return next(a for a in self._plan_locked(job, now) if a.key == job.key)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._waiting)

    # -- execution -------------------------------------------------------------------------------

    def run(self, request: ResolvedRequest, *, arrival: float | None = None, deadline: float | None = None,
            cancelled: threading.Event | None = None) -> GenerationResult:
        """Queue, wait for the planner to start it, generate. ``arrival``/``deadline`` are
        ``time.monotonic()`` seconds; ``cancelled`` (the client left) stops it queued or between steps."""
        job = Job(request, time.monotonic() if arrival is None else arrival, deadline,
                  cancelled or threading.Event(), key=next(self._keys))
        self._admit(job)
        try:
            self._wait_for_turn(job)
        except BaseException:
            self._leave(job)
            raise
        return self._execute(job)

    def _admit(self, job: Job) -> None:
        fastest = min(c.predicted_ms for c in self.candidates(job.request))
        if fastest > self.config.timeout_s * 1000.0:
            raise RequestError(None, f"predicted {fastest:.0f} ms with the fastest schedule, over this server's "
                                     f"{self.config.timeout_s:.0f} s limit; ask for fewer images, steps or pixels")
        with self._lock:
            if len(self._waiting) >= self.config.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests already waiting; retry later")
            mine = next(a for a in self._plan_locked(job) if a.key == job.key)
            if not mine.on_time and job.request.on_infeasible == "reject":
                wait_ms = max(0.0, mine.start_ms - time.monotonic() * 1000.0)
                raise Infeasible(
                    f"budget {job.request.latency_ms:.0f} ms cannot be met: predicted start in {wait_ms:.0f} ms, "
                    f"fastest schedule {fastest:.0f} ms",
                    wait_ms)
            self._waiting.append(job)
            self._note_load_locked(time.monotonic())
            self._dispatch_locked()

    def _dispatch_locked(self) -> None:
        """If the pipeline is free, start the first request of a fresh plan."""
        if self._running is not None or not self._waiting:
            return
        head = self._plan_locked()[0]
        job = next(j for j in self._waiting if j.key == head.key)
        self._waiting.remove(job)
        self._running, self._running_until_ms = job, head.finish_ms
        job.assignment = head
        job.go.set()

    def _wait_for_turn(self, job: Job) -> None:
        while not job.go.wait(POLL_S):
            if job.cancelled.is_set():
                raise RequestCancelled("client disconnected while queued")
            stop = job.stop_at()
            if stop is not None and time.monotonic() >= stop:
                raise DeadlineExceeded(f"request waited {(time.monotonic() - job.arrival) * 1000:.0f} ms, "
                                       "past its deadline; not started")

    def _leave(self, job: Job) -> None:
        """A request that gives up: out of the queue, or the pipeline handed on if it got it."""
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
            elif self._running is job:
                self._running = None
                self._dispatch_locked()

    def _execute(self, job: Job) -> GenerationResult:
        request, a = job.request, job.assignment
        served = self._bank_of(request)
        started = time.monotonic()
        queue_ms = (started - job.arrival) * 1000.0
        try:
            stop = job.stop_at()
            if stop is not None and started >= stop:
                raise DeadlineExceeded(f"request waited {queue_ms:.0f} ms, past its deadline; not started")
            schedule = served.schedules[a.entry_id]
            if schedule.num_steps != request.setting.num_inference_steps:
                schedule = schedule.resample(request.setting.num_inference_steps)
            if request.setting.guidance_scale <= 1:  # no unconditional rows to leave out
                schedule = schedule.without_guidance_reuse()
            pipe = self.loaded.pipe
            with pipeline_deadline(pipe, job.stop_at(), job.cancelled):
                images = generate(pipe, [request.prompt] * request.num_images, request.seeds(),
                                  request.setting, schedule, negative_prompt=request.negative_prompt)
            actual_ms = (time.monotonic() - started) * 1000.0
        finally:
            with self._lock:
                self._running = None
                self._dispatch_locked()
        profiled = scale_latency(served.profile.latency_ms[a.entry_id], served.profiled_shape, request.shape)
        self.latency[served.id].observe(a.entry_id, profiled, actual_ms)
        notes = [*request.notes, *shape_notes(served.profiled_shape, request.shape)]
        if not a.on_time:
            notes.append(f"budget cannot be met: {a.reason} (predicted {a.predicted_ms:.0f} ms after "
                         f"{queue_ms:.0f} ms queued)")
        met = None if request.latency_ms is None else queue_ms + actual_ms <= request.latency_ms
        return GenerationResult(images, request, a.entry_id, a.predicted_ms, actual_ms, queue_ms, met, notes, served.id)
