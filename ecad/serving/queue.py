"""The queue in front of the one pipeline: admission, planning, preemption between steps, batching,
cancellation, running a request.

Each request waits in its own thread (the HTTP layer's worker thread); the pipeline runs in one
worker thread per *slot* (``ecad.serving.slots``: views of the pipeline that share every weight).
Whenever the pipeline frees up, a request arrives or a request leaves, the planner
(``ecad.planning``) is asked for a plan over everything waiting, paused or running:

- if the plan puts the running call first, nothing changes;
- if it puts another request first and a slot is free, the running call is asked to pause: at its
  next step boundary (``ecad.deadline``'s between-steps hook) its worker marks it paused and waits,
  holding its latents, solver history and cached outputs; the pipeline is handed to the plan's
  first request in the free slot; when the plan later puts the paused call first, it continues
  exactly where it stopped (the same bytes as without the pause). A short request therefore waits
  for at most about one denoising step of a long one;
- if the pipeline is free, the plan's first request starts (or the plan's first paused call
  resumes), with the requests behind it that share its bank, setting, chosen entry and negative
  prompt batched into the same call when the latency model predicts that this saves time and no
  batched request then misses its deadline (``ServingConfig.batching``).

Admission uses the same plan: a request that would be late is refused at once if it asked for that
(``on_infeasible="reject"``), and one that cannot finish within the server's timeout even with the
fastest entry is refused whatever it asked, saying how to split it. Every time is ms on
``monotonic_ms()``.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

from ecad.adapters import get_adapter
from ecad.deadline import DeadlineExceeded, RequestCancelled, monotonic_ms, pipeline_deadline
from ecad.generate import generate
from ecad.planning import PLANNERS, Assignment, PredictedEntry, RequestShape, Waiting, missed_budget_note
from ecad.serving.config import ServingConfig
from ecad.serving.media import encode, media_type
from ecad.serving.request import GenerationReport, RequestError, ResolvedRequest, ServedQuality

POLL_MS = 20.0  # how often a waiting request checks for its answer, cancellation and deadline
LOAD_WINDOW_MS = 10_000.0  # the planner's expected load: the most requests held at once this recently
BATCH_GAIN = 0.9  # a batch runs only if predicted at most this share of its requests run one by one


class Overloaded(RuntimeError):
    """Too many requests already waiting for the pipeline (HTTP 503)."""


class Infeasible(RuntimeError):
    """The budget cannot be met behind the queue and the request asked to be refused (HTTP 429)."""

    def __init__(self, message: str, predicted_wait_ms: float) -> None:
        super().__init__(message)
        self.predicted_wait_ms = predicted_wait_ms


@dataclass
class GenerationResult:
    images: torch.Tensor  # [N, 3, H, W] in [0, 1]; a video model's: [N, F, 3, H, W]
    request: ResolvedRequest
    schedule_id: str
    predicted_ms: float
    actual_ms: float  # the pipeline call's time computing (its pauses excluded)
    queue_ms: float  # time not computing: before it started, and paused
    budget_met: bool | None  # None: no budget was given
    notes: list[str] = field(default_factory=list)
    paused_ms: float = 0.0
    batch_images: int = 1  # images made by the pipeline call: more than the request's when batched
    fps: int | None = None  # a video model's frame rate

    @property
    def media_type(self) -> str:
        """image/png, or video/mp4 for a video model (``ecad.serving.media``)."""
        return media_type(self.images[0])

    def encoded(self) -> list[bytes]:
        """Each image as PNG, or each video as MP4."""
        return [encode(item, self.fps) for item in self.images]

    def report(self) -> GenerationReport:
        r = self.request
        quality = r.served.quality_at(r.shape.setting)[self.schedule_id]
        return GenerationReport(
            schedule_id=self.schedule_id, bank=r.served.id, predicted_ms=round(self.predicted_ms, 2),
            actual_ms=round(self.actual_ms, 2), queue_ms=round(self.queue_ms, 2),
            paused_ms=round(self.paused_ms, 2), latency_ms=r.latency_ms, budget_met=self.budget_met, seed=r.seed,
            **r.shape.setting.to_dict(), num_images=r.shape.num_images, batch_images=self.batch_images,
            quality=ServedQuality(metric=r.served.bank.quality_metric, **asdict(quality)), notes=list(self.notes),
        )


@dataclass(eq=False)
class QueuedRequest:
    request: ResolvedRequest
    arrival_ms: float
    deadline_ms: float | None  # the server's timeout for this request
    cancelled: threading.Event
    key: int = 0
    call: PipelineCall | None = None  # the pipeline call serving it, once started
    done: threading.Event = field(default_factory=threading.Event)  # its call has finished

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


class _EveryoneLeft:
    """``is_set()`` once every request of a call was cancelled (the call then stops between steps)."""

    def __init__(self, events: Sequence[threading.Event]) -> None:
        self.events = list(events)

    def is_set(self) -> bool:
        return all(event.is_set() for event in self.events)


@dataclass(eq=False)
class PipelineCall:
    """One pipeline call: one request, or several batched (same bank, setting, entry and negative
    prompt), run in one slot, possibly paused between steps."""

    key: int
    members: list[QueuedRequest]
    assignment: Assignment  # the plan's choice for the first member: the entry, its quality
    predicted_ms: float  # of the whole call
    slot: int
    observe: bool = True  # teach the latency tail what it took (not the warm-up's first round)
    resume: threading.Event = field(default_factory=threading.Event)  # set while it may compute
    computing: bool = False
    started_ms: float | None = None
    resumed_ms: float = 0.0
    ran_ms: float = 0.0  # time computing so far
    paused_ms: float = 0.0
    pauses: int = 0
    pause_requested: bool = False
    images: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def entry_id(self) -> str:
        return self.assignment.entry_id

    @property
    def lead(self) -> ResolvedRequest:
        return self.members[0].request

    @property
    def shape(self) -> RequestShape:
        return RequestShape(self.lead.shape.setting, sum(m.request.shape.num_images for m in self.members))

    def stop_at_ms(self) -> float | None:
        """The latest of its members' stop times: a member that gives up earlier leaves on its own."""
        times = [m.stop_at_ms() for m in self.members]
        return None if any(t is None for t in times) else max(times)

    def cancelled(self) -> _EveryoneLeft:
        return _EveryoneLeft([m.cancelled for m in self.members])

    def computed_ms(self, now_ms: float) -> float:
        return self.ran_ms + (now_ms - self.resumed_ms if self.computing else 0.0)

    def as_waiting(self, now_ms: float) -> Waiting:
        """How the planner sees a started call: pinned to its entry, with the time it has left."""
        left = max(self.predicted_ms - self.computed_ms(now_ms), 0.01 * self.predicted_ms)
        deadlines = [m.budget_deadline_ms for m in self.members if m.budget_deadline_ms is not None]
        entry = PredictedEntry(self.entry_id, self.assignment.quality, left)
        return Waiting(self.key, min(m.arrival_ms for m in self.members), min(deadlines) if deadlines else None,
                       (entry,))


def shape_notes(profiled: RequestShape, shape: RequestShape) -> list[str]:
    """What the prediction for ``shape`` scales from the profile."""
    p, s = profiled.setting, shape.setting
    notes = []
    if s.num_inference_steps != p.num_inference_steps:
        notes.append(f"schedule moved by noise level from {p.num_inference_steps} to {s.num_inference_steps} "
                     "steps; latency predicted by the latency model")
    if (s.height, s.width) != (p.height, p.width):
        notes.append(f"resolution {s.width}x{s.height} differs from the bank's {p.width}x{p.height}; "
                     "latency predicted by the latency model")
    if s.num_frames != p.num_frames:
        notes.append(f"{s.num_frames} frames differ from the bank's {p.num_frames}; latency predicted by the "
                     "latency model")
    if shape.num_images != profiled.num_images:
        notes.append(f"latency predicted by the latency model from batch {profiled.num_images} to {shape.num_images}")
    return notes


class PipelineQueue:
    """The waiting requests, the running call and the paused ones: the server's state."""

    def __init__(self, slots: Sequence[Any], config: ServingConfig) -> None:
        if config.planner not in PLANNERS:
            raise ValueError(f"planner must be one of {sorted(PLANNERS)}, got {config.planner!r}")
        if config.batching not in ("auto", "off"):
            raise ValueError(f"batching must be 'auto' or 'off', got {config.batching!r}")
        self.slots = list(slots)
        self.pipe = self.slots[0]
        video = get_adapter(self.pipe).video
        self.fps = None if video is None else video.fps  # a video model's: its answers' frame rate
        self.config = config
        self.plan_fn = PLANNERS[config.planner]
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a slot got a call, or the queue closed
        self._waiting: list[QueuedRequest] = []
        self._running: PipelineCall | None = None
        self._paused: list[PipelineCall] = []
        self._assigned: list[PipelineCall | None] = [None] * len(self.slots)
        self._closed = False
        self._keys = itertools.count()
        self._load_seen: deque[tuple[float, int]] = deque()  # (monotonic ms, requests held then)
        self._workers = [threading.Thread(target=self._work, args=(i,), name=f"ecad-slot-{i}", daemon=True)
                         for i in range(len(self.slots))]
        for worker in self._workers:
            worker.start()

    def close(self) -> None:
        """Stop the workers once their calls are done (the queue takes no more requests)."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        for worker in self._workers:
            worker.join()

    # -- plans (pure given the state) ------------------------------------------------------------

    def _plan_locked(self, extra: QueuedRequest | None = None, now_ms: float | None = None) -> list[Assignment]:
        now_ms = monotonic_ms() if now_ms is None else now_ms
        queued = [*self._waiting, *([extra] if extra is not None else [])]
        waiting = [Waiting(q.key, q.arrival_ms, q.budget_deadline_ms, self._within_timeout(q.entries()))
                   for q in queued]
        waiting += [call.as_waiting(now_ms) for call in self._started_locked()]
        return self.plan_fn(waiting, now_ms, None, self._expected_load_locked(now_ms))

    def _within_timeout(self, entries: tuple[PredictedEntry, ...]) -> tuple[PredictedEntry, ...]:
        """The entries predicted to finish within the server's timeout (the fastest if none does): a
        request without a budget gets the best quality that can finish, not one that cannot."""
        limit_ms = self.config.timeout_s * 1000.0
        return tuple(e for e in entries if e.predicted_ms <= limit_ms) or (min(entries, key=lambda e: e.predicted_ms),)

    def _started_locked(self) -> list[PipelineCall]:
        return [*([self._running] if self._running is not None else []), *self._paused]

    def _note_load_locked(self, now_ms: float) -> None:
        held = len(self._waiting) + sum(len(call.members) for call in self._started_locked())
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

    # -- a request's thread ----------------------------------------------------------------------

    def run(self, request: ResolvedRequest, *, arrival_ms: float | None = None, deadline_ms: float | None = None,
            cancelled: threading.Event | None = None) -> GenerationResult:
        """Queue, wait for the pipeline call that serves it, answer. ``arrival_ms``/``deadline_ms``
        are on ``monotonic_ms()``; ``cancelled`` (the client left) stops it queued or, if every
        request of its call left, between steps."""
        queued = QueuedRequest(request, monotonic_ms() if arrival_ms is None else arrival_ms, deadline_ms,
                               cancelled or threading.Event(), key=next(self._keys))
        self._admit(queued)
        self._await(queued)
        return self._result(queued)

    def _admit(self, queued: QueuedRequest) -> None:
        fastest_ms = min(e.predicted_ms for e in queued.entries())
        limit_ms = self.config.timeout_s * 1000.0
        if fastest_ms > limit_ms:
            raise RequestError(None, f"predicted {fastest_ms:.0f} ms with the fastest schedule, over this server's "
                                     f"{self.config.timeout_s:.0f} s limit; {self._split_advice(queued.request)}")
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

    def _split_advice(self, request: ResolvedRequest) -> str:
        """How to ask for it in parts that fit the timeout (fewer images per request, else fewer steps or pixels)."""
        limit_ms = self.config.timeout_s * 1000.0
        ids = None if request.schedule_id is None else [request.schedule_id]

        def fastest(shape: RequestShape) -> float:
            return min(e.predicted_ms for e in request.served.predict(shape, ids))

        n = request.shape.num_images
        fits = [k for k in range(n - 1, 0, -1) if fastest(RequestShape(request.shape.setting, k)) <= limit_ms]
        if fits:
            return (f"split it into {math.ceil(n / fits[0])} requests of at most {fits[0]} image(s) "
                    "(num_images), or ask for fewer steps or pixels")
        return "even one image is too long: ask for fewer steps (num_inference_steps) or pixels (width, height)"

    def _await(self, queued: QueuedRequest) -> None:
        """Until its call has finished; a request whose client left or whose deadline passed
        leaves (the queue, or its call, which goes on for its other requests or stops between steps)."""
        while not queued.done.wait(POLL_MS / 1000.0):
            gone = queued.cancelled.is_set()
            stop_ms = queued.stop_at_ms()
            if not gone and (stop_ms is None or monotonic_ms() < stop_ms):
                continue
            with self._lock:
                if queued.done.is_set():
                    return
                started = queued.call is not None
                if not started:
                    self._waiting.remove(queued)
                    self._dispatch_locked()
            waited = f"request waited {monotonic_ms() - queued.arrival_ms:.0f} ms"
            if gone:
                raise RequestCancelled("client disconnected " + ("while running" if started else "while queued"))
            raise DeadlineExceeded(f"{waited}, past its deadline; " +
                                   ("pipeline call stopped between steps" if started else "not started"))

    def _result(self, queued: QueuedRequest) -> GenerationResult:
        call, request = queued.call, queued.request
        if call.error is not None:
            raise call.error
        i = sum(m.request.shape.num_images for m in call.members[:call.members.index(queued)])
        images = call.images[i:i + request.shape.num_images]
        queue_ms = call.started_ms - queued.arrival_ms + call.paused_ms
        notes = [*request.notes, *shape_notes(request.served.profiled_shape, request.shape)]
        if call.pauses:
            notes.append(f"paused {call.pauses} time(s) between steps for {call.paused_ms:.0f} ms while shorter or "
                         "more urgent requests ran (the same images as without the pause)")
        if len(call.members) > 1:
            notes.append(f"batched with {len(call.members) - 1} other request(s) of the same schedule and setting "
                         f"into one pipeline call of {call.shape.num_images} images")
        a = call.assignment if queued is call.members[0] else self._assignment_of(queued, call)
        if not a.on_time and request.latency_ms is not None:
            notes.append(missed_budget_note(a, request.latency_ms, queue_ms))
        met = None if request.latency_ms is None else queue_ms + call.ran_ms <= request.latency_ms
        return GenerationResult(images, request, call.entry_id, call.predicted_ms, call.ran_ms, queue_ms, met, notes,
                                call.paused_ms, call.shape.num_images, self.fps)

    @staticmethod
    def _assignment_of(queued: QueuedRequest, call: PipelineCall) -> Assignment:
        """A batched request's plan: on time if its deadline held for the whole call."""
        a = call.assignment
        deadline = queued.budget_deadline_ms
        on_time = deadline is None or call.started_ms + call.predicted_ms <= deadline
        return Assignment(queued.key, a.entry_id, a.quality, call.predicted_ms, call.started_ms,
                          call.started_ms + call.predicted_ms, on_time, "batched with a request on time by the plan")

    # -- dispatch: who computes now ----------------------------------------------------------------

    def _dispatch_locked(self) -> None:
        """Act on a fresh plan: keep the running call, pause it for the plan's first request,
        resume a paused call, or start the plan's first request (with its batch)."""
        if self._closed or (self._running is not None and self._running.pause_requested):
            return
        if self._running is None and not self._waiting and not self._paused:
            return
        now_ms = monotonic_ms()
        plan = self._plan_locked(now_ms=now_ms)
        head = plan[0]
        paused = {call.key: call for call in self._paused}
        free = self._free_slot_locked()
        if self._running is not None:
            if head.key != self._running.key and (head.key in paused or free is not None):
                self._running.pause_requested = True  # it pauses at its next step, then dispatches again
            return
        if head.key in paused:
            self._resume_locked(paused[head.key])
        elif free is None:  # every slot holds a paused call: the first of them in the plan goes on
            self._resume_locked(paused[next(a.key for a in plan if a.key in paused)])
        else:
            self._start_locked(head, plan, free, now_ms)

    def _free_slot_locked(self) -> int | None:
        return next((i for i, call in enumerate(self._assigned) if call is None), None)

    def _resume_locked(self, call: PipelineCall) -> None:
        self._paused.remove(call)
        self._running = call
        call.resume.set()

    def _start_locked(self, head: Assignment, plan: list[Assignment], slot: int, now_ms: float) -> None:
        lead = next(q for q in self._waiting if q.key == head.key)
        members, predicted_ms = self._batch_locked(lead, head, plan, now_ms)
        for q in members:
            self._waiting.remove(q)
        call = PipelineCall(next(self._keys), members, head, predicted_ms, slot)
        for q in members:
            q.call = call
        self._running = call
        call.resume.set()
        self._assigned[slot] = call
        self._changed.notify_all()

    def _batch_locked(self, lead: QueuedRequest, head: Assignment, plan: list[Assignment],
                      now_ms: float) -> tuple[list[QueuedRequest], float]:
        """The plan's first request and the requests planned after it that can share its call:
        same bank, setting, entry and negative prompt, none asking to be refused, each on time
        by the plan still on time, the call predicted to take at most ``BATCH_GAIN`` of running
        them one by one, and no more than ``max_images`` images."""
        members, predicted_ms = [lead], head.predicted_ms
        if self.config.batching == "off" or lead.request.on_infeasible == "reject":
            return members, predicted_ms
        by_key = {q.key: q for q in self._waiting}
        planned = {a.key: a for a in plan}
        r = lead.request
        alone_ms = head.predicted_ms
        for a in plan[1:]:
            q = by_key.get(a.key)
            if q is None or a.entry_id != head.entry_id:
                continue
            m = q.request
            if (m.served is not r.served or m.shape.setting != r.shape.setting or m.on_infeasible == "reject"
                    or m.negative_prompt != r.negative_prompt):
                continue
            trial = [*members, q]
            images = sum(x.request.shape.num_images for x in trial)
            if images > self.config.max_images:
                continue
            (batch,) = r.served.predict(RequestShape(r.shape.setting, images), [head.entry_id])
            if batch.predicted_ms > BATCH_GAIN * (alone_ms + a.predicted_ms):
                continue
            finish_ms = now_ms + batch.predicted_ms
            if any(x.stop_at_ms() is not None and finish_ms > x.stop_at_ms() for x in trial):
                continue
            if any(planned[x.key].on_time and x.budget_deadline_ms is not None and finish_ms > x.budget_deadline_ms
                   for x in trial):
                continue
            members, predicted_ms, alone_ms = trial, batch.predicted_ms, alone_ms + a.predicted_ms
        return members, predicted_ms

    # -- a slot's worker thread ------------------------------------------------------------------

    def _work(self, slot: int) -> None:
        while True:
            with self._lock:
                while self._assigned[slot] is None and not self._closed:
                    self._changed.wait()
                call = self._assigned[slot]
                if call is None:
                    return
            self._execute(call)

    def _execute(self, call: PipelineCall) -> None:
        pipe = self.slots[call.slot]
        lead, setting = call.lead, call.lead.shape.setting
        prompts = [m.request.prompt for m in call.members for _ in range(m.request.shape.num_images)]
        seeds = [seed for m in call.members for seed in m.request.seeds()]
        with self._lock:
            call.started_ms = call.resumed_ms = monotonic_ms()
            call.computing = True
        try:
            stop_ms = call.stop_at_ms()
            if stop_ms is not None and call.started_ms >= stop_ms:
                raise DeadlineExceeded(f"request waited {call.started_ms - call.members[0].arrival_ms:.0f} ms, "
                                       "past its deadline; not started")
            schedule = lead.served.schedule_for(call.entry_id, setting)
            with pipeline_deadline(pipe, stop_ms, call.cancelled(), lambda: self._between_steps(call)):
                call.images = generate(pipe, prompts, seeds, setting, schedule, negative_prompt=lead.negative_prompt)
        except BaseException as err:  # the call's answer for every request in it
            call.error = err
        finally:
            with self._lock:
                if call.computing:
                    call.ran_ms += monotonic_ms() - call.resumed_ms
                    call.computing = False
                if self._running is call:
                    self._running = None
                if call in self._paused:  # it gave up while paused
                    self._paused.remove(call)
                self._assigned[call.slot] = None
                self._changed.notify_all()
                self._dispatch_locked()
        if call.error is None and call.observe:
            lead.served.observe(call.entry_id, call.shape, call.ran_ms)
        for m in call.members:
            m.done.set()

    def _between_steps(self, call: PipelineCall) -> None:
        """Before each of the call's steps: pause here if the plan wants another request first."""
        with self._lock:
            if not call.pause_requested:
                return
            call.pause_requested = False
            paused_at = monotonic_ms()
            call.ran_ms += paused_at - call.resumed_ms
            call.computing = False
            call.pauses += 1
            call.resume.clear()
            self._running = None
            self._paused.append(call)
            self._dispatch_locked()
        everyone_left = call.cancelled()
        while not call.resume.wait(POLL_MS / 1000.0):
            stop_ms = call.stop_at_ms()
            if everyone_left.is_set():
                raise RequestCancelled("every client of the call left while it was paused")
            if stop_ms is not None and monotonic_ms() >= stop_ms:
                raise DeadlineExceeded("deadline passed while paused between steps")
        with self._lock:
            call.resumed_ms = monotonic_ms()
            call.paused_ms += call.resumed_ms - paused_at
            call.computing = True

    # -- start-up --------------------------------------------------------------------------------

    def warm_up(self, request: ResolvedRequest, entry_id: str, *, observe: bool) -> list[float]:
        """Run ``request`` with ``entry_id`` once in every slot, through the path every request
        takes (the slot's worker thread, the between-steps hook, the PNG or MP4 encoder), teaching the
        latency tail what it took if ``observe``; the ms each took."""
        took = []
        for slot in range(len(self.slots)):
            queued = QueuedRequest(request, monotonic_ms(), None, threading.Event(), key=next(self._keys))
            head = Assignment(queued.key, entry_id, request.served.quality[entry_id].value, 0.0, 0.0, 0.0, True, "warm-up")
            call = PipelineCall(next(self._keys), [queued], head, 0.0, slot, observe=observe)
            queued.call = call
            with self._lock:
                while self._assigned[slot] is not None:
                    self._changed.wait()
                self._assigned[slot] = call
                self._changed.notify_all()
            queued.done.wait()
            if call.error is not None:
                raise call.error
            encode(call.images[0], self.fps)
            took.append(call.ran_ms)
        return took
