"""Tune every method finely, then time the points that decide each quality bar, interleaved.

One experiment (`run_experiment`) = one named `Setting` (steps, size, guidance) and a list of
methods; each method contributes one point per knob value, and threshold methods get more points
as they are bisected. Procedure (same prompts, seeds and process for every point):

1. ``prepare``: one-off method set-up (MagCache calibrates its ratios on the calibration prompts).
2. Tuning: every point renders the first split (held-out prompts) in batches; that pass measures
   the MACs that actually ran (`MacsCounter`), the peak cached bytes (`MemorySampler`, first batch),
   quality (PSNR/SSIM to the no-cache image of the same prompt and seed, the reward with a
   bootstrap interval, FID), and a *screening* speed: its batches' time against the no-cache batch
   re-timed every few points. Threshold methods are then bisected at every bar
   (`ecad.bench.tuning.bisection_knobs`) until their fastest passing threshold is pinned down.
   Batch-dependent methods (`Method.batch_dependent`: a threshold on a statistic over the batch)
   are scored again, and bisected again, at every smaller timing batch size (split
   ``<name>@b<size>``), since one image at a time they make other images.
3. Deciding points: per bar and family, the points that clear the bar and may be the fastest
   (`ecad.bench.tuning.finalists`). Only these are rendered on the other splits (calibration).
4. Timed rounds, at every batch size of ``timing_batch_sizes``: each round runs the deciding points
   in a fresh shuffled order with the no-cache reference re-timed before, between every
   ``reference_every`` points and after them; a point's ratio in a round is the mean of the two
   reference times around it over its own time. Its speedup is the median ratio over rounds, its
   spread the (min, max): on a shared machine a difference inside the spread is not a difference.
   Points that are not deciding keep their screening speed (marked as such).

A point that raises is kept, with its error, and left out of curves.
"""

from __future__ import annotations

import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ecad.bench.competitors import DiffusersCache, MacsCounter, MemorySampler, Method
from ecad.bench.tuning import Bar, bisection_knobs, default_bars, finalists
from ecad.evaluate import Scoring, render
from ecad.quality.fidelity import FidelityScorer
from ecad.setting import Setting
from ecad.stats import bootstrap_interval
from ecad.timing import TimedCall, time_rounds

MAX_PSNR = 100.0  # identical images; caps the infinite PSNR so JSON and means stay finite
BOOTSTRAP_SAMPLES = 2000
SMALL_BATCH_REPEATS = 3  # a batch-1 call is short: time it 3 times in a row (all points alike)


@dataclass
class Split:
    """A named list of (prompt, seed) items, e.g. held-out or calibration."""

    name: str
    prompts: list[str]
    seeds: list[int]

    def items(self) -> list[tuple[str, int]]:
        return [(p, s) for p in self.prompts for s in self.seeds]


@dataclass
class Point:
    method: Method
    knob: Any
    label: str
    status: str = "ok"
    error: str | None = None
    as_shipped: str | None = None  # diffusers caches without the shim: None = not tried
    images: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    macs_per_image: float | None = None
    analytic_macs_per_image: float | None = None
    cache_bytes_peak: int | None = None
    cache_bytes_per_image: float | None = None
    changes_output: bool | None = None
    screen_times: list[float] = field(default_factory=list)
    speedup_screen: float | None = None  # one tuning pass against the nearest no-cache timings
    #: batch size -> {"times_s": per round, "ratios": per round}; deciding points only
    timing: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    deciding: list[str] = field(default_factory=list)  # keys of the bars this point may decide
    speedup: float | None = None  # median round ratio at the main batch size, else the screening speed
    speedup_source: str | None = None  # "rounds" | "screen"
    macs_speedup: float | None = None
    #: the speedup a fitted cost predicts for a schedule-based point (``speed_model``); ranks finalists
    predicted_speedup: float | None = None
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_image: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def fail(self, stage: str, err: BaseException) -> None:
        self.status = "error"
        self.error = f"{stage}: {type(err).__name__}: {err}"
        self.traceback = traceback.format_exc(limit=6)

    def speed(self, batch_size: int) -> dict[str, Any] | None:
        """Median, min and max of the per-round ratios at one batch size (None if not timed)."""
        ratios = self.timing.get(batch_size, {}).get("ratios")
        if not ratios:
            return None
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios),
                "ratios": list(ratios)}

    def to_dict(self) -> dict:
        d = {
            **self.method.describe(), "knob_value": _jsonable(self.knob), "label": self.label,
            "status": self.status, "error": self.error, "as_shipped": self.as_shipped,
            "speedup": self.speedup, "speedup_source": self.speedup_source, "speedup_screen": self.speedup_screen,
            "screen_times_s": self.screen_times, "deciding": self.deciding,
            "timing": {str(bs): {**t, "speed": self.speed(bs)} for bs, t in self.timing.items()},
            "macs_per_image": self.macs_per_image,
            "analytic_macs_per_image": self.analytic_macs_per_image, "macs_speedup": self.macs_speedup,
            "predicted_speedup": self.predicted_speedup, "cache_bytes_peak": self.cache_bytes_peak, "cache_bytes_per_image": self.cache_bytes_per_image,
            "changes_output": self.changes_output, "quality": self.quality, "per_image": self.per_image,
        }
        schedule = self.method.schedule(self.knob)
        if schedule is not None:
            d["schedule_hash"] = schedule.hash
            d["recompute_fraction"] = schedule.recompute_fraction
        return d


def _jsonable(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if hasattr(value, "_asdict"):
        return dict(value._asdict())
    return str(value)


@dataclass
class Experiment:
    name: str  # e.g. "main", "50-steps", "48px"
    setting: Setting
    points: list[Point]
    splits: list[Split]
    batch_size: int
    rounds: int  # timed rounds of the deciding points
    seconds: float
    bars: list[Bar] = field(default_factory=list)
    timing_batch_sizes: list[int] = field(default_factory=list)
    reference_label: str = "no-cache"
    reference_reproducible: bool | None = None  # no-cache output unchanged after every method ran

    def reference(self) -> Point:
        return next(p for p in self.points if p.label == self.reference_label)


def batch_split(split: str, batch_size: int) -> str:
    """The name a split's quality has when a batch-dependent method rendered it ``batch_size`` at a time."""
    return f"{split}@b{batch_size}"


def _batches(items: list[tuple[str, int]], size: int) -> list[list[tuple[str, int]]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def relative_reward_interval(rewards: torch.Tensor, reference: torch.Tensor, *, samples: int = BOOTSTRAP_SAMPLES,
                             level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of mean(rewards) / mean(reference) over images (paired resampling)."""
    return bootstrap_interval(rewards, reference, level=level, resamples=samples, seed=seed,
                              statistic=lambda a, b: a.mean(1) / np.maximum(b.mean(1), 1e-12))


def run_experiment(
    pipe: Any,
    methods: Sequence[Method],
    setting: Setting,
    splits: Sequence[Split],
    *,
    name: str = "main",
    batch_size: int = 8,
    timing_batch_sizes: Sequence[int] | None = None,
    rounds: int = 4,
    bars: Sequence[Bar] | None = None,
    bisect_steps: int = 3,
    reference_every: int = 4,
    reward: Any = None,
    fid_fn: Callable[[torch.Tensor, str], float] | None = None,
    calibration_items: Sequence[tuple[str, int]] | None = None,
    as_shipped: bool = True,
    progress: bool = True,
    seed: int = 0,
    log: Callable[[str], None] = print,
    speed_model: Callable[[Any], float] | None = None,
) -> Experiment:
    """Tune, pick the deciding points, time them; see the module docstring. The first method must be no-cache."""
    start = time.perf_counter()
    points = [Point(m, k, m.label(k)) for m in methods for k in m.knobs]
    if not points or points[0].label != "no-cache":
        raise ValueError("the first method must be the no-cache reference")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    bars = list(bars) if bars is not None else default_bars(reward is not None)
    tuning = splits[0]
    items = tuning.items()
    batches = _batches(items, batch_size)
    full = [i for i, b in enumerate(batches) if len(b) == batch_size] or [0]
    screened = [i for i in full if i != 0] or full  # batch 0 carries the memory probe
    sizes = sorted({min(int(b), len(items)) for b in (timing_batch_sizes or [batch_size])}, reverse=True)
    calib = list(calibration_items or items[:1])[:2]
    bar = _progress(progress, f"bench {name}")

    # quality through the scorer registry: PSNR/SSIM to the no-cache image (PSNR capped at
    # MAX_PSNR, the benchmark's cap for identical images) and the reward, when there is one
    scoring = Scoring({"fidelity": FidelityScorer(max_psnr=MAX_PSNR), **({reward.name: reward} if reward else {})})

    def run(batch):
        return render(pipe, setting, None, batch)

    # 1. prepare
    for m in methods:
        try:
            m.prepare(pipe, setting, lambda: render(pipe, setting, None, calib))
        except Exception as err:  # noqa: BLE001
            _safe_disable(m, pipe)
            for p in points:
                if p.method is m:
                    p.fail("prepare", err)

    # 2. tuning: render the tuning split, score it, screen its speed
    ref = points[0]
    reference_times: list[tuple[int, float]] = []  # (tuning pass index, seconds of one no-cache batch)
    screen_index: dict[int, int] = {}

    def time_reference():
        t0 = time.perf_counter()
        run(batches[screened[0]])
        reference_times.append((len(screen_index), time.perf_counter() - t0))

    def tune(p: Point) -> None:
        bar.update(1)
        if p.status != "ok":
            return
        if p is not ref and len(screen_index) % reference_every == 0:
            time_reference()
        screen_index[id(p)] = len(screen_index)
        images, times = [], []
        m = p.method
        try:
            m.enable(pipe, p.knob)
            counter = MacsCounter(pipe, height=setting.height, width=setting.width, num_images=len(batches[0]),
                                  guidance_scale=setting.guidance_scale)
            try:
                for i, batch in enumerate(batches):
                    sampler = MemorySampler(pipe, m) if i == 0 else None
                    t0 = time.perf_counter()
                    try:
                        images.append(run(batch))
                    finally:
                        if sampler is not None:
                            sampler.remove()
                    if i in screened:
                        times.append(time.perf_counter() - t0)
                    if sampler is not None:
                        p.cache_bytes_peak = int(sampler.peak)
                        p.cache_bytes_per_image = sampler.peak / len(batch)
            finally:
                counter.remove()
            p.macs_per_image = counter.total / len(items)
        except Exception as err:  # noqa: BLE001
            p.fail("probe", err)
            return
        finally:
            _safe_disable(m, pipe)
        p.screen_times = times
        p.images[tuning.name] = list(torch.cat(images))
        schedule = m.schedule(p.knob)
        if schedule is not None:
            from ecad.cost import image_macs

            p.analytic_macs_per_image = float(image_macs(pipe, setting, schedule))
        if p is ref:
            time_reference()
        else:
            p.changes_output = bool(any((a - b).abs().max() > 0 for a, b in zip(p.images[tuning.name], ref.images[tuning.name])))
        _score(p, ref, tuning, scoring, reward, fid_fn)
        if len(screen_index) % 25 == 0:
            log(f"ecad-bench {name}: {len(screen_index)} points tuned ({time.perf_counter() - start:.0f} s)")

    for p in list(points):
        tune(p)
    if ref.status != "ok":
        raise RuntimeError(f"the no-cache reference failed: {ref.error}")

    def bisect(m: Method, quality_split: str, score_extra: Callable[[Point], None] = lambda p: None) -> None:
        family = [p for p in points if p.method is m]
        scored = {float(p.knob): p.quality.get(quality_split, {}) for p in family if p.status == "ok"}
        tried: dict[Bar, int] = {}
        while new := bisection_knobs(scored, bars, tried=tried, max_steps=bisect_steps):
            for knob in new:
                p = Point(m, knob, m.label(knob))
                points.append(p)
                tune(p)
                if p.status == "ok":
                    score_extra(p)
                # a failing threshold counts as failing every bar
                scored[knob] = p.quality.get(quality_split, {}) if p.status == "ok" else {}

    for m in methods:
        if m.continuous:
            bisect(m, tuning.name)

    # 2b. batch-dependent methods (a threshold on a batch statistic) make other images at batch 1
    # than at batch 8: score them at every smaller timing batch size as well, and bisect them there,
    # so a batch-1 verdict compares points that clear the bar at batch 1
    dependent = [m for m in methods if m.batch_dependent]
    for size in [s for s in sizes if s < batch_size] if dependent else []:
        small = Split(batch_split(tuning.name, size), tuning.prompts, tuning.seeds)

        def score_small(p: Point, small=small, size=size) -> None:
            bar.update(1)
            try:
                p.method.enable(pipe, p.knob)
                p.images[small.name] = list(torch.cat([run(b) for b in _batches(items, size)]))
            except Exception as err:  # noqa: BLE001
                p.quality[small.name] = {"error": f"{type(err).__name__}: {err}"}  # clears no bar
                return
            finally:
                _safe_disable(p.method, pipe)
            _score(p, ref, small, scoring, reward, None)

        score_small(ref)
        for m in dependent:
            for p in [q for q in points if q.method is m and q.status == "ok"]:
                score_small(p)
            if m.continuous:
                bisect(m, small.name, score_small)
    time_reference()
    log(f"ecad-bench {name}: tuned {len(points)} points on {len(items)} images "
        f"({time.perf_counter() - start:.0f} s)")
    order = {id(m): i for i, m in enumerate(methods)}
    points.sort(key=lambda p: (order[id(p.method)], float(p.knob) if p.method.continuous else 0))
    _screen_speeds(points, ref, reference_times, screen_index)
    for p in points:  # the deciding points are picked by MACs saved, or by a fitted cost's prediction
        if p.status == "ok" and p.macs_per_image and ref.macs_per_image:
            p.macs_speedup = ref.macs_per_image / p.macs_per_image
        schedule = p.method.schedule(p.knob) if speed_model is not None and p.status == "ok" else None
        if schedule is not None:
            p.predicted_speedup = float(speed_model(schedule))

    # 3. deciding points: rendered on the other splits too
    deciding: dict[int, Point] = {id(ref): ref}
    for b in bars:
        for m in methods[1:]:
            family = [q for q in points if q.method is m]
            picked = finalists(family, b, tuning.name)
            for size in [s for s in sizes if s < batch_size] if m.batch_dependent else []:
                picked += finalists(family, b, batch_split(tuning.name, size))
            for p in picked:
                if b.key not in p.deciding:
                    p.deciding.append(b.key)
                deciding[id(p)] = p
    for split in splits[1:]:
        for p in [ref] + [q for q in deciding.values() if q is not ref]:
            bar.update(1)
            try:
                p.method.enable(pipe, p.knob)
                p.images[split.name] = list(torch.cat([run(b) for b in _batches(split.items(), batch_size)]))
            except Exception as err:  # noqa: BLE001
                p.fail(f"{split.name} split", err)
                continue
            finally:
                _safe_disable(p.method, pipe)
            _score(p, ref, split, scoring, reward, None)
    if as_shipped:
        tried_shipped: set[int] = set()
        for p in points:
            m = p.method
            if isinstance(m, DiffusersCache) and m.uses_shim and id(m) not in tried_shipped and p.status == "ok":
                tried_shipped.add(id(m))
                p.as_shipped = _try_as_shipped(pipe, m, p.knob, lambda: run(batches[0][:1]), True)

    # 4. timed rounds of the deciding points, reference interleaved
    timed = [p for p in deciding.values() if p is not ref and p.status == "ok"]
    for r in range(rounds):
        for i, size in enumerate(sizes):
            repeats = 1 if size >= batch_size else SMALL_BATCH_REPEATS
            _timed_round(timed, ref, items[:size], repeats, reference_every, seed * 10_007 + r * 101 + i, run, pipe,
                         bar, f"round {r}")
        log(f"ecad-bench {name}: timed round {r + 1}/{rounds} of {len(timed)} deciding points")
    bar.close()
    main_size = sizes[0]
    for p in points:
        if p.status != "ok":
            continue
        speed = p.speed(main_size)
        p.speedup, p.speedup_source = (speed["median"], "rounds") if speed else (p.speedup_screen, "screen")

    # every method was enabled and disabled many times: the unmodified pipeline must be untouched
    reproducible = bool(torch.equal(run(batches[0]), torch.stack(ref.images[tuning.name][: len(batches[0])])))
    if not reproducible:
        log("ecad-bench: WARNING: the no-cache output changed after the methods ran (a method left state behind)")
    return Experiment(name, setting, points, list(splits), batch_size, rounds, time.perf_counter() - start,
                      bars=bars, timing_batch_sizes=sizes, reference_reproducible=reproducible)


def _score(p: Point, ref: Point, split: Split, scoring: Scoring, reward: Any, fid_fn) -> None:
    """Quality of one point on one split against the no-cache images (reward relative to no-cache)."""
    imgs, refs = torch.stack(p.images[split.name]), torch.stack(ref.images[split.name])
    prompts = [it[0] for it in split.items()]
    per_image = scoring.per_image(imgs, prompts, refs)
    psnr, ssim = per_image["psnr"], per_image["ssim"]
    q: dict[str, Any] = {"psnr": float(psnr.mean()), "ssim": float(ssim.mean()), "images": len(imgs)}
    per = {"psnr": psnr.tolist(), "ssim": ssim.tolist()}
    if reward is not None:
        rw = per_image[reward.name]
        q["reward"] = float(rw.mean())
        per["reward"] = rw.tolist()
        if hasattr(reward, "accuracy"):
            q["accuracy"] = float(reward.accuracy(imgs, prompts).mean())
        base = ref.per_image.get(split.name, {}).get("reward") if p is not ref else per["reward"]
        if base and sum(base) > 0:
            q["reward_rel"] = q["reward"] / (sum(base) / len(base))
            q["reward_rel_interval"] = list(relative_reward_interval(rw, torch.tensor(base)))
    if fid_fn is not None:
        try:
            q["fid"] = float(fid_fn(imgs, split.name))
        except Exception as err:  # noqa: BLE001
            q["fid_error"] = repr(err)
    p.quality[split.name] = q
    p.per_image[split.name] = per


def _screen_speeds(points: list[Point], ref: Point, reference_times: list[tuple[int, float]],
                   screen_index: dict[int, int]) -> None:
    """Each point's screening speed: the mean no-cache batch time timed just before and after it."""
    for p in points:
        if p.status != "ok" or not p.screen_times or id(p) not in screen_index:
            continue
        i = screen_index[id(p)]
        before = [t for j, t in reference_times if j <= i]
        after = [t for j, t in reference_times if j > i]
        around = before[-1:] + after[:1]
        p.speedup_screen = statistics.fmean(around) / statistics.fmean(p.screen_times) if around else None
    ref.speedup_screen = 1.0


def _timed_round(points: list[Point], ref: Point, items, repeats: int, reference_every: int,
                 seed: int, run, pipe, bar, stage: str) -> None:
    """One round at one batch size (`ecad.timing`'s protocol): shuffled points, no-cache re-timed
    around every few of them; a method is enabled before its timing and disabled after, untimed."""
    size = len(items)
    live = [p for p in points if p.status == "ok"]

    def call(p: Point) -> TimedCall:
        return TimedCall(run=lambda: run(items), enter=lambda: p.method.enable(pipe, p.knob),
                         exit=lambda: _safe_disable(p.method, pipe), repeats=repeats)

    keys = {f"point-{i}": p for i, p in enumerate(live)}  # labels may repeat across methods
    timings = time_rounds({"reference": call(ref), **{k: call(p) for k, p in keys.items()}}, rounds=1, warmup=0,
                          reference="reference", reference_every=reference_every, order="shuffle", seed=seed,
                          on_error=lambda key, err: keys[key].fail(stage, err), progress=bar.update)
    ref_times = ref.timing.setdefault(size, {"times_s": [], "ratios": []})
    ref_times["times_s"] += [t * repeats for t in timings.reference_wall_s]
    ref_times["ratios"].append(1.0)
    for key, p in keys.items():
        if key in timings.failed or not timings.ratios[key]:
            continue
        entry = p.timing.setdefault(size, {"times_s": [], "ratios": []})
        entry["times_s"].append(timings.wall_s[key][0] * repeats)
        entry["ratios"].append(timings.ratios[key][0])


def _safe_disable(method: Method, pipe: Any) -> None:
    try:
        method.disable(pipe)
    except Exception:  # noqa: BLE001 - never leave a half-removed method behind silently
        traceback.print_exc()


def _try_as_shipped(pipe, method: DiffusersCache, knob, run, compare: bool) -> str:
    """Run a diffusers cache once without the shim: its error, or whether it matched the shimmed run."""
    import copy

    shimmed = None
    if compare:
        try:
            method.enable(pipe, knob)
            shimmed = run()
        finally:
            _safe_disable(method, pipe)
    shipped = copy.copy(method)
    shipped.uses_shim = False
    shipped._current_shim = None
    try:
        shipped.enable(pipe, knob)
        images = run()
        if shimmed is None:
            return "ran"
        same = bool((images - shimmed).abs().max() <= 1e-5)
        return "ran, same output as with the shim" if same else "ran, but output differs from the shimmed run"
    except Exception as err:  # noqa: BLE001
        return f"error: {type(err).__name__}: {err}"
    finally:
        _safe_disable(shipped, pipe)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit="run", dynamic_ncols=True)
