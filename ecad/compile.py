"""`torch.compile` that works with cache schedules.

The cache hooks decide in Python, per call, whether a component runs: compiled *around* them
(whole blocks or the hooked components), Dynamo traces into the hooks and recompiles at nearly
every call (it hits the recompile limit during step 0 and silently falls back to eager). Compiled
*inside* them, it never sees a decision: `compile_pipeline` replaces each cacheable component's
forward with a compiled one before any schedule is applied, and `apply_cache_schedule` then wraps
the compiled forward like any other. One graph per component kind and shape, none added when
schedules change.
"""

from __future__ import annotations

from typing import Any

import torch

from ecad.adapters import get_adapter, split_pipeline
from ecad.hooks import get_cache_handle

_EAGER_FORWARD = "_ecad_eager_forward"  # the forward a compiled module had before, for decompile_pipeline


def compile_pipeline(pipe_or_transformer: Any, **compile_kwargs: Any) -> int:
    """Compile the forward of every cacheable component (``torch.compile(**compile_kwargs)``).

    Call it before applying a schedule (a schedule applied earlier raises, since its hooks would
    keep the eager forward). Idempotent. Returns the number of components compiled.
    """
    _, transformer = split_pipeline(pipe_or_transformer)
    if get_cache_handle(transformer) is not None:
        raise RuntimeError("compile_pipeline must run before a schedule is applied: remove it first "
                           "(remove_cache_schedule), compile, then apply schedules")
    count = 0
    for modules in get_adapter(transformer).component_modules(transformer):
        for module in modules:
            if _EAGER_FORWARD in module.__dict__:
                continue
            module.__dict__[_EAGER_FORWARD] = module.__dict__.get("forward")
            module.forward = torch.compile(module.forward, **compile_kwargs)
            count += 1
    return count


def decompile_pipeline(pipe_or_transformer: Any) -> None:
    """Undo `compile_pipeline` (no schedule may be applied)."""
    _, transformer = split_pipeline(pipe_or_transformer)
    if get_cache_handle(transformer) is not None:
        raise RuntimeError("remove the applied schedule before decompile_pipeline")
    for modules in get_adapter(transformer).component_modules(transformer):
        for module in modules:
            if _EAGER_FORWARD not in module.__dict__:
                continue
            eager = module.__dict__.pop(_EAGER_FORWARD)
            if eager is None:
                del module.forward
            else:
                module.forward = eager


def is_compiled(pipe_or_transformer: Any) -> bool:
    _, transformer = split_pipeline(pipe_or_transformer)
    return any(_EAGER_FORWARD in m.__dict__
               for modules in get_adapter(transformer).component_modules(transformer) for m in modules)
