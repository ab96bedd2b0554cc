"""Forecast and skip-block actions: bit-exact against a hand-written reference loop (PixArt, FLUX)."""

import numpy as np
import pytest
import torch

from engine_helpers import STEPS, reference_actions_run, reference_run, run, tiny_dir, tiny_pipe  # noqa: F401
from ecad.adapters import get_adapter
from ecad.hooks import cache_schedule
from ecad.schedule import FORECAST, RECOMPUTE, REUSE, CacheSchedule


def layout(pipe):
    return get_adapter(pipe).layout(pipe.transformer)


def action_schedule(pipe, kind: str, seed: int = 0, steps: int = STEPS) -> CacheSchedule:
    """Steps 0 and 1 recompute; later entries draw from the actions under test."""
    lay = layout(pipe)
    rng = np.random.default_rng(seed)
    shape = (steps, lay.num_blocks, lay.num_components)
    choices = {"reuse": [REUSE, RECOMPUTE], "forecast": [FORECAST, RECOMPUTE], "skip": [RECOMPUTE],
               "mixed": [REUSE, RECOMPUTE, FORECAST]}[kind]
    actions = rng.choice(choices, size=shape).astype(np.int8)
    actions[:2] = RECOMPUTE
    skip = np.zeros(shape[:2], bool)
    if kind in ("skip", "mixed"):
        skip[1:] = rng.random((steps - 1, lay.num_blocks)) < 0.4
        skip[1, 0] = True  # at least one
    return CacheSchedule.repaired(actions, lay, skip)


@pytest.mark.parametrize("kind", ["reuse", "forecast", "skip", "mixed"])
def test_action_matches_reference_loop(tiny_pipe, kind):
    pipe = tiny_pipe
    schedule = action_schedule(pipe, kind)
    schedule.validate()
    if kind in ("skip", "mixed"):  # every block group has skipped blocks (FLUX: double and single)
        assert all(schedule.skip[:, r].any() for r in schedule.layout.block_ranges().values())
    expected = reference_actions_run(pipe, schedule.actions, schedule.skip)
    blocks = get_adapter(pipe).block_modules(pipe.transformer)
    with cache_schedule(pipe, schedule) as handle:
        got = run(pipe)
        assert handle.bytes_held == 0  # everything released at its last read
        assert torch.equal(run(pipe), got)  # per-call state: a second call gives the same images
    assert torch.equal(got, expected)
    assert not torch.equal(got, run(pipe))  # the actions change the result
    # removal restores the blocks exactly (no instance forward, no hook registry left)
    assert not any("forward" in b.__dict__ or hasattr(b, "_diffusers_hook") for b in blocks)


def test_reference_loop_agrees_with_the_v1_reference(tiny_pipe):
    # the action reference, restricted to recompute/reuse, is the mask reference of test_hooks
    pipe = tiny_pipe
    schedule = action_schedule(pipe, "reuse", seed=3)
    assert torch.equal(reference_actions_run(pipe, schedule.actions, schedule.skip),
                       reference_run(pipe, schedule.mask))


def test_forecast_is_not_reuse(tiny_pipe):
    pipe = tiny_pipe
    forecast = action_schedule(pipe, "forecast", seed=1)
    as_reuse = CacheSchedule(forecast.mask, forecast.layout)  # same recomputes, reuse elsewhere
    with cache_schedule(pipe, forecast):
        a = run(pipe)
    with cache_schedule(pipe, as_reuse):
        b = run(pipe)
    assert not torch.equal(a, b)


def test_flux_true_cfg_actions_per_branch(tmp_path_factory):
    from ecad.generate import load_pipeline

    pipe = load_pipeline(tiny_dir(tmp_path_factory, "flux"))
    schedule = action_schedule(pipe, "mixed", seed=5)
    kw = {"negative_prompt": ["a blue dog"], "true_cfg_scale": 3.0}
    expected = reference_actions_run(pipe, schedule.actions, schedule.skip, calls_per_step=2, **kw)
    with cache_schedule(pipe, schedule):
        assert torch.equal(run(pipe, **kw), expected)


def output_bytes(pipe, module) -> int:
    sizes = []
    h = module.register_forward_hook(lambda m, a, out: sizes.append(
        sum(o.numel() * o.element_size() for o in (out if isinstance(out, tuple) else (out,)))))
    run(pipe, steps=2)
    h.remove()
    return sizes[0]


def test_memory_is_held_only_while_needed(tiny_pipe):
    pipe = tiny_pipe
    lay = layout(pipe)
    first = get_adapter(pipe).component_modules(pipe.transformer)[0][0]
    one = output_bytes(pipe, first)
    # one component: recompute 0, 1, forecast 2, 3, recompute 4, reuse 5
    actions = np.ones((STEPS, lay.num_blocks, lay.num_components), np.int8)
    actions[2:4, 0, 0] = FORECAST
    actions[5, 0, 0] = REUSE
    with cache_schedule(pipe, CacheSchedule.from_actions(actions, lay)) as handle:
        run(pipe)
        assert handle.peak_bytes_held == 2 * one  # the last output and its difference
        assert handle.bytes_held == 0
    block = get_adapter(pipe).block_modules(pipe.transformer)[0]
    block_out = output_bytes(pipe, block)
    skip = np.zeros((STEPS, lay.num_blocks), bool)
    skip[2:4, 0] = True
    with cache_schedule(pipe, CacheSchedule.from_actions(np.ones_like(actions), lay, skip)) as handle:
        run(pipe)
        assert handle.peak_bytes_held == block_out  # one delta per residual stream


def test_action_plan_on_many_random_columns():
    # A component hook alone on a Linear, stepped by hand over 300 random valid columns (with
    # skipped steps), against the reference formulas; nothing may stay held at the end.
    from diffusers.hooks import HookRegistry

    from ecad.hooks.actions import ActionPlan, CacheState, ComponentHook
    from ecad.schedule import BlockGroup, BlockLayout

    lay = BlockLayout((BlockGroup("blocks", 1, ("f",)),))
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(2, 12))
        s = CacheSchedule.repaired(rng.integers(0, 3, (n, 1, 1)), lay, rng.random((n, 1)) < 0.3)
        s.validate()
        module = torch.nn.Linear(3, 3)
        state = CacheState()
        HookRegistry.check_if_exists_or_initialize(module).register_hook(
            ComponentHook(state, 0, 0, "f", ActionPlan.build(s.actions[:, 0, 0], s.skip[:, 0])), "c")
        runs = []
        for step in range(n):
            if s.skip[step, 0]:
                continue
            state.step, state.call_id = step, state.call_id + 1
            x = torch.randn(2, 3)
            got = module(x)
            action = s.actions[step, 0, 0]
            if action == RECOMPUTE:
                runs.append((step, got))
                want = torch.nn.functional.linear(x, module.weight, module.bias)
            elif action == REUSE:
                want = runs[-1][1]
            else:
                (s1, y1), (s2, y2) = runs[-2], runs[-1]
                want = y2 + (y2 - y1) * ((step - s2) / (s2 - s1))
            assert torch.equal(got, want), (trial, step)
        assert state.bytes_held == 0 and not state.held, trial
