"""Cost of a schedule: analytic MACs (a sum over recomputed components), and latency helpers.

MACs are per denoising run: every step pays the "other" MACs (embeddings, AdaLN, final layer)
plus the MACs of the components it recomputes, times the transformer calls per step.
`batch_size` is the batch one transformer call sees (PixArt with CFG: 2 x images; the adapters'
`transformer_batch(pipe, num_images, ...)` gives it); `text_len` the padded prompt length.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

from .adapters import get_adapter, split_pipeline
from .schedule import CacheSchedule
from .setting import Setting


def macs_table(model: Any, *, height: int, width: int, batch_size: int, text_len: int,
               vae_scale_factor: int | None = None) -> tuple[np.ndarray, int]:
    """(component MACs [blocks, components], other MACs) for one transformer call.

    `model` is a transformer or a pipeline (then its `vae_scale_factor` is used).
    """
    pipe, transformer = split_pipeline(model)
    vsf = vae_scale_factor if vae_scale_factor is not None else int(getattr(pipe, "vae_scale_factor", 8))
    adapter = get_adapter(transformer)
    kw = dict(height=height, width=width, batch_size=batch_size, text_len=text_len, vae_scale_factor=vsf)
    return adapter.component_macs(transformer, **kw), adapter.other_macs(transformer, **kw)


def schedule_macs(schedule: CacheSchedule, model: Any, *, height: int, width: int, batch_size: int,
                  text_len: int, calls_per_step: int = 1, vae_scale_factor: int | None = None) -> int:
    """Transformer MACs of a whole denoising run under `schedule`."""
    component, other = macs_table(model, height=height, width=width, batch_size=batch_size,
                                  text_len=text_len, vae_scale_factor=vae_scale_factor)
    if component.shape != schedule.mask.shape[1:]:
        raise ValueError(f"schedule grid {schedule.mask.shape[1:]} does not match the model's {component.shape}")
    recomputed = int((schedule.mask * component[None]).sum())
    return calls_per_step * (recomputed + schedule.num_steps * other)


def image_macs(pipe: Any, setting: Setting, schedule: CacheSchedule | None = None, *,
               true_cfg: bool = False) -> int:
    """Transformer MACs of one image generated through `pipe` at `setting` under `schedule`.

    The one recipe for "what does an image cost": the adapter says how many transformer calls a
    step makes and how large their batch is for one image (PixArt with CFG: one call of batch 2),
    and how long the padded prompt is. `schedule=None` is no caching.
    """
    adapter = get_adapter(pipe)
    if schedule is None:
        schedule = CacheSchedule.full(adapter.layout(split_pipeline(pipe)[1]), setting.num_inference_steps)
    batch, calls = adapter.transformer_batch(pipe, 1, guidance_scale=setting.guidance_scale, true_cfg=true_cfg)
    return schedule_macs(schedule, pipe, height=setting.height, width=setting.width, batch_size=batch,
                         text_len=adapter.text_len(pipe), calls_per_step=calls)


def macs_speedup(pipe: Any, setting: Setting, schedule: CacheSchedule, *, true_cfg: bool = False) -> float:
    """MACs of an uncached image / MACs of an image under `schedule`."""
    return (image_macs(pipe, setting, None, true_cfg=true_cfg)
            / image_macs(pipe, setting, schedule, true_cfg=true_cfg))


def measure_interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Time each function `repeats` times, interleaved, after `warmup` untimed rounds.

    Round r runs the functions in an order rotated by r (A B C, B C A, C A B, ...): interleaving
    spreads slow drifts of a shared machine over the variants, and rotating cancels the effect of
    a fixed position in the round (e.g. always running right after a heavier variant). Returns
    seconds per run for each name; compare with `median_ratio`.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = fns[name]
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """median(times[numerator]) / median(times[denominator])."""
    return statistics.median(times[numerator]) / statistics.median(times[denominator])
