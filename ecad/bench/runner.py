"""Select every method's point on validation images, judge the picks on held-out images, time them.

One experiment (`run_experiment`) = one named `Setting` (steps, size, guidance), a list of methods
(each contributes one point per knob value; threshold methods get more as they are bisected) and
two disjoint splits of prompts x seeds: **validation**, where every method is tuned and every pick
is made, as a user would tune, and **held-out**, prompts and seeds that neither the calibration nor
the validation used, where the picks are judged. Same process, same batch size for everything.

1. ``prepare``: one-off method set-up (MagCache calibrates its ratios on the calibration prompts).
2. Tuning on validation: every point renders the validation split in batches; that pass measures
   the MACs that ran (`MacsCounter`, equal to `ecad.cost.image_macs` for our engine's actions), the
   peak cached bytes (`MemorySampler`, first batch) and quality (PSNR/SSIM to the no-cache image of
   the same prompt and seed, the reward relative to no-cache with a bootstrap interval). A point
   whose PSNR on the first ``prune_after`` of the split is more than ``prune_margin_db`` below the
   lowest bar clears no bar: it is not rendered further (its scores are marked ``pruned``).
   Threshold methods are bisected at every bar (`ecad.bench.tuning.bisection_knobs`).
3. Picks: per bar and family, the finalists (points that clear the bar on validation, the fastest
   by MACs or a fitted cost's prediction, `ecad.bench.tuning.finalists`); a family with several is
   timed in ``selection_rounds`` interleaved rounds on validation images and its fastest finalist
   (median ratio) is its pick.
4. Held-out: the picks (and no-cache) render the held-out split; each pick's quality there says
   whether it still clears its bar on images nobody selected on.
5. Verdict rounds on held-out images: every pick and no-cache in interleaved, shuffled rounds
   (`ecad.timing.time_rounds`, no-cache re-timed around every ``reference_every`` points), at least
   ``min_rounds``, more until every bar's paired verdict interval (`ecad.bench.verdict`) is
   narrower than ``interval_width`` of its median, at most ``max_rounds``.
6. Latency predictability: the picks render ``latency_prompts`` held-out prompts one at a time;
   per-image MACs and seconds (`ecad.bench.latency`).

Every finished unit (a point scored on a split, a round, a latency prompt) is kept in a
`WorkStore` when one is given: rerunning the same command resumes where it stopped.
A point that raises is kept, with its error, and left out of curves and picks.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ecad.bench import latency
from ecad.bench.competitors import DiffusersCache, MacsCounter, MemorySampler, Method
from ecad.bench.store import WorkStore, image_png, png_image, replay, timings_lengths, timings_tail
from ecad.bench.tuning import Bar, bisection_knobs, default_bars, finalists
from ecad.bench.verdict import REFERENCE, bar_verdicts, speed
from ecad.evaluate import Scoring, render
from ecad.quality.fidelity import FidelityScorer, psnr_per_image
from ecad.quality.prompts import assert_disjoint_splits
from ecad.setting import Setting
from ecad.stats import bootstrap_interval
from ecad.timing import TimedCall, Timings, time_rounds

MAX_PSNR = 100.0  # identical images; caps the infinite PSNR so JSON and means stay finite
BOOTSTRAP_SAMPLES = 2000
SMALL_BATCH_REPEATS = 3  # a call of fewer than 4 images is short: time it 3 times in a row (all points alike)
VALIDATION, HELD_OUT = "validation", "held-out"


@dataclass
class Split:
    """A named list of (prompt, seed) items: every prompt with every seed."""

    name: str
    prompts: list[str]
    seeds: list[int]

    def items(self) -> list[tuple[str, int]]:
        return [(p, s) for p in self.prompts for s in self.seeds]


@dataclass(frozen=True)
class BenchConfig:
    """How an experiment runs (see the module docstring for each stage)."""

    batch_size: int = 8
    bars: tuple[Bar, ...] = ()  # empty: `default_bars`
    bisect_steps: int = 3
    prune_margin_db: float = 3.0
    prune_after: float = 0.25
    selection_rounds: int = 4
    min_rounds: int = 10
    max_rounds: int = 40
    interval_width: float = 0.10  # stop when every verdict interval is narrower than this share of its median
    reference_every: int = 4
    latency_prompts: int = 64
    as_shipped: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1 or self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ValueError(f"batch_size >= 1 and 1 <= min_rounds <= max_rounds needed, got {self}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bars": [b.name for b in self.bars]}


@dataclass
class Point:
    method: Method
    knob: Any
    label: str
    status: str = "ok"
    error: str | None = None
    as_shipped: str | None = None  # diffusers caches without the shim: None = not tried
    macs_per_image: float | None = None  # that ran, on the validation split
    analytic_macs_per_image: float | None = None  # `ecad.cost.image_macs`, for static points
    cache_bytes_peak: int | None = None
    cache_bytes_per_image: float | None = None
    changes_output: bool | None = None
    macs_speedup: float | None = None
    #: the speedup a fitted cost predicts for a schedule-based point (``speed_model``); ranks finalists
    predicted_speedup: float | None = None
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_image: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    first_image: dict[str, torch.Tensor] = field(default_factory=dict)
    finalist: list[str] = field(default_factory=list)  # keys of the bars where it was a finalist
    picked: list[str] = field(default_factory=list)  # keys of the bars where it is its family's pick

    def fail(self, stage: str, err: BaseException | str) -> None:
        self.status = "error"
        self.error = f"{stage}: {type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)

    def load(self, record: dict) -> None:
        """Take a scored split's record (as `WorkStore` keeps it)."""
        split = record["split"]
        if record.get("error"):
            self.status, self.error = "error", record["error"]
            return
        self.quality[split] = record["quality"]
        self.per_image[split] = record["per_image"]
        if record.get("image0"):
            self.first_image[split] = png_image(record["image0"])
        if split == VALIDATION:
            self.macs_per_image = record["macs_per_image"]
            self.cache_bytes_peak, self.cache_bytes_per_image = record["cache_bytes_peak"], record["cache_bytes_per_image"]
            self.changes_output = record["changes_output"]

    def to_dict(self, per_image: bool = True) -> dict:
        d = {
            **self.method.describe(), "knob_value": _jsonable(self.knob), "label": self.label,
            "status": self.status, "error": self.error, "as_shipped": self.as_shipped,
            "finalist": self.finalist, "picked": self.picked, "macs_per_image": self.macs_per_image,
            "analytic_macs_per_image": self.analytic_macs_per_image, "macs_speedup": self.macs_speedup,
            "predicted_speedup": self.predicted_speedup, "cache_bytes_peak": self.cache_bytes_peak,
            "cache_bytes_per_image": self.cache_bytes_per_image, "changes_output": self.changes_output,
            "quality": self.quality, "per_image": self.per_image if per_image else None,
        }
        schedule = self.method.schedule(self.knob)
        if schedule is not None:
            d["schedule_hash"] = schedule.hash
            d["recompute_fraction"] = schedule.recompute_fraction
            d["source"] = getattr(self.method, "sources", {}).get(self.knob)
        return d


def _jsonable(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if hasattr(value, "_asdict"):
        return dict(value._asdict())
    return str(value)


@dataclass
class Experiment:
    name: str  # e.g. "main", "50-steps"
    setting: Setting
    points: list[Point]
    splits: list[Split]  # validation, held-out
    config: BenchConfig
    bars: list[Bar]
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    ecad_families: list[str] = field(default_factory=list)
    #: bar key -> family -> its pick
    picks: dict[str, dict[str, Point]] = field(default_factory=dict)
    selection_timings: Timings | None = None
    verdict_timings: Timings | None = None
    latency: list[dict] = field(default_factory=list)
    reference_reproducible: bool | None = None  # no-cache output unchanged after every method ran

    def reference(self) -> Point:
        return next(p for p in self.points if p.label == REFERENCE)

    def point(self, label: str) -> Point:
        return next(p for p in self.points if p.label == label)

    def picked_points(self) -> list[Point]:
        seen: dict[int, Point] = {}
        for at_bar in self.picks.values():
            for p in at_bar.values():
                seen.setdefault(id(p), p)
        return list(seen.values())

    def verdicts(self):
        return bar_verdicts(self.bars, self.picks, self.verdict_timings, self.ecad_families)

    def speed(self, p: Point, stage: str = "verdict") -> dict | None:
        return speed(self.verdict_timings if stage == "verdict" else self.selection_timings, p.label)


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
    validation: Split,
    held_out: Split,
    *,
    config: BenchConfig = BenchConfig(),
    name: str = "main",
    reward: Any = None,
    fid_fn: Callable[[torch.Tensor, str], float] | None = None,
    calibration_items: Sequence[tuple[str, int]] | None = None,
    speed_model: Callable[[Any], float] | None = None,
    store: WorkStore | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Experiment:
    """See the module docstring. The first method must be no-cache; validation and held-out must
    share no prompt and no seed."""
    start = time.perf_counter()
    assert_disjoint_splits({VALIDATION: (validation.prompts, validation.seeds),
                            HELD_OUT: (held_out.prompts, held_out.seeds)})
    points = [Point(m, k, m.label(k)) for m in methods for k in m.knobs]
    if not points or points[0].label != REFERENCE:
        raise ValueError("the first method must be the no-cache reference")
    _check_unique(points)
    bars = list(config.bars) or default_bars(reward is not None)
    exp = Experiment(name, setting, points, [Split(VALIDATION, validation.prompts, validation.seeds),
                                             Split(HELD_OUT, held_out.prompts, held_out.seeds)],
                     config, bars, ecad_families=[m.family for m in methods if m.kind == "ecad"])
    ref = points[0]
    bs = config.batch_size
    bar = _progress(progress, f"bench {name}")
    scoring = Scoring({"fidelity": FidelityScorer(max_psnr=MAX_PSNR), **({reward.name: reward} if reward else {})})
    splits = {s.name: s for s in exp.splits}
    references: dict[str, torch.Tensor] = {}
    stage_start = time.perf_counter()

    def stage_done(stage: str, what: str = "") -> None:
        nonlocal stage_start
        seconds = time.perf_counter() - stage_start
        exp.stage_seconds[stage] = exp.stage_seconds.get(stage, 0.0) + seconds
        if store is not None:
            store.add_stage(stage, seconds)
        stage_start = time.perf_counter()
        log(f"ecad-bench {name}: {stage} {what} done ({time.perf_counter() - start:.0f} s)")

    def run(p: Point, items) -> torch.Tensor:
        return render(pipe, p.method.setting_for(setting, p.knob), None, items)

    def reference_images(split: str) -> torch.Tensor:
        if split not in references:
            references[split] = torch.cat([run(ref, b) for b in _batches(splits[split].items(), bs)])
        return references[split]

    before = run(ref, validation.items()[:bs])  # the no-cache output before any method ran

    # 1. prepare
    calib = list(calibration_items or validation.items()[:1])[:2]
    for m in methods:
        try:
            m.prepare(pipe, setting, lambda: render(pipe, setting, None, calib))
        except Exception as err:  # noqa: BLE001
            _safe_disable(m, pipe)
            for p in points:
                if p.method is m:
                    p.fail("prepare", err)

    lowest = min(b.psnr for b in bars)

    def score(p: Point, split: str, prune: bool = False) -> None:
        bar.update(1)
        if p.status != "ok" or split in p.quality:
            return
        stored = store.score(p.label, split) if store is not None else None
        if stored is not None:
            p.load(stored)
            return
        items = splits[split].items()
        batches = _batches(items, bs)
        check = max(1, math.ceil(config.prune_after * len(batches))) if prune and p is not ref else None
        floor = lowest - config.prune_margin_db
        refs = reference_images(split) if p is not ref else None
        images, pruned, memory = [], False, {}
        m = p.method
        try:
            m.enable(pipe, p.knob)
            counter = MacsCounter(pipe, height=setting.height, width=setting.width, num_images=len(batches[0]),
                                  guidance_scale=setting.guidance_scale)
            try:
                for i, batch in enumerate(batches):
                    sampler = MemorySampler(pipe, m) if i == 0 and split == VALIDATION else None
                    try:
                        images.append(run(p, batch))
                    finally:
                        if sampler is not None:
                            sampler.remove()
                    if sampler is not None:
                        memory = {"cache_bytes_peak": int(sampler.peak), "cache_bytes_per_image": sampler.peak / len(batch)}
                    if check is not None and i + 1 == check < len(batches):
                        done = torch.cat(images)
                        if float(psnr_per_image(done, refs[:len(done)], MAX_PSNR).mean()) < floor:
                            pruned = True
                            break
            finally:
                counter.remove()
        except Exception as err:  # noqa: BLE001
            p.fail(f"{split} split", err)
            if store is not None:
                store.add_score({"label": p.label, "split": split, "error": p.error})
            return
        finally:
            _safe_disable(m, pipe)
        imgs = torch.cat(images)
        n = len(imgs)
        if p is ref:
            references[split] = refs = imgs
        quality, per = _score(imgs, refs[:n], [it[0] for it in items[:n]], scoring, reward,
                              ref.per_image.get(split, {}).get("reward") if p is not ref else None)
        if pruned:
            quality["pruned"] = True
        if fid_fn is not None and split == HELD_OUT:
            try:
                quality["fid"] = float(fid_fn(imgs, split))
            except Exception as err:  # noqa: BLE001
                quality["fid_error"] = repr(err)
        quality["macs_per_image"] = counter.total / n
        record = {"label": p.label, "split": split, "quality": quality, "per_image": per,
                  "image0": image_png(imgs[0]), "macs_per_image": counter.total / n,
                  "changes_output": bool((imgs - refs[:n]).abs().max() > 0), **memory}
        record.setdefault("cache_bytes_peak", None)
        record.setdefault("cache_bytes_per_image", None)
        if store is not None:
            store.add_score(record)
        p.load(record)

    # 2. tuning on validation
    for p in list(points):
        score(p, VALIDATION, prune=True)
    if ref.status != "ok":
        raise RuntimeError(f"the no-cache reference failed: {ref.error}")

    def bisect(m: Method) -> None:
        family = [p for p in points if p.method is m]
        scored = {float(p.knob): p.quality.get(VALIDATION, {}) for p in family if p.status == "ok"}
        tried: dict[Bar, int] = {}
        while new := bisection_knobs(scored, bars, tried=tried, max_steps=config.bisect_steps):
            for knob in new:
                p = Point(m, knob, m.label(knob))
                points.append(p)
                score(p, VALIDATION, prune=True)
                # a failing threshold counts as failing every bar
                scored[knob] = p.quality.get(VALIDATION, {}) if p.status == "ok" else {}

    for m in methods:
        if m.continuous:
            bisect(m)
    order = {id(m): i for i, m in enumerate(methods)}
    points.sort(key=lambda p: (order[id(p.method)], float(p.knob) if p.method.continuous else 0))
    for p in points:
        if p.status == "ok" and p.macs_per_image and ref.macs_per_image:
            p.macs_speedup = ref.macs_per_image / p.macs_per_image
        if p.status == "ok":
            analytic = p.method.analytic_macs(pipe, setting, p.knob)
            p.analytic_macs_per_image = float(analytic) if analytic is not None else None
        schedule = p.method.schedule(p.knob) if speed_model is not None and p.status == "ok" else None
        if schedule is not None:
            p.predicted_speedup = float(speed_model(schedule))
    stage_done("tuning", f"({len(points)} points on {len(validation.items())} validation images)")

    # 3. finalists per bar and family on validation; several: time them, the fastest is the pick
    finals: dict[str, dict[Method, list[Point]]] = {}
    for b in bars:
        for m in methods[1:]:
            picked = finalists([q for q in points if q.method is m], b, VALIDATION)
            if picked:
                finals.setdefault(b.key, {})[m] = picked
                for p in picked:
                    p.finalist.append(b.key)
    contested = list({id(p): p for at_bar in finals.values() for fin in at_bar.values() if len(fin) > 1
                      for p in fin}.values())
    exp.selection_timings = _time_stage("selection", contested, ref, _batches(validation.items(), bs), config,
                                        config.selection_rounds, config.selection_rounds, run, pipe, bar, store, log)
    for b in bars:
        for m, fin in finals.get(b.key, {}).items():
            live = [p for p in fin if p.status == "ok"]
            timed = [p for p in live if exp.speed(p, "selection")]
            best = max(timed, key=lambda p: exp.speed(p, "selection")["median"]) if len(live) > 1 and timed else \
                (live[0] if live else None)
            if best is not None:
                exp.picks.setdefault(b.key, {})[m.family] = best
                best.picked.append(b.key)
    stage_done("selection", f"({len(contested)} finalists timed)")

    # 4. the picks on held-out prompts and seeds
    picked = exp.picked_points()
    for p in [ref] + picked:
        score(p, HELD_OUT)
    stage_done("held-out", f"({len(picked)} picks on {len(held_out.items())} images)")

    # 5. verdict rounds on held-out images, until every paired interval is narrow enough
    def narrow(timings: Timings) -> bool:
        widths = [v.relative_width for v in bar_verdicts(bars, exp.picks, timings, exp.ecad_families)
                  if v.relative_width is not None]
        return all(w < config.interval_width for w in widths)

    exp.verdict_timings = _time_stage("verdict", [p for p in picked if p.status == "ok"], ref,
                                      _batches(held_out.items(), bs), config, config.min_rounds, config.max_rounds, run, pipe,
                                      bar, store, log, stop=narrow)
    stage_done("verdict", f"({exp.verdict_timings.rounds} rounds)")

    # 6. latency predictability: one image at a time, prompt by prompt
    if config.latency_prompts > 0:
        items = [(p, s) for s in held_out.seeds for p in held_out.prompts][:config.latency_prompts]
        live = [ref] + [p for p in picked if p.status == "ok"]
        exp.latency = latency.measure(
            pipe, live, items, run=run, seed=config.seed,
            counter=lambda: MacsCounter(pipe, height=setting.height, width=setting.width, num_images=1,
                                        guidance_scale=setting.guidance_scale),
            done=store.latency() if store is not None else (),
            on_prompt=store.add_latency if store is not None else (lambda record: None), progress=bar.update)
        stage_done("latency", f"({len(items)} prompts)")

    if config.as_shipped:
        tried: set[int] = set()
        for p in points:
            m = p.method
            if isinstance(m, DiffusersCache) and m.uses_shim and id(m) not in tried and p.status == "ok":
                tried.add(id(m))
                p.as_shipped = _try_as_shipped(pipe, m, p.knob, lambda: run(ref, validation.items()[:1]), True)
    bar.close()

    # every method was enabled and disabled many times: the unmodified pipeline must be untouched
    exp.reference_reproducible = bool(torch.equal(run(ref, validation.items()[:bs]), before))
    if not exp.reference_reproducible:
        log("ecad-bench: WARNING: the no-cache output changed after the methods ran (a method left state behind)")
    stage_done("other", "(set-up, reproducibility check)")
    if store is not None:  # every run that worked in the store folder, this one included
        exp.stage_seconds = store.stage_seconds()
    exp.seconds = sum(exp.stage_seconds.values())
    return exp


def _check_unique(points: list[Point]) -> None:
    seen: set[str] = set()
    for p in points:
        if p.label in seen:
            raise ValueError(f"two points are labelled {p.label!r}: families must not share labels")
        seen.add(p.label)


def _score(imgs: torch.Tensor, refs: torch.Tensor, prompts: list[str], scoring: Scoring, reward: Any,
           base: list[float] | None) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Quality of images against the no-cache images of the same prompts and seeds; ``base``: the
    no-cache per-image reward (None: these are the no-cache images)."""
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
        base = per["reward"] if base is None else base[:len(imgs)]
        if base and sum(base) > 0:
            q["reward_rel"] = q["reward"] / (sum(base) / len(base))
            q["reward_rel_interval"] = list(relative_reward_interval(rw, torch.tensor(base)))
    return q, per


def _time_stage(stage: str, points: list[Point], ref: Point, batches: list[list], config: BenchConfig,
                min_rounds: int, max_rounds: int, run, pipe, bar, store: WorkStore | None, log,
                stop: Callable[[Timings], bool] | None = None) -> Timings:
    """Interleaved rounds of ``points`` with no-cache (`ecad.timing`'s protocol), resumed from the
    store; after ``min_rounds``, stop as soon as ``stop(timings)`` holds. Round r renders batch
    r mod len(batches) of the split for every point and no-cache alike (the rounds cover the
    split's prompts, and a threshold cache meets more than one batch). A method is enabled
    before its timing and disabled after, untimed."""
    timings = Timings([REFERENCE] + [p.label for p in points], REFERENCE)
    stored = store.rounds(stage) if store is not None else []
    for record in stored:
        replay(timings, record)
    by_label = {p.label: p for p in points}
    for label, error in timings.failed.items():
        if label in by_label:
            by_label[label].fail(stage, error)
    if not points:
        return timings
    batches = [b for b in batches if len(b) == len(batches[0])]  # a short last batch would time less work
    repeats = 1 if len(batches[0]) >= 4 else SMALL_BATCH_REPEATS

    def call(p: Point, items) -> TimedCall:
        return TimedCall(run=lambda: run(p, items), enter=lambda: p.method.enable(pipe, p.knob),
                         exit=lambda: _safe_disable(p.method, pipe), repeats=repeats)

    r = len(stored)
    salt = sum(map(ord, stage))
    while r < max_rounds:
        if r >= min_rounds and (stop is None or stop(timings)):
            break
        lengths = timings_lengths(timings)
        items = batches[r % len(batches)]
        calls = {REFERENCE: call(ref, items), **{p.label: call(p, items) for p in points}}
        time_rounds(calls, rounds=1, warmup=0, reference=REFERENCE, reference_every=config.reference_every,
                    order="shuffle", seed=config.seed * 10_007 + r * 101 + salt, progress=bar.update,
                    on_error=lambda label, err: by_label[label].fail(stage, err), timings=timings)
        if store is not None:
            store.add_round(stage, r, timings_tail(timings, lengths))
        r += 1
        log(f"ecad-bench: {stage} round {r} of {len(points)} points")
    return timings


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
