"""How long a pipeline call takes on this machine at any setting: the latency model.

A bank's profile says how long each entry takes at the bank's own setting, one image. A request at
another size, step count or number of images is predicted by scaling that measurement with a cost
model fitted on this machine at start-up: the time of one pipeline call is a non-negative sum of
the work it does, each kind of work with its own price.

Once per call (whatever the batch):

    calls         1: text encoding, set-up
    block_runs    transformer blocks run (a block's module calls have a fixed overhead)
    block_skips   blocks skipped (a hook that replays the block's delta)
    recomputes    components recomputed, and ``reuses``: components reused or forecast (their hooks)

Once per image:

    images        work outside the denoising loop that grows with the batch
    pixels        height x width (x frames of a video): the VAE decode
    macs          the transformer's MACs under the schedule, ``ecad.cost``'s recipe: attention's
                  quadratic term in the tokens is counted, so a 4x larger side costs far more than 16x
    elements      the element-wise work of forecasts and skipped blocks (memory-bound: its own price)
    pixel_steps   pixels x steps: per-step work on the latents outside the MACs (scheduler,
                  embeddings)

The prices are fitted (non-negative least squares, every run's relative error weighted alike) on a
few runs timed at start-up around the default bank: the entry without caching, the fastest and a
middle one, at 1x, 2x and 4x the bank's side, at its steps and at the fewest the scheduler runs,
with one and two images (``latency_design``). On a CPU with one torch thread the runs are timed in
thread CPU time, which other work on a shared machine does not inflate; elsewhere in wall time.

A request is predicted as ``profile(entry) x cost(entry, its shape) / cost(entry, the profiled
shape)`` (``ecad.serving.banks.ServedBank.expected_ms``): exact where the profile was measured, the
profile's calibration of this machine carried over to other shapes. What requests then actually
take corrects it further (``ecad.planning.LatencyQuantiles``, per entry and shape). Without a fit
(``ECAD_LATENCY_FIT_S=0``) the cost is the MACs alone.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ecad.adapters import get_adapter
from ecad.cost import image_call, cost_features
from ecad.schedule import CacheSchedule
from ecad.setting import Setting

logger = logging.getLogger(__name__)

PER_CALL = ("calls", "block_runs", "block_skips", "recomputes", "reuses")
PER_IMAGE = ("images", "pixels", "macs", "elements", "pixel_steps")
FEATURES = PER_CALL + PER_IMAGE


@dataclass(frozen=True)
class CallWork:
    """The work of one pipeline call at a setting under a schedule: per call, and per image."""

    per_call: Mapping[str, float]
    per_image: Mapping[str, float]

    def features(self, num_images: int) -> dict[str, float]:
        return {**self.per_call, **{k: v * num_images for k, v in self.per_image.items()}}


def call_work(pipe: Any, setting: Setting, schedule: CacheSchedule | None = None) -> CallWork:
    """``CallWork`` of ``pipe`` at ``setting`` under ``schedule`` (None: no caching)."""
    return _call_work(pipe, setting, schedule, _image_table(pipe, setting))


def _image_table(pipe: Any, setting: Setting):
    """(cost table of one image's transformer call at ``setting``, transformer calls per step): the
    cost model's own (``ecad.cost``), a video's frames included."""
    table, calls, _ = image_call(pipe, setting)
    return table, calls


def _call_work(pipe: Any, setting: Setting, schedule: CacheSchedule | None, image_table) -> CallWork:
    table, calls = image_table
    if schedule is None:
        schedule = CacheSchedule.full(get_adapter(pipe).layout(pipe.transformer), setting.num_inference_steps)
    f = cost_features(schedule, table, calls)
    pixels = float(setting.pixels * (setting.num_frames or 1))  # a video's VAE decodes every frame
    return CallWork(
        per_call={"calls": 1.0, "block_runs": f["count:block_run"], "block_skips": f["count:block_skip"],
                  "recomputes": f["count:recompute"], "reuses": f["count:reuse"] + f["count:forecast"]},
        per_image={"images": 1.0, "pixels": pixels,
                   "macs": sum(v for k, v in f.items() if k.startswith("macs:")),
                   "elements": f["elements:forecast"] + f["elements:skip"],
                   "pixel_steps": pixels * setting.num_inference_steps},
    )


@dataclass(frozen=True)
class LatencyModel:
    """Prices of the work of a call (``FEATURES``), in ms of ``unit`` ("cpu" or "wall") per unit."""

    prices: Mapping[str, float]
    unit: str = "macs"  # "macs": not fitted, the MACs alone (a relative cost)
    fit_error: tuple[float, float] | None = None  # (min, max) of actual/fitted over the start-up runs
    runs: int = 0

    @classmethod
    def macs_only(cls) -> "LatencyModel":
        return cls({"macs": 1.0})

    def cost(self, features: Mapping[str, float]) -> float:
        return float(sum(price * features.get(name, 0.0) for name, price in self.prices.items()))

    def view(self) -> dict[str, Any]:
        """What ``/schedules`` shows of it."""
        prices = {k: float(f"{v:.4g}") for k, v in self.prices.items()}
        error = None if self.fit_error is None else [round(x, 3) for x in self.fit_error]
        return {"unit": self.unit, "runs": self.runs, "prices_ms": prices, "fit_error": error}


def fit_prices(work: Sequence[Mapping[str, float]], ms: Sequence[float]) -> dict[str, float]:
    """Non-negative prices with ``ms ~ sum(price x work)``, each run's relative error weighted alike
    (scikit-learn's positive least squares, rows weighted by 1 / ms^2); a feature that is zero in
    every run gets no price."""
    from sklearn.linear_model import LinearRegression

    names = [n for n in FEATURES if any(w.get(n, 0.0) for w in work)]
    X = np.array([[w.get(n, 0.0) for n in names] for w in work], dtype=float)
    y = np.asarray(ms, dtype=float)
    scale = np.abs(X).max(axis=0)
    regression = LinearRegression(positive=True, fit_intercept=False).fit(X / scale, y, sample_weight=1.0 / y**2)
    return {n: float(c) for n, c in zip(names, regression.coef_ / scale) if c > 0}


@dataclass(frozen=True)
class DesignRun:
    """One timed run of the start-up fit."""

    name: str
    setting: Setting
    schedule: CacheSchedule | None
    num_images: int


def latency_design(setting: Setting, schedules: Mapping[str, CacheSchedule | None], *, min_steps: int,
                   max_side: tuple[int, int], multiple: int) -> list[DesignRun]:
    """The start-up runs around a bank's ``setting``: ``schedules`` is (no caching, the fastest
    entry, a middle one) by name. Each at 1x and 2x the side, at the bank's steps and the fewest;
    two images at 2x with the fewest steps; at 4x, the fastest entry at the bank's steps (it is
    cheap and it decides which requests are too large) and the others at the fewest steps; two
    images at the bank's size. Sides are clipped to ``max_side`` (height, width), kept multiples
    of ``multiple``."""

    def sized(factor: int) -> Setting:
        h = min(setting.height * factor, max_side[0]) // multiple * multiple
        w = min(setting.width * factor, max_side[1]) // multiple * multiple
        return setting.with_changes(height=max(h, multiple), width=max(w, multiple))

    steps, few = setting.num_inference_steps, max(1, min(min_steps, setting.num_inference_steps))
    names = list(schedules)
    plan: list[tuple[str, Setting, int]] = []
    for name in names:
        plan += [(name, sized(1), 1), (name, sized(2), 1), (name, sized(1).with_changes(num_inference_steps=few), 1),
                 (name, sized(2).with_changes(num_inference_steps=few), 2)]
    fastest = names[1] if len(names) > 1 else names[0]
    for name in names:
        big = sized(4) if name == fastest else sized(4).with_changes(num_inference_steps=few)
        plan.append((name, big, 1))
    plan += [(name, sized(1), 2) for name in names[:2]]
    runs, seen = [], set()
    for name, s, n in plan:
        key = (name, s, n)
        if key in seen:
            continue
        seen.add(key)
        schedule = schedules[name]
        runs.append(DesignRun(f"{name}@{s.width}x{s.height}-{s.num_inference_steps}steps-x{n}", s,
                              None if schedule is None else schedule.resample(s.num_inference_steps), n))
    return runs


def timing_unit(pipe: Any) -> str:
    """"cpu" (the calling thread's CPU time) on a CPU with one torch thread, else "wall"."""
    return "cpu" if str(pipe.device).startswith("cpu") and torch.get_num_threads() == 1 else "wall"


def fit_latency_model(pipe: Any, runs: Sequence[DesignRun], *, time_budget_s: float, prompt: str,
                      rounds: int = 3) -> LatencyModel:
    """Time ``runs`` (``ecad.timing``'s protocol: shuffled rounds, the first always completes, no
    new round once ``time_budget_s`` is spent) and fit the prices on the fastest of each."""
    from ecad.generate import generate
    from ecad.timing import TimedCall, time_rounds

    def call(run: DesignRun) -> TimedCall:
        prompts = [prompt] * run.num_images
        return TimedCall(lambda: generate(pipe, prompts, list(range(run.num_images)), run.setting, run.schedule))

    unit = timing_unit(pipe)
    timings = time_rounds({run.name: call(run) for run in runs}, rounds=rounds, warmup=0, order="shuffle",
                          time_budget_s=time_budget_s)
    seconds = timings.cpu_s if unit == "cpu" else timings.wall_s
    ms = [1000.0 * min(seconds[run.name]) for run in runs]  # another load only ever adds time
    work = [call_work(pipe, run.setting, run.schedule).features(run.num_images) for run in runs]
    prices = fit_prices(work, ms)
    model = LatencyModel(prices, unit, runs=len(runs))
    ratios = [actual / model.cost(w) for actual, w in zip(ms, work)]
    model = LatencyModel(prices, unit, (min(ratios), max(ratios)), len(runs))
    logger.info("latency model fitted on %d runs x %d round(s) (%s time): actual/fitted %.2f-%.2f", len(runs),
                timings.rounds, unit, *model.fit_error)
    return model


class RequestCost:
    """The latency model bound to a pipeline: the cost of a call at any setting, schedule and
    number of images (the work of a (setting, schedule) is counted once and kept)."""

    def __init__(self, pipe: Any, model: LatencyModel) -> None:
        self.pipe = pipe
        self.model = model
        self._tables = functools.lru_cache(maxsize=64)(functools.partial(_image_table, pipe))

    def parts(self, setting: Setting, schedule: CacheSchedule | None) -> tuple[float, float]:
        """(cost of the call's fixed part, cost per image) at ``setting`` under ``schedule``."""
        work = _call_work(self.pipe, setting, schedule, self._tables(setting))
        return self.model.cost(work.per_call), self.model.cost(work.per_image)
