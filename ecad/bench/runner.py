"""Run every point of every method on the same prompts and seeds, in one process, interleaved.

One experiment (`run_experiment`) = one named `Setting` (steps, size, guidance) and a list of
methods; each method contributes one point per knob value. Procedure:

1. ``prepare``: one-off method set-up (MagCache calibrates its ratios on the calibration prompts).
2. Probe pass (untimed, first batch only): MACs actually executed (`MacsCounter`) and the peak
   bytes of cached tensors (`MemorySampler`), and whether the method changed the output at all.
   diffusers caches are also tried once *without* the shim, to record what happens as shipped.
3. Timed rounds: the (prompt, seed) items of all splits are cut into equal batches; round r runs
   batch r through every point, in a shuffled order, so slow drifts of a shared machine spread
   over all points. Each point's speedup is median(no-cache seconds) / median(its seconds) over
   the full-size batches (never absolute times across runs). Enabling/disabling is not timed.
4. Quality per split: PSNR/SSIM to the no-cache image of the same prompt and seed, the reward
   (if a reward scorer is given), and FID on the reward network's features vs real images.

A point that raises is kept, with its error, and left out of curves.
"""

from __future__ import annotations

import random
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ecad.bench.competitors import DiffusersCache, MacsCounter, MemorySampler, Method
from ecad.generate import generate
from ecad.setting import Setting
from ecad.quality.fidelity import psnr_per_image, ssim_per_image

MAX_PSNR = 100.0  # identical images; caps the infinite PSNR so JSON and means stay finite


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
    times: list[float] = field(default_factory=list)
    images: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    macs_per_image: float | None = None
    analytic_macs_per_image: float | None = None
    cache_bytes_peak: int | None = None
    cache_bytes_per_image: float | None = None
    changes_output: bool | None = None
    speedup: float | None = None
    speedup_min: float | None = None  # ratio of the fastest runs: a robustness check on a noisy machine
    macs_speedup: float | None = None
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def fail(self, stage: str, err: BaseException) -> None:
        self.status = "error"
        self.error = f"{stage}: {type(err).__name__}: {err}"
        self.traceback = traceback.format_exc(limit=6)

    def to_dict(self) -> dict:
        d = {
            **self.method.describe(), "knob_value": _jsonable(self.knob), "label": self.label,
            "status": self.status, "error": self.error, "as_shipped": self.as_shipped,
            "times_s": self.times, "speedup": self.speedup, "speedup_min": self.speedup_min, "macs_per_image": self.macs_per_image,
            "analytic_macs_per_image": self.analytic_macs_per_image, "macs_speedup": self.macs_speedup,
            "cache_bytes_peak": self.cache_bytes_peak, "cache_bytes_per_image": self.cache_bytes_per_image,
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
    return str(value)


@dataclass
class Experiment:
    name: str  # e.g. "main", "50-steps", "48px"
    setting: Setting
    points: list[Point]
    splits: list[Split]
    batch_size: int
    rounds: int
    seconds: float
    reference_label: str = "no-cache"
    reference_reproducible: bool | None = None  # no-cache output unchanged after every method ran

    def reference(self) -> Point:
        return next(p for p in self.points if p.label == self.reference_label)


def _batches(items: list[tuple[str, int]], size: int) -> list[list[tuple[str, int]]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_experiment(
    pipe: Any,
    methods: Sequence[Method],
    setting: Setting,
    splits: Sequence[Split],
    *,
    name: str = "main",
    batch_size: int = 8,
    reward: Any = None,
    fid_fn: Callable[[torch.Tensor, str], float] | None = None,
    calibration_items: Sequence[tuple[str, int]] | None = None,
    probe_images: int | None = None,
    as_shipped: bool = True,
    progress: bool = True,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Experiment:
    """Run every (method, knob) point; see the module docstring. The first method must be no-cache."""
    start = time.perf_counter()
    points = [Point(m, k, m.label(k)) for m in methods for k in m.knobs]
    if not points or points[0].label != "no-cache":
        raise ValueError("the first method must be the no-cache reference")
    items = [(split.name, it) for split in splits for it in split.items()]
    batches = _batches(items, batch_size)
    full = [i for i, b in enumerate(batches) if len(b) == batch_size] or [0]
    calib = list(calibration_items or [it for _, it in items[:1]])[:2]
    probe_batch = batches[0][: probe_images or batch_size]

    def run(batch, point=None):
        prompts = [it[1][0] for it in batch]
        seeds = [it[1][1] for it in batch]
        return generate(pipe, prompts, seeds, setting)

    total = len(points) * (1 + len(batches)) + sum(1 for m in methods if isinstance(m, DiffusersCache) and as_shipped)
    bar = _progress(total, progress, f"bench {name}")

    # 1. prepare
    prepared: dict[int, BaseException] = {}
    for m in methods:
        try:
            m.prepare(pipe, setting, lambda: generate(pipe, [c[0] for c in calib], [c[1] for c in calib], setting))
        except Exception as err:  # noqa: BLE001
            prepared[id(m)] = err
            m.disable(pipe)
    for p in points:
        if id(p.method) in prepared:
            p.fail("prepare", prepared[id(p.method)])

    # 2. probe pass: MACs, cache bytes, does it change the output; as-shipped behaviour
    reference_probe = None
    shipped_tried: set[int] = set()
    for p in points:
        bar.update(1)
        if p.status != "ok":
            continue
        m = p.method
        try:
            m.enable(pipe, p.knob)
            counter = MacsCounter(pipe, height=setting.height, width=setting.width, num_images=len(probe_batch),
                                  guidance_scale=setting.guidance_scale)
            sampler = MemorySampler(pipe, m)
            try:
                images = run(probe_batch)
            finally:
                counter.remove()
                sampler.remove()
            p.macs_per_image = counter.total / len(probe_batch)
            p.cache_bytes_peak = int(sampler.peak)
            p.cache_bytes_per_image = sampler.peak / len(probe_batch)
            if reference_probe is None:
                reference_probe = images
            p.changes_output = bool((images - reference_probe).abs().max() > 0)
        except Exception as err:  # noqa: BLE001
            p.fail("probe", err)
        finally:
            _safe_disable(m, pipe)
        schedule = m.schedule(p.knob)
        if schedule is not None:
            from ecad.cost import image_macs

            p.analytic_macs_per_image = float(image_macs(pipe, setting, schedule))
        if as_shipped and isinstance(m, DiffusersCache) and m.uses_shim and id(m) not in shipped_tried:
            shipped_tried.add(id(m))
            bar.update(1)
            p.as_shipped = _try_as_shipped(pipe, m, p.knob, lambda: run(probe_batch[:1]), p.status == "ok")

    # 3. timed rounds, shuffled order per round
    rng = random.Random(seed)
    for r, batch in enumerate(batches):
        order = list(points)
        rng.shuffle(order)
        for p in order:
            bar.update(1)
            if p.status != "ok":
                continue
            try:
                p.method.enable(pipe, p.knob)
                t0 = time.perf_counter()
                images = run(batch)
                dt = time.perf_counter() - t0
            except Exception as err:  # noqa: BLE001
                p.fail(f"round {r}", err)
                continue
            finally:
                _safe_disable(p.method, pipe)
            if r in full:
                p.times.append(dt)
            for (split, _), image in zip(batch, images):
                p.images.setdefault(split, []).append(image)
    bar.close()
    # every method was enabled and disabled many times: the unmodified pipeline must be untouched
    reproducible = None
    if reference_probe is not None:
        reproducible = bool(torch.equal(run(probe_batch), reference_probe))
        if not reproducible:
            log("ecad-bench: WARNING: the no-cache output changed after the methods ran (a method left state behind)")

    # 4. speed and quality
    ref = points[0]
    if ref.status != "ok":
        raise RuntimeError(f"the no-cache reference failed: {ref.error}")
    ref_median = statistics.median(ref.times)
    for p in points:
        if p.status != "ok":
            continue
        p.speedup = ref_median / statistics.median(p.times)
        p.speedup_min = min(ref.times) / min(p.times)
        if p.macs_per_image and ref.macs_per_image:
            p.macs_speedup = ref.macs_per_image / p.macs_per_image
        for split in splits:
            imgs = torch.stack(p.images[split.name])
            refs = torch.stack(ref.images[split.name])
            prompts = [it[0] for it in split.items()]
            psnr = psnr_per_image(imgs, refs, MAX_PSNR)
            ssim = ssim_per_image(imgs, refs)
            q = {"psnr": float(psnr.mean()), "ssim": float(ssim.mean()), "images": len(imgs)}
            per = {"psnr": psnr.tolist(), "ssim": ssim.tolist()}
            if reward is not None:
                rw = reward.score(imgs, prompts)
                q["reward"] = float(rw.mean())
                per["reward"] = rw.tolist()
                if hasattr(reward, "accuracy"):
                    q["accuracy"] = float(reward.accuracy(imgs, prompts).mean())
            if fid_fn is not None:
                try:
                    q["fid"] = float(fid_fn(imgs, split.name))
                except Exception as err:  # noqa: BLE001
                    q["fid_error"] = repr(err)
            p.quality[split.name] = q
            p.per_image[split.name] = per
    for p in points:
        if p.status == "ok" and reward is not None:
            for split in splits:
                base = ref.quality[split.name].get("reward")
                if base:
                    p.quality[split.name]["reward_rel"] = p.quality[split.name]["reward"] / base
    return Experiment(name, setting, points, list(splits), batch_size, len(full), time.perf_counter() - start,
                      reference_reproducible=reproducible)


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


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True)
