"""`scripts/device_check.py --family`: the code the GPU runs once, run here on CPU at a tiny size.

The tiny path builds each family's transformer from its published config with two blocks of width
16 and runs the same loop, hooks, timing and output writing; the full-size inputs are checked
against the full-size transformers on the meta device (shapes only, no memory).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from ecad.configs import get_architecture
from ecad.cost import image_macs
from ecad.setting import Setting

REPO_ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("stable-diffusion-3.5-large", "Qwen-Image", "Wan2.1-T2V-14B-Diffusers")


@pytest.fixture(scope="module")
def device_check():
    spec = importlib.util.spec_from_file_location("device_check", REPO_ROOT / "scripts" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("device_check", None)


@pytest.fixture(scope="module")
def tiny_run(device_check, tmp_path_factory):
    out = tmp_path_factory.mktemp("device-check")
    argv = ["--family", ",".join(FAMILIES), "--tiny", "--steps", "2", "--repeats", "2", "--warmup", "0",
            "--out", str(out)]
    assert device_check.main(argv) == 0
    return out, json.loads((out / "cpu-float32-families-tiny.json").read_text())


def test_tiny_run_writes_every_family_with_its_rows(tiny_run):
    out, data = tiny_run
    assert [r["architecture"] for r in data["results"]] == list(FAMILIES)
    markdown = (out / "cpu-float32-families-tiny.md").read_text()
    for result in data["results"]:
        assert [row["entry"] for row in result["rows"]] == ["no-cache", "fora-2", "block-skip-2"]
        assert result["repeats"] == 2 and result["steps"] == 2 and result["tiny"]
        assert result["model"] in markdown
        for row in result["rows"]:
            assert row["median_s"] > 0 and row["realized_min"] <= row["realized"] <= row["realized_max"]
            lo, hi = row["realized_interval"]
            assert lo <= hi


def test_all_recompute_is_bit_identical_and_caching_changes_the_output(tiny_run):
    _, data = tiny_run
    for result in data["results"]:
        assert result["hooked_all_recompute_bit_identical"] is True, result["architecture"]
        assert result["output_finite"]
        rows = {row["entry"]: row for row in result["rows"]}
        assert rows["no-cache"]["max_abs_diff_vs_unhooked"] == 0.0
        # at step 1 of 2 both reuse (FORA) or skip (all blocks but the first): the hooks acted
        assert rows["fora-2"]["max_abs_diff_vs_unhooked"] > 0
        assert rows["block-skip-2"]["max_abs_diff_vs_unhooked"] > 0


def test_tiny_run_states_how_guidance_is_batched_and_the_macs(tiny_run):
    _, data = tiny_run
    by_name = {r["architecture"]: r for r in data["results"]}
    assert by_name["stable-diffusion-3.5-large"]["guidance"].endswith("batch of 2")
    assert by_name["Qwen-Image"]["guidance"].startswith("one call")
    assert by_name["Wan2.1-T2V-14B-Diffusers"]["guidance"].endswith("second call")
    for result in data["results"]:
        rows = {row["entry"]: row for row in result["rows"]}
        assert rows["no-cache"]["macs_speedup"] == 1.0
        # at 2 steps FORA n=2 skips nearly half the MACs, a block skip less (the first block runs)
        assert 1.0 < rows["block-skip-2"]["macs_speedup"] < rows["fora-2"]["macs_speedup"] < 2.0


@pytest.mark.parametrize("name", FAMILIES[:2])
def test_full_size_inputs_fit_the_full_size_transformer(device_check, name):
    """What the GPU run feeds the published transformer at 1024x1024, run on the meta device."""
    arch = get_architecture(name)
    transformer = arch.meta_transformer().to(torch.bfloat16)
    setting = Setting(1024, 1024, 2, arch.default_guidance_scale)
    inputs = device_check.make_family_inputs(arch, transformer, setting, "meta", torch.bfloat16)
    assert inputs.calls[0]["encoder_hidden_states"].shape[1] == arch.max_sequence_length
    out = device_check.Sampler(transformer)(inputs, 1)
    assert out.shape == inputs.latents.shape
    assert image_macs(arch, setting) > 0


def test_bad_family_and_size_are_refused_with_the_allowed_values(device_check, capsys):
    with pytest.raises(SystemExit):
        device_check.main(["--family", "PixArt-XL-2-256x256"])
    assert "Qwen-Image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        device_check.main(["--family", "Qwen-Image", "--size", "1000x1024"])
    assert "multiples of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        device_check.main(["--tiny"])
    assert "go with --family" in capsys.readouterr().err
