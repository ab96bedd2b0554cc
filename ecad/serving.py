"""Serving core, independent of BentoML: one loaded pipeline, its bank, selection, generation.

``server/service.py`` is a thin HTTP shell over ``ScheduleServer``; everything here can be tested
in-process. Loading and (if this hardware has no profile yet) profiling happen once, here.
"""

from __future__ import annotations

import io
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from ecad.paths import DEFAULT_MODEL, SCHEDULES_DIR, model_name
from ecad.setting import Setting
from ecad.bank import BankError, HardwareProfile, ScheduleBank, hardware_key
from ecad.deadline import DeadlineExceeded, pipeline_deadline
from ecad.select import (
    Choice,
    LatencyCorrector,
    RequestShape,
    predict_candidates,
    remaining_budget,
    select_schedule,
)

logger = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1


class RequestError(ValueError):
    """A request the server refuses (HTTP 400); names the field and the allowed range."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class Overloaded(RuntimeError):
    """Too many requests already waiting for the pipeline (HTTP 503)."""


class GenerateRequest(BaseModel):
    """The body of ``POST /generate``. Static bounds here; model-dependent ones in ``validate``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000, description="Text prompt.")
    latency_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, allow_inf_nan=False,
        description="Latency budget in ms on this server, including time queued. Omit for best quality.",
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="Random seed; random if omitted.")
    negative_prompt: str | None = Field(default=None, max_length=2000)
    num_images: int = Field(default=1, ge=1, le=64, description="Images for this prompt.")
    width: int | None = Field(default=None, ge=1, le=8192, description="Defaults to the bank's width.")
    height: int | None = Field(default=None, ge=1, le=8192, description="Defaults to the bank's height.")
    num_inference_steps: int | None = Field(default=None, ge=1, le=1000, description="Defaults to the bank's.")
    guidance_scale: float | None = Field(default=None, ge=0, le=50, allow_inf_nan=False)
    schedule_id: str | None = Field(
        default=None, max_length=64,
        description="Pin a bank entry (e.g. 'no-cache') instead of selecting by budget.",
    )


@dataclass(frozen=True)
class ResolvedRequest:
    prompt: str
    negative_prompt: str | None
    latency_ms: float | None
    seed: int
    num_images: int
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    schedule_id: str | None = None


@dataclass(frozen=True)
class Plan:
    choice: Choice
    shape: RequestShape
    notes: tuple[str, ...]


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

    def summary(self) -> dict[str, Any]:
        r = self.request
        return {
            "schedule_id": self.schedule_id,
            "predicted_ms": round(self.predicted_ms, 2),
            "actual_ms": round(self.actual_ms, 2),
            "queue_ms": round(self.queue_ms, 2),
            "latency_ms": r.latency_ms,
            "budget_met": self.budget_met,
            "seed": r.seed,
            "width": r.width,
            "height": r.height,
            "num_inference_steps": r.num_inference_steps,
            "guidance_scale": r.guidance_scale,
            "num_images": r.num_images,
            "notes": list(self.notes),
        }


def tensor_to_png(image: torch.Tensor) -> bytes:
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class ServingConfig:
    model: str = str(DEFAULT_MODEL)
    bank: str | None = None  # default: the single bank under schedules/<model folder name>/
    device: str = "cpu"
    dtype: str = "float32"
    num_threads: int | None = 1  # CPU: one thread is the fast, predictable choice on small boxes
    max_images: int = 8
    max_prompt_chars: int = 1000
    max_side_factor: int = 4  # width/height at most this times the bank's
    max_steps: int = 100
    max_queue: int = 8  # requests waiting for the pipeline beyond this get 503
    profile_repeats: int = 3
    profile_time_budget_s: float = 120.0
    persist_profile: bool = False  # write a new profile back into the bank file
    latency_learning_rate: float = 0.2  # EMA weight of each observed latency; 0 = trust the profile

    @classmethod
    def from_env(cls) -> "ServingConfig":
        env = os.environ
        threads = env.get("ECAD_NUM_THREADS")
        return cls(
            model=env.get("ECAD_MODEL", str(DEFAULT_MODEL)),
            bank=env.get("ECAD_BANK") or None,
            device=env.get("ECAD_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"),
            dtype=env.get("ECAD_DTYPE", "float32"),
            num_threads=int(threads) if threads else 1,
            max_images=int(env.get("ECAD_MAX_IMAGES", 8)),
            max_queue=int(env.get("ECAD_MAX_QUEUE", 8)),
            profile_time_budget_s=float(env.get("ECAD_PROFILE_BUDGET_S", 120)),
            persist_profile=env.get("ECAD_PERSIST_PROFILE", "0") == "1",
            latency_learning_rate=float(env.get("ECAD_LATENCY_LEARNING_RATE", 0.2)),
        )


def default_bank_path(model: str) -> Path:
    """The bank under ``schedules/<model folder or id's last part>/``; it must be unambiguous."""
    folder = SCHEDULES_DIR / model_name(model)
    banks = sorted(folder.glob("*.json"))
    if not banks:
        raise BankError(
            f"no schedule bank for model {model!r} in {folder}; run `ecad-calibrate --model {model}` "
            "or set ECAD_BANK to a bank file"
        )
    if len(banks) > 1:
        raise BankError(f"several banks in {folder} ({', '.join(b.name for b in banks)}); set ECAD_BANK")
    return banks[0]


class ScheduleServer:
    """Loads a pipeline and its bank once; validates, selects, generates, learns latencies."""

    def __init__(self, config: ServingConfig | None = None, *, pipe=None) -> None:
        from ecad.adapters import get_adapter
        from ecad.generate import load_pipeline

        self.config = config or ServingConfig()
        if self.config.num_threads and self.config.device.startswith("cpu"):
            torch.set_num_threads(self.config.num_threads)
        self.bank_path = Path(self.config.bank) if self.config.bank else default_bank_path(self.config.model)
        self.bank = ScheduleBank.load(self.bank_path)
        dtype = getattr(torch, self.config.dtype)
        self.pipe = pipe if pipe is not None else load_pipeline(self.config.model, device=self.config.device, dtype=dtype)
        self.bank.check_transformer(dict(self.pipe.transformer.config), source=str(self.bank_path))
        self.adapter = get_adapter(self.pipe.transformer)
        self.spatial_multiple = int(self.adapter.spatial_multiple(self.pipe))
        self.schedules = {entry.id: entry.cache_schedule() for entry in self.bank.entries}
        self.quality = {entry.id: entry.quality[self.bank.quality_metric] for entry in self.bank.entries}
        self.corrector = LatencyCorrector(smoothing=self.config.latency_learning_rate)
        self._lock = threading.Lock()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self.profile = self._ensure_profile()
        self._warm_up()

    # -- start-up -----------------------------------------------------------------------------

    def _ensure_profile(self) -> HardwareProfile:
        device = str(self.pipe.device)
        dtype = str(self.pipe.transformer.dtype).removeprefix("torch.")
        threads = torch.get_num_threads() if device.startswith("cpu") else None
        key = hardware_key(device, dtype, 1, threads)
        profile = self.bank.profile(key)
        if profile is not None and set(profile.latency_ms) == set(self.schedules):
            logger.info("using stored latency profile %s", key)
            return profile
        from ecad.profile import profile_bank

        logger.info("no latency profile for %s: profiling %d schedules (budget %.0f s)",
                    key, len(self.schedules), self.config.profile_time_budget_s)
        profile = profile_bank(
            self.pipe, self.bank, repeats=self.config.profile_repeats,
            time_budget_s=self.config.profile_time_budget_s, progress=False,
        )
        self.bank = self.bank.with_profile(profile)
        if self.config.persist_profile:
            self.bank.save(self.bank_path)
            logger.info("stored profile %s in %s", key, self.bank_path)
        return profile

    def _warm_up(self) -> None:
        """One call per code path before the first request: the first call of a fresh process is
        several times slower (lazy init), which would both miss that request's budget and teach
        the latency corrector a wrong ratio."""
        from ecad.generate import generate as run_pipeline
        from ecad.profile import DEFAULT_PROFILE_PROMPT

        fastest = min(self.profile.latency_ms, key=self.profile.latency_ms.get)
        for entry_id in dict.fromkeys([self.bank.no_cache_entry().id, fastest]):
            started = time.perf_counter()
            run_pipeline(self.pipe, [DEFAULT_PROFILE_PROMPT], [0], self.bank.setting, self.schedules[entry_id])
            logger.info("warm-up with %s: %.0f ms", entry_id, (time.perf_counter() - started) * 1000)

    # -- requests -----------------------------------------------------------------------------

    @property
    def profiled_shape(self) -> RequestShape:
        return RequestShape(self.bank.height, self.bank.width, self.bank.num_inference_steps, self.profile.batch_size)

    def limits(self) -> dict[str, Any]:
        c, b, m = self.config, self.bank, self.spatial_multiple
        return {
            "prompt_chars": [1, c.max_prompt_chars],
            "num_images": [1, c.max_images],
            "width": [m, b.width * c.max_side_factor, m],
            "height": [m, b.height * c.max_side_factor, m],
            "num_inference_steps": [1, c.max_steps],
        }

    def resolve(self, request: GenerateRequest) -> ResolvedRequest:
        """Apply the bank's defaults and the model-dependent limits; RequestError names the field."""
        c, b, m = self.config, self.bank, self.spatial_multiple
        if not request.prompt.strip():
            raise RequestError("prompt", "must not be blank")
        if len(request.prompt) > c.max_prompt_chars:
            raise RequestError("prompt", f"is {len(request.prompt)} characters; at most {c.max_prompt_chars}")
        if request.num_images > c.max_images:
            raise RequestError("num_images", f"must be between 1 and {c.max_images}, got {request.num_images}")
        sizes = {}
        for name, value, default in (("width", request.width, b.width), ("height", request.height, b.height)):
            value = default if value is None else value
            top = default * c.max_side_factor
            if value % m or not m <= value <= top:
                raise RequestError(name, f"must be a multiple of {m} between {m} and {top}, got {value}")
            sizes[name] = value
        steps = b.num_inference_steps if request.num_inference_steps is None else request.num_inference_steps
        if not 1 <= steps <= c.max_steps:
            raise RequestError("num_inference_steps", f"must be between 1 and {c.max_steps}, got {steps}")
        if request.schedule_id is not None and request.schedule_id not in self.schedules:
            raise RequestError("schedule_id", f"unknown entry {request.schedule_id!r}; see GET /schedules for the ids")
        seed = request.seed if request.seed is not None else random.SystemRandom().randrange(MAX_SEED + 1)
        return ResolvedRequest(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            latency_ms=request.latency_ms,
            seed=seed,
            num_images=request.num_images,
            width=sizes["width"],
            height=sizes["height"],
            num_inference_steps=steps,
            guidance_scale=b.guidance_scale if request.guidance_scale is None else request.guidance_scale,
            schedule_id=request.schedule_id,
        )

    def plan(self, request: ResolvedRequest, waited_ms: float = 0.0) -> Plan:
        """Which schedule serves this request (pure given the current corrections)."""
        shape = RequestShape(request.height, request.width, request.num_inference_steps, request.num_images)
        entries = [(i, self.quality[i], self.profile.latency_ms[i]) for i in self.schedules]
        corrections = self.corrector.corrections(list(self.schedules))
        candidates = predict_candidates(entries, self.profiled_shape, shape, corrections)
        budget = remaining_budget(request.latency_ms, waited_ms)
        if request.schedule_id is not None:  # pinned by the client: no selection
            candidates = [c for c in candidates if c.id == request.schedule_id]
            pinned = candidates[0]
            choice = Choice(pinned.id, pinned.predicted_ms, pinned.quality, budget,
                            budget is None or pinned.predicted_ms <= budget, "pinned by the request")
        else:
            choice = select_schedule(candidates, budget)
        notes = []
        if shape.num_inference_steps != self.bank.num_inference_steps:
            notes.append(
                f"schedule resampled from {self.bank.num_inference_steps} to {shape.num_inference_steps} steps; "
                "latency predicted by scaling"
            )
        if (shape.height, shape.width) != (self.bank.height, self.bank.width):
            notes.append(
                f"resolution {shape.width}x{shape.height} differs from the bank's "
                f"{self.bank.width}x{self.bank.height}; latency predicted by scaling with tokens"
            )
        if shape.batch_size != self.profile.batch_size:
            notes.append(f"latency predicted by scaling from batch {self.profile.batch_size} to {shape.batch_size}")
        if not choice.budget_met and request.schedule_id is None:
            notes.append(f"budget cannot be met: fastest schedule predicted at {choice.predicted_ms:.0f} ms")
        elif not choice.budget_met:
            notes.append(f"pinned schedule predicted at {choice.predicted_ms:.0f} ms, over the budget")
        return Plan(choice, shape, tuple(notes))

    def generate(self, request: ResolvedRequest, *, arrival: float | None = None,
                 deadline: float | None = None) -> GenerationResult:
        """Wait for the pipeline, choose a schedule with the remaining budget, generate.

        ``arrival``/``deadline`` are ``time.monotonic()`` seconds; a request whose deadline passed
        while queued is refused before it starts, and one that overruns stops between steps.
        """
        from ecad.generate import generate as run_pipeline

        arrival = time.monotonic() if arrival is None else arrival
        with self._waiting_lock:
            if self._waiting >= self.config.max_queue:
                raise Overloaded(f"{self._waiting} requests already waiting; retry later")
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        try:
            started = time.monotonic()
            queue_ms = (started - arrival) * 1000.0
            if deadline is not None and started >= deadline:
                raise DeadlineExceeded(f"request waited {queue_ms:.0f} ms, past its timeout; not started")
            plan = self.plan(request, queue_ms)
            schedule = self.schedules[plan.choice.entry_id]
            if schedule.num_steps != request.num_inference_steps:
                schedule = schedule.resample(request.num_inference_steps)
            with pipeline_deadline(self.pipe, deadline):
                images = run_pipeline(
                    self.pipe, [request.prompt] * request.num_images,
                    [(request.seed + i) % (MAX_SEED + 1) for i in range(request.num_images)],
                    Setting(request.height, request.width, request.num_inference_steps, request.guidance_scale),
                    schedule, negative_prompt=request.negative_prompt,
                )
            actual_ms = (time.monotonic() - started) * 1000.0
        finally:
            self._lock.release()
        self.corrector.observe(plan.choice.entry_id, plan.choice.predicted_ms, actual_ms)
        met = None if request.latency_ms is None else queue_ms + actual_ms <= request.latency_ms
        return GenerationResult(
            images=images, request=request, schedule_id=plan.choice.entry_id,
            predicted_ms=plan.choice.predicted_ms, actual_ms=actual_ms, queue_ms=queue_ms,
            budget_met=met, notes=list(plan.notes),
        )

    # -- read-only views ----------------------------------------------------------------------

    def bank_view(self) -> dict[str, Any]:
        corrections = self.corrector.corrections(list(self.schedules))
        return {
            "model": self.bank.model,
            "bank_file": str(self.bank_path),
            "height": self.bank.height,
            "width": self.bank.width,
            "num_inference_steps": self.bank.num_inference_steps,
            "guidance_scale": self.bank.guidance_scale,
            "scorer": self.bank.scorer,
            "quality_metric": self.bank.quality_metric,
            "hardware_profile": self.profile.key,
            "limits": self.limits(),
            "entries": [
                {
                    "id": entry.id,
                    "source": entry.source,
                    "quality": entry.quality,
                    "macs": entry.macs,
                    "recompute_fraction": round(float(self.schedules[entry.id].mask.mean()), 4),
                    "profiled_ms": round(self.profile.latency_ms[entry.id], 3),
                    "predicted_ms": round(self.profile.latency_ms[entry.id] * corrections[entry.id], 3),
                }
                for entry in self.bank.entries
            ],
        }

    def select_view(self, latency_ms: float | None, **shape: Any) -> dict[str, Any]:
        request = self.resolve(GenerateRequest(prompt="-", latency_ms=latency_ms, seed=0, **shape))
        plan = self.plan(request)
        c = plan.choice
        return {
            "schedule_id": c.entry_id,
            "predicted_ms": round(c.predicted_ms, 3),
            "quality": c.quality,
            "budget_ms": c.budget_ms,
            "budget_met": c.budget_met,
            "reason": c.reason,
            "notes": list(plan.notes),
        }
