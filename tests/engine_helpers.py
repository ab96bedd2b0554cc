"""Shared helpers for the cache-engine tests: tiny pipelines and an independent reference cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad.generate import load_pipeline
from ecad.tiny import KINDS, TINY_IMAGE_SIZE, build_tiny_pipeline

STEPS = 6
SIZE = TINY_IMAGE_SIZE

# Written out here rather than taken from the adapters, so the reference stays independent.
COMPONENTS = {
    "pixart": [("transformer_blocks", ("attn1", "attn2", "ff"))],
    "flux": [("transformer_blocks", ("attn", "ff", "ff_context")),
             ("single_transformer_blocks", ("attn", "proj_mlp", "proj_out"))],
}


def tiny_dir(tmp_path_factory, kind: str):
    # Same folder for every test module of the session; build_tiny_pipeline reuses a complete one.
    return build_tiny_pipeline(kind, tmp_path_factory.getbasetemp() / "ecad-tiny" / kind)


@pytest.fixture(scope="module", params=KINDS)
def tiny_pipe(request, tmp_path_factory):
    pipe = load_pipeline(tiny_dir(tmp_path_factory, request.param))
    pipe.ecad_kind = request.param
    return pipe


def family(pipe) -> str:
    return "flux" if "Flux" in type(pipe).__name__ else "pixart"


def call_kwargs(pipe) -> dict:
    if family(pipe) == "flux":
        return {"max_sequence_length": 16}
    return {"use_resolution_binning": False, "clean_caption": False, "max_sequence_length": 16}


def run(pipe, prompts=("a red cat",), seed=0, steps=STEPS, **kw):
    """Run the pipeline directly (not through ecad.generate) and return [N, 3, H, W] images."""
    generator = torch.Generator().manual_seed(seed)
    out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=4.5, height=SIZE, width=SIZE,
               generator=generator, output_type="pt", **{**call_kwargs(pipe), **kw})
    return out.images


def component_modules(transformer, fam: str):
    return [[getattr(block, name) for name in names]
            for group, names in COMPONENTS[fam] for block in getattr(transformer, group)]


def _clone(output):
    return tuple(o.clone() for o in output) if isinstance(output, tuple) else output.clone()


def reference_run(pipe, mask: np.ndarray, calls_per_step: int = 1, shared_branches: bool = False, **run_kw):
    """Images under `mask` computed by hand: plain torch forward hooks on a full forward pass
    replace a component's output by a saved copy wherever the mask says reuse."""
    transformer = pipe.transformer
    calls = {"n": -1}
    saved = {}
    handles = [transformer.register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] + 1))]
    for b, modules in enumerate(component_modules(transformer, family(pipe))):
        for c, module in enumerate(modules):
            def hook(module, args, output, b=b, c=c):
                step, branch = divmod(calls["n"], calls_per_step)
                branch = 0 if shared_branches else branch
                if mask[step, b, c]:
                    saved[branch, b, c] = _clone(output)
                    return None
                return saved[branch, b, c]
            handles.append(module.register_forward_hook(hook))
    try:
        return run(pipe, **run_kw)
    finally:
        for h in handles:
            h.remove()
