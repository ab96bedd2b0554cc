"""The benchmark's splits: validation and held-out prompts and seeds disjoint from each other and from
the calibration's, and the prompt sets the committed bank was calibrated and validated on unchanged."""

from __future__ import annotations

import pytest

from ecad.bank import ScheduleBank
from ecad.paths import DEFAULT_MODEL, SCHEDULES_DIR
from ecad.quality.prompts import (SEED_BASE, assert_disjoint_splits, held_out_prompts, prompt_set, split_seeds,
                                  validation_prompts)


def test_each_split_draws_seeds_from_its_own_range():
    assert split_seeds("calibration", 2) == [0, 1]  # ecad-calibrate's default --seeds
    assert split_seeds("validation", 4) == [1000, 1001, 1002, 1003]
    assert split_seeds("held-out", 3) == [2000, 2001, 2002]
    largest = {name: set(split_seeds(name, 1000)) for name in SEED_BASE}
    assert not largest["calibration"] & largest["validation"] and not largest["validation"] & largest["held-out"]
    with pytest.raises(ValueError, match="split must be one of"):
        split_seeds("test", 2)
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        split_seeds("validation", 1001)


def test_disjointness_is_checked_for_prompts_and_seeds():
    assert_disjoint_splits({"a": (["x"], [0]), "b": (["y"], [1]), "c": (["z"], [2])})
    with pytest.raises(ValueError, match="the a and c splits share 1 seeds"):
        assert_disjoint_splits({"a": (["x"], [0, 1]), "b": (["y"], [2]), "c": (["z"], [1])})
    with pytest.raises(ValueError, match="the b and c splits share 1 prompts"):
        assert_disjoint_splits({"a": (["x"], [0]), "b": (["y"], [1]), "c": (["y"], [2])})


def test_the_bundled_models_splits_are_disjoint_and_the_banks_sets_unchanged():
    bank = ScheduleBank.load(SCHEDULES_DIR / "ecad-scenes" / "32x32-20steps.json")
    calibration = list(bank.calibration["prompts"])
    assert calibration == prompt_set(DEFAULT_MODEL, len(calibration), "calibration")  # what it was calibrated on
    validation = validation_prompts(DEFAULT_MODEL, 64, calibration)
    # asking for more validation prompts extends the list: the bank's 8 come first
    assert validation[:8] == list(bank.calibration["validation_prompts"])
    held = held_out_prompts(DEFAULT_MODEL, 64, calibration)
    assert len(set(held)) == len(held) == 64 and len(set(validation)) == 64
    # the held-out generator can draw a calibration prompt (short scenes repeat): it is skipped
    assert set(prompt_set(DEFAULT_MODEL, 64, "held-out")) & set(calibration)
    assert_disjoint_splits({"calibration": (calibration, bank.calibration["seeds"]),
                            "validation": (validation, split_seeds("validation", 4)),
                            "held-out": (held, split_seeds("held-out", 4))})


def test_a_generic_model_gets_the_distinct_prompts_there_are():
    held = held_out_prompts("generic", 64)
    assert 0 < len(held) == len(set(held)) <= 8
