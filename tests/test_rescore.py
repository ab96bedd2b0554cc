"""ecad-rescore on the tiny pipeline: unmeasured quality becomes measured, provenance stays, the
weights hash is recorded, and a bank of another architecture is refused."""

import pytest

from ecad.bank import Provenance, ScheduleBank, weights_fingerprint
from ecad.cli.rescore import main
from ecad.generate import load_pipeline
from ecad.paths import SCHEDULES_DIR
from ecad.quality.fidelity import FidelityScorer
from ecad.reference import QUALITY_PROXY_METRIC
from ecad.rescore import rescore_bank
from ecad.setting import Setting
from serving_helpers import heuristic_bank
from engine_helpers import SIZE, tiny_dir

SETTING = Setting(SIZE, SIZE, 6, 4.5)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_dir(tmp_path_factory, "pixart-alpha")


def unmeasured_bank(pipe, model) -> ScheduleBank:
    """A tiny bank shaped like an imported one: proxy quality, provenance on one entry."""
    bank = heuristic_bank(pipe, model, SETTING, names=("no-cache", "fora-2", "fora-3"))
    full = bank.no_cache_entry().macs
    entries = [e.model_copy(update={"quality": {QUALITY_PROXY_METRIC: e.macs / full}, "quality_measured": False,
                                    "provenance": Provenance(source="somewhere@abc:x.json", reference_macs=1)
                                    if e.id == "fora-2" else None})
               for e in bank.entries]
    return bank.model_copy(update={"entries": entries, "quality_metric": QUALITY_PROXY_METRIC,
                                   "scorer": "unmeasured"})


def test_rescore_measures_quality(tiny_folder):
    pipe = load_pipeline(tiny_folder)
    # The tiny model's cached images are within 60-68 dB of uncached: lift the usual 60 dB cap.
    bank = rescore_bank(pipe, unmeasured_bank(pipe, str(tiny_folder)), FidelityScorer(max_psnr=200.0),
                        ["a red apple", "a blue sofa"], [0], batch_size=2)
    assert bank.scorer == bank.quality_metric == "fidelity"
    assert all(e.quality_measured for e in bank.entries)
    psnr = {e.id: e.quality["psnr"] for e in bank.entries}
    assert psnr["no-cache"] == 200.0  # identical to its own reference: the cap
    assert psnr["fora-3"] < psnr["fora-2"] < 200.0
    assert bank.entry("fora-2").provenance.source == "somewhere@abc:x.json"  # provenance kept
    assert bank.weights_sha256 == weights_fingerprint(pipe.transformer)
    assert bank.calibration["rescored"] == {"prompts": ["a red apple", "a blue sofa"], "seeds": [0],
                                            "scorer": "fidelity"}
    assert "quality_rule" not in bank.calibration


def test_rescore_cli_writes_the_bank(tiny_folder, tmp_path, capsys):
    pipe = load_pipeline(tiny_folder)
    path = unmeasured_bank(pipe, str(tiny_folder)).save(tmp_path / "bank.json")
    assert main([str(path), "--prompts", "1", "--seeds", "1", "--batch-size", "1", "--device", "cpu"]) == 0
    bank = ScheduleBank.load(path)
    assert all(e.quality_measured for e in bank.entries) and bank.quality_metric == "fidelity"
    assert bank.weights_sha256 == weights_fingerprint(pipe.transformer)
    assert "3 entries scored with fidelity" in capsys.readouterr().out


def test_rescore_refuses_another_architecture(tiny_folder, tmp_path, capsys):
    other = ScheduleBank.load(SCHEDULES_DIR / "PixArt-XL-2-256x256" / "256x256-20steps.json")
    path = other.save(tmp_path / "real.json")
    assert main([str(path), "--model", str(tiny_folder), "--prompts", "1", "--seeds", "1"]) == 1
    assert "calibrated for a transformer with fingerprint" in capsys.readouterr().err


def test_validate_bank_records_means_intervals_and_single_image_spreads(tiny_folder):
    import numpy as np

    from ecad.evaluate import Evaluation, ImageGrid, Scoring
    from ecad.rescore import validate_bank

    pipe = load_pipeline(tiny_folder)
    bank = heuristic_bank(pipe, str(tiny_folder), SETTING, names=("no-cache", "fora-2", "fora-3"))
    scoring = Scoring({"fidelity": FidelityScorer(max_psnr=200.0)})
    prompts, seeds = ["a red apple", "a blue sofa"], [3, 4]
    validated = validate_bank(pipe, bank, scoring, prompts, seeds, batch_size=2)
    assert validated.calibration["validation_prompts"] == prompts and validated.calibration["validation_seeds"] == seeds
    fora3 = validated.entry("fora-3")
    assert fora3.quality == bank.entry("fora-3").quality  # the calibration quality is kept
    _, per_image = Evaluation(pipe, SETTING, ImageGrid(tuple(prompts), tuple(seeds)), scoring).evaluate(
        bank.entry("fora-3").cache_schedule())
    psnr = per_image["psnr"].numpy()
    assert fora3.validation["psnr"] == pytest.approx(float(psnr.mean()))
    low, high = fora3.spread["psnr"]
    assert psnr.min() <= low <= high <= psnr.max()
    assert fora3.interval["psnr"][0] <= fora3.validation["psnr"] <= fora3.interval["psnr"][1]
    assert (high - low) >= (fora3.interval["psnr"][1] - fora3.interval["psnr"][0]) - 1e-9 or len(psnr) < 4
    assert validated.entry("no-cache").spread["psnr"] == (200.0, 200.0)
    assert np.isfinite(fora3.validation["ssim"])
