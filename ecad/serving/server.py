"""``ScheduleServer``: start-up, then requests (resolve -> pick the bank -> queue -> plan -> run) and read-only views.

``server/service.py`` is a thin HTTP shell over this class; everything here runs in-process.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from ecad.planning import Assignment
from ecad.serving.config import ServingConfig
from ecad.serving.executor import GenerationResult, PipelineQueue
from ecad.serving.request import GenerateRequest, RequestError, RequestLimits, ResolvedRequest
from ecad.serving.startup import LoadedModel, ServedBank, start


class ScheduleServer:
    """One loaded pipeline and its banks; each request is served from the bank made for its
    setting, planned across the queue and run one by one."""

    def __init__(self, config: ServingConfig | None = None, *, pipe=None) -> None:
        self.config = config or ServingConfig()
        self.loaded: LoadedModel = start(self.config, pipe)
        self.queue = PipelineQueue(self.loaded, self.config)

    # The start-up results, by name (bank, profile, schedules: the default bank's).
    pipe = property(lambda self: self.loaded.pipe)
    banks: list[ServedBank] = property(lambda self: self.loaded.banks)
    bank = property(lambda self: self.loaded.bank)
    bank_path = property(lambda self: self.loaded.bank_path)
    profile = property(lambda self: self.loaded.profile)
    schedules = property(lambda self: self.loaded.schedules)
    limits: RequestLimits = property(lambda self: self.loaded.limits)

    def resolve(self, request: GenerateRequest) -> ResolvedRequest:
        """Apply the default bank's setting and this server's limits, then pick the bank for the
        resulting setting; RequestError names the field."""
        resolved = self._with_bank(self.limits.resolve(request))
        schedule_id = resolved.schedule_id
        if schedule_id is not None and schedule_id not in self.loaded.served(resolved.bank).schedules:
            raise RequestError("schedule_id", f"unknown entry {schedule_id!r} in bank {resolved.bank}; "
                                              "see GET /schedules for the ids")
        return resolved

    def _with_bank(self, request: ResolvedRequest) -> ResolvedRequest:
        pick = self.loaded.choose(request.setting)
        # With one bank the resampling is noted as it always was (executor.shape_notes); with
        # several, also which bank was taken instead of the missing one.
        notes = () if pick.exact or len(self.banks) == 1 else (pick.reason,)
        return dataclasses.replace(request, bank=pick.served.id, notes=notes)

    def plan(self, request: ResolvedRequest) -> Assignment:
        """What the planner would choose for this request if it arrived now."""
        return self.queue.preview(request)

    def generate(self, request: ResolvedRequest, *, arrival: float | None = None, deadline: float | None = None,
                 cancelled: threading.Event | None = None) -> GenerationResult:
        return self.queue.run(request, arrival=arrival, deadline=deadline, cancelled=cancelled)

    # -- read-only views ----------------------------------------------------------------------

    def bank_view(self) -> dict[str, Any]:
        """The default bank's fields at the top (as with one bank), every bank under ``banks``."""
        banks = [self._one_bank_view(served) for served in self.banks]
        return {
            **banks[0],
            "planner": self.config.planner,
            "latency_quantile": self.config.latency_quantile,
            "timeout_s": self.config.timeout_s,
            "queue_length": self.queue.queue_length(),
            "limits": self.limits.view(),
            "banks": banks,
        }

    def _one_bank_view(self, served: ServedBank) -> dict[str, Any]:
        bank, profile = served.bank, served.profile
        factors = self.queue.latency[served.id].factors(list(served.schedules))
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
        request = self._with_bank(ResolvedRequest("", None, latency_ms, 0, self.limits.shape(**shape)))
        a = self.plan(request)
        notes = [*request.notes, *([] if a.on_time else [f"budget cannot be met: {a.reason}"])]
        return {
            "schedule_id": a.entry_id,
            "bank": request.bank,
            "predicted_ms": round(a.predicted_ms, 3),
            "predicted_start_ms": round(max(0.0, a.start_ms - time.monotonic() * 1000.0), 3),
            "quality": a.quality,
            "budget_ms": latency_ms,
            "budget_met": a.on_time,
            "reason": a.reason,
            "queue_length": self.queue.queue_length(),
            "notes": notes,
        }
