"""A bank as served: built once at start-up, then every request of its setting uses it.

``ServedBank`` holds everything a request needs from its bank: the entries' schedules and
quality, this hardware's latency profile, the latency model and live latency tail that scale it
to any request shape, and ``schedule_for``, the one place a bank entry becomes the schedule that
runs for a request's ``Setting``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ecad.bank import HardwareProfile, ScheduleBank
from ecad.planning import LatencyQuantiles, PredictedEntry, RequestShape, predict_entries
from ecad.schedule import CacheSchedule
from ecad.serving.latency import RequestCost
from ecad.setting import Setting

PREPARED_PER_BANK = 256  # resampled schedules kept per bank (entry x steps x guidance)
COSTED_SETTINGS = 32  # settings whose entries' costs are kept per bank


@dataclass(eq=False)
class ServedBank:
    id: str  # what responses name it by: its file name (its path if two share a name)
    path: Path
    bank: ScheduleBank
    profile: HardwareProfile  # this hardware's latency of every entry
    latency: LatencyQuantiles  # the tail of actual/expected seen on this server, per entry and shape
    cost: RequestCost | None = None  # the latency model; None: only the profiled shape can be predicted
    schedules: dict[str, CacheSchedule] = field(init=False)  # entry id -> its schedule at the bank's setting
    quality: dict[str, float] = field(init=False)  # entry id -> the bank's ranking metric

    def __post_init__(self) -> None:
        self.schedules = {entry.id: entry.cache_schedule() for entry in self.bank.entries}
        self.quality = {entry.id: entry.quality[self.bank.quality_metric] for entry in self.bank.entries}
        self._prepared = functools.lru_cache(maxsize=PREPARED_PER_BANK)(self._prepare)
        self._costs = functools.lru_cache(maxsize=COSTED_SETTINGS)(self._entry_costs)

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

    def expected_ms(self, shape: RequestShape, entry_ids: Iterable[str]) -> dict[str, float]:
        """Each entry's latency for a request of ``shape`` before the tail factor: its profile,
        scaled by the latency model (``ecad.serving.latency``) from the profiled shape."""
        ids = list(entry_ids)
        if shape == self.profiled_shape:
            return {i: self.profile.latency_ms[i] for i in ids}
        if self.cost is None:
            raise ValueError(f"bank {self.id} has no latency model: only {self.profiled_shape} can be predicted")
        here, profiled = self._costs(shape.setting), self._costs(self.bank.setting)
        n, pn = shape.num_images, self.profiled_shape.num_images
        return {i: self.profile.latency_ms[i] * (here[i][0] + n * here[i][1]) / (profiled[i][0] + pn * profiled[i][1])
                for i in ids}

    def _entry_costs(self, setting: Setting) -> dict[str, tuple[float, float]]:
        return {i: self.cost.parts(setting, self.schedule_for(i, setting)) for i in self.schedules}

    def predict(self, shape: RequestShape, entry_ids: Iterable[str] | None = None) -> tuple[PredictedEntry, ...]:
        """Tail-latency predictions of these entries (default: all) for a request of ``shape``."""
        ids = list(self.schedules if entry_ids is None else entry_ids)
        expected = self.expected_ms(shape, ids)
        entries = [(i, self.quality[i], expected[i]) for i in ids]
        return tuple(predict_entries(entries, self.latency.factors(ids, shape)))

    def observe(self, entry_id: str, shape: RequestShape, actual_ms: float) -> None:
        """A call of ``shape`` ran ``entry_id`` in ``actual_ms``: teach the latency tail."""
        self.latency.observe(entry_id, self.expected_ms(shape, [entry_id])[entry_id], actual_ms, shape)
