"""``ScheduleServer``: start-up, then requests (resolve once -> queue -> plan -> run) and read-only views.

``server/service.py`` is a thin HTTP shell over this class; everything here runs in-process.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from ecad.bank_catalog import choose_bank
from ecad.deadline import monotonic_ms
from ecad.planning import Assignment, missed_budget_note
from ecad.serving.banks import ServedBank
from ecad.serving.config import ServingConfig
from ecad.serving.queue import GenerationResult, PipelineQueue
from ecad.serving.request import MAX_SEED, GenerateRequest, RequestError, ResolvedRequest
from ecad.serving.slots import pipeline_slots
from ecad.serving.startup import start, warm_up
from ecad.setting import Setting


class ScheduleServer:
    """One loaded pipeline and its banks; each request is served from the bank made for its
    setting, planned across the queue and run one computation at a time (a running request may
    pause between steps for a shorter or more urgent one)."""

    def __init__(self, config: ServingConfig | None = None, *, pipe=None) -> None:
        self.config = config or ServingConfig()
        self.pipe, self.banks, self.limits = start(self.config, pipe)  # banks: by id, the default first
        self.default_bank: ServedBank = next(iter(self.banks.values()))
        self._settings = {bank_id: served.bank.setting for bank_id, served in self.banks.items()}
        self.queue = PipelineQueue(pipeline_slots(self.pipe, self.config.slots), self.config)
        warm_up(self.queue, self.banks)

    def close(self) -> None:
        """Stop the pipeline's worker threads (after the calls under way)."""
        self.queue.close()

    def bank_for(self, setting: Setting) -> tuple[ServedBank, tuple[str, ...]]:
        """The bank made for ``setting``, else the nearest (``ecad.bank_catalog.choose_bank``), and
        the notes saying so and how the quality of its entries is known there."""
        bank_id, note = choose_bank(self._settings, setting)
        served = self.banks[bank_id]
        notes = () if note is None or len(self.banks) == 1 else (note,)
        if not served.made_for(setting):
            how = ("estimated from the model's measured transfers (`quality`: the estimate and its interval)"
                   if served.transfer_quality is not None else "not measured at this setting (the bank's own figure)")
            own = served.bank.setting
            moved = (f"moved by noise level from {own.num_inference_steps} steps"
                     if own.num_inference_steps != setting.num_inference_steps else f"made for {own.name}")
            notes += (f"no bank was made for {setting.name}: {served.id}'s schedules are {moved}; their quality "
                      f"is {how}",)
        return served, notes

    def resolve(self, request: GenerateRequest) -> ResolvedRequest:
        """The request checked against this server's limits and resolved, once, to the bank that
        serves it and the setting it runs at; RequestError names the field."""
        shape = self.limits.check(request)
        served, notes = self.bank_for(shape.setting)
        if request.schedule_id is not None and request.schedule_id not in served.schedules:
            raise RequestError("schedule_id", f"unknown entry {request.schedule_id!r} in bank {served.id}; "
                                              "see GET /schedules for the ids")
        seed = request.seed if request.seed is not None else random.SystemRandom().randrange(MAX_SEED + 1)
        served.predict(shape)  # a new shape's costs are counted here, not while the queue is locked
        return ResolvedRequest(request.prompt, request.negative_prompt, request.latency_ms, seed, shape, served,
                               request.schedule_id, request.on_infeasible, notes)

    def plan(self, request: ResolvedRequest) -> Assignment:
        """What the planner would choose for this request if it arrived now."""
        return self.queue.preview(request)

    def generate(self, request: ResolvedRequest, *, arrival_ms: float | None = None, deadline_ms: float | None = None,
                 cancelled: threading.Event | None = None) -> GenerationResult:
        """Queue and run it; times on ``ecad.deadline.monotonic_ms()`` (arrival: now by default)."""
        return self.queue.run(request, arrival_ms=arrival_ms, deadline_ms=deadline_ms, cancelled=cancelled)

    # -- read-only views ----------------------------------------------------------------------

    def bank_view(self) -> dict[str, Any]:
        """The default bank's fields at the top (as with one bank), every bank under ``banks``."""
        banks = [self._one_bank_view(served) for served in self.banks.values()]
        return {
            **banks[0],
            "planner": self.config.planner,
            "slots": self.config.slots,
            "batching": self.config.batching,
            "latency_model": self.default_bank.cost.model.view(),
            "latency_quantile": self.config.latency_quantile,
            "timeout_s": self.config.timeout_s,
            "queue_length": self.queue.queue_length(),
            "limits": self.limits.view(),
            # requests at these settings are served from a bank made for them; elsewhere from the
            # nearest bank, its schedules moved by noise level and their quality estimated
            "settings_with_own_bank": [served.bank.setting.name for served in self.banks.values()],
            "banks": banks,
        }

    def _one_bank_view(self, served: ServedBank) -> dict[str, Any]:
        bank, profile = served.bank, served.profile
        factors = served.latency.factors(list(served.schedules), served.profiled_shape)
        return {
            "bank": served.id,
            "model": bank.model,
            "bank_file": str(served.path),
            **bank.setting.to_dict(),
            "scorer": bank.scorer,
            "quality_metric": bank.quality_metric,
            "hardware_profile": profile.key,
            "entries": [
                {
                    "id": entry.id,
                    "source": entry.source,
                    "quality": entry.quality,
                    "validation": entry.validation,
                    "macs": entry.macs,
                    "recompute_fraction": round(float(served.schedules[entry.id].mask.mean()), 4),
                    "profiled_ms": round(profile.latency_ms[entry.id], 3),
                    "predicted_ms": round(profile.latency_ms[entry.id] * factors[entry.id], 3),
                }
                for entry in bank.entries
            ],
        }

    def select_view(self, latency_ms: float | None, **shape: Any) -> dict[str, Any]:
        """The planner's choice for a request of this budget and shape arriving now."""
        checked = self.limits.shape(**shape)
        served, notes = self.bank_for(checked.setting)
        served.predict(checked)  # a new shape's costs are counted here, not while the queue is locked
        a = self.plan(ResolvedRequest("", None, latency_ms, 0, checked, served, notes=notes))
        wait_ms = max(0.0, a.start_ms - monotonic_ms())
        return {
            "schedule_id": a.entry_id,
            "bank": served.id,
            "predicted_ms": round(a.predicted_ms, 3),
            "predicted_start_ms": round(wait_ms, 3),
            "quality": a.quality,
            "budget_ms": latency_ms,
            "budget_met": a.on_time,
            "reason": a.reason,
            "queue_length": self.queue.queue_length(),
            "notes": [*notes, *([] if a.on_time else [missed_budget_note(a, latency_ms, wait_ms)])],
        }
