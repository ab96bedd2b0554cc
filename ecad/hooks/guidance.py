"""Guidance reuse: at the steps a schedule marks, run the transformer on the conditional rows only.

PixArt runs classifier-free guidance as one transformer call on a batch of [uncond; cond] rows.
The difference between the two halves of the output changes slowly from step to step (the
FasterCache observation), so at a marked step `GuidanceReuseHook` passes only the conditional
rows of every batched argument to the transformer and returns
``[cond + (uncond - cond)_last; cond]``, where ``(uncond - cond)_last`` is the difference of the
last step that ran both halves. The pipeline then combines the halves as usual, unaware.

It sits inside the step tracker (which sets the step) and outside the component and block hooks,
which see half the rows at such a step and keep their cached outputs per half (`ecad.hooks.actions`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from diffusers.hooks import ModelHook

from .actions import CacheState, halves

_KEY = ("guidance",)


def _cond_rows(value: Any, batch: int) -> Any:
    """``value`` with only its conditional (second-half) rows, where its leading dim is the batch."""
    if isinstance(value, torch.Tensor):
        return value[batch // 2:] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: _cond_rows(v, batch) for k, v in value.items()}
    return value


class GuidanceReuseHook(ModelHook):
    """Transformer-level: conditional rows only at the steps of `cond_only` (bool [steps])."""

    _is_stateful = True

    def __init__(self, state: CacheState, cond_only: np.ndarray):
        super().__init__()
        self.state = state
        self.cond_only = [bool(x) for x in cond_only]
        last = max(s for s, c in enumerate(self.cond_only) if c)
        # the difference is formed at every step that runs both halves before the last reuse
        self.keep = [not c and s < last for s, c in enumerate(self.cond_only)]
        self.last = last

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state
        step = state.step
        if step < 0 or not self.cond_only[step]:
            output = self.fn_ref.original_forward(*args, **kwargs)
            if step >= 0 and self.keep[step]:
                uncond, cond = halves(_sample(output))
                state.store(_KEY, uncond - cond)
            return output
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # its first parameter
        batch = hidden.shape[0]
        if batch % 2:
            raise RuntimeError(f"guidance reuse at step {step} needs a batch of [uncond; cond] rows, "
                               f"got {batch} rows (is classifier-free guidance on?)")
        args = tuple(_cond_rows(a, batch) for a in args)
        kwargs = {k: _cond_rows(v, batch) for k, v in kwargs.items()}
        state.cond_only = True
        try:
            output = self.fn_ref.original_forward(*args, **kwargs)
        finally:
            state.cond_only = False
        cond = _sample(output)
        difference = state.get(_KEY, "guidance reuse")
        if step == self.last:
            state.release(_KEY)
        return _with_sample(output, torch.cat([cond + difference, cond]))

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # the difference lives in the shared CacheState, which the step tracker resets


def _sample(output: Any) -> torch.Tensor:
    """The predicted tensor of a transformer output (``return_dict`` True or False)."""
    return output[0] if isinstance(output, tuple) else output.sample


def _with_sample(output: Any, sample: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (sample, *output[1:])
    return dataclasses.replace(output, sample=sample)
