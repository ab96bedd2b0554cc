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


def _cond_rows(value, batch):
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
        return value[batch // 2:]
    if isinstance(value, dict):
        return {k: _cond_rows(v, batch) for k, v in value.items()}
    return value


def reference_actions_run(pipe, actions: np.ndarray, skip: np.ndarray, calls_per_step: int = 1,
                          guidance: np.ndarray | None = None, **run_kw):
    """Images under (actions, skip) computed by a hand-written loop, independent of ecad.hooks:
    every component and block forward is wrapped; a component keeps the list of its recomputed
    outputs (reuse: the last; forecast: y2 + (y2 - y1) * (s - s2) / (s2 - s1)); a block keeps
    output - input of its last run and replays it when skipped.

    ``guidance`` (bool [steps], PixArt): at those steps the transformer gets the conditional rows
    only and returns [cond + (uncond - cond) of the last step that ran both; cond]; every
    component and block then keeps its history per half of the [uncond; cond] batch, the
    unconditional half only from the steps that ran it (a forecast with one entry reuses it)."""
    import inspect

    fam = family(pipe)
    transformer = pipe.transformer
    calls = {"n": -1}
    history: dict = {}  # (branch, half, block, component) -> [(step, output)]
    deltas: dict = {}  # (branch, half, block) -> tuple of deltas
    split = guidance is not None and bool(np.any(guidance))
    difference: dict = {}

    def where():
        return divmod(calls["n"], calls_per_step)

    def count_call(original, *args, **kwargs):
        calls["n"] += 1
        step, _ = where()
        if not split:
            return original(*args, **kwargs)
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        batch = hidden.shape[0]
        if not guidance[step]:
            out = original(*args, **kwargs)
            difference["last"] = out[0][: batch // 2] - out[0][batch // 2:]
            return out
        args = tuple(_cond_rows(a, batch) for a in args)
        kwargs = {k: _cond_rows(v, batch) for k, v in kwargs.items()}
        out = original(*args, **kwargs)
        return (torch.cat([out[0] + difference["last"], out[0]]), *out[1:])

    undo = [_patch_forward(transformer, count_call)]

    def halves_now(step):
        """The halves this call carries: ("all",), ("c",) at a conditional-only step, or ("u", "c")."""
        if not split:
            return ("all",)
        return ("c",) if guidance[step] else ("u", "c")

    def rows(out, half, n_halves):
        if n_halves == 1:
            return out
        return _map(lambda t: t[: t.shape[0] // 2] if half == "u" else t[t.shape[0] // 2:], out)

    def join(parts):
        return parts[0] if len(parts) == 1 else _map(lambda *t: torch.cat(t), *parts)

    for b, modules in enumerate(component_modules(transformer, fam)):
        for c, module in enumerate(modules):
            def component(original, *args, b=b, c=c, **kwargs):
                step, branch = where()
                action = actions[step, b, c]
                hs = halves_now(step)
                if action == 1:
                    out = original(*args, **kwargs)
                    for half in hs:
                        part = rows(out, half, len(hs))
                        history.setdefault((branch, half, b, c), []).append((step, _map(lambda t: t.clone(), part)))
                    return out
                parts = []
                for half in hs:
                    runs = history[branch, half, b, c]
                    if action == 0 or len(runs) < 2:
                        parts.append(runs[-1][1])
                    else:
                        (s1, y1), (s2, y2) = runs[-2], runs[-1]
                        parts.append(_map(lambda a, z: z + (z - a) * ((step - s2) / (s2 - s1)), y1, y2))
                return join(parts)
            undo.append(_patch_forward(module, component))
    blocks = [blk for group in BLOCK_GROUPS[fam] for blk in getattr(transformer, group)]
    for b, block in enumerate(blocks):
        params = inspect.signature(type(block).forward)
        streams = ("hidden_states",) if fam == "pixart" else ("encoder_hidden_states", "hidden_states")

        def run_block(original, *args, b=b, params=params, streams=streams, **kwargs):
            step, branch = where()
            hs = halves_now(step)
            bound = params.bind(None, *args, **kwargs).arguments
            inputs = tuple(bound[s] for s in streams)
            if skip[step, b]:
                held = [deltas[branch, half, b] for half in hs]
                delta = held[0] if len(hs) == 1 else tuple(torch.cat(p) for p in zip(*held))
                out = tuple(i + d for i, d in zip(inputs, delta))
                return out if fam == "flux" else out[0]
            out = original(*args, **kwargs)
            outs = out if isinstance(out, tuple) else (out,)
            delta = tuple(o - i for o, i in zip(outs, inputs))
            for half in hs:
                deltas[branch, half, b] = tuple(rows(d, half, len(hs)) for d in delta)
            return out
        undo.append(_patch_forward(block, run_block))
    try:
        return run(pipe, **run_kw)
    finally:
        for u in undo:
            u()
