"""Apply a `CacheSchedule` to an unmodified diffusers transformer through diffusers' hook API.

Two small hooks, in the style of `diffusers/hooks/*.py`:

- `StepTrackerHook` on the transformer: before each transformer call it works out the denoising
  step index and the call-within-step ("branch": FLUX true-CFG calls the transformer twice per
  step), starts fresh state at step 0 of every pipeline call, and drops all state if the call
  raises.
- `ComponentCacheHook` on every cached module (PixArt `attn1/attn2/ff`, FLUX `attn/ff/ff_context`
  and `attn/proj_mlp/proj_out`): at a recompute step it calls the original forward, at a reuse
  step it returns the output cached at the last recompute step. The output is the module's raw
  output, before the block applies its AdaLN gate and residual, so those still use the current
  step's conditioning (as in the ECAD paper).

Memory: the schedule is static, so each hook knows in advance whether a later step reuses an
output before recomputing it; it keeps an output only then, and releases it at its last reuse.
`CacheHandle.bytes_held` / `peak_bytes_held` report what is held.

Step index, in order of preference:
1. applied to a pipeline whose scheduler has `step_index` (DPMSolverMultistep, FlowMatchEuler,
   ...): `step_index`, None before the first `scheduler.step` of a call, meaning step 0. A new
   pipeline call is recognised by a new `scheduler.timesteps` tensor (`set_timesteps` runs at the
   start of every call) or by the step index going backwards.
2. a pipeline whose scheduler has no `step_index`: the position of the timestep in
   `scheduler.timesteps`.
3. a bare transformer: one call per step, counted; a new call starts when the timestep does not
   decrease, the batch shape changes, or the schedule's step count is used up.

The schedule must have as many steps as the pipeline runs (`len(scheduler.timesteps)`); otherwise
the first transformer call raises `ScheduleError` naming `schedule.resample(n)` (the server
resamples explicitly, so a silent resample here would only hide mistakes).

Not thread-safe: one pipeline call at a time per transformer (as diffusers pipelines are).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook

from .adapters import get_adapter, split_pipeline
from .schedule import CacheSchedule, ScheduleError

_STEP_TRACKER_HOOK = "ecad_step_tracker"
_COMPONENT_CACHE_HOOK = "ecad_component_cache"


def _nbytes(output: Any) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, (tuple, list)):
        return sum(_nbytes(o) for o in output)
    return 0


@dataclass
class CacheState:
    """State shared by the hooks of one applied schedule; reset at the start of every pipeline call."""

    step: int = -1  # denoising step of the current transformer call
    branch: int = 0  # transformer call within the step (FLUX true CFG: 0 = cond, 1 = uncond)
    call_id: int = 0  # increments per transformer call
    # branch -> (block, component) -> cached output (a tensor, or a tuple for FLUX joint attention)
    outputs: dict[int, dict[tuple[int, int], Any]] = field(default_factory=dict)
    branch_shapes: dict[int, tuple] = field(default_factory=dict)
    bytes_held: int = 0
    peak_bytes_held: int = 0
    pipeline_calls: int = 0

    def reset(self) -> None:
        """Forget every cached output (a new pipeline call, an exception, or removal)."""
        self.step, self.branch = -1, 0
        self.outputs.clear()
        self.branch_shapes.clear()
        self.bytes_held = 0

    def store(self, key: tuple[int, int], output: Any) -> None:
        cache = self.outputs.setdefault(self.branch, {})
        old = cache.get(key)
        if old is not None:
            self.bytes_held -= _nbytes(old)
        cache[key] = output
        self.bytes_held += _nbytes(output)
        self.peak_bytes_held = max(self.peak_bytes_held, self.bytes_held)

    def release(self, key: tuple[int, int]) -> None:
        old = self.outputs.get(self.branch, {}).pop(key, None)
        if old is not None:
            self.bytes_held -= _nbytes(old)


@dataclass(frozen=True)
class CacheScheduleConfig:
    """What `apply_cache_schedule` hooks: the schedule, and the pipeline whose scheduler gives steps."""

    schedule: CacheSchedule
    pipeline: Any = None  # held weakly by the hook; None for a bare transformer


class ComponentCacheHook(ModelHook):
    """Recompute-or-reuse for one component (block `block`, component `component`)."""

    _is_stateful = True

    def __init__(self, state: CacheState, block: int, component: int, name: str, column: np.ndarray):
        super().__init__()
        self.state = state
        self.key = (block, component)
        self.name = name
        num_steps = len(column)
        recompute = [bool(x) for x in column]
        nxt = recompute[1:] + [True]  # "True" after the last step: nothing later needs the output
        self.recompute = recompute
        # keep the output of a recompute step only if the next step reuses it
        self.keep = [r and not n for r, n in zip(recompute, nxt)]
        # release the held output at the last reuse step before a recompute (or the end)
        self.release = [(not r) and n for r, n in zip(recompute, nxt)]
        self.num_steps = num_steps
        self._last_call_id = -1

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state
        if self._last_call_id == state.call_id:
            # e.g. PixArt feed-forward chunking calls `ff` once per chunk: one cache slot is not enough
            raise RuntimeError(
                f"{self.name} was called twice in one transformer call; ecad caches one output per "
                "component per call (disable feed-forward chunking)"
            )
        self._last_call_id = state.call_id
        step = state.step
        if step < 0 or self.recompute[step]:  # step < 0: called outside a tracked transformer call
            output = self.fn_ref.original_forward(*args, **kwargs)
            if self.keep[step]:
                state.store(self.key, output)
            return output
        try:
            output = state.outputs[state.branch][self.key]
        except KeyError:
            raise RuntimeError(
                f"{self.name}: the schedule reuses its output at step {step} (branch {state.branch}) "
                "but nothing was cached; the transformer calls did not start at step 0"
            ) from None
        if self.release[step]:
            state.release(self.key)
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self._last_call_id = -1
        return module


class StepTrackerHook(ModelHook):
    """Transformer-level: set step and branch before each call; reset per pipeline call and on error."""

    _is_stateful = True

    def __init__(self, state: CacheState, num_steps: int, pipeline: Any = None):
        super().__init__()
        self.state = state
        self.num_steps = num_steps
        self._pipeline = weakref.ref(pipeline) if pipeline is not None else None
        self._timesteps_ref = None  # the scheduler.timesteps tensor of the current pipeline call
        self._last_timestep: float | None = None
        self._arg_index: dict[str, int] = {}

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        params = list(inspect.signature(type(module).forward).parameters)[1:]  # without self
        self._arg_index = {name: i for i, name in enumerate(params)}
        return module

    def _arg(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        i = self._arg_index.get(name)
        return args[i] if i is not None and i < len(args) else None

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        try:
            self._begin_call(args, kwargs)
            return self.fn_ref.original_forward(*args, **kwargs)
        except BaseException:
            self._reset()  # a half-finished call must not leak into the next one
            raise

    # -- step tracking -------------------------------------------------------------------------
    def _begin_call(self, args: tuple, kwargs: dict) -> None:
        state = self.state
        hidden = self._arg("hidden_states", args, kwargs)
        shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else None

        pipe = self._pipeline() if self._pipeline is not None else None
        if pipe is not None:
            step, new_call = self._pipeline_step(pipe.scheduler, args, kwargs)
        else:
            step, new_call = self._counted_step(self._timestep(args, kwargs), shape)

        if new_call or (step == 0 and state.step != 0):
            state.reset()
            state.pipeline_calls += 1
            step, state.branch = 0, 0
        elif step == state.step:
            state.branch += 1
        elif step > state.step:
            state.branch = 0
        if step >= self.num_steps:
            raise ScheduleError(
                f"transformer call at step {step}, but the schedule has {self.num_steps} steps"
            )
        if state.branch_shapes.setdefault(state.branch, shape) != shape:
            state.reset()
            raise RuntimeError(
                f"the batch shape changed in the middle of a pipeline call (step {step}): "
                f"{state.branch_shapes.get(state.branch)} -> {shape}; cached outputs were dropped"
            )
        state.step = step
        state.call_id += 1

    def _timestep(self, args: tuple, kwargs: dict) -> float | None:
        # Reading a tensor's value syncs with the device: only done when the scheduler cannot tell.
        timestep = self._arg("timestep", args, kwargs)
        return float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else timestep

    def _pipeline_step(self, scheduler: Any, args: tuple, kwargs: dict) -> tuple[int, bool]:
        timesteps = scheduler.timesteps
        new_call = timesteps is not self._timesteps_ref
        if new_call:
            if len(timesteps) != self.num_steps:
                raise ScheduleError(
                    f"the pipeline runs {len(timesteps)} denoising steps but the schedule has "
                    f"{self.num_steps}; use schedule.resample({len(timesteps)})"
                )
            self._timesteps_ref = timesteps
        if hasattr(scheduler, "step_index"):
            index = scheduler.step_index
            step = 0 if index is None else int(index)
        else:
            step = self._match_timestep(timesteps, self._timestep(args, kwargs))
        return step, new_call or step < self.state.step

    @staticmethod
    def _match_timestep(timesteps: torch.Tensor, t: float | None) -> int:
        if t is None:
            raise ScheduleError("cannot find the denoising step: no timestep argument and no scheduler.step_index")
        ts = timesteps.detach().double().cpu()
        for scale in (1.0, 1000.0):  # some pipelines pass t / 1000 (FLUX)
            diff = (ts / scale - t).abs()
            i = int(diff.argmin())
            if diff[i] <= 1e-4 * max(1.0, abs(t)):
                return i
        raise ScheduleError(f"timestep {t} is not in the scheduler's timesteps; cannot find the step")

    def _counted_step(self, t: float | None, shape: tuple | None) -> tuple[int, bool]:
        state = self.state
        new_call = (
            state.step < 0
            or state.step + 1 >= self.num_steps
            or (t is not None and self._last_timestep is not None and t >= self._last_timestep)
            or state.branch_shapes.get(0, shape) != shape
        )
        self._last_timestep = t
        return (0 if new_call else state.step + 1), new_call

    def _reset(self) -> None:
        self.state.reset()
        self._timesteps_ref = None
        self._last_timestep = None

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
    created.append((module, not hasattr(module, "_diffusers_hook"), "forward" not in module.__dict__))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def apply_cache_schedule(pipe_or_transformer: Any, schedule: CacheSchedule) -> CacheHandle:
    """Hook `schedule` onto a pipeline (steps from its scheduler) or a bare transformer.

    Replaces a schedule applied earlier. Raises `ScheduleError` if the schedule is malformed or
    made for another block layout, `UnsupportedModelError` for an unknown transformer class.
    """
    pipe, transformer = split_pipeline(pipe_or_transformer)
    adapter = get_adapter(transformer)
    schedule.validate(layout=adapter.layout(transformer))
    if _registry_hook(transformer, _STEP_TRACKER_HOOK) is not None:
        remove_cache_schedule(transformer)

    config = CacheScheduleConfig(schedule=schedule, pipeline=pipe)
    state = CacheState()
    created: list = []
    tracker = StepTrackerHook(state, schedule.num_steps, config.pipeline)
    for block, modules in enumerate(adapter.component_modules(transformer)):
        names = schedule.layout.component_names(block)
        for c, module in enumerate(modules):
            label = f"block {block} {names[c]}"
            hook = ComponentCacheHook(state, block, c, label, schedule.mask[:, block, c])
            _register(module, hook, _COMPONENT_CACHE_HOOK, created)
    _register(transformer, tracker, _STEP_TRACKER_HOOK, created)
    tracker._restore = created  # (module, had no registry, had no forward override) for removal
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
    for module, created_registry, had_no_forward in reversed(tracker._restore):
        registry = module._diffusers_hook
        name = _STEP_TRACKER_HOOK if module is transformer else _COMPONENT_CACHE_HOOK
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
