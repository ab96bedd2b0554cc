"""Execution slots: views of the one pipeline that share every weight, so that a running request can
pause between two denoising steps while another runs to completion, then continue exactly.

A request's state between steps is its latents, its scheduler's history (a multistep solver keeps
the last outputs) and the outputs its cache schedule holds; the latents live in the pipeline call's
frame, the rest on the pipeline's scheduler and on the transformer's hooks. A slot gives a request
its own scheduler (a copy) and its own transformer *object* (a copy whose every parameter and
buffer is the original's tensor: no weight is copied), so hooks and cache state are per slot. A
request paused in one slot is a thread waiting inside its transformer's pre-forward hook with all
of that state untouched; another request runs in another slot; the first resumes and computes
exactly what it would have computed without the pause (one computation at a time: nothing runs in
parallel, nothing is saved or restored).

The text encoder, VAE and tokenizer are shared as they are: a paused request waits inside the
transformer call, never inside them.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch


def pipeline_slots(pipe: Any, count: int) -> list[Any]:
    """``pipe`` itself, then ``count - 1`` views of it sharing its weights (``shared_view``)."""
    if count < 1:
        raise ValueError(f"slots must be >= 1, got {count}")
    return [pipe, *(shared_view(pipe) for _ in range(count - 1))]


def shared_view(pipe: Any) -> Any:
    """A shallow copy of ``pipe`` with its own scheduler and its own transformer object sharing
    every parameter and buffer of ``pipe.transformer``."""
    view = copy.copy(pipe)
    # Assigned through __dict__: the pipeline's __setattr__ would re-register the component.
    view.__dict__["transformer"] = shared_module(pipe.transformer)
    view.__dict__["scheduler"] = copy.deepcopy(pipe.scheduler)
    return view


def shared_module(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose parameters and buffers are ``module``'s own tensors, without the
    diffusers hooks the original may carry (a view gets its own)."""
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    twin = copy.deepcopy(module, memo=shared)
    for sub in twin.modules():
        sub.__dict__.pop("_diffusers_hook", None)  # a registry bound to the original's forward chain
        sub.__dict__.pop("forward", None)  # a forward rewritten by hooks: back to the class's own
    return twin
