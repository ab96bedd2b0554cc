"""Bank catalogue: all banks of a model, found by hub id, folder or config; the bank for a setting."""

import logging
import shutil

import pytest

from ecad.bank import BankError
from ecad.bank_catalog import choose_bank, find_banks
from ecad.configs import get_architecture
from ecad.paths import SCHEDULES_DIR
from ecad.setting import Setting

FLUX = "black-forest-labs/FLUX.1-dev"
SIGMA = "PixArt-alpha/PixArt-Sigma-XL-2-256x256"


def names(banks):
    return [f"{c.path.parent.name}/{c.path.name}" for c in banks]


def test_finds_every_bank_of_a_model_by_hub_id_or_folder():
    assert names(find_banks(FLUX)) == ["FLUX.1-dev/1024x1024-20steps.json", "FLUX.1-dev/256x256-20steps.json"]
    assert names(find_banks("/data/weights/FLUX.1-dev/")) == names(find_banks(FLUX))
    assert names(find_banks("PixArt-alpha/PixArt-XL-2-256x256")) == ["PixArt-XL-2-256x256/256x256-20steps.json"]
    assert find_banks("org/unknown-model") == []


def test_exact_setting_is_chosen_without_resampling():
    choice = choose_bank(find_banks(FLUX), Setting(1024, 1024, 20, 5.0))
    assert choice.exact and choice.path.name == "1024x1024-20steps.json"
    assert choice.schedule("fora-2") == choice.bank.entry("fora-2").cache_schedule()
    assert "bank made for 1024x1024-20steps" in choice.reason


def test_no_match_takes_the_nearest_and_says_it_resamples():
    banks = find_banks(FLUX)
    choice = choose_bank(banks, Setting(1024, 1024, 28, 3.5))
    assert not choice.exact and choice.path.name == "1024x1024-20steps.json"  # same resolution beats the rest
    assert choice.schedule("fast-256-to-1024").num_steps == 28
    assert choice.schedule("fast-256-to-1024").mask[0].all()
    assert "no bank for 1024x1024-28steps at guidance 3.5" in choice.reason
    assert "num_inference_steps 20 -> 28" in choice.reason and "resampled from 20 to 28 steps" in choice.reason
    near = choose_bank(banks, Setting(512, 512, 20, 5.0))
    assert near.path.name == "256x256-20steps.json"  # 256² is nearer 512² than 1024² is
    assert "resampled" not in near.reason and "height 256 -> 512" in near.reason
    guidance_only = choose_bank(banks, Setting(256, 256, 20, 3.5))
    assert not guidance_only.exact and guidance_only.schedule("ours-fast").num_steps == 20


def test_config_fingerprint_finds_a_copy_under_another_name_and_refuses_other_configs(tmp_path, caplog):
    sigma_config = dict(get_architecture(SIGMA).meta_transformer().config)
    found = find_banks("/home/me/my-sigma-copy", transformer_config=sigma_config)
    assert names(found) == ["PixArt-Sigma-XL-2-256x256/256x256-20steps.json"]

    impostor = tmp_path / "FLUX.1-dev"
    impostor.mkdir()
    shutil.copy(SCHEDULES_DIR / "PixArt-Sigma-XL-2-256x256" / "256x256-20steps.json", impostor / "256x256-20steps.json")
    (impostor / "broken.json").write_text("{not json")
    flux_config = dict(get_architecture(FLUX).meta_transformer().config)
    with caplog.at_level(logging.WARNING, logger="ecad.bank_catalog"):
        found = find_banks(FLUX, transformer_config=flux_config, folders=[tmp_path, SCHEDULES_DIR])
    assert names(found) == ["FLUX.1-dev/1024x1024-20steps.json", "FLUX.1-dev/256x256-20steps.json"]
    assert all(str(c.path).startswith(str(SCHEDULES_DIR)) for c in found)
    assert "made for another transformer config" in caplog.text and "broken.json: not valid JSON" in caplog.text


def test_nothing_to_choose_from():
    with pytest.raises(BankError, match="no schedule bank to choose from"):
        choose_bank([], Setting(256, 256, 20, 4.5))
