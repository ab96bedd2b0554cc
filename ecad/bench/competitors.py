"""Every caching method of the benchmark behind one interface: ``enable(pipe, knob)`` / ``disable(pipe)``.

A `Method` is a family with one main knob (FORA's interval, a threshold, a bank entry id); each
knob value is one point of the family's speed/quality curve. Families:

- ``no-cache``: the reference.
- ``ecad``: the bank's front (schedules through our engine, `ecad.hooks`), prefiltered by the
  entries' stored validation scores (`ecad.bench.tuning.prefilter`); at another setting also
  ``ecad-transfer`` (a bank made elsewhere moved by noise level, `ecad.transfer.transfer_bank`)
  and ``ecad-resampled`` (the same bank resampled by nearest step index, what the server did).
- ``fewer-steps``: no caching, fewer denoising steps (every n from 4 to steps - 1).
- Heuristic schedules through our engine (`ecad.heuristics`): ``fora`` (n), ``fora-attn1`` /
  ``fora-attn2`` / ``fora-ff`` (component-wise FORA, n), ``delta-dit`` (boundary step),
  ``tgate`` (gate step).
- Competitors through their own APIs:
  ``cache-dit-dbcache``, ``cache-dit-dbcache-taylorseer``, ``cache-dit-dbprune``
  (``cache_dit.enable_cache(pipe, cache_config=...)``, which patches the pipeline as shipped), and
  diffusers' built-in caches ``diffusers-fbcache`` (FirstBlockCacheConfig), ``diffusers-taylorseer``
  (TaylorSeerCacheConfig), ``diffusers-pab`` (PyramidAttentionBroadcastConfig),
  ``diffusers-fastercache`` (FasterCacheConfig), ``diffusers-magcache`` (MagCacheConfig, ratios
  calibrated on the calibration prompts with diffusers' own ``calibrate=True`` mode), applied with
  diffusers' ``apply_*`` functions and hook names, exactly what ``CacheMixin.enable_cache`` /
  ``disable_cache`` run for models that have the mixin (PixArt's transformer does not).

The shim. diffusers' caches read a *cache context* that a pipeline sets around every denoiser call
(``with transformer.cache_context("cond"): ...``), PAB/FasterCache read the current timestep from a
callback (``pipe.current_timestep``), and their state must be reset between pipeline calls. The
PixArt pipelines (diffusers 0.42) do none of this, so as shipped FirstBlockCache and MagCache... raise
"No cache context is set". `CacheContextShim` is a transformer-level diffusers ``ModelHook`` that,
before each transformer call, resets the cache hooks at the first step of a pipeline call, sets a
``CacheContext("cond", step_index=..., num_inference_steps=..., timestep=...)`` on every cache hook,
and records the timestep for the callbacks; nothing else about the method changes. The report says
which points ran through it, and `as_shipped_error` records what each diffusers cache does without it.

Peak cache memory: `tensor_bytes` walks the objects a method keeps its state in (hook objects and
their ``StateManager`` states, cache-dit's context manager, our engine's state) and sums the bytes
of the distinct tensor storages reachable from them, skipping modules (weights) and pipelines.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import types
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from ecad.adapters import get_adapter
from ecad import heuristics
from ecad.heuristics import heuristic_suite
from ecad.hooks import StepClock, apply_cache_schedule, get_cache_handle, remove_cache_schedule
from ecad.schedule import CacheSchedule
from ecad.setting import Setting

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")

SHIM_HOOK = "ecad_bench_cache_context_shim"

KIND_ORDER = ("reference", "ecad", "baseline", "heuristic", "competitor")


def intervals(steps: int, at_20: Iterable[int] = (2, 3, 4)) -> list[int]:
    """A knob's step intervals at ``steps`` steps, as fine as ``at_20`` is at 20: those values, plus
    the same fractions of the run (so 2, 3, 4 at 20 steps become 2, 3, 4, 5, 8, 10 at 50, where
    steps are closer in noise and longer reuses pay)."""
    at_20 = list(at_20)
    scaled = {max(2, round(n * steps / 20)) for n in at_20}
    return sorted(n for n in set(at_20) | scaled if 2 <= n < steps)
FEWER_STEPS_FROM = 4


class Method:
    """A caching method family; ``knobs`` are the values of its main knob (one curve point each)."""

    family: str = ""
    kind: str = "competitor"  # reference | ecad | heuristic | competitor
    api: str = ""
    knob_name: str = ""
    uses_shim: bool = False
    #: the knob is a threshold (a float; larger caches more): `ecad.bench.tuning` bisects it
    continuous: bool = False
    #: its decisions depend on the whole batch (a threshold on a statistic over the batch), so an
    #: image comes out differently at batch 1 than at batch 8: the runner scores (and bisects) it
    #: again at every smaller timing batch size
    batch_dependent: bool = False

    def __init__(self, knobs: Iterable[Any] = ()):
        self.knobs = list(knobs)

    def label(self, knob: Any) -> str:
        return f"{self.family}:{knob_text(knob)}"

    def prepare(self, pipe: Any, setting: Setting, run: Callable[[], Any]) -> None:
        """One-off preparation before the sweep (e.g. MagCache calibration); `run()` makes images."""

    def enable(self, pipe: Any, knob: Any) -> None:
        raise NotImplementedError

    def disable(self, pipe: Any) -> None:
        raise NotImplementedError

    def state_roots(self, pipe: Any) -> list[Any]:
        """Objects holding the method's cached tensors (for `tensor_bytes`)."""
        return []

    def schedule(self, knob: Any) -> CacheSchedule | None:
        """The static schedule of a point, when the method has one (MACs are then analytic too)."""
        return None

    def setting_for(self, setting: Setting, knob: Any) -> Setting:
        """The setting a point renders at (fewer steps change it; caches do not)."""
        return setting

    def analytic_macs(self, pipe: Any, setting: Setting, knob: Any) -> int | None:
        """MACs of one image by `ecad.cost.image_macs`, for a point whose work is fixed in advance
        (a schedule, fewer steps); None for methods that decide per input."""
        schedule = self.schedule(knob)
        if schedule is None:
            return None
        from ecad.cost import image_macs

        return image_macs(pipe, self.setting_for(setting, knob), schedule)

    def describe(self) -> dict:
        return {"family": self.family, "kind": self.kind, "api": self.api, "knob": self.knob_name,
                "uses_shim": self.uses_shim}


def knob_text(knob: Any) -> str:
    """A knob as it reads in labels: ``0.13``, ``4``, ``interval=2,order=1,full_from=14``."""
    if hasattr(knob, "_asdict"):
        return ",".join(f"{k}={'-' if v is None else v}" for k, v in knob._asdict().items())
    if isinstance(knob, float):
        return f"{knob:g}"
    return str(knob)


class TaylorSeerKnob(NamedTuple):
    interval: int  # full computation every `interval` steps in between
    order: int  # 0: reuse the last output; 1: first-order Taylor extrapolation
    full_from: int | None  # full computation from this step on (diffusers' disable_cache_after_step)


class PabKnob(NamedTuple):
    spatial: int | None  # self-attention recomputed every `spatial` steps (None: never reused)
    cross: int | None  # cross-attention recomputed every `cross` steps


class FasterCacheKnob(NamedTuple):
    spatial: int  # self-attention recomputed every `spatial` steps
    uncond_every: int  # unconditional branch computed every `uncond_every` steps
    uncond_until: int  # ... skipped only below this timestep (diffusers' unconditional_batch_timestep_skip_range)


# -- our engine ---------------------------------------------------------------------------------


class ScheduleMethod(Method):
    """Named `CacheSchedule`s applied with `ecad.hooks.apply_cache_schedule`."""

    api = "ecad engine (ecad.hooks)"

    def __init__(self, family: str, kind: str, schedules: dict[str, CacheSchedule], knob_name: str = "schedule"):
        super().__init__(list(schedules))
        self.family, self.kind, self.knob_name = family, kind, knob_name
        self.schedules = dict(schedules)
        self.sources: dict[str, str] = {}  # a bank family: entry id -> the entry's source ("ecad", "heuristic")
        self.candidates: int | None = None  # a bank family: entries before the prefilter

    def describe(self) -> dict:
        return {**super().describe(), **({"bank_entries": self.candidates} if self.candidates is not None else {})}

    def label(self, knob: Any) -> str:
        return f"{self.family}:{knob}" if self.kind == "ecad" else str(knob)

    def schedule(self, knob: Any) -> CacheSchedule:
        return self.schedules[knob]

    def enable(self, pipe, knob):
        schedule = self.schedules[knob]
        if schedule.mask.all():
            return  # the reference runs the unmodified pipeline
        apply_cache_schedule(pipe, schedule)

    def disable(self, pipe):
        remove_cache_schedule(pipe)

    def state_roots(self, pipe):
        handle = get_cache_handle(pipe)
        return [handle._state] if handle is not None else []


def engine_methods(layout, num_steps: int, *, fora_range: Iterable[int] | None = None,
                   component_range: Iterable[int] | None = None) -> list[Method]:
    """No-cache plus the heuristic families of `ecad.heuristics.heuristic_suite`, by family.

    FORA runs at every n from 2 to the number of steps unless ``fora_range`` says otherwise;
    component-wise FORA and static block skipping at `intervals(num_steps)` (2, 3, 4 at 20 steps)."""
    suite = heuristic_suite(layout, num_steps)
    component_range = intervals(num_steps) if component_range is None else component_range
    methods: list[Method] = [ScheduleMethod("no-cache", "reference", {"no-cache": suite["no-cache"]})]
    fora_range = range(2, num_steps) if fora_range is None else fora_range
    fora = {f"fora-{n}": heuristics.fora(layout, num_steps, n) for n in fora_range if 2 <= n < num_steps}
    methods.append(ScheduleMethod("fora", "heuristic", fora, "n (recompute every n steps)"))
    components = dict.fromkeys(c for g in layout.groups for c in g.components)
    for c in components:
        sched = {f"fora-{n}-{c}": heuristics.component_fora(layout, num_steps, n, [c])
                 for n in component_range if 2 <= n < num_steps}
        if sched:
            methods.append(ScheduleMethod(f"fora-{c}", "heuristic", sched, f"n (only {c} cached)"))
    delta = {k: v for k, v in suite.items() if k.startswith("delta-dit-")}
    if delta:
        methods.append(ScheduleMethod("delta-dit", "heuristic", delta, "boundary step"))
    tg = {k: v for k, v in suite.items() if k.startswith("tgate-")}
    if tg:
        methods.append(ScheduleMethod("tgate", "heuristic", tg, "gate step"))
    skip = {k: v for k, v in suite.items() if k.startswith("block-skip-")}
    if skip and layout.num_blocks > 1:  # the suite's periods are 2, 3, 4: longer ones at more steps
        skip |= {f"block-skip-{n}": heuristics.block_skip(layout, num_steps, n)
                 for n in intervals(num_steps) if f"block-skip-{n}" not in skip}
    if skip:  # static whole-block skipping, FirstBlockCache's pattern without its threshold
        methods.append(ScheduleMethod("block-skip", "heuristic", skip, "period n, early steps skipped, blocks kept"))
    return methods


class FewerSteps(Method):
    """No caching, fewer denoising steps: the baseline a user tries first. Its images are judged
    against the no-cache images at the benchmark's own step count (same prompt and seed)."""

    family, kind, api, knob_name = "fewer-steps", "baseline", "the pipeline's num_inference_steps", "steps"

    def label(self, knob: Any) -> str:
        return f"steps-{knob}"

    def setting_for(self, setting: Setting, knob: Any) -> Setting:
        return setting.with_changes(num_inference_steps=int(knob))

    def analytic_macs(self, pipe: Any, setting: Setting, knob: Any) -> int:
        from ecad.cost import image_macs

        return image_macs(pipe, self.setting_for(setting, knob))

    def enable(self, pipe, knob):
        pass

    def disable(self, pipe):
        pass


def fewer_steps_method(num_steps: int) -> FewerSteps:
    return FewerSteps(range(FEWER_STEPS_FROM, num_steps))


#: the bank families: the bank made for the setting, and a bank made for another one moved here
BANK_FAMILIES = {"bank": "ecad", "transfer": "ecad-transfer", "resampled": "ecad-resampled"}


def bank_method(bank, pipe: Any, setting: Setting, bars, *, how: str = "bank", reward_metric: str | None = None,
                speed_model: Callable[[CacheSchedule], float] | None = None, per_bar: int | None = None,
                transfer_quality: Any = None, log: Callable[[str], None] = lambda message: None) -> ScheduleMethod:
    """A bank's entries as one family, moved to `setting` (``how``: "bank" = made for it, as is;
    "transfer" by noise level, `ecad.transfer.transfer_bank`; "resampled" by nearest step index,
    invalid results dropped), prefiltered per bar by their stored scores (`tuning.prefilter`).

    Speed for the prefilter: `speed_model(schedule)` if given, else MACs at `setting`. `per_bar`
    None keeps every entry (no prefilter). A moved entry's stored scores are its source's; with
    ``transfer_quality`` (the model's `ecad.transfer.TransferQualityModel`, what the server states
    off a bank's setting) the noise-level transfers are prefiltered by its estimate at `setting`
    instead: at fewer steps the source's fastest entries near a bar fall far below it."""
    from ecad.bench.tuning import PREFILTER_PER_BAR, Candidate, prefilter, stored_scores
    from ecad.cost import image_macs
    from ecad.schedule import ScheduleError

    if how not in BANK_FAMILIES:
        raise ValueError(f"how must be one of {sorted(BANK_FAMILIES)}, got {how!r}")
    if how == "bank" and bank.setting != setting:
        raise ValueError(f"the bank is made for {bank.setting}, the benchmark runs {setting}: "
                         "pass it as the source bank (transfer, resampled)")
    no_cache = bank.no_cache_entry()
    moved = {"bank": bank, "transfer": None, "resampled": None}[how]
    if how == "transfer":
        from ecad.transfer import transfer_bank

        moved = transfer_bank(bank, pipe, setting)
    schedules: dict[str, CacheSchedule] = {}
    source_id: dict[str, str] = {}  # a moved entry's id -> the source entry's (its provenance names it)
    dropped = 0
    for entry in (moved or bank).entries:
        source_id[entry.id] = entry.provenance.name if moved is not bank and entry.provenance else entry.id
        schedule = entry.cache_schedule()
        if how == "resampled":
            schedule = schedule.resample(setting.num_inference_steps)
            try:
                schedule.validate()
            except ScheduleError:
                dropped += 1  # e.g. a forecast that lost an earlier recompute: it cannot run
                continue
        if schedule.mask.all() or schedule.hash in {s.hash for s in schedules.values()}:
            continue
        schedules[entry.id] = schedule
    if dropped:
        log(f"{BANK_FAMILIES[how]}: {dropped} resampled entries are not valid schedules and were dropped")
    base = image_macs(pipe, setting)

    def speed(schedule: CacheSchedule) -> float:
        return float(speed_model(schedule)) if speed_model is not None else base / image_macs(pipe, setting, schedule)

    entries = {e.id: e for e in bank.entries}  # stored scores: the source's, for a moved bank
    stored = {i: stored_scores(entries[source_id[i]], no_cache, reward_metric) for i in schedules}
    if how == "transfer" and transfer_quality is not None:
        source_steps, steps = bank.num_inference_steps, setting.num_inference_steps
        stored = {i: {m: transfer_quality.estimate(m, v, steps, source_steps)[0] if m in transfer_quality.fits else v
                      for m, v in scores.items()} for i, scores in stored.items()}
        log(f"{BANK_FAMILIES[how]}: prefiltered by the transfer model's estimate at {steps} steps")
    candidates = [Candidate(i, sched, stored[i].get("psnr"), stored[i].get("reward_rel"), speed(sched))
                  for i, sched in schedules.items()]
    kept = candidates if per_bar is None else prefilter(candidates, bars, per_bar=per_bar or PREFILTER_PER_BAR)
    method = ScheduleMethod(BANK_FAMILIES[how], "ecad", {c.id: c.schedule for c in kept}, "bank entry")
    method.sources = {c.id: entries[source_id[c.id]].source for c in kept}
    method.candidates = len(candidates)
    return method


# -- the cache-context shim for diffusers' built-in caches ----------------------------------------


class CacheContextShim(ModelHook):
    """Transformer hook: reset cache hooks per pipeline call, set a cache context per step.

    Registered last, so it is the outermost hook on the transformer (FasterCache's denoiser hook,
    if any, runs inside it and sees the timestep it recorded). Steps come from the engine's
    `StepClock`, so the shim and the engine agree on what a step and a pipeline call are.
    """

    _is_stateful = False  # it resets the others; `reset_stateful_hooks` must not touch it

    def __init__(self, pipe: Any):
        super().__init__()
        self._pipe = weakref.ref(pipe)
        self.clock = StepClock(pipe)
        self.current_timestep: float | None = None
        self.calls = 0

    def initialize_hook(self, module):
        self.clock.bind(module)
        return module

    def new_forward(self, module, *args, **kwargs):
        from diffusers.hooks.hooks import CacheContext, _set_cache_context

        tick = self.clock.tick(args, kwargs)
        if tick.new_call:  # forget the previous pipeline call's cache state
            HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks(recurse=True)
        self.current_timestep = self.clock.timestep(args, kwargs)
        self.calls += 1
        num_steps = len(self._pipe().scheduler.timesteps)
        _set_cache_context(module, CacheContext(
            "cond", step_index=tick.step, num_inference_steps=num_steps, timestep=self.current_timestep))
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            _set_cache_context(module, None)


def _shim(pipe) -> CacheContextShim | None:
    registry = getattr(pipe.transformer, "_diffusers_hook", None)
    return registry.get_hook(SHIM_HOOK) if registry is not None else None


def install_shim(pipe) -> CacheContextShim:
    from diffusers.hooks import HookRegistry

    shim = CacheContextShim(pipe)
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    registry.register_hook(shim, SHIM_HOOK)
    registry.invalidate_child_registries_cache()
    return shim


def remove_shim(pipe) -> None:
    registry = getattr(pipe.transformer, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(SHIM_HOOK) is not None:
        registry.remove_hook(SHIM_HOOK, recurse=False)
        registry.invalidate_child_registries_cache()


# -- diffusers' built-in caches -----------------------------------------------------------------


class DiffusersCache(Method):
    """A diffusers cache config applied with diffusers' own `CacheMixin.enable_cache` code."""

    kind = "competitor"

    def __init__(self, family: str, knob_name: str, knobs, make_config: Callable[[Any, "DiffusersCache"], Any],
                 *, shim: bool = True, setting: Setting | None = None):
        super().__init__(knobs)
        self.family, self.knob_name = family, knob_name
        self.make_config = make_config
        self.uses_shim = shim
        self.setting = setting
        self.api = "diffusers.hooks.apply_* (CacheMixin.enable_cache code)" + (" + ecad cache-context shim" if shim else " (as shipped)")
        self.extra: dict[str, Any] = {}

    def timestep(self) -> float:
        shim = self._current_shim
        if shim is None or shim.current_timestep is None:
            pipe_t = getattr(self._current_pipe, "current_timestep", None) if self._current_pipe else None
            if pipe_t is None:
                raise AttributeError(
                    f"{type(self._current_pipe).__name__} has no current_timestep (needed by the timestep callback)")
            return float(pipe_t)
        return shim.current_timestep

    _current_shim: CacheContextShim | None = None
    _current_pipe: Any = None

    def enable(self, pipe, knob):
        self._current_pipe = pipe
        config = self.make_config(knob, self)
        remove_diffusers_cache(pipe.transformer)
        apply_diffusers_cache(pipe.transformer, config)
        self._current_shim = install_shim(pipe) if self.uses_shim else None

    def disable(self, pipe):
        remove_shim(pipe)
        remove_diffusers_cache(pipe.transformer)
        self._current_shim = None

    def state_roots(self, pipe):
        roots = []
        for module in pipe.transformer.modules():
            registry = getattr(module, "_diffusers_hook", None)
            if registry is None:
                continue
            roots.extend(hook for name, hook in registry.hooks.items() if name != SHIM_HOOK)
        return roots


def _diffusers_cache_table():
    """config class -> (diffusers' apply function, hook names), as in diffusers' `CacheMixin`."""
    from diffusers import hooks as h
    from diffusers.hooks import faster_cache, first_block_cache, mag_cache, pyramid_attention_broadcast, taylorseer_cache

    return {
        h.FirstBlockCacheConfig: (h.apply_first_block_cache, (first_block_cache._FBC_LEADER_BLOCK_HOOK,
                                                              first_block_cache._FBC_BLOCK_HOOK)),
        h.TaylorSeerCacheConfig: (h.apply_taylorseer_cache, (taylorseer_cache._TAYLORSEER_CACHE_HOOK,)),
        h.PyramidAttentionBroadcastConfig: (h.apply_pyramid_attention_broadcast,
                                            (pyramid_attention_broadcast._PYRAMID_ATTENTION_BROADCAST_HOOK,)),
        h.FasterCacheConfig: (h.apply_faster_cache, (faster_cache._FASTER_CACHE_DENOISER_HOOK,
                                                     faster_cache._FASTER_CACHE_BLOCK_HOOK)),
        h.MagCacheConfig: (h.apply_mag_cache, (mag_cache._MAG_CACHE_LEADER_BLOCK_HOOK, mag_cache._MAG_CACHE_BLOCK_HOOK)),
    }


_APPLIED_ATTR = "_ecad_bench_diffusers_cache"


def apply_diffusers_cache(transformer: nn.Module, config: Any) -> None:
    """What `CacheMixin.enable_cache` does, for transformers without the mixin (PixArt)."""
    from diffusers.hooks import HookRegistry

    table = _diffusers_cache_table()
    if type(config) not in table:
        raise ValueError(f"unsupported diffusers cache config {type(config).__name__}")
    apply, _ = table[type(config)]
    apply(transformer, config)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    setattr(transformer, _APPLIED_ATTR, config)


def remove_diffusers_cache(transformer: nn.Module) -> None:
    """What `CacheMixin.disable_cache` does (no-op when nothing is applied)."""
    from diffusers.hooks import HookRegistry

    config = getattr(transformer, _APPLIED_ATTR, None)
    if config is None:
        return
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    for name in _diffusers_cache_table()[type(config)][1]:
        registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()
    delattr(transformer, _APPLIED_ATTR)


PIXART_COMPONENT_PATTERN = r"transformer_blocks\.\d+\.(attn1|attn2|ff)"


def _fbc(knob, m):
    from diffusers.hooks import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=float(knob))


def _taylorseer(knob: TaylorSeerKnob, m):
    from diffusers.hooks import TaylorSeerCacheConfig

    # The default module pattern ("^transformer_blocks.*attn", fullmatch) matches no PixArt module
    # (attn1/attn2): name the cached components explicitly, as TaylorSeer caches attention and MLP.
    return TaylorSeerCacheConfig(cache_interval=knob.interval, disable_cache_before_step=3,
                                 disable_cache_after_step=knob.full_from, max_order=knob.order,
                                 taylor_factors_dtype=torch.float32, cache_identifiers=[PIXART_COMPONENT_PATTERN])


def _pab(knob: PabKnob, m):
    from diffusers.hooks import PyramidAttentionBroadcastConfig

    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=knob.spatial, cross_attention_block_skip_range=knob.cross,
        spatial_attention_timestep_skip_range=(100, 800), cross_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=m.timestep)


def _fastercache(knob: FasterCacheKnob, m):
    from diffusers.hooks import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=knob.spatial, spatial_attention_timestep_skip_range=(-1, 681),
        unconditional_batch_skip_range=knob.uncond_every, unconditional_batch_timestep_skip_range=(-1, knob.uncond_until),
        current_timestep_callback=m.timestep, attention_weight_callback=lambda _: 0.3,
        tensor_format="BCHW", is_guidance_distilled=False)


def _magcache(knob, m):
    from diffusers.hooks import MagCacheConfig

    steps = m.setting.num_inference_steps if m.setting else 20
    ratios = m.extra.get("mag_ratios")
    if ratios is None:
        raise RuntimeError("MagCache has no calibrated mag_ratios (its calibration run failed)")
    return MagCacheConfig(threshold=float(knob), max_skip_steps=3, retention_ratio=0.2,
                          num_inference_steps=steps, mag_ratios=list(ratios))


class MagCacheMethod(DiffusersCache):
    """MagCache; `prepare` runs diffusers' calibration mode once and keeps the ratios it computes."""

    def prepare(self, pipe, setting, run):
        from diffusers.hooks import MagCacheConfig
        from diffusers.hooks.mag_cache import MagCacheBlockHook

        ratios: list[float] = []
        apply_diffusers_cache(pipe.transformer, MagCacheConfig(calibrate=True, num_inference_steps=setting.num_inference_steps))
        shim = install_shim(pipe) if self.uses_shim else None
        try:
            for module in pipe.transformer.modules():
                registry = getattr(module, "_diffusers_hook", None)
                for hook in (registry.hooks.values() if registry is not None else ()):
                    if isinstance(hook, MagCacheBlockHook) and hook.is_tail:
                        original = hook._perform_calibration_step

                        def record(state, residual, _original=original):
                            _original(state, residual)
                            ratios.append(state.calibration_ratios[-1])

                        hook._perform_calibration_step = record
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # diffusers prints the ratios
                run()
        finally:
            if shim is not None:
                remove_shim(pipe)
            remove_diffusers_cache(pipe.transformer)
        steps = setting.num_inference_steps
        if len(ratios) < steps:
            raise RuntimeError(f"MagCache calibration recorded {len(ratios)} ratios for {steps} steps")
        self.extra["mag_ratios"] = [float(r) for r in ratios[:steps]]


def taylorseer_knobs(steps: int, quick: bool = False) -> list[TaylorSeerKnob]:
    """Order 0/1 x interval x late-step cutoff (full computation from a fraction of the steps on:
    at guidance 4.5 order 1 drifts after step ~13 of 20, so a cutoff is what makes it usable)."""
    cutoffs = [None] + sorted({round(steps * f) for f in ((0.7,) if quick else (0.6, 0.7, 0.8))})
    every = (2, 3) if quick else intervals(steps)
    return [TaylorSeerKnob(i, o, c) for o in (0, 1) for i in every for c in cutoffs if c is None or 3 < c < steps]


def pab_knobs(quick: bool = False, steps: int = 20) -> list[PabKnob]:
    """Equal intervals, cross-attention at twice the self-attention interval (the paper's pyramid),
    and each attention reused alone."""
    ranges = (2, 4) if quick else intervals(steps)
    knobs = [PabKnob(n, n) for n in ranges] + [PabKnob(n, 2 * n) for n in ranges]
    knobs += [PabKnob(n, None) for n in ranges] + [PabKnob(None, n) for n in ranges]
    return list(dict.fromkeys(knobs))


def fastercache_knobs(quick: bool = False, steps: int = 20) -> list[FasterCacheKnob]:
    """Self-attention interval x the unconditional branch's cache: computed every 2, 3 or 5 steps,
    skipped only below timestep 641 (diffusers' default) or below 381 (late steps only).

    FasterCache reuses attention only on the steps where it skips the unconditional branch (its
    cache holds the conditional half), so "uncond every 1 step" would be no caching at all."""
    spatial = intervals(steps, (2, 3))
    uncond = ((2, 641), (3, 381)) if quick else [(u, until) for u in intervals(steps, (2, 3, 5)) for until in (641, 381)]
    return [FasterCacheKnob(s, u, until) for s in spatial for u, until in uncond]


FBC_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7)
MAGCACHE_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def diffusers_methods(setting: Setting, *, shim: bool = True, quick: bool = False) -> list[Method]:
    """diffusers' caches with their real knobs; thresholds are bisected later (`continuous`)."""
    steps = setting.num_inference_steps
    fbc = DiffusersCache("diffusers-fbcache", "threshold", FBC_THRESHOLDS[1::2] if quick else FBC_THRESHOLDS,
                         _fbc, shim=shim, setting=setting)
    mag = MagCacheMethod("diffusers-magcache", "threshold", MAGCACHE_THRESHOLDS[1::2] if quick else MAGCACHE_THRESHOLDS,
                         _magcache, shim=shim, setting=setting)
    fbc.continuous = mag.continuous = True
    fbc.batch_dependent = mag.batch_dependent = True  # both threshold a change averaged over the batch
    return [
        fbc,
        DiffusersCache("diffusers-taylorseer", "interval, order, full computation from step", taylorseer_knobs(steps, quick),
                       _taylorseer, shim=shim, setting=setting),
        DiffusersCache("diffusers-pab", "self-attention interval, cross-attention interval", pab_knobs(quick, steps),
                       _pab, shim=shim, setting=setting),
        DiffusersCache("diffusers-fastercache", "self-attention interval, uncond. every, uncond. until timestep",
                       fastercache_knobs(quick, steps), _fastercache, shim=shim, setting=setting),
        mag,
    ]


# -- cache-dit ----------------------------------------------------------------------------------


class CacheDitMethod(Method):
    """``cache_dit.enable_cache(pipe, cache_config=...)`` as shipped (it patches the pipeline class)."""

    kind = "competitor"
    api = "cache_dit.enable_cache (as shipped)"
    continuous = True  # every family here is a residual-difference threshold
    batch_dependent = True  # ... over the whole batch

    def __init__(self, family: str, knob_name: str, knobs, make: Callable[[Any], dict], setting: Setting):
        super().__init__(knobs)
        self.family, self.knob_name, self.make, self.setting = family, knob_name, make, setting

    def enable(self, pipe, knob):
        import cache_dit

        _quiet_cache_dit()
        cache_dit.enable_cache(pipe, **self.make(knob))

    def disable(self, pipe):
        import cache_dit

        if getattr(pipe, "_context_manager", None) is not None or getattr(pipe.transformer, "_context_manager", None) is not None:
            cache_dit.disable_cache(pipe)

    def state_roots(self, pipe):
        return [obj for obj in (getattr(pipe, "_context_manager", None),
                                getattr(pipe.transformer, "_context_manager", None)) if obj is not None]


def _quiet_cache_dit():
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.ERROR)


CACHE_DIT_THRESHOLDS = (0.04, 0.08, 0.12, 0.16, 0.2, 0.3, 0.5, 0.8)


def cache_dit_methods(setting: Setting, *, quick: bool = False) -> list[Method]:
    try:
        import cache_dit  # noqa: F401
        from cache_dit import DBCacheConfig, DBPruneConfig, TaylorSeerCalibratorConfig
    except Exception as err:  # report, do not drop
        return [UnavailableMethod(f, "cache_dit.enable_cache", f"cannot import cache_dit: {err!r}")
                for f in ("cache-dit-dbcache", "cache-dit-dbcache-taylorseer", "cache-dit-dbprune")]
    steps = setting.num_inference_steps
    warmup = max(1, round(0.15 * steps))  # cache-dit's default 8 warm-up steps is for 28-50 step runs

    def dbcache(t):
        return {"cache_config": DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=float(t),
                                              max_warmup_steps=warmup, num_inference_steps=steps)}

    def dbcache_ts(t):
        return {**dbcache(t), "calibrator_config": TaylorSeerCalibratorConfig(taylorseer_order=1)}

    def dbprune(t):
        return {"cache_config": DBPruneConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=float(t),
                                              max_warmup_steps=warmup, num_inference_steps=steps)}

    thresholds = CACHE_DIT_THRESHOLDS[1::2] if quick else CACHE_DIT_THRESHOLDS
    return [
        CacheDitMethod("cache-dit-dbcache", "residual_diff_threshold (F1B0)", thresholds, dbcache, setting),
        CacheDitMethod("cache-dit-dbcache-taylorseer", "residual_diff_threshold (F1B0, TaylorSeer order 1)",
                       thresholds, dbcache_ts, setting),
        CacheDitMethod("cache-dit-dbprune", "residual_diff_threshold (F1B0)", thresholds, dbprune, setting),
    ]


class UnavailableMethod(Method):
    """A method that cannot even be set up; it is reported with its error."""

    kind = "competitor"

    def __init__(self, family: str, api: str, error: str):
        super().__init__(["-"])
        self.family, self.api, self.error = family, api, error

    def enable(self, pipe, knob):
        raise RuntimeError(self.error)

    def disable(self, pipe):
        pass


def competitor_methods(setting: Setting, *, shim: bool = True, quick: bool = False) -> list[Method]:
    return cache_dit_methods(setting, quick=quick) + diffusers_methods(setting, shim=shim, quick=quick)


# -- measurement helpers -------------------------------------------------------------------------


_SKIP_TYPES = (nn.Module, types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.ModuleType, type,
               str, bytes, int, float, bool, complex, weakref.ref, np.ndarray)


def tensor_bytes(roots: Iterable[Any], max_depth: int = 10) -> int:
    """Bytes of the distinct tensor storages reachable from `roots` (modules and pipelines skipped)."""
    try:
        from diffusers.configuration_utils import ConfigMixin
        from diffusers.pipelines.pipeline_utils import DiffusionPipeline
        skip = _SKIP_TYPES + (ConfigMixin, DiffusionPipeline)
    except Exception:  # pragma: no cover
        skip = _SKIP_TYPES
    seen: set[int] = set()
    storages: dict[int, int] = {}
    stack = [(root, 0) for root in roots]
    while stack:
        obj, depth = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if isinstance(obj, nn.Parameter):
                continue
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
            continue
        if isinstance(obj, skip) or depth >= max_depth:
            continue
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj)
        elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            children = list(getattr(obj, "__dict__", {}).values())
            for slot in getattr(type(obj), "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    children.append(getattr(obj, slot))
        else:
            continue
        stack.extend((child, depth + 1) for child in children)
    return int(sum(storages.values()))


class MemorySampler:
    """Samples `tensor_bytes(method.state_roots(pipe))` after every transformer call; keeps the peak."""

    def __init__(self, pipe, method: Method):
        self.pipe, self.method = pipe, method
        self.peak = 0
        self.samples = 0
        self._handle = pipe.transformer.register_forward_hook(self._sample)

    def _sample(self, module, args, output):
        self.peak = max(self.peak, tensor_bytes(self.method.state_roots(self.pipe)))
        self.samples += 1

    def remove(self):
        self._handle.remove()


class MacsCounter:
    """MACs that actually ran, counted the way `ecad.cost` counts a schedule's, so that for every
    action of our engine (reuse, forecast, skip, guidance reuse) it equals `ecad.cost.image_macs`
    (tested per action):

    - a component's MACs when its first linear layer runs, scaled by the rows it saw (a method may
      compute a sub-batch: guidance reuse, FasterCache's skipped unconditional half);
    - a block's work outside its components (`CostTable.block_other`: AdaLN linears, norms, gates,
      residual adds) when the block's first module outside its components runs (PixArt, FLUX:
      ``norm1``), so a skipped block, by our engine or by another method, costs none of it;
    - the work outside the blocks (`CostTable.other`) at the transformer's ``proj_out``;
    - our engine's element-wise work of forecasts and skips (`CacheHandle.elementwise_ops`).

    The element-wise work inside other methods' caches (a cached residual added back, a Taylor
    step) is not seen: it is at most one to a few ops per output element, as ours is.
    """

    def __init__(self, pipe, *, height: int, width: int, num_images: int, guidance_scale: float):
        from ecad.cost import cost_table

        adapter = get_adapter(pipe)
        transformer = pipe.transformer
        batch, _ = adapter.transformer_batch(pipe, num_images, guidance_scale=guidance_scale)
        self.batch = batch
        table = cost_table(pipe, height=height, width=width, batch_size=batch, text_len=adapter.text_len(pipe))
        self._counted = 0.0
        self._handles = []
        components = adapter.component_modules(transformer)
        for b, (block, modules) in enumerate(zip(adapter.block_modules(transformer), components)):
            for c, module in enumerate(modules):
                probe = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
                if probe is not None:
                    self._handles.append(probe.register_forward_hook(self._counter(float(table.component[b, c]))))
            inside = {id(m) for module in modules for m in module.modules()}
            first = next((m for _, m in block.named_children() if id(m) not in inside), None)
            if first is not None:
                self._handles.append(first.register_forward_hook(self._counter(float(table.block_other[b]))))
        out = getattr(transformer, "proj_out", None)
        if isinstance(out, nn.Linear):
            self._handles.append(out.register_forward_hook(self._counter(float(table.other))))
        self._engine = get_cache_handle(pipe)
        self._engine_start = self._engine.elementwise_ops if self._engine is not None else 0

    @property
    def total(self) -> float:
        engine = self._engine.elementwise_ops - self._engine_start if self._engine is not None else 0
        return self._counted + engine

    def _counter(self, macs: float):
        def hook(module, args, output):
            x = args[0]
            rows = x.shape[0] if x.ndim >= 3 else 1
            self._counted += macs * rows / self.batch
        return hook

    def remove(self):
        for h in self._handles:
            h.remove()
