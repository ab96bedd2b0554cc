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
    return [f"{path.parent.name}/{path.name}" for path in banks]


def settings(banks):
    return {path.name: bank.setting for path, bank in banks.items()}


def test_finds_every_bank_of_a_model_by_hub_id_or_folder():
    assert names(find_banks(FLUX)) == ["FLUX.1-dev/1024x1024-20steps.json", "FLUX.1-dev/1024x1024-28steps.json",
                                       "FLUX.1-dev/256x256-20steps.json", "FLUX.1-dev/256x256-28steps.json"]
    assert names(find_banks("/data/weights/FLUX.1-dev/")) == names(find_banks(FLUX))
    assert names(find_banks("PixArt-alpha/PixArt-XL-2-256x256")) == ["PixArt-XL-2-256x256/256x256-20steps.json"]
    assert find_banks("org/unknown-model") == {}


def test_exact_setting_is_chosen_without_a_note():
    assert choose_bank(settings(find_banks(FLUX)), Setting(1024, 1024, 20, 5.0)) == ("1024x1024-20steps.json", None)


def test_no_match_takes_the_nearest_and_says_it_moves_the_schedules():
    banks = settings(find_banks(FLUX))
    name, note = choose_bank(banks, Setting(1024, 1024, 24, 3.5))
    assert name == "1024x1024-20steps.json"  # same resolution beats the rest, then the nearest steps
    assert note.startswith("no bank for 1024x1024-24steps at guidance 3.5 among 1024x1024-20steps.json, "
                           "1024x1024-28steps.json, 256x256-20steps.json, 256x256-28steps.json; "
                           "using 1024x1024-20steps.json")
    assert "num_inference_steps 20 -> 24" in note and "moved by noise level from 20 to 24 steps" in note
    name, note = choose_bank(banks, Setting(1024, 1024, 28, 3.5))
    assert name == "1024x1024-28steps.json" and "moved" not in note  # made for these steps: only guidance differs
    name, note = choose_bank(banks, Setting(512, 512, 20, 5.0))
    assert name == "256x256-20steps.json"  # 256² is nearer 512² than 1024² is
    assert "moved" not in note and "height 256 -> 512" in note
    name, note = choose_bank(banks, Setting(256, 256, 20, 3.5))
    assert name == "256x256-20steps.json" and note.endswith("(guidance_scale 5.0 -> 3.5)")


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
    assert names(found) == names(find_banks(FLUX))  # the package's FLUX banks only
    assert all(str(path).startswith(str(SCHEDULES_DIR)) for path in found)
    assert "made for another transformer config" in caplog.text and "broken.json: not valid JSON" in caplog.text


def test_nothing_to_choose_from():
    with pytest.raises(BankError, match="no schedule bank to choose from"):
        choose_bank({}, Setting(256, 256, 20, 4.5))
