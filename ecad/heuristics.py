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
- `taylorseer`: TaylorSeer-like, Liu et al. 2025, "From Reusing to Forecasting: Accelerating
  Diffusion Models with TaylorSeers" (arXiv:2503.06923), order 1: FORA's recompute steps, and in
  between every component is forecast from its last two recomputed outputs instead of reused.
  From step `cutoff` on everything is recomputed: on the bundled model order-1 errors feed back
  from step ~13 at guidance 4.5 (27.0 dB everywhere, 44.7 dB with the last six steps computed).
- `block_skip`: block-level FirstBlockCache-like pattern (diffusers' FirstBlockCache, cache-dit's
  DBCache skip whole blocks and replay their residual): every `n` steps all blocks run; in between
  the first `leading_blocks` blocks run and the others are skipped. Static, not thresholded.
  With `early_skip` = k it follows what FirstBlockCache actually does on the bundled model: its
  first-block test finds steps 1..k close enough to skip on every calibration prompt, then
  alternates; the last step always runs. Recorded decisions at
  threshold 0.15 (8 prompts x 2 seeds) were one pattern, `block_skip(n=2, early_skip=3)`, whose
  static schedule has the same held-out PSNR (`scripts/fbc_pattern.py`); with `leading_blocks=0`
  no block runs on a skipped step.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .schedule import FORECAST, BlockLayout, CacheSchedule

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


def taylorseer(layout: BlockLayout, num_steps: int, n: int, cutoff: int | None = None) -> CacheSchedule:
    """FORA n + order-1 forecast in between; every step from `cutoff` on recomputes (None: none).

    A forecast needs two recomputed outputs, so between steps 0 and n the components are reused.
    """
    steps = _every(num_steps, n)
    if cutoff is not None:
        steps |= np.arange(num_steps) >= cutoff
    actions = np.where(steps, 1, FORECAST)[:, None, None].astype(np.int8)
    actions = np.broadcast_to(actions, (num_steps, layout.num_blocks, layout.num_components))
    return CacheSchedule.repaired(actions, layout)


def block_skip(layout: BlockLayout, num_steps: int, n: int, leading_blocks: int = 1,
               early_skip: int = 0) -> CacheSchedule:
    """Every `n` steps run all blocks; in between run the first `leading_blocks`, skip the rest.

    `early_skip` = k > 0: steps 1..k skip, then all blocks run at steps k+1, k+1+n, ... and at
    the last step.
    """
    if not 0 <= leading_blocks < layout.num_blocks:
        raise ValueError(f"leading_blocks must be in [0, {layout.num_blocks - 1}], got {leading_blocks}")
    if not 0 <= early_skip < num_steps - 1:
        raise ValueError(f"early_skip must be in [0, {num_steps - 2}], got {early_skip}")
    if early_skip:
        runs = np.zeros(num_steps, bool)
        runs[[0, num_steps - 1]] = True
        runs[early_skip + 1 :: n] = True
    else:
        runs = _every(num_steps, n)
    skip = np.zeros((num_steps, layout.num_blocks), bool)
    skip[:, leading_blocks:] = ~runs[:, None]
    ones = np.ones((num_steps, layout.num_blocks, layout.num_components), np.int8)
    return CacheSchedule.from_actions(ones, layout, skip)


def heuristic_suite(layout: BlockLayout, num_steps: int, *, actions: bool = True) -> dict[str, CacheSchedule]:
    """Named baselines for seeding the search and for comparison.

    Names: "no-cache", "fora-{n}" (n = 2..10, n < num_steps), "fora-{n}-{component}" (n = 2, 3, 4:
    only that component name is cached), "delta-dit-b{b}" (boundary at 1/4, 1/2, 3/4 of the steps),
    "tgate-{k}" (gate at 1/4, 1/2, 3/4; only for layouts with cross-attention); with `actions`
    (forecast and skip-block, format v2): "taylorseer-{n}" and "taylorseer-{n}-c{cutoff}" (n = 2,
    3, 4; cutoff at 0.7 of the steps), "block-skip-{n}" (n = 2, 3, 4; the first block always runs),
    "block-skip-{n}-e{k}" and "block-skip-{n}-e{k}-all" (n = 2, 3; the first k = 0.15, 0.2 and 0.25 of
    the steps skipped; "-all": no block runs on a skipped step).
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
    if actions:
        cutoff = round(0.7 * num_steps)
        for n in (2, 3, 4):
            if n < num_steps:
                suite[f"taylorseer-{n}"] = taylorseer(layout, num_steps, n)
                if n < cutoff < num_steps:
                    suite[f"taylorseer-{n}-c{cutoff}"] = taylorseer(layout, num_steps, n, cutoff)
                if layout.num_blocks > 1:
                    suite[f"block-skip-{n}"] = block_skip(layout, num_steps, n)
        early = sorted({round(num_steps * f) for f in (0.15, 0.2, 0.25)} & set(range(1, num_steps - 2)))
        for n in (2, 3):
            for k in early:
                if layout.num_blocks > 1:
                    suite[f"block-skip-{n}-e{k}"] = block_skip(layout, num_steps, n, early_skip=k)
                suite[f"block-skip-{n}-e{k}-all"] = block_skip(layout, num_steps, n, 0, early_skip=k)
    unique: dict[str, CacheSchedule] = {}
    seen = set()
    for name, schedule in suite.items():
        if schedule.hash not in seen:
            seen.add(schedule.hash)
            unique[name] = schedule
    return unique
