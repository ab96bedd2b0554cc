"""A bank as served: built once at start-up, then every request of its setting uses it.

``ServedBank`` holds everything a request needs from its bank: the entries' schedules and
quality, this hardware's latency profile, the latency model and live latency tail that scale it
to any request shape, ``schedule_for``, the one place a bank entry becomes the schedule that runs
for a request's ``Setting``, and ``quality_at``, what that entry's quality is there.

At the bank's own setting both are the bank's (quality: the validation score where the bank has
one). At another step count or size an entry is moved by noise level (`ecad.transfer`: always a
valid schedule) and its quality is an estimate: from the model's measured transfers
(`TransferQualityModel`, ``transfer-quality.json`` beside the bank) where there are some, else the
bank's own figure, marked as not measured at this setting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ecad.bank import HardwareProfile, ScheduleBank, quality_for_ranking
from ecad.planning import LatencyQuantiles, PredictedEntry, RequestShape, predict_entries
from ecad.schedule import CacheSchedule
from ecad.serving.latency import RequestCost
from ecad.setting import Setting
from ecad.transfer import TransferQualityModel, transfer_schedule

PREPARED_PER_BANK = 256  # moved schedules kept per bank (entry x steps x size x guidance)
COSTED_SETTINGS = 32  # settings whose entries' costs are kept per bank


@dataclass(frozen=True)
class EntryQuality:
    """An entry's quality on the bank's ranking metric at some setting, and how it is known."""

    value: float
    low: float | None = None  # the stated interval, where there is one
    high: float | None = None
    estimated: bool = False  # True: not measured at this setting (a transfer's estimate)
    basis: str = "measured"  # "measured" | "validation" | "transfer model" | "not measured at this setting"

    def label(self, metric: str) -> str:
        interval = f" [{self.low:.3g}, {self.high:.3g}]" if self.low is not None and self.high is not None else ""
        kind = "estimated" if self.estimated else "measured"
        return f"{metric} {self.value:.3g}{interval} ({kind}: {self.basis})"


@dataclass(eq=False)
class ServedBank:
    id: str  # what responses name it by: its file name (its path if two share a name)
    path: Path
    bank: ScheduleBank
    profile: HardwareProfile  # this hardware's latency of every entry
    latency: LatencyQuantiles  # the tail of actual/expected seen on this server, per entry and shape
    cost: RequestCost | None = None  # the latency model; None: only the profiled shape can be predicted
    #: the pipeline's noise levels at a setting (`ecad.transfer.noise_levels`); None: moved by index
    noise_levels: Callable[[Setting], np.ndarray] | None = None
    #: measured transfers of this bank's model: quality estimates at other step counts
    transfer_quality: TransferQualityModel | None = None
    schedules: dict[str, CacheSchedule] = field(init=False)  # entry id -> its schedule at the bank's setting
    quality: dict[str, EntryQuality] = field(init=False)  # entry id -> its quality at the bank's setting

    def __post_init__(self) -> None:
        metric = self.bank.quality_metric
        self.schedules = {entry.id: entry.cache_schedule() for entry in self.bank.entries}
        self.quality = {}
        no_cache = self.bank.no_cache_entry()
        for entry in self.bank.entries:
            if entry.validation and metric in entry.validation:  # prompts the search never saw
                # what one served image gets (the spread of single images), else the mean's interval
                low, high = (entry.spread or entry.interval or {}).get(metric, (None, None))
                self.quality[entry.id] = EntryQuality(quality_for_ranking(entry, no_cache, metric), low, high,
                                                      basis="validation")
            else:
                self.quality[entry.id] = EntryQuality(entry.quality[metric], estimated=not entry.quality_measured,
                                                      basis="measured" if entry.quality_measured else "not measured")
        self._prepared = functools.lru_cache(maxsize=PREPARED_PER_BANK)(self._prepare)
        self._quality_at = functools.lru_cache(maxsize=64)(self._estimate_quality)
        self._costs = functools.lru_cache(maxsize=COSTED_SETTINGS)(self._entry_costs)

    def made_for(self, setting: Setting) -> bool:
        """Whether this bank was made for ``setting``'s steps, size and frames (its schedules run as stored)."""
        own = self.bank.setting
        return ((own.num_inference_steps, own.height, own.width, own.num_frames)
                == (setting.num_inference_steps, setting.height, setting.width, setting.num_frames))

    def schedule_for(self, entry_id: str, setting: Setting) -> CacheSchedule:
        """What entry ``entry_id`` runs at ``setting``: its own schedule at the bank's steps and size;
        elsewhere moved by noise level (``ecad.transfer.transfer_schedule``; by nearest step index
        where the pipeline's noise levels are unknown), always valid; without guidance reuse when
        the setting has no classifier-free guidance (no unconditional rows to rebuild). Prepared
        once per (entry, steps, size, guidance on/off, frames)."""
        return self._prepared(entry_id, setting.num_inference_steps, setting.height, setting.width,
                              setting.guidance_scale > 1, setting.num_frames)

    def _prepare(self, entry_id: str, num_steps: int, height: int, width: int, guided: bool,
                 num_frames: int | None = None) -> CacheSchedule:
        schedule = self.schedules[entry_id]
        target = self.bank.setting.with_changes(num_inference_steps=num_steps, height=height, width=width,
                                                num_frames=num_frames)
        if not self.made_for(target):
            if self.noise_levels is not None:
                schedule = transfer_schedule(schedule, self.noise_levels(self.bank.setting), self.noise_levels(target))
            else:
                schedule = CacheSchedule.repaired(*_resampled(schedule, num_steps))
        return schedule if guided else schedule.without_guidance_reuse()

    def quality_at(self, setting: Setting) -> dict[str, EntryQuality]:
        """Every entry's quality at ``setting``: the bank's own where it was made for it, else an estimate."""
        return self.quality if self.made_for(setting) else self._quality_at(setting.num_inference_steps)

    def _estimate_quality(self, num_steps: int) -> dict[str, EntryQuality]:
        metric, model = self.bank.quality_metric, self.transfer_quality
        no_cache = self.bank.no_cache_entry().id
        out = {}
        for entry_id, own in self.quality.items():
            if entry_id == no_cache:  # the reference itself at every step count
                out[entry_id] = own
            elif model is not None and metric in model.fits:
                # the mean's interval (the fit is in the step ratio: any bank of the model may use it)
                value, low, high = model.estimate(metric, own.value, num_steps, self.bank.num_inference_steps)
                if own.low is not None and own.high is not None:  # widened by the spread of single images
                    low, high = low + own.low - own.value, high + own.high - own.value
                out[entry_id] = EntryQuality(value, low, high, estimated=True, basis="transfer model")
            else:
                out[entry_id] = EntryQuality(own.value, estimated=True, basis="not measured at this setting")
        return out

    @property
    def profiled_shape(self) -> RequestShape:
        return RequestShape(self.bank.setting, self.profile.batch_size)

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
        quality = self.quality_at(shape.setting)
        entries = [(i, quality[i].value, expected[i]) for i in ids]
        return tuple(predict_entries(entries, self.latency.factors(ids, shape)))

    def observe(self, entry_id: str, shape: RequestShape, actual_ms: float) -> None:
        """A call of ``shape`` ran ``entry_id`` in ``actual_ms``: teach the latency tail."""
        self.latency.observe(entry_id, self.expected_ms(shape, [entry_id])[entry_id], actual_ms, shape)


def _resampled(schedule: CacheSchedule, num_steps: int) -> tuple:
    """(actions, layout, skip, guidance) of ``schedule`` resampled by nearest index, for `repaired`."""
    moved = schedule.resample(num_steps)
    return moved.actions, moved.layout, moved.skip, moved.guidance_reuse
