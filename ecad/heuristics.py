"""Hand-designed cache schedules: baselines and seeds for the search.

Every generator returns a valid `CacheSchedule` (step 0 always recomputes everything).

- `no_cache`: recompute everything (the reference).
- `fora`: FORA, Selvaraju et al. 2024, "FORA: Fast-Forward Caching in Diffusion Transformer
  Acceleration" (arXiv:2407.01425): recompute all attention/MLP outputs every `n` steps, reuse in
  between.
- `component_fora`: FORA applied to some components only (the others recompute every step), as in
  the component-wise baselines of the ECAD paper.
- `delta_dit`: Delta-DiT, Chen et al. 2024, "Δ-DiT: A Training-Free Acceleration Method Tailored
  for Diffusion Transformers" (arXiv:2406.01125): back blocks shape the outline early and front
  blocks the details late, so before boundary step `b` the back blocks are cached, after it the
  front blocks (cached blocks recompute every `interval` steps).
- `tgate`: T-GATE, Zhang et al. 2024, "Cross-Attention Makes Inference Cumbersome in Text-to-Image
  Diffusion Models" (arXiv:2404.02747): cross-attention converges early; after gate step `k` its
  output is frozen at its value from step k-1. Needs a separate cross-attention component
  (PixArt `attn2`); FLUX's joint attention mixes text and image in one attention, so there is no
  cross-attention to gate and `tgate` raises for it (the suite skips it).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .schedule import BlockLayout, CacheSchedule

CROSS_ATTENTION_COMPONENTS = ("attn2",)


def _every(num_steps: int, n: int, start: int = 0) -> np.ndarray:
    """bool [num_steps]: True at start, start+n, ...; True before start."""
    if n < 1:
        raise ValueError(f"interval must be >= 1, got {n}")
    s = np.arange(num_steps)
    return (s < start) | ((s - start) % n == 0)


def _component_mask(layout: BlockLayout, names: Iterable[str]) -> np.ndarray:
    """bool [num_blocks, num_components]: True where the component's name is in `names`."""
    names = set(names)
    out = np.zeros((layout.num_blocks, layout.num_components), bool)
    for b in range(layout.num_blocks):
        out[b] = [c in names for c in layout.component_names(b)]
    return out


def no_cache(layout: BlockLayout, num_steps: int) -> CacheSchedule:
    """Recompute every component at every step."""
    return CacheSchedule.full(layout, num_steps)


def fora(layout: BlockLayout, num_steps: int, n: int) -> CacheSchedule:
    """FORA (Selvaraju et al. 2024): recompute everything at steps 0, n, 2n, ...; reuse otherwise."""
    return CacheSchedule.from_step_mask(layout, _every(num_steps, n))


def component_fora(layout: BlockLayout, num_steps: int, n: int, cached: Iterable[str]) -> CacheSchedule:
    """FORA on the components named in `cached` only; every other component recomputes every step."""
    cached = tuple(cached)
    selected = _component_mask(layout, cached)
    if not selected.any():
        raise ValueError(f"none of {cached} is a component of {layout}")
    steps = _every(num_steps, n)
    mask = np.where(selected[None], steps[:, None, None], True)
    return CacheSchedule(mask, layout)


def delta_dit(layout: BlockLayout, num_steps: int, boundary: int, num_cached_blocks: int | None = None,
              interval: int = 2) -> CacheSchedule:
    """Delta-DiT (Chen et al. 2024): before step `boundary` cache the last `num_cached_blocks`
    blocks, from `boundary` on cache the first ones; cached blocks recompute every `interval` steps.

    Default `num_cached_blocks`: a third of the blocks (blocks are counted across groups).
    """
    nb = layout.num_blocks
    k = max(1, nb // 3) if num_cached_blocks is None else num_cached_blocks
    if not 0 < k <= nb:
        raise ValueError(f"num_cached_blocks must be in [1, {nb}], got {k}")
    steps = np.arange(num_steps)
    recompute_slot = _every(num_steps, interval)
    mask = np.ones((num_steps, nb, layout.num_components), bool)
    early, late = steps < boundary, steps >= boundary
    mask[early, nb - k:, :] = recompute_slot[early, None, None]
    mask[late, :k, :] = recompute_slot[late, None, None]
    mask[0] = True
    return CacheSchedule(mask, layout)


def tgate(layout: BlockLayout, num_steps: int, gate_step: int,
          cross_attention: Iterable[str] = CROSS_ATTENTION_COMPONENTS) -> CacheSchedule:
    """T-GATE (Zhang et al. 2024): cross-attention recomputes before `gate_step`, then is reused."""
    selected = _component_mask(layout, cross_attention)
    if not selected.any():
        raise ValueError(
            f"T-GATE needs a separate cross-attention component ({', '.join(cross_attention)}); "
            f"{layout} has none (joint attention mixes text and image)"
        )
    if gate_step < 1:
        raise ValueError("gate_step must be >= 1: step 0 computes the cross-attention that is reused")
    steps = np.arange(num_steps) < gate_step
    mask = np.where(selected[None], steps[:, None, None], True)
    return CacheSchedule(mask, layout)


def heuristic_suite(layout: BlockLayout, num_steps: int) -> dict[str, CacheSchedule]:
    """Named baselines for seeding the search and for comparison.

    Names: "no-cache", "fora-{n}" (n = 2..10, n < num_steps), "fora-{n}-{component}" (n = 2, 3, 4:
    only that component name is cached), "delta-dit-b{b}" (boundary at 1/4, 1/2, 3/4 of the steps),
    "tgate-{k}" (gate at 1/4, 1/2, 3/4; only for layouts with cross-attention).
    Duplicates (the same mask under two names) are kept once, under the first name.
    """
    suite: dict[str, CacheSchedule] = {"no-cache": no_cache(layout, num_steps)}
    for n in range(2, 11):
        if n < num_steps:
            suite[f"fora-{n}"] = fora(layout, num_steps, n)
    names = dict.fromkeys(c for g in layout.groups for c in g.components)
    for n in (2, 3, 4):
        if n < num_steps:
            for c in names:
                suite[f"fora-{n}-{c}"] = component_fora(layout, num_steps, n, [c])
    fractions = sorted({max(1, round(num_steps * f)) for f in (0.25, 0.5, 0.75)})
    for b in fractions:
        suite[f"delta-dit-b{b}"] = delta_dit(layout, num_steps, b)
    if _component_mask(layout, CROSS_ATTENTION_COMPONENTS).any():
        for k in fractions:
            suite[f"tgate-{k}"] = tgate(layout, num_steps, k)
    unique: dict[str, CacheSchedule] = {}
    seen = set()
    for name, schedule in suite.items():
        if schedule.hash not in seen:
            seen.add(schedule.hash)
            unique[name] = schedule
    return unique
