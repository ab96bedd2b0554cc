"""Apply a `CacheSchedule` to an unmodified diffusers transformer through diffusers' hook API.

Four kinds of diffusers `ModelHook`, in the style of `diffusers/hooks/*.py`:

- `StepTrackerHook` on the transformer: before each transformer call it asks a `StepClock`
  (`ecad.hooks.clock`) for the denoising step and the call-within-step ("branch": FLUX true CFG
  calls the transformer twice per step), starts fresh state at step 0 of every pipeline call, and
  drops all state if the call raises.
- `ComponentHook` on every cached module that reuses or forecasts at some step (`ecad.hooks.actions`).
- `BlockSkipHook` on the blocks a schedule skips at some step: replay the block's residual delta.
- `GuidanceReuseHook` on the transformer, inside the step tracker, where the schedule reuses
  guidance at some step: run the conditional rows only (`ecad.hooks.guidance`).

Memory: the schedule is static, so every hook knows in advance which later step reads what it
could keep; a tensor is held only until its last read. `CacheHandle.bytes_held` /
`peak_bytes_held` report what is held.

The schedule must have as many steps as the pipeline runs (`len(scheduler.timesteps)`); otherwise
the first transformer call raises `ScheduleError` naming `schedule.resample(n)` (the server
resamples explicitly, so a silent resample here would only hide mistakes).

Not thread-safe: one pipeline call at a time per transformer (as diffusers pipelines are).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ..adapters import get_adapter, split_pipeline
from ..schedule import CacheSchedule, ScheduleError
from .actions import ActionPlan, BlockSkipHook, CacheState, ComponentHook
from .clock import StepClock, Tick, match_timestep
from .guidance import GuidanceReuseHook

__all__ = [
    "CacheHandle", "CacheState", "StepClock", "Tick", "apply_cache_schedule", "cache_schedule",
    "get_cache_handle", "match_timestep", "remove_cache_schedule",
]

_STEP_TRACKER_HOOK = "ecad_step_tracker"
_COMPONENT_CACHE_HOOK = "ecad_component_cache"
_BLOCK_SKIP_HOOK = "ecad_block_skip"
_GUIDANCE_REUSE_HOOK = "ecad_guidance_reuse"


class StepTrackerHook(ModelHook):
    """Transformer-level: set step and branch before each call; reset per pipeline call and on error."""

    _is_stateful = True

    def __init__(self, state: CacheState, clock: StepClock):
        super().__init__()
        self.state = state
        self.clock = clock

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self.clock.bind(module)
        return module

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        try:
            self._begin_call(args, kwargs)
            return self.fn_ref.original_forward(*args, **kwargs)
        except BaseException:
            self._reset()  # a half-finished call must not leak into the next one
            raise

    def _begin_call(self, args: tuple, kwargs: dict) -> None:
        state = self.state
        tick = self.clock.tick(args, kwargs)
        if tick.new_call:
            state.reset()
            state.pipeline_calls += 1
        if tick.step >= self.clock.num_steps:
            raise ScheduleError(
                f"transformer call at step {tick.step}, but the schedule has {self.clock.num_steps} steps"
            )
        expected = state.branch_shapes.setdefault(tick.branch, tick.shape)
        if expected != tick.shape:
            state.reset()
            raise RuntimeError(
                f"the batch shape changed in the middle of a pipeline call (step {tick.step}): "
                f"{expected} -> {tick.shape}; cached outputs were dropped"
            )
        state.step, state.branch = tick.step, tick.branch
        state.call_id += 1

    def _reset(self) -> None:
        self.state.reset()
        self.clock.reset()

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self._reset()
        return module


class CacheHandle:
    """An applied schedule: memory it holds, and `remove()`."""

    def __init__(self, transformer: torch.nn.Module, schedule: CacheSchedule, state: CacheState):
        self.transformer = transformer
        self.schedule = schedule
        self._state = state

    @property
    def bytes_held(self) -> int:
        """Bytes of cached outputs held now (0 between pipeline calls)."""
        return self._state.bytes_held

    @property
    def peak_bytes_held(self) -> int:
        """Most bytes of cached outputs held at once since applying (or `reset_peak()`)."""
        return self._state.peak_bytes_held

    @property
    def pipeline_calls(self) -> int:
        return self._state.pipeline_calls

    @property
    def elementwise_ops(self) -> int:
        """Element-wise ops the hooks ran so far (forecasts, skips; `ecad.cost` counts them alike)."""
        return self._state.elementwise_ops

    def reset_peak(self) -> None:
        self._state.peak_bytes_held = self._state.bytes_held

    @property
    def active(self) -> bool:
        hook = _registry_hook(self.transformer, _STEP_TRACKER_HOOK)
        return hook is not None and hook.state is self._state

    def remove(self) -> None:
        if self.active:
            remove_cache_schedule(self.transformer)

    def __repr__(self) -> str:
        return f"CacheHandle({self.schedule!r}, bytes_held={self.bytes_held}, peak={self.peak_bytes_held})"


def _registry_hook(module: torch.nn.Module, name: str) -> ModelHook | None:
    registry = getattr(module, "_diffusers_hook", None)
    return registry.get_hook(name) if registry is not None else None


def _register(module: torch.nn.Module, hook: ModelHook, name: str, created: list) -> None:
    # Remember what the module looked like so removal can restore it exactly.
    created.append((module, name, not hasattr(module, "_diffusers_hook"), "forward" not in module.__dict__))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def apply_cache_schedule(pipe_or_transformer: Any, schedule: CacheSchedule) -> CacheHandle:
    """Hook `schedule` onto a pipeline (steps from its scheduler) or a bare transformer.

    Replaces a schedule applied earlier. Raises `ScheduleError` if the schedule is malformed or
    made for another block layout, or reuses guidance on a model that does not batch it,
    `UnsupportedModelError` for an unknown transformer class. A schedule that reuses guidance
    expects every call to carry [uncond; cond] rows (classifier-free guidance on: `ecad.generate`
    refuses it otherwise).
    """
    pipe, transformer = split_pipeline(pipe_or_transformer)
    adapter = get_adapter(transformer)
    schedule.validate(layout=adapter.layout(transformer))
    cond_only = schedule.guidance_reuse
    if cond_only.any() and not adapter.batched_guidance:
        raise ScheduleError(f"the schedule reuses guidance, but {type(transformer).__name__} does not run "
                            "classifier-free guidance as one batch of [uncond; cond] rows")
    if _registry_hook(transformer, _STEP_TRACKER_HOOK) is not None:
        remove_cache_schedule(transformer)

    state = CacheState(per_half=bool(cond_only.any()))
    created: list = []
    actions, skip = schedule.actions, schedule.skip
    for block, modules in enumerate(adapter.component_modules(transformer)):
        names = schedule.layout.component_names(block)
        for c, module in enumerate(modules):
            if module is None:  # this block lacks the component (SD3's last block: no ff_context)
                continue
            plan = ActionPlan.build(actions[:, block, c], skip[:, block])
            if plan.needs_hook:  # a component that recomputes whenever it runs is left alone
                # the unconditional rows are not called at the conditional-only steps
                uncond = ActionPlan.build(actions[:, block, c], skip[:, block] | cond_only) if state.per_half else None
                hook = ComponentHook(state, block, c, f"block {block} {names[c]}", plan, uncond)
                _register(module, hook, _COMPONENT_CACHE_HOOK, created)
    for block, module in enumerate(adapter.block_modules(transformer)):
        if skip[:, block].any():
            streams = adapter.residual_streams(schedule.layout.group_of(block)[0].name)
            hook = BlockSkipHook(state, block, f"block {block}", skip[:, block], streams,
                                 cond_only if state.per_half else None)
            _register(module, hook, _BLOCK_SKIP_HOOK, created)
    if state.per_half:
        _register(transformer, GuidanceReuseHook(state, cond_only), _GUIDANCE_REUSE_HOOK, created)
    tracker = StepTrackerHook(state, StepClock(pipe, schedule.num_steps))
    _register(transformer, tracker, _STEP_TRACKER_HOOK, created)
    tracker._restore = created  # (module, hook name, had no registry, had no forward override)
    # HookRegistry caches the list of child registries on first use (cache_context); refresh it.
    transformer._diffusers_hook.invalidate_child_registries_cache()
    tracker.handle = CacheHandle(transformer, schedule, state)
    return tracker.handle


def remove_cache_schedule(pipe_or_transformer: Any) -> None:
    """Remove an applied schedule and restore the modules exactly (no-op if none is applied)."""
    _, transformer = split_pipeline(pipe_or_transformer)
    tracker = _registry_hook(transformer, _STEP_TRACKER_HOOK)
    if tracker is None:
        return
    tracker.state.reset()
    for module, name, created_registry, had_no_forward in reversed(tracker._restore):
        registry = module._diffusers_hook
        registry.remove_hook(name, recurse=False)
        if not registry.hooks:
            # HookRegistry leaves a bound `forward` on the instance; drop it so the class method is used.
            if had_no_forward:
                module.__dict__.pop("forward", None)
            if created_registry:
                del module._diffusers_hook
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is not None:
        registry.invalidate_child_registries_cache()


def get_cache_handle(pipe_or_transformer: Any) -> CacheHandle | None:
    """The handle of the schedule applied to this pipeline/transformer, if any."""
    _, transformer = split_pipeline(pipe_or_transformer)
    tracker = _registry_hook(transformer, _STEP_TRACKER_HOOK)
    return getattr(tracker, "handle", None)


@contextlib.contextmanager
def cache_schedule(pipe_or_transformer: Any, schedule: CacheSchedule | None) -> Iterator[CacheHandle | None]:
    """`with cache_schedule(pipe, schedule) as handle:` applies, then removes even on error.

    `schedule=None` runs unhooked (yields None) so callers need no branch.
    """
    if schedule is None:
        yield None
        return
    handle = apply_cache_schedule(pipe_or_transformer, schedule)
    try:
        yield handle
    finally:
        remove_cache_schedule(pipe_or_transformer)
