"""Which denoising step of which pipeline call is this transformer call?

One clock for every transformer-level hook that needs the step: the engine's `StepTrackerHook`
and the benchmark's cache-context shim for diffusers' caches. In order of preference:

1. bound to a pipeline whose scheduler has `step_index` (DPMSolverMultistep, FlowMatchEuler, ...):
   `step_index`, None before the first `scheduler.step` of a call, meaning step 0. A new pipeline
   call is recognised by a new `scheduler.timesteps` tensor (`set_timesteps` runs at the start of
   every call) or by the step index going backwards.
2. a pipeline whose scheduler has no `step_index`: the position of the timestep in
   `scheduler.timesteps`.
3. no pipeline (a bare transformer): one call per step, counted; a new call starts when the
   timestep does not decrease, the batch shape changes, or `num_steps` is used up.

Several calls at the same step are branches (FLUX true CFG: 0 = cond, 1 = uncond).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from ..schedule import ScheduleError


@dataclass(frozen=True)
class Tick:
    """Where one transformer call falls: its step, its branch, whether it starts a pipeline call,
    and the shape of its `hidden_states` (None if it has none)."""

    step: int
    branch: int
    new_call: bool
    shape: tuple | None


class StepClock:
    """Reads the step of each transformer call; `num_steps` (if given) is checked against the pipeline."""

    def __init__(self, pipeline: Any = None, num_steps: int | None = None):
        self.num_steps = num_steps
        self._pipeline = weakref.ref(pipeline) if pipeline is not None else None
        self._arg_index: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the current pipeline call: the next transformer call is step 0 of a new one."""
        self.step = -1
        self.branch = 0
        self._timesteps_ref = None  # the scheduler.timesteps tensor of the current pipeline call
        self._last_timestep: float | None = None
        self._call_shape: tuple | None = None  # batch shape of the first call of this pipeline call

    def bind(self, transformer: torch.nn.Module) -> None:
        """Learn where `hidden_states` and `timestep` sit in the transformer's positional arguments."""
        params = list(inspect.signature(type(transformer).forward).parameters)[1:]  # without self
        self._arg_index = {name: i for i, name in enumerate(params)}

    def arg(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        i = self._arg_index.get(name)
        return args[i] if i is not None and i < len(args) else None

    def timestep(self, args: tuple, kwargs: dict) -> float | None:
        """The call's timestep as a float. Reading a tensor's value syncs with the device."""
        t = self.arg("timestep", args, kwargs)
        return float(t.flatten()[0]) if isinstance(t, torch.Tensor) else t

    def tick(self, args: tuple, kwargs: dict) -> Tick:
        """Advance to the transformer call with these arguments."""
        hidden = self.arg("hidden_states", args, kwargs)
        shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else None
        pipe = self._pipeline() if self._pipeline is not None else None
        if pipe is not None:
            step, new_call = self._pipeline_step(pipe.scheduler, args, kwargs)
        else:
            step, new_call = self._counted_step(self.timestep(args, kwargs), shape)
        if new_call or (step == 0 and self.step != 0):
            new_call, step, self.branch = True, 0, 0
            self._call_shape = shape
        elif step == self.step:
            self.branch += 1
        else:
            self.branch = 0
        self.step = step
        return Tick(step, self.branch, new_call, shape)

    def _pipeline_step(self, scheduler: Any, args: tuple, kwargs: dict) -> tuple[int, bool]:
        timesteps = scheduler.timesteps
        new_call = timesteps is not self._timesteps_ref
        if new_call:
            if self.num_steps is not None and len(timesteps) != self.num_steps:
                raise ScheduleError(
                    f"the pipeline runs {len(timesteps)} denoising steps but the schedule has "
                    f"{self.num_steps}; use schedule.resample({len(timesteps)})"
                )
            self._timesteps_ref = timesteps
        if hasattr(scheduler, "step_index"):
            index = scheduler.step_index
            step = 0 if index is None else int(index)
        else:
            step = match_timestep(timesteps, self.timestep(args, kwargs))
        return step, new_call or step < self.step

    def _counted_step(self, t: float | None, shape: tuple | None) -> tuple[int, bool]:
        new_call = (
            self.step < 0
            or (self.num_steps is not None and self.step + 1 >= self.num_steps)
            or (t is not None and self._last_timestep is not None and t >= self._last_timestep)
            or (self._call_shape is not None and self._call_shape != shape)
        )
        self._last_timestep = t
        return (0 if new_call else self.step + 1), new_call


def match_timestep(timesteps: torch.Tensor, t: float | None) -> int:
    """Index of `t` in `timesteps` (also when the pipeline passes t / 1000, as FLUX does)."""
    if t is None:
        raise ScheduleError("cannot find the denoising step: no timestep argument and no scheduler.step_index")
    ts = timesteps.detach().double().cpu()
    for scale in (1.0, 1000.0):
        diff = (ts / scale - t).abs()
        i = int(diff.argmin())
        if diff[i] <= 1e-4 * max(1.0, abs(t)):
            return i
    raise ScheduleError(f"timestep {t} is not in the scheduler's timesteps; cannot find the step")
