"""A schedule moved to another step count by noise level, not by step index.

A cache schedule is a statement about noise levels: between these two noise levels this component
was recomputed so often, here its output was reused. Moving it to another step count by nearest
normalized index (`CacheSchedule.resample`) keeps the share of recomputes, so at 50 steps it
recomputes 2.5x as often as the calibrated schedule did across the same noise range, and at 12
steps it reuses across noise gaps the search never saw.

`transfer_schedule` keeps the schedule where it belongs in noise: each target step is placed in the
source's step coordinate by its noise level (the scheduler's timesteps at each step count), and
covers the source steps between the previous target step and itself:

* a component recomputes at a target step when the source recomputed it at any step the target
  step covers; otherwise it does what the source did at the nearest covered step (reuse or
  forecast), or reuses where it covers no source step (a denser target: the source computed
  nothing new between those noise levels). So a reuse chain grows with step density and shrinks
  without it: FORA n=2 at 20 steps becomes FORA n=4 at 40, and no caching at 10.
* a block is skipped, and guidance reused, only where the source did so at every step the target
  step covers (at the nearest source step where it covers none): these are stronger actions than a
  reuse and are not stretched across steps the source ran.
* step 0 recomputes everything and a forecast without two earlier recomputes becomes a reuse
  (`CacheSchedule.repaired`): a transferred schedule is always valid. The all-recompute schedule
  stays all-recompute.

Resolution: a schedule's grid does not depend on the image size, so another size keeps the grid;
where the scheduler's noise levels depend on the size (flow matching with a resolution-dependent
shift, as FLUX.1-dev), pass the levels of each size and the same rule applies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecad.schedule import FORECAST, RECOMPUTE, REUSE, CacheSchedule
from ecad.setting import Setting


def noise_levels(model: Any, setting: Setting) -> np.ndarray:
    """The timesteps (decreasing noise) the model's scheduler runs at ``setting``.

    ``model``: a loaded pipeline, a model folder / hub id (its scheduler config and transformer
    config are read, no weights), or a bundled full-size `Architecture`. A fresh scheduler is built from the config, so a pipeline's own
    state is untouched. A flow-matching scheduler with a resolution-dependent shift gets the shift
    the pipeline would compute for this size (diffusers' `calculate_shift` on the image tokens)."""
    from ecad.adapters import get_adapter

    scheduler, transformer, vae_scale_factor = _scheduler_parts(model)
    steps = setting.num_inference_steps
    config = scheduler.config
    if config.get("use_dynamic_shifting"):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        tokens = get_adapter(transformer).num_tokens(transformer, height=setting.height, width=setting.width,
                                                     vae_scale_factor=vae_scale_factor)
        mu = calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                             config.get("base_shift", 0.5), config.get("max_shift", 1.15))
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu)
    else:
        scheduler.set_timesteps(steps)
    return np.asarray(scheduler.timesteps, dtype=float)[:steps]


def _scheduler_parts(model: Any) -> tuple[Any, Any, int]:
    """(a fresh scheduler, the transformer (a meta-device skeleton for a folder or a bundled
    architecture), the VAE factor)."""
    import diffusers

    from ecad.configs import Architecture

    if isinstance(model, Architecture):
        if not model.scheduler:
            raise ValueError(f"the bundled architecture {model.name} names no scheduler: its noise levels are unknown")
        scheduler = getattr(diffusers, model.scheduler["class"]).from_config(model.scheduler["config"])
        return scheduler, model.shared_meta_transformer(), model.vae_scale_factor
    from ecad.generate import pipeline_vae_scale_factor, transformer_skeleton, vae_scale_factor

    if not isinstance(model, (str, os.PathLike)):
        return (type(model.scheduler).from_config(model.scheduler.config), model.transformer,
                pipeline_vae_scale_factor(model))

    index = diffusers.DiffusionPipeline.load_config(str(model))
    scheduler_cls = getattr(diffusers, index["scheduler"][1])
    scheduler = scheduler_cls.from_config(scheduler_cls.load_config(str(model), subfolder="scheduler"))
    return scheduler, transformer_skeleton(model)[0], vae_scale_factor(model)


def source_positions(source_levels: np.ndarray, target_levels: np.ndarray) -> np.ndarray:
    """Each target step's position in source steps (fractional), by noise level; clipped to the
    source's range. Levels decrease along the steps (timesteps or sigmas)."""
    source, target = np.asarray(source_levels, float), np.asarray(target_levels, float)
    if source.ndim != 1 or target.ndim != 1 or not len(source) or not len(target):
        raise ValueError("noise levels must be non-empty 1-D arrays")
    if len(source) > 1 and not np.all(np.diff(source) < 0):
        raise ValueError("source noise levels must decrease strictly along the steps")
    if len(source) == 1:
        return np.zeros(len(target))
    return np.interp(-target, -source, np.arange(len(source), dtype=float))


def covered_steps(positions: np.ndarray, num_source_steps: int) -> list[np.ndarray]:
    """The source steps each target step covers: those after the previous target step's position,
    up to its own (the first target step covers every source step up to its position)."""
    covered, previous = [], -np.inf
    all_steps = np.arange(num_source_steps)
    for u in positions:
        covered.append(all_steps[(all_steps > previous + 1e-9) & (all_steps <= u + 1e-9)])
        previous = u
    return covered


def transfer_schedule(schedule: CacheSchedule, source_levels: np.ndarray,
                      target_levels: np.ndarray) -> CacheSchedule:
    """``schedule`` (made for ``source_levels``) moved to a run with ``target_levels`` (see the module docstring)."""
    if len(source_levels) != schedule.num_steps:
        raise ValueError(f"{len(source_levels)} source noise levels for a schedule of {schedule.num_steps} steps")
    if schedule.mask.all():
        return CacheSchedule.full(schedule.layout, len(target_levels))
    if np.array_equal(np.asarray(source_levels, float), np.asarray(target_levels, float)):
        return schedule
    positions = source_positions(source_levels, target_levels)
    covered = covered_steps(positions, schedule.num_steps)
    actions_in, skip_in, guidance_in = schedule.actions, schedule.skip, schedule.guidance_reuse
    steps = len(target_levels)
    actions = np.full((steps, *actions_in.shape[1:]), REUSE, dtype=np.int8)
    skip = np.zeros((steps, actions_in.shape[1]), dtype=bool)
    guidance = np.zeros(steps, dtype=bool)
    for j, (u, cover) in enumerate(zip(positions, covered)):
        nearest = int(np.clip(np.rint(u), 0, schedule.num_steps - 1))
        if len(cover):
            ran = (actions_in[cover] == RECOMPUTE) & ~skip_in[cover][:, :, None]
            last = cover[np.argmin(np.abs(cover - u))]
            others = np.where(actions_in[last] == FORECAST, FORECAST, REUSE)
            actions[j] = np.where(ran.any(axis=0), RECOMPUTE, others)
            skip[j] = skip_in[cover].all(axis=0)
            actions[j][skip[j]] = actions_in[last][skip[j]]  # what a skipped block's components say is moot
            guidance[j] = bool(guidance_in[cover].all())
        else:  # nothing computed in the source between these noise levels
            actions[j] = np.where(actions_in[nearest] == FORECAST, FORECAST, REUSE)
            skip[j] = skip_in[nearest]
            guidance[j] = bool(guidance_in[nearest])
    return CacheSchedule.repaired(actions, schedule.layout, skip, guidance)


def transfer_to_setting(schedule: CacheSchedule, pipe: Any, source: Setting, target: Setting) -> CacheSchedule:
    """``schedule`` made for ``source`` moved to ``target`` by the pipeline's noise levels at each."""
    if source.num_inference_steps == target.num_inference_steps and source.pixels == target.pixels:
        return schedule
    return transfer_schedule(schedule, noise_levels(pipe, source), noise_levels(pipe, target))


def transfer_bank(bank: Any, model: Any, target: Setting, *, target_model: Any = None, note: str | None = None) -> Any:
    """``bank`` moved to ``target``: every entry transferred by noise level, entries that land on the
    same schedule merged (the costliest one names it), MACs counted at ``target``. Ids say where an
    entry came from (`transferred_id`): a moved ``fora-2`` is not FORA n=2 at the new step count.

    ``model`` is what the bank was made for (a pipeline, a model folder, or a bundled
    `Architecture`); ``target_model`` another model of the same layout to move it to (a bundled
    `Architecture`: PixArt-XL-2 at 256 -> its 512 or 1024 checkpoint), by default the same one.

    The quality of a transferred entry is not measured: a bank ranked by the unmeasured MACs proxy
    gets the proxy recounted at ``target``; any other keeps its source quality; every entry is
    marked ``quality_measured=False``, with a provenance note naming the source bank and setting."""
    from ecad.bank import BankEntry, Provenance
    from ecad.configs import Architecture
    from ecad.cost import image_macs
    from ecad.reference import QUALITY_PROXY_METRIC

    target_model = model if target_model is None else target_model
    source = bank.setting
    source_levels, target_levels = noise_levels(model, source), noise_levels(target_model, target)
    full = image_macs(target_model, target)
    seen: set[str] = set()
    entries = []
    for entry in sorted(bank.entries, key=lambda e: -e.macs):
        schedule = transfer_schedule(entry.cache_schedule(), source_levels, target_levels)
        if schedule.hash in seen:
            continue
        seen.add(schedule.hash)
        macs = image_macs(target_model, target, schedule)
        quality = ({QUALITY_PROXY_METRIC: macs / full} if bank.quality_metric == QUALITY_PROXY_METRIC
                   else dict(entry.validation or entry.quality))
        entries.append(BankEntry(
            id=entry.id if entry.id == bank.no_cache_entry().id else transferred_id(entry.id, source, target),
            schedule=schedule.to_dict(), macs=macs, quality=quality, source=entry.source,
            quality_measured=False,
            provenance=Provenance(source=f"{bank.model}@{source.name}:{entry.id}", name=entry.id,
                                  note=note or f"transferred by noise level from {source.name} to {target.name}")))
    moved = (f"Moved by noise level from {bank.model} at {source.name} (ecad-transfer): schedules not "
             "calibrated at this setting, quality not measured; each entry's provenance names its source entry.")
    update = {**target.to_dict(), "entries": entries, "profiles": [], "notice": " ".join(filter(None, [bank.notice, moved])),
              "calibration": {"transferred_from": f"{bank.model} {source.name}", "source_calibration": bank.calibration}}
    if isinstance(target_model, Architecture) and target_model is not model:
        update |= {"model": target_model.hub_id, "model_fingerprint": target_model.fingerprint()}
    return bank.model_copy(update=update)


def transferred_id(entry_id: str, source: Setting, target: Setting) -> str:
    """``fora-2`` moved from 20 steps: ``fora-2:20steps`` (it is no longer FORA n=2 at the target's
    steps); from another size: ``fora-2:256px``. Cut to the 64 characters a bank id may have."""
    suffix = (f":{source.num_inference_steps}steps" if source.num_inference_steps != target.num_inference_steps
              else f":{source.height}px")
    return entry_id[:64 - len(suffix)] + suffix


# -- what a transfer does to quality, measured ------------------------------------------------

#: metric -> (its key in a measurement row at the source setting, at the target setting)
TRANSFER_METRICS = {"psnr": ("source_psnr", "psnr"), "reward_rel": ("source_reward_rel", "reward_rel")}
INTERVAL = (0.05, 0.95)  # the stated interval: these quantiles of the fit's residuals


def _features(source_quality: np.ndarray, target_steps: np.ndarray, source_steps: int) -> np.ndarray:
    """[1, q, d, d*q, d^2, d^2*q] with d = log2(target / source steps): quality moves with the
    step ratio, more for schedules that were already near their limit."""
    q = np.asarray(source_quality, float)
    d = np.log2(np.asarray(target_steps, float) / source_steps)
    return np.stack([np.ones_like(q), q, d, d * q, d * d, d * d * q], axis=1)


@dataclass(frozen=True)
class MetricFit:
    coefficients: tuple[float, ...]
    interval: tuple[float, float]  # residual quantiles: the estimate's stated interval is estimate + these


@dataclass(frozen=True)
class TransferQualityModel:
    """An entry's quality at another step count, estimated from its quality where it was
    calibrated, fitted on measured noise-level transfers of a calibrated bank
    (`scripts/transfer_quality.py`). Used where no bank was made for a request's setting."""

    model: str
    source_steps: int
    fits: dict[str, MetricFit]
    measured_steps: tuple[int, ...]

    def estimate(self, metric: str, source_value: float, target_steps: int,
                 source_steps: int | None = None) -> tuple[float, float, float]:
        """(estimate, low, high) of ``metric`` at ``target_steps`` for an entry with ``source_value``
        at ``source_steps`` (default: the steps of the bank it was fitted on; the fit is in the
        step ratio, so another bank of the model may use it)."""
        fit = self.fits[metric]
        value = float(_features([source_value], [target_steps], source_steps or self.source_steps)[0]
                      @ np.asarray(fit.coefficients))
        return value, value + fit.interval[0], value + fit.interval[1]

    @classmethod
    def fit(cls, rows: list[dict], *, source_steps: int, model: str) -> "TransferQualityModel":
        fits = {}
        steps = np.array([r["steps"] for r in rows], float)
        for metric, (source_key, target_key) in TRANSFER_METRICS.items():
            X = _features([r[source_key] for r in rows], steps, source_steps)
            y = np.array([r[target_key] for r in rows], float)
            coefficients, *_ = np.linalg.lstsq(X, y, rcond=None)
            residuals = y - X @ coefficients
            fits[metric] = MetricFit(tuple(float(c) for c in coefficients),
                                     tuple(float(v) for v in np.quantile(residuals, INTERVAL)))
        return cls(model, source_steps, fits, tuple(sorted({int(s) for s in steps})))

    def check(self, rows: list[dict]) -> dict[str, Any]:
        """How often the measured value falls in the stated interval: in sample, and leaving each
        target step count out of the fit (the honest figure for a step count never measured)."""
        out: dict[str, Any] = {}
        for metric, (source_key, target_key) in TRANSFER_METRICS.items():
            inside = [self.estimate(metric, r[source_key], r["steps"]) for r in rows]
            in_sample = np.mean([lo <= r[target_key] <= hi for r, (_, lo, hi) in zip(rows, inside)])
            held_out = []
            for steps in self.measured_steps:
                train = [r for r in rows if r["steps"] != steps]
                if len({r["steps"] for r in train}) < 3:
                    continue
                fitted = TransferQualityModel.fit(train, source_steps=self.source_steps, model=self.model)
                for r in (r for r in rows if r["steps"] == steps):
                    _, lo, hi = fitted.estimate(metric, r[source_key], steps)
                    held_out.append(lo <= r[target_key] <= hi)
            errors = [abs(r[target_key] - est) for r, (est, _, _) in zip(rows, inside)]
            out[metric] = {"in_interval": float(in_sample), "in_interval_step_count_left_out":
                           float(np.mean(held_out)) if held_out else None,
                           "median_abs_error": float(np.median(errors)), "rows": len(rows)}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "source_steps": self.source_steps, "measured_steps": list(self.measured_steps),
                "interval_quantiles": list(INTERVAL),
                "fits": {m: {"coefficients": list(f.coefficients), "interval": list(f.interval)}
                         for m, f in self.fits.items()}}

    @classmethod
    def beside(cls, bank_path: str | os.PathLike) -> "TransferQualityModel | None":
        """The model's measured transfers kept beside its banks (``transfer-quality/<bank file>``):
        this bank's own if measured, else another bank's of the model (the fit is in the step
        ratio); None if there is none or it cannot be read (logged)."""
        import json
        import logging
        from pathlib import Path

        bank_path = Path(bank_path)
        folder = bank_path.parent / "transfer-quality"
        candidates = [folder / bank_path.name, *sorted(folder.glob("*.json"))] if folder.is_dir() else []
        for path in dict.fromkeys(p for p in candidates if p.is_file()):
            try:
                return cls.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as err:
                logging.getLogger(__name__).warning("%s: unreadable transfer-quality file, not used: %s", path, err)
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TransferQualityModel":
        return cls(data["model"], int(data["source_steps"]),
                   {m: MetricFit(tuple(f["coefficients"]), tuple(f["interval"])) for m, f in data["fits"].items()},
                   tuple(int(s) for s in data["measured_steps"]))
