"""Shared helpers for the cache-engine tests: tiny pipelines and an independent reference cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad.generate import load_pipeline
from ecad.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline

STEPS = 6
# PixArt-alpha and -Sigma share a transformer class and adapter: the engine tests run on alpha and
# FLUX; Sigma is loaded and checked once (tests/test_hooks.py::test_pixart_sigma_loads_and_caches).
ENGINE_KINDS = ("pixart-alpha", "flux")
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


@pytest.fixture(scope="module", params=ENGINE_KINDS)
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


BLOCK_GROUPS = {"pixart": ("transformer_blocks",), "flux": ("transformer_blocks", "single_transformer_blocks")}


def _patch_forward(module, wrapper):
    """Route `module(...)` through wrapper(original_forward, *args, **kwargs); returns an undo."""
    original = module.forward
    module.forward = lambda *args, **kwargs: wrapper(original, *args, **kwargs)
    return lambda: module.__dict__.pop("forward", None)


def _map(fn, *outputs):
    if isinstance(outputs[0], tuple):
        return tuple(fn(*parts) for parts in zip(*outputs))
    return fn(*outputs)


def reference_actions_run(pipe, actions: np.ndarray, skip: np.ndarray, calls_per_step: int = 1, **run_kw):
    """Images under (actions, skip) computed by a hand-written loop, independent of ecad.hooks:
    every component and block forward is wrapped; a component keeps the list of its recomputed
    outputs (reuse: the last; forecast: y2 + (y2 - y1) * (s - s2) / (s2 - s1)); a block keeps
    output - input of its last run and replays it when skipped."""
    import inspect

    fam = family(pipe)
    transformer = pipe.transformer
    calls = {"n": -1}
    history: dict = {}  # (branch, block, component) -> [(step, output)]
    deltas: dict = {}  # (branch, block) -> tuple of deltas
    undo = [_patch_forward(transformer, lambda f, *a, **k: (calls.__setitem__("n", calls["n"] + 1), f(*a, **k))[1])]

    def where():
        return divmod(calls["n"], calls_per_step)

    for b, modules in enumerate(component_modules(transformer, fam)):
        for c, module in enumerate(modules):
            def component(original, *args, b=b, c=c, **kwargs):
                step, branch = where()
                runs = history.setdefault((branch, b, c), [])
                action = actions[step, b, c]
                if action == 1:
                    out = original(*args, **kwargs)
                    runs.append((step, _map(lambda t: t.clone(), out)))
                    return out
                if action == 0:
                    return runs[-1][1]
                (s1, y1), (s2, y2) = runs[-2], runs[-1]
                return _map(lambda a, z: z + (z - a) * ((step - s2) / (s2 - s1)), y1, y2)
            undo.append(_patch_forward(module, component))
    blocks = [blk for group in BLOCK_GROUPS[fam] for blk in getattr(transformer, group)]
    for b, block in enumerate(blocks):
        params = inspect.signature(type(block).forward)
        streams = ("hidden_states",) if fam == "pixart" else ("encoder_hidden_states", "hidden_states")

        def run_block(original, *args, b=b, params=params, streams=streams, **kwargs):
            step, branch = where()
            bound = params.bind(None, *args, **kwargs).arguments
            inputs = tuple(bound[s] for s in streams)
            if skip[step, b]:
                out = tuple(i + d for i, d in zip(inputs, deltas[branch, b]))
                return out if fam == "flux" else out[0]
            out = original(*args, **kwargs)
            outs = out if isinstance(out, tuple) else (out,)
            deltas[branch, b] = tuple(o - i for o, i in zip(outs, inputs))
            return out
        undo.append(_patch_forward(block, run_block))
    try:
        return run(pipe, **run_kw)
    finally:
        for u in undo:
            u()
