"""Guidance reuse: at a marked step only the conditional rows run (tiny PixArt; FLUX refuses it)."""

import numpy as np
import pytest
import torch

from engine_helpers import STEPS, SIZE, reference_actions_run, run, tiny_dir
from ecad.adapters import get_adapter
from ecad.cost import image_macs
from ecad.generate import generate, load_pipeline
from ecad.hooks import apply_cache_schedule, cache_schedule
from ecad.schedule import FORECAST, RECOMPUTE, REUSE, CacheSchedule, ScheduleError
from ecad.search.genome import GeneSpace, Genome
from ecad.setting import Setting

GUIDANCE = np.array([0, 1, 0, 1, 1, 0], bool)  # steps 1, 3, 4: conditional rows only


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(tiny_dir(tmp_path_factory, "pixart-alpha"))


def layout(pipe):
    return get_adapter(pipe).layout(pipe.transformer)


def schedule_with_guidance(pipe, kind: str, seed: int = 0) -> CacheSchedule:
    lay = layout(pipe)
    shape = (STEPS, lay.num_blocks, lay.num_components)
    rng = np.random.default_rng(seed)
    if kind == "full":
        actions, skip = np.full(shape, RECOMPUTE, np.int8), None
    else:
        actions = rng.choice([REUSE, RECOMPUTE, FORECAST], size=shape).astype(np.int8)
        actions[:2] = RECOMPUTE
        skip = rng.random(shape[:2]) < 0.3
        skip[:1] = False
    return CacheSchedule.repaired(actions, lay, skip, GUIDANCE)


@pytest.mark.parametrize("kind", ["full", "mixed"])
def test_guidance_reuse_matches_reference_loop(pipe, kind):
    schedule = schedule_with_guidance(pipe, kind)
    schedule.validate()
    assert schedule.guidance_reuse.tolist() == GUIDANCE.tolist()
    if kind == "mixed":  # the unconditional half misses steps, so its plans differ from the conditional one's
        assert (schedule.actions[2:] == FORECAST).any() and schedule.skip.any()
    expected = reference_actions_run(pipe, schedule.actions, schedule.skip, guidance=schedule.guidance_reuse)
    plain = reference_actions_run(pipe, schedule.actions, schedule.skip)
    with cache_schedule(pipe, schedule) as handle:
        got = run(pipe, prompts=("a red cat", "a blue dog"))
        assert handle.bytes_held == 0  # everything, the guidance difference too, released at its last read
        assert torch.equal(run(pipe, prompts=("a red cat", "a blue dog")), got)
    assert torch.equal(got, reference_actions_run(pipe, schedule.actions, schedule.skip, guidance=schedule.guidance_reuse,
                                                  prompts=("a red cat", "a blue dog")))
    with cache_schedule(pipe, schedule):
        assert torch.equal(run(pipe), expected)
    assert not torch.equal(expected, plain)  # reusing guidance changes the images


def test_conditional_only_steps_run_half_the_rows(pipe):
    schedule = schedule_with_guidance(pipe, "full")
    rows = []  # rows the first block's self-attention sees, per step
    module = pipe.transformer.transformer_blocks[0].attn1
    h = module.register_forward_pre_hook(
        lambda m, args, kwargs: rows.append((args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
    try:
        with cache_schedule(pipe, schedule):
            run(pipe)
    finally:
        h.remove()
    assert rows == [1 if g else 2 for g in GUIDANCE]  # one image: [uncond; cond] = 2 rows, 1 when reused


def test_macs_count_half_the_rows_at_guidance_steps(pipe):
    setting = Setting(SIZE, SIZE, STEPS, 4.5)
    full = image_macs(pipe, setting)
    schedule = schedule_with_guidance(pipe, "full")
    assert image_macs(pipe, setting, schedule) == full * (STEPS - GUIDANCE.sum() / 2) / STEPS


def test_guidance_reuse_needs_batched_guidance(pipe, tmp_path_factory):
    schedule = schedule_with_guidance(pipe, "full")
    no_cfg = Setting(SIZE, SIZE, STEPS, 1.0)
    with pytest.raises(ScheduleError, match="guidance_scale=1.0 runs no classifier-free guidance"):
        generate(pipe, "a red cat", 0, no_cfg, schedule)
    # what the server runs for such a request: the same schedule with both halves at every step
    plain = schedule.without_guidance_reuse()
    assert not plain.guidance_reuse.any() and np.array_equal(plain.actions, schedule.actions)
    assert torch.equal(generate(pipe, "a red cat", 0, no_cfg, plain), generate(pipe, "a red cat", 0, no_cfg))
    flux = load_pipeline(tiny_dir(tmp_path_factory, "flux"))
    lay = layout(flux)
    flux_schedule = CacheSchedule.from_actions(np.ones((STEPS, lay.num_blocks, lay.num_components), np.int8), lay,
                                               guidance=GUIDANCE)
    with pytest.raises(ScheduleError, match="FluxTransformer2DModel does not run classifier-free guidance as one batch"):
        apply_cache_schedule(flux, flux_schedule)


def test_schedule_format_v3_round_trip_and_validation(pipe):
    schedule = schedule_with_guidance(pipe, "mixed")
    data = schedule.to_dict()
    assert data["version"] == 3 and "guidance" in data
    back = CacheSchedule.from_json(schedule.to_json())
    assert back == schedule and back.hash == schedule.hash
    without = CacheSchedule.from_actions(schedule.actions, schedule.layout, schedule.skip)
    assert without != schedule and without.hash != schedule.hash and without.to_dict()["version"] == 2
    with pytest.raises(ScheduleError, match="malformed"):
        CacheSchedule.from_dict({k: v for k, v in data.items() if k != "guidance"})
    bad = CacheSchedule.from_actions(schedule.actions, schedule.layout, schedule.skip, np.r_[True, GUIDANCE[1:]])
    with pytest.raises(ScheduleError, match="step 0 reuses guidance"):
        bad.validate()
    assert CacheSchedule.repaired(schedule.actions, schedule.layout, schedule.skip, bad.guidance_reuse) == schedule
    up = schedule.resample(2 * STEPS - 1)  # step i takes source step round(i / 2)
    assert up.guidance_reuse.tolist() == GUIDANCE[np.rint(np.arange(2 * STEPS - 1) / 2).astype(int)].tolist()
    assert schedule.skip_idle_blocks().guidance_reuse.tolist() == GUIDANCE.tolist()


def test_gene_space_with_guidance_genes(pipe):
    lay = layout(pipe)
    genome = Genome(lay, STEPS, ("reuse", "forecast", "skip", "guidance"))
    genes, space = genome.genes, genome.space
    assert genes == GeneSpace(lay, STEPS, guidance_reuse=True)
    assert space.n_var == genes.num_genes == genes.num_action_genes + genes.num_skip_genes + STEPS - 1
    schedule = schedule_with_guidance(pipe, "mixed")
    assert genes.from_genes(genes.to_genes(schedule)) == schedule
    assert genes.to_genes(schedule)[-(STEPS - 1):].tolist() == GUIDANCE[1:].astype(int).tolist()
    with pytest.raises(ScheduleError, match="no guidance genes"):
        GeneSpace(lay, STEPS).to_genes(schedule)
