"""``ScheduleServer``: start-up, then requests (resolve -> queue -> plan -> run) and read-only views.

``server/service.py`` is a thin HTTP shell over this class; everything here runs in-process.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ecad.planning import Assignment
from ecad.serving.config import ServingConfig
from ecad.serving.executor import GenerationResult, PipelineQueue
from ecad.serving.request import GenerateRequest, RequestLimits, ResolvedRequest
from ecad.serving.startup import LoadedModel, start


class ScheduleServer:
    """One loaded pipeline and its bank; requests are planned across the queue and run one by one."""

    def __init__(self, config: ServingConfig | None = None, *, pipe=None) -> None:
        self.config = config or ServingConfig()
        self.loaded: LoadedModel = start(self.config, pipe)
        self.queue = PipelineQueue(self.loaded, self.config)

    # The start-up results, by name.
    pipe = property(lambda self: self.loaded.pipe)
    bank = property(lambda self: self.loaded.bank)
    bank_path = property(lambda self: self.loaded.bank_path)
    profile = property(lambda self: self.loaded.profile)
    schedules = property(lambda self: self.loaded.schedules)
    limits: RequestLimits = property(lambda self: self.loaded.limits)

    def resolve(self, request: GenerateRequest) -> ResolvedRequest:
        """Apply the bank's defaults and this server's limits; RequestError names the field."""
        return self.limits.resolve(request, self.schedules)

    def plan(self, request: ResolvedRequest) -> Assignment:
        """What the planner would choose for this request if it arrived now."""
        return self.queue.preview(request)

    def generate(self, request: ResolvedRequest, *, arrival: float | None = None, deadline: float | None = None,
                 cancelled: threading.Event | None = None) -> GenerationResult:
        return self.queue.run(request, arrival=arrival, deadline=deadline, cancelled=cancelled)

    # -- read-only views ----------------------------------------------------------------------

    def bank_view(self) -> dict[str, Any]:
        bank, profile = self.bank, self.profile
        factors = self.queue.latency.factors(list(self.schedules))
        return {
            "model": bank.model,
            "bank_file": str(self.bank_path),
            **bank.setting.to_dict(),
            "scorer": bank.scorer,
            "quality_metric": bank.quality_metric,
            "hardware_profile": profile.key,
            "planner": self.config.planner,
            "latency_quantile": self.config.latency_quantile,
            "timeout_s": self.config.timeout_s,
            "queue_length": self.queue.queue_length(),
            "limits": self.limits.view(),
            "entries": [
                {
                    "id": entry.id,
                    "source": entry.source,
                    "quality": entry.quality,
                    "macs": entry.macs,
                    "recompute_fraction": round(float(self.schedules[entry.id].mask.mean()), 4),
                    "profiled_ms": round(profile.latency_ms[entry.id], 3),
                    "predicted_ms": round(profile.latency_ms[entry.id] * factors[entry.id], 3),
                }
                for entry in bank.entries
            ],
        }

    def select_view(self, latency_ms: float | None, **shape: Any) -> dict[str, Any]:
        """The planner's choice for a request of this budget and shape arriving now."""
        request = ResolvedRequest("", None, latency_ms, 0, self.limits.shape(**shape))
        a = self.plan(request)
        notes = [] if a.on_time else [f"budget cannot be met: {a.reason}"]
        return {
            "schedule_id": a.entry_id,
            "predicted_ms": round(a.predicted_ms, 3),
            "predicted_start_ms": round(max(0.0, a.start_ms - time.monotonic() * 1000.0), 3),
            "quality": a.quality,
            "budget_ms": latency_ms,
            "budget_met": a.on_time,
            "reason": a.reason,
            "queue_length": self.queue.queue_length(),
            "notes": notes,
        }
