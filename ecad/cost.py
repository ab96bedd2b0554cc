"""Cost of a schedule: analytic MACs of every action, and a fitted per-hardware cost.

MACs are per denoising run. Each step pays the "other" MACs outside the blocks (embeddings, final
layer), and for every block that runs, its in-block work outside the components (AdaLN
modulation linears, and the element-wise ops of norms, gates and residual adds, one MAC each).
Each component costs its MACs where it is recomputed; a forecast costs 2 element-wise ops per
output element (multiply, add), plus 1 (a subtraction) at the recompute step that forms the
difference it extrapolates; a reuse is free. A skipped block costs 1 op per element of its
residual streams (adding the delta), plus 1 at the run before that stores the delta.
At a step that reuses guidance (`CacheSchedule.guidance_reuse`) the transformer runs half the rows,
so all of that step's work counts half (the work is linear in rows; the element-wise work of the
caches is counted on the conditional rows' steps, and the add that rebuilds the unconditional
output, one op per output element, is not counted).
Everything is multiplied by the transformer calls per step. `batch_size` is the batch one
transformer call sees (PixArt with CFG: 2 x images; the adapters' `transformer_batch(pipe,
num_images, ...)` gives it); `text_len` the padded prompt length.

MACs are not seconds: small kernels, launch and hook overhead and memory-bound element-wise ops
cost more per MAC than large matmuls. `FittedCost` is a per-hardware model fitted on timed
schedules (non-negative least squares over `cost_features`: recomputed MACs per component
name, the blocks' work outside the components, the forecast and skip element-wise work, and a
count per action for its fixed overhead), so a search can minimise predicted seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .adapters import get_adapter, split_pipeline
from .hooks.actions import ActionPlan
from .schedule import FORECAST, REUSE, CacheSchedule
from .setting import Setting

FORECAST_OPS = 2  # y + d * k per element
DIFF_OPS = 1  # d = y2 - y1 per element, once per run of forecasts
SKIP_OPS = 1  # input + delta per element
DELTA_OPS = 1  # delta = output - input per element, at the run before a skip


@dataclass(frozen=True)
class CostTable:
    """MACs of one transformer call, per unit of work a schedule can choose."""

    component: np.ndarray  # [blocks, components]: a recompute
    block_other: np.ndarray  # [blocks]: a block's work outside its components (saved by a skip)
    other: int  # outside the blocks
    component_elements: np.ndarray  # [blocks, components]: output elements (forecast ops scale with it)
    block_elements: np.ndarray  # [blocks]: residual-stream elements (skip ops scale with it)


def cost_table(model: Any, *, height: int, width: int, batch_size: int, text_len: int,
               vae_scale_factor: int | None = None, num_frames: int | None = None) -> CostTable:
    """The `CostTable` of `model` (a transformer, or a pipeline: then its `vae_scale_factor` is used).

    `num_frames`: a video's frames (the adapter turns them into latent frames of tokens; None: the
    pipeline's default); only video families take it."""
    pipe, transformer = split_pipeline(model)
    vsf = vae_scale_factor if vae_scale_factor is not None else int(getattr(pipe, "vae_scale_factor", 8))
    adapter = get_adapter(transformer)
    kw = dict(height=height, width=width, batch_size=batch_size, text_len=text_len, vae_scale_factor=vsf)
    if num_frames is not None:
        kw["num_frames"] = num_frames
    return CostTable(
        component=adapter.component_macs(transformer, **kw),
        block_other=adapter.block_linear_macs(transformer, **kw) + adapter.block_elementwise_ops(transformer, **kw),
        other=int(adapter.other_macs(transformer, **kw)),
        component_elements=adapter.component_output_elements(transformer, **kw),
        block_elements=adapter.block_output_elements(transformer, **kw),
    )


def macs_table(model: Any, *, height: int, width: int, batch_size: int, text_len: int,
               vae_scale_factor: int | None = None) -> tuple[np.ndarray, int]:
    """(component MACs [blocks, components], MACs outside the components) for one uncached call."""
    t = cost_table(model, height=height, width=width, batch_size=batch_size, text_len=text_len,
                   vae_scale_factor=vae_scale_factor)
    return t.component, t.other + int(t.block_other.sum())


def forecast_differences(schedule: CacheSchedule) -> np.ndarray:
    """int [steps, blocks, components]: 1 where a component forms a difference for its forecasts
    (at a recompute that a forecast follows before the next recompute), as the engine does."""
    out = np.zeros(schedule.shape, dtype=np.int64)
    forecasts = (schedule.actions == FORECAST) & ~schedule.skip[:, :, None]
    for b, c in zip(*np.nonzero(forecasts.any(axis=0))):
        out[:, b, c] = ActionPlan.build(schedule.actions[:, b, c], schedule.skip[:, b]).make_diff
    return out


def row_share(schedule: CacheSchedule) -> np.ndarray:
    """float [steps]: the share of the rows the transformer runs at each step (1/2 where it reuses guidance)."""
    return np.where(schedule.guidance_reuse, 0.5, 1.0)


def _step_work(schedule: CacheSchedule, t: CostTable) -> dict[str, np.ndarray]:
    """Per step [steps], before the row share: recomputed MACs per component [steps, blocks,
    components], the blocks' work outside the components, forecast and skip element-wise ops."""
    skip = schedule.skip
    forecasts = (schedule.actions == FORECAST) & ~skip[:, :, None]
    delta_stores = np.zeros_like(skip)
    delta_stores[:-1] = ~skip[:-1] & skip[1:]
    return {
        "component": schedule.mask * t.component[None],
        "block_other": ((~skip) * t.block_other[None]).sum(axis=1) + t.other,
        "forecast": (t.component_elements[None] * (FORECAST_OPS * forecasts
                                                   + DIFF_OPS * forecast_differences(schedule))).sum(axis=(1, 2)),
        "skip": (t.block_elements[None] * (SKIP_OPS * skip + DELTA_OPS * delta_stores)).sum(axis=1),
    }


def schedule_macs(schedule: CacheSchedule, model: Any, *, height: int, width: int, batch_size: int,
                  text_len: int, calls_per_step: int = 1, vae_scale_factor: int | None = None) -> int:
    """Transformer MACs of a whole denoising run under `schedule` (see the module docstring)."""
    t = cost_table(model, height=height, width=width, batch_size=batch_size, text_len=text_len,
                   vae_scale_factor=vae_scale_factor)
    return _schedule_macs(schedule, t, calls_per_step)


def _schedule_macs(schedule: CacheSchedule, t: CostTable, calls_per_step: int) -> int:
    if t.component.shape != schedule.shape[1:]:
        raise ValueError(f"schedule grid {schedule.shape[1:]} does not match the model's {t.component.shape}")
    work = _step_work(schedule, t)
    per_step = work["component"].sum(axis=(1, 2)) + work["block_other"] + work["forecast"] + work["skip"]
    if not schedule.guidance_reuse.any():
        return calls_per_step * int(per_step.sum())  # integer arithmetic, as before guidance reuse
    return calls_per_step * int(round(float((per_step * row_share(schedule)).sum())))


def image_call(model: Any, setting: Setting, true_cfg: bool = False) -> tuple[CostTable, int, Any]:
    """(the cost table of one transformer call for one image, or one video of `setting.num_frames`
    frames, at `setting`, calls per step, layout).

    `model` is a loaded pipeline, or a bundled full-size `ecad.configs.Architecture` (anything with
    its `shared_meta_transformer()`, `vae_scale_factor` and `max_sequence_length`: the transformer on
    the meta device, with the VAE factor and padded prompt length its pipeline uses): both are
    costed by the same recipe."""
    if hasattr(model, "shared_meta_transformer"):  # an Architecture (configs sits above this module)
        transformer, pipe = model.shared_meta_transformer(), None
        vae_scale_factor, text_len = model.vae_scale_factor, model.max_sequence_length
    else:
        pipe, transformer = split_pipeline(model)
        vae_scale_factor = int(getattr(pipe, "vae_scale_factor", 8))
        text_len = get_adapter(transformer).text_len(pipe)
    adapter = get_adapter(transformer)
    batch, calls = adapter.transformer_batch(pipe, 1, guidance_scale=setting.guidance_scale, true_cfg=true_cfg)
    table = cost_table(transformer, height=setting.height, width=setting.width, batch_size=batch,
                       text_len=text_len, vae_scale_factor=vae_scale_factor, num_frames=setting.num_frames)
    return table, calls, adapter.layout(transformer)


def image_macs(model: Any, setting: Setting, schedule: CacheSchedule | None = None, *,
               true_cfg: bool = False) -> int:
    """Transformer MACs of one image (a video model: one video of `setting.num_frames` frames, the
    pipeline's default if None) generated at `setting` under `schedule`: THE recipe.

    `model`: a pipeline, or a full-size `Architecture` (no weights). The adapter says how many
    transformer calls a step makes and how large their batch is for one image (PixArt with CFG: one
    call of batch 2), and how long the padded prompt is; every action is costed (`schedule_macs`).
    `schedule=None` is no caching.
    """
    table, calls, layout = image_call(model, setting, true_cfg)
    if schedule is None:
        schedule = CacheSchedule.full(layout, setting.num_inference_steps)
    return _schedule_macs(schedule, table, calls)


def macs_speedup(pipe: Any, setting: Setting, schedule: CacheSchedule, *, true_cfg: bool = False) -> float:
    """MACs of an uncached image / MACs of an image under `schedule`."""
    return (image_macs(pipe, setting, None, true_cfg=true_cfg)
            / image_macs(pipe, setting, schedule, true_cfg=true_cfg))


# -- a fitted, per-hardware cost ------------------------------------------------------------------


def cost_features(schedule: CacheSchedule, table: CostTable, calls_per_step: int = 1) -> dict[str, float]:
    """The work of one image under `schedule`, split into terms whose seconds-per-unit differ.

    ``macs:<component>``: recomputed MACs of the components of that name; ``macs:block_other``:
    the blocks' work outside the components where a block runs; ``elements:forecast`` /
    ``elements:skip``: the element-wise work of forecasts and skips (as `schedule_macs` counts
    it; work at a guidance-reuse step counts half); ``count:<action>``: how many component
    recomputes / reuses / forecasts, block runs, block skips and guidance reuses happen (each
    has a fixed overhead: kernel launches, hooks); ``images``: 1 (the work outside the
    transformer: text encoder, scheduler, VAE).
    """
    if table.component.shape != schedule.shape[1:]:
        raise ValueError(f"schedule grid {schedule.shape[1:]} does not match the cost table's {table.component.shape}")
    layout = schedule.layout
    skip = schedule.skip
    running = ~skip[:, :, None]
    recompute = schedule.mask & running
    forecasts = (schedule.actions == FORECAST) & running
    share = row_share(schedule)
    work = _step_work(schedule, table)
    component = (work["component"] * share[:, None, None]).sum(axis=0)
    features: dict[str, float] = {}
    for block in range(layout.num_blocks):
        for c, name in enumerate(layout.component_names(block)):
            key = f"macs:{name}"
            features[key] = features.get(key, 0.0) + float(component[block, c])
    features.update({
        "macs:block_other": float((work["block_other"] * share).sum()),
        "elements:forecast": float((work["forecast"] * share).sum()),
        "elements:skip": float((work["skip"] * share).sum()),
        "count:recompute": float(recompute.sum()),
        "count:reuse": float(((schedule.actions == REUSE) & running).sum()),
        "count:forecast": float(forecasts.sum()),
        "count:block_run": float((~skip).sum()),
        "count:block_skip": float(skip.sum()),
        "count:guidance_reuse": float(schedule.guidance_reuse.sum()),
    })
    features = {k: v * calls_per_step for k, v in features.items()}
    features["images"] = 1.0
    return features


@dataclass(frozen=True)
class FittedCost:
    """Seconds per image = Σ coefficient × feature (`cost_features`), fitted on one machine."""

    features: tuple[str, ...]
    coefficients: tuple[float, ...]  # seconds per unit of each feature, >= 0
    hardware: str = ""  # where the timings were taken (free text: CPU model, threads, GPU)

    def seconds(self, features: dict[str, float]) -> float:
        missing = sorted(set(self.features) - set(features))
        if missing:
            raise ValueError(f"cost features {missing} missing: the fit was made for another model layout")
        return float(sum(c * features[name] for name, c in zip(self.features, self.coefficients)))

    def speedup(self, features: dict[str, float], no_cache_features: dict[str, float]) -> float:
        """Predicted no-cache seconds / seconds under the schedule the features describe."""
        return self.seconds(no_cache_features) / self.seconds(features)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features), "coefficients": list(self.coefficients)}

    @classmethod
    def from_report(cls, data: dict[str, Any]) -> "FittedCost":
        """A FittedCost JSON, or a report holding one under "model" (`scripts/bench_actions.py`'s)."""
        return cls.from_dict(data.get("model", data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FittedCost":
        if not data.get("features") or len(data["features"]) != len(data.get("coefficients", ())):
            raise ValueError("a FittedCost needs 'features' and as many 'coefficients'")
        return cls(tuple(data["features"]), tuple(float(c) for c in data["coefficients"]), data.get("hardware", ""))


def fit_cost(features: Sequence[dict[str, float]], seconds: Sequence[float], hardware: str = "") -> FittedCost:
    """Non-negative least squares of ``seconds`` on the features, relative error weighted.

    Rows are scaled by 1 / seconds so every schedule's *relative* error counts the same (a
    speedup is a ratio); a feature constant over the rows (but "images") or never non-zero
    gets no coefficient of its own.
    """
    from scipy.optimize import nnls

    if len(features) != len(seconds) or len(seconds) < 2:
        raise ValueError(f"fit_cost needs >= 2 timed schedules with features, got {len(features)} / {len(seconds)}")
    names = sorted(set().union(*features))
    X = np.array([[f.get(n, 0.0) for n in names] for f in features], dtype=float)
    y = np.asarray(seconds, dtype=float)
    kept = [i for i, n in enumerate(names) if n == "images" or np.ptp(X[:, i]) > 0]
    X = X[:, kept]
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls((X / scale) / y[:, None], np.ones_like(y))
    return FittedCost(tuple(names[i] for i in kept), tuple(float(c) for c in coef / scale), hardware)


def schedule_cost_features(pipe: Any, setting: Setting, schedule: CacheSchedule | None = None, *,
                           true_cfg: bool = False) -> dict[str, float]:
    """`cost_features` of one image through `pipe` at `setting` (`schedule=None`: no caching)."""
    table, calls, layout = image_call(pipe, setting, true_cfg)
    if schedule is None:
        schedule = CacheSchedule.full(layout, setting.num_inference_steps)
    return cost_features(schedule, table, calls)


def predicted_speedup(model: FittedCost, pipe: Any, setting: Setting) -> Callable[[CacheSchedule], float]:
    """schedule -> the speedup over no-cache that ``model`` predicts for one image through ``pipe`` at ``setting``."""
    no_cache = schedule_cost_features(pipe, setting)
    return lambda schedule: model.speedup(schedule_cost_features(pipe, setting, schedule), no_cache)


def out_of_fold_speedups(features: Sequence[dict[str, float]], speedups: Sequence[float],
                         no_cache: dict[str, float], *, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Each schedule's speedup as predicted by a fit that did not see it (k-fold, shuffled):
    the honest check of a fitted cost on the schedules it will rank.

    NaN where a fold's fit prices the held-out schedule at zero seconds: a fit on a few rows
    can put all its weight on a feature the held-out schedule lacks, and has no prediction then.
    """
    from sklearn.model_selection import KFold

    speedups = np.asarray(speedups, dtype=float)
    predicted = np.zeros(len(features))
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(features):
        model = fit_cost([features[i] for i in train], [1.0 / speedups[i] for i in train])
        predicted[test] = [model.speedup(features[i], no_cache) if model.seconds(features[i]) > 0 else np.nan
                           for i in test]
    return predicted
