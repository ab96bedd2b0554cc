"""Analytic MACs against torch's flop counter, and the schedule cost arithmetic."""

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from engine_helpers import run, tiny_pipe  # noqa: F401
from ecad.adapters import get_adapter
from ecad.cost import cost_table, image_macs, macs_speedup, macs_table, schedule_macs
from ecad.setting import Setting
from ecad.heuristics import fora
from ecad.schedule import FORECAST, REUSE, CacheSchedule


def first_transformer_call(pipe, **kw):
    """Positional and keyword arguments of the first transformer call of a pipeline run."""
    captured = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: captured.append((args, kwargs)) if not captured else None, with_kwargs=True)
    try:
        run(pipe, steps=2, **kw)
    finally:
        handle.remove()
    return captured[0]


@pytest.mark.parametrize("true_cfg", [False, True])
def test_no_cache_macs_match_flop_counter(tiny_pipe, true_cfg):
    pipe = tiny_pipe
    flux = "Flux" in type(pipe).__name__
    if true_cfg and not flux:
        pytest.skip("true CFG is FLUX-only")
    kw = {"negative_prompt": ["a dog"], "true_cfg_scale": 2.0} if true_cfg else {}
    args, kwargs = first_transformer_call(pipe, **kw)
    adapter = get_adapter(pipe)
    batch, calls = adapter.transformer_batch(pipe, 1, guidance_scale=4.5, true_cfg=true_cfg)
    assert (args[0] if args else kwargs["hidden_states"]).shape[0] == batch
    # The math backend runs attention as matmuls the flop counter sees (the fused CPU kernel is not counted).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        pipe.transformer(*args, **kwargs)
    measured = counter.get_total_flops() / 2  # FLOPs = 2 x MACs
    text_len = adapter.text_len(pipe)
    shape = dict(height=32, width=32, batch_size=batch, text_len=text_len)
    predicted = schedule_macs(CacheSchedule.full(adapter.layout(pipe.transformer), 1), pipe, **shape)
    # the flop counter sees matmuls only; the blocks' element-wise ops are counted on top of them
    elementwise = int(adapter.block_elementwise_ops(pipe.transformer, vae_scale_factor=pipe.vae_scale_factor, **shape).sum())
    assert 0 < elementwise < 0.2 * measured
    assert abs(predicted - elementwise - measured) <= 0.05 * measured


def test_schedule_macs_is_a_sum(tiny_pipe):
    pipe = tiny_pipe
    lay = get_adapter(pipe).layout(pipe.transformer)
    shape = dict(height=32, width=32, batch_size=2, text_len=16)
    component, other = macs_table(pipe, **shape)  # other: everything outside the components
    assert component.shape == (lay.num_blocks, lay.num_components) and (component > 0).all()
    full = schedule_macs(CacheSchedule.full(lay, 6), pipe, **shape)
    assert full == 6 * (component.sum() + other)
    f2 = schedule_macs(fora(lay, 6, 2), pipe, **shape)
    assert f2 == 3 * component.sum() + 6 * other
    assert schedule_macs(fora(lay, 6, 2), pipe, calls_per_step=2, **shape) == 2 * f2
    setting = Setting(32, 32, 6, 4.5)
    assert image_macs(pipe, setting, None) == image_macs(pipe, setting, CacheSchedule.full(lay, 6))
    assert macs_speedup(pipe, setting, fora(lay, 6, 2)) == pytest.approx(
        image_macs(pipe, setting, None) / image_macs(pipe, setting, fora(lay, 6, 2)))
    mask = np.ones((6, lay.num_blocks, lay.num_components), bool)
    mask[1:, 0, 0] = False
    one = schedule_macs(CacheSchedule(mask, lay), pipe, **shape)
    assert full - one == 5 * component[0, 0]


def test_forecast_and_skip_costs(tiny_pipe):
    pipe = tiny_pipe
    lay = get_adapter(pipe).layout(pipe.transformer)
    shape = dict(height=32, width=32, batch_size=2, text_len=16)
    t = cost_table(pipe, **shape)
    assert (t.block_other > 0).all() and (t.component_elements > 0).all() and (t.block_elements > 0).all()
    ones = np.ones((6, lay.num_blocks, lay.num_components), np.int8)
    full = schedule_macs(CacheSchedule.from_actions(ones, lay), pipe, **shape)
    # component (1, 2): recompute 0, 1, forecast 2, 3, recompute 4, reuse 5
    a = ones.copy()
    a[2:4, 1, 2] = FORECAST
    a[5, 1, 2] = REUSE
    got = schedule_macs(CacheSchedule.from_actions(a, lay), pipe, **shape)
    n = t.component_elements[1, 2]
    assert got == full - 3 * t.component[1, 2] + 2 * 2 * n + 1 * n  # two forecasts, one difference
    # block 1 skipped at steps 2, 3 and 5: saves its components and in-block work; pays the adds
    skip = np.zeros((6, lay.num_blocks), bool)
    skip[[2, 3, 5], 1] = True
    got = schedule_macs(CacheSchedule.from_actions(ones, lay, skip), pipe, **shape)
    saved = 3 * (t.component[1].sum() + t.block_other[1])
    assert got == full - saved + 3 * t.block_elements[1] + 2 * t.block_elements[1]  # 3 adds, 2 deltas formed
    # a skip saves more than reusing every component of the block
    reuse = ones.copy()
    reuse[[2, 3, 5], 1] = REUSE
    assert got < schedule_macs(CacheSchedule.from_actions(reuse, lay), pipe, **shape)
