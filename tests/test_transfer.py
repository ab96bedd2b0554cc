"""Moving a schedule to another step count by noise level (`ecad.transfer`)."""

import numpy as np
import pytest

from ecad.heuristics import fora
from ecad.schedule import FORECAST, RECOMPUTE, REUSE, BlockGroup, BlockLayout, CacheSchedule
from ecad.transfer import covered_steps, source_positions, transfer_schedule

LAYOUT = BlockLayout((BlockGroup("transformer_blocks", 3, ("attn1", "attn2", "ff")),))


def linear_levels(n):
    """Evenly spaced noise levels, as a DDIM-like scheduler's timesteps."""
    return 1000.0 * (1 - np.arange(n) / n)


def test_the_same_levels_give_the_same_schedule():
    rng = np.random.default_rng(0)
    s = CacheSchedule.repaired(rng.integers(0, 3, (20, 3, 3)), LAYOUT, rng.random((20, 3)) < 0.2, rng.random(20) < 0.2)
    assert transfer_schedule(s, linear_levels(20), linear_levels(20)) == s


def test_fora_keeps_its_recomputes_per_noise_interval():
    f2 = fora(LAYOUT, 20, 2)
    at40 = transfer_schedule(f2, linear_levels(20), linear_levels(40))
    steps = np.flatnonzero(at40.mask[:, 0, 0])
    assert list(steps) == list(range(0, 40, 4))  # FORA n=2 at 20 steps is FORA n=4 at 40
    at10 = transfer_schedule(f2, linear_levels(20), linear_levels(10))
    assert at10.mask.all()  # every 10-step interval covers a recompute: no caching left
    assert transfer_schedule(CacheSchedule.full(LAYOUT, 20), linear_levels(20), linear_levels(50)).mask.all()


def test_positions_and_cover_partition_the_source_steps():
    positions = source_positions(linear_levels(20), linear_levels(12))
    assert positions[0] == 0 and np.all(np.diff(positions) > 0)
    covered = covered_steps(positions, 20)
    flat = np.concatenate(covered)
    assert len(flat) == len(set(flat)) and set(flat) <= set(range(20))
    assert covered[0].tolist() == [0]
    with pytest.raises(ValueError, match="decrease"):
        source_positions(np.arange(5.0), linear_levels(3))


def test_a_transfer_is_always_valid_even_where_resampling_is_not():
    """A forecast right after the first recompute is valid at 20 steps (two recomputes precede it)
    and not after nearest-index resampling to fewer steps; the transfer repairs it."""
    actions = np.full((20, 3, 3), REUSE, np.int8)
    actions[0] = actions[1] = RECOMPUTE
    actions[2:, 0, 0] = FORECAST
    source = CacheSchedule.from_actions(actions, LAYOUT)
    source.validate()
    rng = np.random.default_rng(1)
    for target in (5, 7, 12, 30, 50):
        moved = transfer_schedule(source, linear_levels(20), linear_levels(target))
        moved.validate()
        assert moved.num_steps == target
    for _ in range(20):  # random schedules, random step counts
        s = CacheSchedule.repaired(rng.integers(0, 3, (20, 3, 3)), LAYOUT, rng.random((20, 3)) < 0.3,
                                   rng.random(20) < 0.3)
        transfer_schedule(s, linear_levels(20), linear_levels(int(rng.integers(2, 60)))).validate()


def test_skips_and_guidance_reuse_are_not_stretched_over_steps_the_source_ran():
    actions = np.full((10, 3, 3), RECOMPUTE, np.int8)
    skip = np.zeros((10, 3), bool)
    skip[5, 1] = True  # block 1 skipped at one step only
    guidance = np.zeros(10, bool)
    guidance[6] = True
    s = CacheSchedule.from_actions(actions, LAYOUT, skip, guidance)
    sparse = transfer_schedule(s, linear_levels(10), linear_levels(5))  # each target step covers two source steps
    assert not sparse.skip.any() and not sparse.guidance_reuse.any()
    dense = transfer_schedule(s, linear_levels(10), linear_levels(20))
    assert dense.skip[:, 1].sum() >= 1 and dense.skip[:, [0, 2]].sum() == 0


def test_the_bundled_banks_entries_transfer_by_the_pipelines_own_noise_levels():
    from ecad.bank import ScheduleBank
    from ecad.generate import load_pipeline
    from ecad.paths import REPO_ROOT
    from ecad.transfer import noise_levels, transfer_to_setting

    pipe = load_pipeline(REPO_ROOT / "models" / "ecad-scenes")
    bank = ScheduleBank.load(REPO_ROOT / "schedules" / "ecad-scenes" / "32x32-20steps.json")
    levels = noise_levels(pipe, bank.setting)
    assert len(levels) == 20 and np.all(np.diff(levels) < 0)
    for steps in (12, 50):
        target = bank.setting.with_changes(num_inference_steps=steps)
        moved = [transfer_to_setting(e.cache_schedule(), pipe, bank.setting, target) for e in bank.entries[:60]]
        for m in moved:
            m.validate(num_steps=steps)
        assert transfer_to_setting(bank.no_cache_entry().cache_schedule(), pipe, bank.setting, target).mask.all()


COMMITTED_TRANSFERS = sorted(p for p in __import__("ecad.paths", fromlist=["SCHEDULES_DIR"]).SCHEDULES_DIR.glob("*/*.json")
                             if "transferred_from" in __import__("json").loads(p.read_text()).get("calibration", {}))


def test_committed_transferred_banks_exist():
    names = {f"{p.parent.name}/{p.name}" for p in COMMITTED_TRANSFERS}
    assert {"FLUX.1-dev/1024x1024-28steps.json", "FLUX.1-dev/256x256-28steps.json",
            "PixArt-XL-2-512x512/512x512-20steps.json", "PixArt-XL-2-1024-MS/1024x1024-20steps.json"} <= names


@pytest.mark.parametrize("path", COMMITTED_TRANSFERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_committed_transferred_bank_is_what_ecad_transfer_makes(path, tmp_path):
    """Reproducible from its source bank without weights, valid on the real layout, unmeasured."""
    from ecad.bank import ScheduleBank
    from ecad.cli.transfer import main
    from ecad.configs import get_architecture
    from ecad.paths import SCHEDULES_DIR, model_name

    bank = ScheduleBank.load(path)
    source_model, source_setting = bank.calibration["transferred_from"].rsplit(" ", 1)
    source = SCHEDULES_DIR / model_name(source_model) / f"{source_setting}.json"
    args = [str(source), "--steps", str(bank.num_inference_steps), "--height", str(bank.height),
            "--width", str(bank.width), "--out", str(tmp_path / "fresh.json")]
    if model_name(bank.model) != model_name(source_model):
        args += ["--to-model", model_name(bank.model)]
    assert main(args) == 0
    fresh = ScheduleBank.load(tmp_path / "fresh.json")
    assert [e.model_dump() for e in fresh.entries] == [e.model_dump() for e in bank.entries]
    layout = get_architecture(bank.model).layout()
    for entry in bank.entries:
        entry.cache_schedule().validate(layout, bank.num_inference_steps)
        assert entry.quality_measured is False and (entry.provenance or entry.id == "no-cache")
