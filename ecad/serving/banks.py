"""A bank as served: built once at start-up, then every request of its setting uses it.

``ServedBank`` holds everything a request needs from its bank: the entries' schedules and
quality, this hardware's latency profile, the live latency tail, and ``schedule_for``, the one
place a bank entry becomes the schedule that runs for a request's ``Setting``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ecad.bank import HardwareProfile, ScheduleBank
from ecad.planning import LatencyQuantiles, PredictedEntry, RequestShape, predict_entries, scale_latency
from ecad.schedule import CacheSchedule
from ecad.setting import Setting

PREPARED_PER_BANK = 256  # resampled schedules kept per bank (entry x steps x guidance)


@dataclass(eq=False)
class ServedBank:
    id: str  # what responses name it by: its file name (its path if two share a name)
    path: Path
    bank: ScheduleBank
    profile: HardwareProfile  # this hardware's latency of every entry
    latency: LatencyQuantiles  # the tail of actual/profiled seen on this server, per entry
    schedules: dict[str, CacheSchedule] = field(init=False)  # entry id -> its schedule at the bank's setting
    quality: dict[str, float] = field(init=False)  # entry id -> the bank's ranking metric

    def __post_init__(self) -> None:
        self.schedules = {entry.id: entry.cache_schedule() for entry in self.bank.entries}
        self.quality = {entry.id: entry.quality[self.bank.quality_metric] for entry in self.bank.entries}
        self._prepared = functools.lru_cache(maxsize=PREPARED_PER_BANK)(self._prepare)

    @property
    def profiled_shape(self) -> RequestShape:
        return RequestShape(self.bank.setting, self.profile.batch_size)

    def schedule_for(self, entry_id: str, setting: Setting) -> CacheSchedule:
        """What entry ``entry_id`` runs at ``setting``: its schedule resampled to the setting's
        steps (nearest step, ``CacheSchedule.resample``), without guidance reuse when the setting
        has no classifier-free guidance (no unconditional rows to rebuild). Prepared once per
        (entry, steps, guidance on/off)."""
        return self._prepared(entry_id, setting.num_inference_steps, setting.guidance_scale > 1)

    def _prepare(self, entry_id: str, num_steps: int, guided: bool) -> CacheSchedule:
        schedule = self.schedules[entry_id].resample(num_steps)
        return schedule if guided else schedule.without_guidance_reuse()

    def predict(self, shape: RequestShape, entry_ids: Iterable[str] | None = None) -> tuple[PredictedEntry, ...]:
        """Tail-latency predictions of these entries (default: all) for a request of ``shape``."""
        ids = list(self.schedules if entry_ids is None else entry_ids)
        entries = [(i, self.quality[i], self.profile.latency_ms[i]) for i in ids]
        return tuple(predict_entries(entries, self.profiled_shape, shape, self.latency.factors(ids)))

    def observe(self, entry_id: str, shape: RequestShape, actual_ms: float) -> None:
        """A request of ``shape`` ran ``entry_id`` in ``actual_ms``: teach the latency tail."""
        profiled_ms = scale_latency(self.profile.latency_ms[entry_id], self.profiled_shape, shape)
        self.latency.observe(entry_id, profiled_ms, actual_ms)
