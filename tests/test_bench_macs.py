"""One MACs definition: the benchmark's runtime counter (`MacsCounter`) equals `ecad.cost.image_macs`
for every action of our engine, and a method that skips blocks is charged none of their work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad import heuristics as H
from ecad.adapters import get_adapter
from ecad.bench import competitors as C
from ecad.cost import cost_table, image_macs, row_share
from ecad.generate import generate, load_pipeline
from ecad.hooks import cache_schedule
from ecad.hooks.actions import ActionPlan
from ecad.schedule import FORECAST, CacheSchedule
from ecad.setting import Setting
from ecad.tiny import build_tiny_pipeline

STEPS = 10
SETTING = Setting(32, 32, STEPS, 4.5)
PROMPTS, SEEDS = ["a red cat", "a blue dog"], [0, 1]
GUIDANCE_STEPS = [2, 3, 5, 8]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_pipeline("pixart-alpha", tmp_path_factory.mktemp("macs") / "tiny-alpha")
    pipe = load_pipeline(path)
    return pipe, get_adapter(pipe).layout(pipe.transformer)


def _guidance(layout, schedule: CacheSchedule) -> CacheSchedule:
    steps = np.zeros(STEPS, bool)
    steps[GUIDANCE_STEPS] = True
    return CacheSchedule.repaired(schedule.actions, layout, schedule.skip, steps)


def _runtime_macs(pipe, schedule: CacheSchedule | None) -> float:
    """MACs per image that the benchmark's counter saw while the schedule ran."""
    with cache_schedule(pipe, schedule):
        counter = C.MacsCounter(pipe, height=32, width=32, num_images=len(PROMPTS), guidance_scale=4.5)
        try:
            generate(pipe, PROMPTS, SEEDS, SETTING)
        finally:
            counter.remove()
    return counter.total / len(PROMPTS)


SCHEDULES = {
    "no-cache": lambda layout: CacheSchedule.full(layout, STEPS),
    "reuse": lambda layout: H.fora(layout, STEPS, 2),
    "component reuse": lambda layout: H.component_fora(layout, STEPS, 3, ["ff"]),
    "forecast": lambda layout: H.taylorseer(layout, STEPS, 2),
    "skip": lambda layout: H.block_skip(layout, STEPS, 2),
    "skip, every block": lambda layout: H.block_skip(layout, STEPS, 2, leading_blocks=0, early_skip=2),
    "guidance reuse": lambda layout: _guidance(layout, CacheSchedule.full(layout, STEPS)),
    "guidance reuse + reuse": lambda layout: _guidance(layout, H.fora(layout, STEPS, 2)),
    "guidance reuse + skip": lambda layout: _guidance(layout, H.block_skip(layout, STEPS, 2)),
}


@pytest.mark.parametrize("action", list(SCHEDULES))
def test_runtime_macs_equal_image_macs_for_every_action(tiny, action):
    pipe, layout = tiny
    schedule = SCHEDULES[action](layout)
    schedule.validate(layout=layout)
    analytic = image_macs(pipe, SETTING, schedule)
    assert _runtime_macs(pipe, None if action == "no-cache" else schedule) == pytest.approx(analytic, rel=1e-12, abs=0.5)
    if action != "no-cache":
        assert analytic < image_macs(pipe, SETTING)


def _unconditional_residual(pipe, schedule: CacheSchedule) -> float:
    """What the runtime counts and `image_macs` does not, per image, where a schedule reuses
    guidance and forecasts: at the steps that run both halves, the unconditional half follows its
    own plan (`ActionPlan.build` over the steps it runs), whose forecasts and differences differ
    from the conditional half's, which `image_macs` charges to the whole batch."""
    table = cost_table(pipe, height=32, width=32, batch_size=2, text_len=get_adapter(pipe).text_len(pipe))
    cond_only = schedule.guidance_reuse
    total = 0.0
    for b in range(schedule.layout.num_blocks):
        for c in range(schedule.layout.num_components):
            column, skip = schedule.actions[:, b, c], schedule.skip[:, b]
            cond, uncond = ActionPlan.build(column, skip), ActionPlan.build(column, skip | cond_only)
            half = table.component_elements[b, c] / 2
            for s in np.nonzero(~cond_only)[0]:
                ops = [2 * (p.action[s] == FORECAST) + p.make_diff[s] for p in (uncond, cond)]
                total += (ops[0] - ops[1]) * half * row_share(schedule)[s]
    return total


def test_guidance_reuse_with_forecasts_differs_by_the_unconditional_halfs_own_plan(tiny):
    pipe, layout = tiny
    schedule = _guidance(layout, H.taylorseer(layout, STEPS, 2))
    residual = _unconditional_residual(pipe, schedule)
    assert residual != 0  # the case exists: the unconditional half misses recomputes at cond-only steps
    analytic = image_macs(pipe, SETTING, schedule)
    assert _runtime_macs(pipe, schedule) == pytest.approx(analytic + residual, rel=1e-12)
    assert abs(residual) / analytic < 1e-3


def test_a_method_that_skips_blocks_is_not_charged_their_work(tiny):
    """diffusers' FirstBlockCache skips every block after the first at a cached step: the counter
    charges neither their components nor their work outside them (norms, AdaLN, residual adds)."""
    pipe, layout = tiny
    fbc = C.diffusers_methods(SETTING)[0]
    fbc.enable(pipe, 10.0)  # a threshold nothing exceeds: every step after the first is cached
    try:
        counter = C.MacsCounter(pipe, height=32, width=32, num_images=2, guidance_scale=4.5)
        generate(pipe, PROMPTS, SEEDS, SETTING)
        counter.remove()
    finally:
        fbc.disable(pipe)
    table = cost_table(pipe, height=32, width=32, batch_size=4, text_len=get_adapter(pipe).text_len(pipe))
    first_block = table.component[0].sum() + table.block_other[0]
    full = table.component.sum() + table.block_other.sum()
    # step 0 runs everything; later steps run the first block and the work outside the blocks
    expected = (full + table.other + (STEPS - 1) * (first_block + table.other)) / 2
    assert counter.total / 2 == pytest.approx(expected, rel=1e-9)
    assert torch.equal(generate(pipe, PROMPTS, SEEDS, SETTING), generate(pipe, PROMPTS, SEEDS, SETTING))
