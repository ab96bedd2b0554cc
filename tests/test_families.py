"""Every DiT family beyond PixArt and FLUX on a tiny random pipeline built offline: the hooks are
bit-exact against a hand-written loop, the cost model against torch's FLOP counter; at full size
(meta device) the published configs against their parameter counts; the committed banks.

The tiny pipelines run their family's own pipeline class with tiny text encoders (CLIP, T5, UMT5,
Gemma-2, Qwen2.5-VL, Llama) and tokenizers made locally (`ecad.tiny`).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ecad.adapters import UnsupportedModelError, get_adapter
from ecad.generate import load_pipeline
from ecad.hooks import apply_cache_schedule, cache_schedule, remove_cache_schedule
from ecad.schedule import FORECAST, RECOMPUTE, REUSE, CacheSchedule
from ecad.tiny import TINY_CALL_KWARGS, TINY_SHAPES, build_tiny_pipeline

STEPS = 5
PROMPT = "a red cat on a blue house in the city at night"  # long enough that every tokenizer truncates
NEGATIVE = "a green dog"

# Written out here, not taken from the adapters, so that the reference loop stays independent:
# per kind, the transformer class, its block groups (attribute, components, residual streams in the
# order a block returns them) and how a step calls the transformer at guidance 4.5.
SPECS = {
    "sd3": ("SD3Transformer2DModel", [("transformer_blocks", ("attn", "attn2", "ff", "ff_context"),
                                       ("encoder_hidden_states", "hidden_states"))], "batched"),
    "qwen-image": ("QwenImageTransformer2DModel", [("transformer_blocks", ("attn", "img_mlp", "txt_mlp"),
                                                    ("encoder_hidden_states", "hidden_states"))], "true-cfg"),
    "wan": ("WanTransformer3DModel", [("blocks", ("attn1", "attn2", "ffn"), ("hidden_states",))], "two-calls"),
    "lumina2": ("Lumina2Transformer2DModel", [(g, ("attn", "feed_forward"), ("hidden_states",))
                                              for g in ("context_refiner", "noise_refiner", "layers")], "two-calls"),
    "sana": ("SanaTransformer2DModel", [("transformer_blocks", ("attn1", "attn2", "ff"), ("hidden_states",))], "batched"),
    "chroma": ("ChromaTransformer2DModel", [
        ("transformer_blocks", ("attn", "ff", "ff_context"), ("encoder_hidden_states", "hidden_states")),
        ("single_transformer_blocks", ("attn", "proj_mlp", "proj_out"), ("hidden_states",))], "two-calls"),
    "ltx-video": ("LTXVideoTransformer3DModel", [("transformer_blocks", ("attn1", "attn2", "ff"), ("hidden_states",))],
                  "batched"),
    "hunyuan-video": ("HunyuanVideoTransformer3DModel", [
        ("transformer_blocks", ("attn", "ff", "ff_context"), ("hidden_states", "encoder_hidden_states")),
        ("single_transformer_blocks", ("attn", "proj_mlp", "proj_out"), ("hidden_states", "encoder_hidden_states"))],
        "true-cfg"),
}
KINDS = tuple(SPECS)
BATCHED = tuple(k for k in KINDS if SPECS[k][2] == "batched")
VIDEO = ("wan", "ltx-video", "hunyuan-video")


@pytest.fixture(scope="module", params=KINDS)
def family(request, tmp_path_factory):
    kind = request.param
    pipe = load_pipeline(build_tiny_pipeline(kind, tmp_path_factory.getbasetemp() / "ecad-tiny" / kind))
    return kind, pipe


def pipes(tmp_path_factory, kind):
    return load_pipeline(build_tiny_pipeline(kind, tmp_path_factory.getbasetemp() / "ecad-tiny" / kind))


def cfg_kwargs(kind: str) -> dict:
    """What makes a step run classifier-free guidance: true CFG needs a negative prompt."""
    if SPECS[kind][2] == "true-cfg":
        return {"negative_prompt": [NEGATIVE], "true_cfg_scale": 3.0}
    return {}


def run(pipe, kind, prompts=(PROMPT,), seed=0, steps=STEPS, guidance=4.5, **kw):
    """The family's pipeline called directly (not through ecad.generate): images or video frames."""
    height, width, frames = TINY_SHAPES[kind]
    kwargs = {**get_adapter(pipe).pipeline_call_kwargs(pipe), **TINY_CALL_KWARGS.get(kind, {}), **kw}
    if frames:
        kwargs["num_frames"] = frames
    out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=guidance, height=height, width=width,
               generator=torch.Generator().manual_seed(seed), output_type="pt", **kwargs)
    return out.frames if hasattr(out, "frames") else out.images


def calls_per_step(kind: str, **kw) -> int:
    return 1 if SPECS[kind][2] == "batched" or (SPECS[kind][2] == "true-cfg" and "negative_prompt" not in kw) else 2


# -- the hand-written reference loop --------------------------------------------------------------

def _map(fn, *outputs):
    if isinstance(outputs[0], tuple):
        return tuple(None if parts[0] is None else fn(*parts) for parts in zip(*outputs))
    return fn(*outputs)


def _cond_rows(value, batch):
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
        return value[batch // 2:]
    return value


def _hidden(args, kwargs) -> torch.Tensor:
    """A transformer call's `hidden_states` (Sana's pipeline passes it by position)."""
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def _patch(module, wrapper):
    original = module.forward
    module.forward = lambda *args, **kwargs: wrapper(original, *args, **kwargs)
    return lambda: module.__dict__.pop("forward", None)


def reference_run(pipe, kind, actions, skip, guidance=None, **run_kw):
    """`run(pipe, kind, **run_kw)` under (actions, skip[, guidance]), by hand (`reference_loop`)."""
    return reference_loop(pipe, SPECS[kind][1], calls_per_step(kind, **run_kw), actions, skip, guidance,
                          lambda: run(pipe, kind, **run_kw))


def reference_loop(pipe, groups, per_step, actions, skip, guidance, runner):
    """`runner()`'s images under (actions, skip[, guidance]) by hand: every component and block forward is
    wrapped; a component keeps its recomputed outputs (reuse: the last; forecast: y2 + (y2 - y1) *
    (s - s2) / (s2 - s1)), a block its last output - input per stream (None stays None) and
    replays it when skipped; state is per transformer call of the step (branch) and, where a step
    reuses guidance, per half of the [uncond; cond] batch (the unconditional half only from the
    steps that ran it)."""
    transformer = pipe.transformer
    split = guidance is not None and bool(np.any(guidance))
    calls = {"n": -1}
    history, deltas, difference = {}, {}, {}

    def where():
        return divmod(calls["n"], per_step)

    def call(original, *args, **kwargs):
        calls["n"] += 1
        step, _ = where()
        if not split:
            return original(*args, **kwargs)
        batch = _hidden(args, kwargs).shape[0]
        if not guidance[step]:
            out = original(*args, **kwargs)
            difference["last"] = out[0][: batch // 2] - out[0][batch // 2:]
            return out
        out = original(*[_cond_rows(a, batch) for a in args], **{k: _cond_rows(v, batch) for k, v in kwargs.items()})
        return (torch.cat([out[0] + difference["last"], out[0]]), *out[1:])

    def halves(step):
        return ("all",) if not split else (("c",) if guidance[step] else ("u", "c"))

    def rows(out, half, n):
        if n == 1:
            return out
        return _map(lambda t: t[: t.shape[0] // 2] if half == "u" else t[t.shape[0] // 2:], out)

    def join(parts):
        return parts[0] if len(parts) == 1 else _map(lambda *t: torch.cat(t), *parts)

    undo = [_patch(transformer, call)]
    blocks = [(block, names, streams) for attr, names, streams in groups for block in getattr(transformer, attr)]
    for b, (block, names, streams) in enumerate(blocks):
        for c, name in enumerate(names):
            module = getattr(block, name, None)
            if module is None:  # e.g. SD3: attn2 only in the first block, no ff_context in the last
                continue

            def component(original, *args, b=b, c=c, **kwargs):
                step, branch = where()
                hs = halves(step)
                if actions[step, b, c] == RECOMPUTE:
                    out = original(*args, **kwargs)
                    for half in hs:
                        history.setdefault((branch, half, b, c), []).append(
                            (step, _map(lambda t: t.clone(), rows(out, half, len(hs)))))
                    return out
                parts = []
                for half in hs:
                    runs = history[branch, half, b, c]
                    if actions[step, b, c] == REUSE or len(runs) < 2:
                        parts.append(runs[-1][1])
                    else:
                        (s1, y1), (s2, y2) = runs[-2], runs[-1]
                        parts.append(_map(lambda a, z: z + (z - a) * ((step - s2) / (s2 - s1)), y1, y2))
                return join(parts)
            undo.append(_patch(module, component))
        signature = inspect.signature(type(block).forward)

        def run_block(original, *args, b=b, streams=streams, signature=signature, **kwargs):
            step, branch = where()
            hs = halves(step)
            inputs = tuple(signature.bind(None, *args, **kwargs).arguments[s] for s in streams)
            if skip[step, b]:
                held = [deltas[branch, half, b] for half in hs]
                delta = held[0] if len(hs) == 1 else tuple(
                    None if p[0] is None else torch.cat(p) for p in zip(*held))
                out = tuple(None if d is None else i + d for i, d in zip(inputs, delta))
                return out if len(streams) > 1 else out[0]
            out = original(*args, **kwargs)
            outs = out if isinstance(out, tuple) else (out,)
            delta = tuple(None if o is None else o - i for o, i in zip(outs, inputs))
            for half in hs:
                deltas[branch, half, b] = tuple(None if d is None else rows(d, half, len(hs)) for d in delta)
            return out
        undo.append(_patch(block, run_block))
    try:
        return runner()
    finally:
        for u in undo:
            u()


def mixed_schedule(pipe, seed=0, guidance=None, actions=(REUSE, RECOMPUTE, FORECAST), skips=True) -> CacheSchedule:
    """Steps 0 and 1 recompute; later entries draw from `actions`; blocks skipped at random, at least one per group."""
    layout = get_adapter(pipe).layout(pipe.transformer)
    rng = np.random.default_rng(seed)
    shape = (STEPS, layout.num_blocks, layout.num_components)
    acts = rng.choice(list(actions), size=shape).astype(np.int8)
    acts[:2] = RECOMPUTE
    skip = np.zeros(shape[:2], bool)
    if skips:
        skip[1:] = rng.random((STEPS - 1, layout.num_blocks)) < 0.35
        for r in layout.block_ranges().values():
            skip[2, r.start] = True
    return CacheSchedule.repaired(acts, layout, skip, guidance)


# -- the tests on tiny pipelines -----------------------------------------------------------------

def test_layout_is_the_written_one(family):
    kind, pipe = family
    cls, groups, _ = SPECS[kind]
    assert type(pipe.transformer).__name__ == cls
    layout = get_adapter(pipe).layout(pipe.transformer)
    assert [(g.name, g.components) for g in layout.groups] == [(attr, names) for attr, names, _ in groups]
    assert [g.num_blocks for g in layout.groups] == [len(getattr(pipe.transformer, attr)) for attr, _, _ in groups]
    if kind == "sd3":  # SD3.5-Medium's second attention in block 0 only; no text feed-forward in the last block
        modules = get_adapter(pipe).component_modules(pipe.transformer)
        assert [m[1] is not None for m in modules] == [True, False, False]
        assert [m[3] is not None for m in modules] == [True, True, False]


def test_all_recompute_is_bit_identical_and_removal_restores(family):
    kind, pipe = family
    reference = run(pipe, kind)
    handle = apply_cache_schedule(pipe, CacheSchedule.full(get_adapter(pipe).layout(pipe.transformer), STEPS))
    try:
        assert torch.equal(run(pipe, kind), reference)
        assert handle.peak_bytes_held == 0
    finally:
        remove_cache_schedule(pipe)
    assert not hasattr(pipe.transformer, "_diffusers_hook") or not pipe.transformer._diffusers_hook.hooks
    assert torch.equal(run(pipe, kind), reference)


def test_actions_match_the_hand_written_loop(family):
    """Reuse, forecast and block skip at once, with classifier-free guidance on (two calls per step
    where the family runs CFG as two calls: state per call)."""
    kind, pipe = family
    schedule = mixed_schedule(pipe)
    assert {REUSE, FORECAST} <= set(np.unique(schedule.actions[2:][~schedule.skip[2:]]).tolist())
    cfg = cfg_kwargs(kind)
    expected = reference_run(pipe, kind, schedule.actions, schedule.skip, **cfg)
    seen = []
    counter = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(_hidden(a, kw).shape[0]),
                                                         with_kwargs=True)
    try:
        with cache_schedule(pipe, schedule) as handle:
            got = run(pipe, kind, **cfg)
            assert handle.bytes_held == 0
    finally:
        counter.remove()
    assert torch.equal(got, expected)
    assert not torch.equal(got, run(pipe, kind, **cfg))  # the actions change the result
    # the adapter's batch and calls per step are what the pipeline does (the cost model relies on them)
    batch, calls = get_adapter(pipe).transformer_batch(pipe, 1, guidance_scale=4.5, true_cfg=bool(cfg))
    assert seen == [batch] * (calls * STEPS) and calls == calls_per_step(kind, **cfg)


@pytest.mark.parametrize("kind", ["sd3", "wan", "qwen-image"])
@pytest.mark.parametrize("action", ["reuse", "forecast", "skip"])
def test_each_action_alone_matches_the_hand_written_loop(tmp_path_factory, kind, action):
    """One action at a time on an MMDiT, the video family and a true-CFG family."""
    pipe = pipes(tmp_path_factory, kind)
    choices = {"reuse": (REUSE, RECOMPUTE), "forecast": (FORECAST, RECOMPUTE), "skip": (RECOMPUTE,)}[action]
    schedule = mixed_schedule(pipe, seed=1, actions=choices, skips=action == "skip")
    cfg = cfg_kwargs(kind)
    with cache_schedule(pipe, schedule):
        got = run(pipe, kind, **cfg)
    assert torch.equal(got, reference_run(pipe, kind, schedule.actions, schedule.skip, **cfg))


@pytest.mark.parametrize("kind", BATCHED)
def test_guidance_reuse_matches_the_hand_written_loop(tmp_path_factory, kind):
    pipe = pipes(tmp_path_factory, kind)
    assert get_adapter(pipe).batched_guidance
    guidance = np.array([0, 1, 0, 1, 1], bool)
    schedule = mixed_schedule(pipe, seed=2, guidance=guidance)
    with cache_schedule(pipe, schedule) as handle:
        got = run(pipe, kind)
        assert handle.bytes_held == 0
    assert torch.equal(got, reference_run(pipe, kind, schedule.actions, schedule.skip, guidance=guidance))
    assert not torch.equal(got, reference_run(pipe, kind, schedule.actions, schedule.skip))


def test_macs_equal_torch_flop_counter(family):
    """Per component (attention matmuls included) and per call, the adapter's MACs are what torch
    counts on the real forward (math attention, so QK^T and AV are matmuls it sees). One call at
    guidance 1 and a prompt every tokenizer truncates, so the text has its padded length everywhere."""
    kind, pipe = family
    adapter, transformer = get_adapter(pipe), pipe.transformer
    calls = []
    hook = transformer.register_forward_pre_hook(
        lambda m, a, kw: calls.append((_hidden(a, kw).shape[0], kw["encoder_hidden_states"].shape[1])),
        with_kwargs=True)
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            run(pipe, kind, steps=1, guidance=1.0)
    finally:
        hook.remove()
    (batch, text), = calls
    assert text == adapter.text_len(pipe)
    height, width, frames = TINY_SHAPES[kind]
    shape = dict(height=height, width=width, batch_size=batch, text_len=text,
                 vae_scale_factor=int(getattr(pipe, "vae_scale_factor", 8)), num_frames=frames)
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(transformer).__name__
    measured = [[flops.get(f"{root}.{group.name}.{i}.{name}", 0) // 2 for name in group.components]
                for group in adapter.layout(transformer).groups for i in range(group.num_blocks)]
    components = adapter.component_macs(transformer, **shape)
    assert components.tolist() == measured
    total = components.sum() + adapter.block_linear_macs(transformer, **shape).sum() + adapter.other_macs(transformer, **shape)
    unseen = 0
    if kind == "hunyuan-video":  # the token refiner's attention matmuls (outside the blocks) are not counted
        refiner = transformer.context_embedder.token_refiner.refiner_blocks
        unseen = sum(2 * batch * text * text * blk.attn.to_q.out_features for blk in refiner)
    assert flops[root] // 2 == total + unseen
    if frames is None:  # the cost model's own path from the pipeline (VAE factor, padded prompt) agrees
        from ecad.cost import image_macs
        from ecad.setting import Setting

        elementwise = adapter.block_elementwise_ops(transformer, **shape).sum()
        assert image_macs(pipe, Setting(height, width, 1, 1.0)) == total + elementwise


def test_flux_kontext_reuses_the_flux_adapter(tmp_path_factory):
    """FluxKontextPipeline runs FluxTransformer2DModel with the reference image's tokens appended:
    the FLUX adapter applies as is, the hooks bit-exact."""
    from PIL import Image
    from diffusers import FluxKontextPipeline

    from ecad.adapters.flux import FluxAdapter

    folder = build_tiny_pipeline("flux", tmp_path_factory.getbasetemp() / "ecad-tiny" / "flux")
    pipe = FluxKontextPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(get_adapter(pipe), FluxAdapter)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))

    def kontext(**kw):
        return pipe(prompt=["a red cat"], image=image, num_inference_steps=STEPS, guidance_scale=2.5, height=32,
                    width=32, max_area=32 * 32, _auto_resize=False, max_sequence_length=16,
                    generator=torch.Generator().manual_seed(0), output_type="pt", **kw).images

    layout = get_adapter(pipe).layout(pipe.transformer)
    schedule = mixed_schedule(pipe, seed=3)
    flux_groups = [("transformer_blocks", ("attn", "ff", "ff_context"), ("encoder_hidden_states", "hidden_states")),
                   ("single_transformer_blocks", ("attn", "proj_mlp", "proj_out"),
                    ("encoder_hidden_states", "hidden_states"))]
    expected = reference_loop(pipe, flux_groups, 1, schedule.actions, schedule.skip, None, kontext)
    plain = kontext()
    with cache_schedule(pipe, CacheSchedule.full(layout, STEPS)):
        assert torch.equal(kontext(), plain)
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(_hidden(a, kw).shape[1]),
                                                      with_kwargs=True)
    with cache_schedule(pipe, schedule):
        cached = kontext()
    hook.remove()
    assert seen == [2 * (32 // 2 // 2) ** 2] * STEPS  # the image's tokens and the reference image's
    assert torch.equal(cached, expected)
    assert not torch.equal(cached, plain)


def test_calibrate_on_a_tiny_sd3_with_a_fidelity_objective(tmp_path_factory, tmp_path):
    """ecad-calibrate searches a front on a family other than PixArt and FLUX: a valid bank for the
    SD3 layout (its optional components included), MACs as the cost model counts them."""
    import json

    from ecad.bank import ScheduleBank, fingerprint
    from ecad.cli.calibrate import main
    from ecad.cost import image_macs

    model = build_tiny_pipeline("sd3", tmp_path_factory.getbasetemp() / "ecad-tiny" / "sd3")
    assert main(["--model", str(model), "--steps", "4", "--height", "32", "--width", "32", "--num-prompts", "2",
                 "--seeds", "0", "--population", "8", "--generations", "1", "--scorer", "fidelity",
                 "--scorer-arg", "max_psnr=150", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "bank.json"),
                 "--no-progress", "--no-plot"]) == 0
    bank = ScheduleBank.load(tmp_path / "bank.json")
    assert bank.model_fingerprint == fingerprint(json.loads((model / "transformer" / "config.json").read_text()))
    assert bank.scorer == "fidelity" and len(bank.entries) >= 2
    pipe = load_pipeline(model)
    layout = get_adapter(pipe).layout(pipe.transformer)
    assert {e.cache_schedule().layout for e in bank.entries} == {layout}
    assert [e.macs for e in bank.entries] == [image_macs(pipe, bank.setting, e.cache_schedule()) for e in bank.entries]
    assert min(e.macs for e in bank.entries) < bank.no_cache_entry().macs
