"""Importing the ECAD paper's published schedules: format errors, step-0 fixes, the round trip,
the committed banks (real layouts on meta-device transformers), provenance and the quality rule.

Tests that read the published files skip when ../shared/reference-schedules is absent."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ecad.bank import ScheduleBank, fingerprint
from ecad.configs import architecture_names, get_architecture
from ecad.hooks import apply_cache_schedule, remove_cache_schedule
from ecad.paths import SCHEDULES_DIR, model_name
from ecad.reference import (
    CUSTOM_KERNEL_KEY, QUALITY_PROXY_METRIC, ReferenceFormatError, entry_id, import_reference_bank,
    read_reference, reference_layout, to_reference_dict,
)
from ecad.schedule import CacheSchedule
from ecad.setting import Setting

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference-schedules"
needs_reference = pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason="../shared/reference-schedules not present")
PIXART = "PixArt-alpha/PixArt-XL-2-256x256"
FLUX = "black-forest-labs/FLUX.1-dev"
# the banks imported from the paper (the families' heuristic banks are tests/test_family_configs.py's)
COMMITTED_BANKS = sorted(p for p in SCHEDULES_DIR.glob("*/*.json")
                         if "imported_from" in json.loads(p.read_text()).get("calibration", {}))


def reference_files() -> list[Path]:
    return sorted(REFERENCE_DIR.rglob("*.json")) if REFERENCE_DIR.is_dir() else []


def model_of(path: Path) -> str:
    return FLUX if "flux" in str(path.relative_to(REFERENCE_DIR)) else PIXART


def write_reference(path: Path, schedule: CacheSchedule, **extra) -> Path:
    path.write_text(json.dumps({"cache_schedule": {"num_inference_steps": schedule.num_steps,
                                                   "schedule": to_reference_dict(schedule)},
                                "config": {}, "metrics": {}, **extra}))
    return path


# -- format errors (synthetic files: no shared data needed) ------------------------------------

def fora(model: str, n: int, steps: int = 20) -> CacheSchedule:
    layout = reference_layout(model)
    return CacheSchedule.from_step_mask(layout, np.arange(steps) % n == 0)


def test_flux_names_map_to_our_layout(tmp_path):
    data = to_reference_dict(fora(FLUX, 2))
    assert sorted(data["001"]["0"]) == ["full_attn", "full_ff", "full_ff_context"]
    assert sorted(data["001"]["single_37"]) == ["single_attn", "single_proj_mlp", "single_proj_out"]
    assert len(data["001"]) == 19 + 38
    data["003"]["single_5"]["single_proj_mlp"] = True  # one single-block position, found where it belongs
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"cache_schedule": {"schedule": data}}))
    ref = read_reference(path, reference_layout(FLUX))
    assert ref.schedule.mask[3, 19 + 5].tolist() == [False, True, False]
    assert ref.schedule.mask.sum() == fora(FLUX, 2).mask.sum() + 1


def test_wrong_layout_steps_and_values_are_named(tmp_path):
    flux_file = write_reference(tmp_path / "flux.json", fora(FLUX, 2))
    with pytest.raises(ReferenceFormatError, match=r"flux.json: step 000: blocks do not match the layout transformer_blocks\[28\]"):
        read_reference(flux_file, reference_layout(PIXART))
    pixart_file = write_reference(tmp_path / "p.json", fora(PIXART, 2, steps=10))
    with pytest.raises(ReferenceFormatError, match="schedule has 10 steps, the bank runs 20"):
        read_reference(pixart_file, reference_layout(PIXART), num_steps=20)
    data = json.loads(pixart_file.read_text())
    data["cache_schedule"]["schedule"]["004"]["7"]["ff"] = "yes"
    pixart_file.write_text(json.dumps(data))
    with pytest.raises(ReferenceFormatError, match=r"step 004 block 7 ff: expected true/false, got 'yes'"):
        read_reference(pixart_file, reference_layout(PIXART))
    del data["cache_schedule"]["schedule"]["004"]["7"]["ff"]
    pixart_file.write_text(json.dumps(data))
    with pytest.raises(ReferenceFormatError, match=r"step 004 block 7: components \['attn1', 'attn2'\], expected"):
        read_reference(pixart_file, reference_layout(PIXART))
    data["cache_schedule"]["num_inference_steps"] = 20
    pixart_file.write_text(json.dumps(data))
    with pytest.raises(ReferenceFormatError, match="num_inference_steps is 20 but the schedule has 10 steps"):
        read_reference(pixart_file, reference_layout(PIXART))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ReferenceFormatError, match="no cache_schedule.schedule"):
        read_reference(tmp_path / "x.json", reference_layout(PIXART))


def test_step0_reuse_becomes_recompute_and_is_reported(tmp_path):
    mask = fora(PIXART, 3).mask.copy()
    mask[0, 17, 0] = mask[0, 15, 2] = False
    path = tmp_path / "ours_fast.json"
    path.write_text(json.dumps({"cache_schedule": {"schedule": to_reference_dict(
        CacheSchedule(mask, reference_layout(PIXART)))}}))
    ref = read_reference(path, reference_layout(PIXART))
    assert ref.changed == ("step 0 block 15 ff", "step 0 block 17 attn1")
    assert ref.schedule.mask[0].all() and np.array_equal(ref.schedule.mask[1:], mask[1:])
    assert np.array_equal(ref.published, mask)
    bank, report = import_reference_bank([path], PIXART, Setting(256, 256, 20, 4.5))
    entry = bank.entry("ours-fast")
    assert entry.provenance.changed_on_import == ["step 0 block 15 ff", "step 0 block 17 attn1"]
    assert "ours-fast: step 0 reuse imported as recompute at 2 position(s): block 15 ff, block 17 attn1" in str(report)
    assert bank.entry("no-cache").source == "no-cache"  # added: the file set had none


def test_entry_ids():
    assert entry_id("a/recompute_all_every_003.json") == "fora-3"
    assert entry_id("default_256x256_gs_5.json") == "no-cache"
    assert entry_id("tgate_m_010_sp_001_fi_001_warmup_002.json") == "tgate-m-010-sp-001-fi-001-warmup-002"


# -- the published files ----------------------------------------------------------------------

@needs_reference
@pytest.mark.parametrize("path", reference_files(), ids=lambda p: str(p.relative_to(REFERENCE_DIR)))
def test_round_trip_reproduces_published_booleans(path):
    layout = reference_layout(model_of(path))
    ref = read_reference(path, layout)
    published = json.loads(path.read_text())["cache_schedule"]["schedule"]
    exported = to_reference_dict(ref.schedule)
    assert set(exported) == set(published)
    differences = []
    for step, blocks in published.items():
        assert set(exported[step]) == set(blocks)
        for block, components in blocks.items():
            for name, value in components.items():
                if name != CUSTOM_KERNEL_KEY and exported[step][block][name] is not value:
                    differences.append(f"step {int(step)} {block} {name}")
    # exactly the step-0 positions the import lists, nothing else
    theirs = {f"step 0 {19 + int(b.removeprefix('single_')) if b.startswith('single_') else b} {c}"
              for b, c in (d.split()[2:] for d in differences)}
    ours = {p.replace("block ", "") for p in ref.changed}
    assert all(d.startswith("step 0 ") for d in differences)
    assert len(differences) == len(ref.changed)
    if model_of(path) == PIXART:  # names are equal for PixArt; FLUX files have no step-0 reuse
        assert theirs == ours


@needs_reference
def test_paper_files_with_step0_reuse_are_the_known_ones():
    changed = {str(p.relative_to(REFERENCE_DIR)): read_reference(p, reference_layout(model_of(p))).changed
               for p in reference_files()}
    assert {k: v for k, v in changed.items() if v} == {
        "schedules_in_paper/pixart_alpha_256/ours_fast.json": ("step 0 block 17 attn1",),
        "schedules_in_paper/pixart_alpha_256/ours_faster.json": ("step 0 block 15 ff", "step 0 block 17 attn1"),
        "schedules_in_paper/pixart_alpha_256/ours_fastest.json": ("step 0 block 15 ff", "step 0 block 17 attn1"),
        "schedules_in_paper/pixart_alpha_to_sigma_transfer/pixart_alpha_gen_250.json": ("step 0 block 17 attn1",),
        "schedules_in_paper/pixart_alpha_to_sigma_transfer/pixart_sigma_from_alpha_gen_250.json": ("step 0 block 17 attn1",),
    }


@needs_reference
def test_file_of_another_resolution_is_refused_by_its_macs():
    fora_256 = REFERENCE_DIR / "flux_cache_schedules/gen_recompute_all_every_n/recompute_all_every_002.json"
    with pytest.raises(ReferenceFormatError, match="do not match black-forest-labs/FLUX.1-dev at 1024x1024"):
        import_reference_bank([fora_256], FLUX, Setting(1024, 1024, 20, 5.0))


# -- committed banks --------------------------------------------------------------------------

def test_committed_banks_exist_for_the_real_models():
    found = {(ScheduleBank.load(p).model, ScheduleBank.load(p).setting.name) for p in COMMITTED_BANKS}
    assert found == {
        (PIXART, "256x256-20steps"), ("PixArt-alpha/PixArt-Sigma-XL-2-256x256", "256x256-20steps"),
        (FLUX, "256x256-20steps"), (FLUX, "1024x1024-20steps"),
    }


@pytest.mark.parametrize("path", COMMITTED_BANKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_bank_fits_its_real_layout(path):
    bank = ScheduleBank.load(path)
    arch = get_architecture(bank.model)
    assert path.parent.name == model_name(bank.model) == arch.name
    transformer = arch.meta_transformer()
    assert bank.model_fingerprint == fingerprint(dict(transformer.config))
    bank.check_transformer(dict(transformer.config), source=str(path))
    for entry in bank.entries:
        handle = apply_cache_schedule(transformer, entry.cache_schedule())  # validates against the layout
        assert handle.active
        remove_cache_schedule(transformer)
    assert bank.notice and "AniAggarwal/ecad" in bank.notice and "a2f0534" in bank.notice
    no_cache = bank.no_cache_entry()
    assert no_cache.quality[QUALITY_PROXY_METRIC] == 1.0
    for entry in bank.entries:
        assert entry.quality_measured is False
        assert entry.provenance is not None or entry.source == "heuristic"
        if entry is not no_cache:  # the rule: nothing unmeasured ranks above no-cache
            assert entry.quality[QUALITY_PROXY_METRIC] < 1.0


@needs_reference
@pytest.mark.parametrize("path", COMMITTED_BANKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_bank_is_what_the_importer_makes(path):
    bank = ScheduleBank.load(path)
    prefix = "AniAggarwal/ecad@a2f0534:schedules/"
    files = [REFERENCE_DIR / e.provenance.source.removeprefix(prefix) for e in bank.entries if e.provenance]
    heuristics = [e.id for e in bank.entries if e.provenance is None]
    fresh, _ = import_reference_bank(files, bank.model, bank.setting, heuristics=heuristics)
    assert [e.model_dump() for e in fresh.entries] == [e.model_dump() for e in bank.entries]
    assert fresh.model_fingerprint == bank.model_fingerprint


def test_provenance_figures_are_the_papers_not_ours():
    bank = ScheduleBank.load(SCHEDULES_DIR / "PixArt-XL-2-256x256" / "256x256-20steps.json")
    fast = bank.entry("ours-fast")
    assert fast.provenance.reference_macs == 2134989471744  # the file's total (no attention matmuls)
    assert fast.provenance.reference_latency_ms == pytest.approx(84.091, abs=1e-3)
    assert fast.provenance.reference_gpu == "NVIDIA RTX A6000"
    assert fast.macs > fast.provenance.reference_macs / 2  # ours: one image, matmuls counted
    assert bank.profiles == []


def test_architectures_cover_the_published_models():
    assert set(architecture_names()) >= {"PixArt-XL-2-256x256", "PixArt-XL-2-512x512", "PixArt-XL-2-1024-MS",
                                         "PixArt-Sigma-XL-2-256x256", "FLUX.1-dev"}
    with pytest.raises(KeyError, match="no bundled architecture 'org/other'"):
        get_architecture("org/other")


def test_cli_imports_and_reports(tmp_path, capsys):
    from ecad.cli.import_reference import main

    mask = fora(PIXART, 2).mask.copy()
    mask[0, 3, 1] = False
    src = tmp_path / "ours_x.json"
    src.write_text(json.dumps({"cache_schedule": {"schedule": to_reference_dict(
        CacheSchedule(mask, reference_layout(PIXART)))}, "config": {"height": 256, "width": 256}}))
    out = tmp_path / "bank.json"
    assert main([str(src), "--model", PIXART, "--out", str(out), "--heuristics", "fora-3"]) == 0
    text = capsys.readouterr().out
    assert "ours-x: step 0 reuse imported as recompute at 1 position(s): block 3 attn2" in text
    bank = ScheduleBank.load(out)
    assert [e.id for e in bank.entries] == ["no-cache", "ours-x", "fora-3"]
    assert main([str(src), "--model", FLUX, "--out", str(out)]) == 1
    assert "blocks do not match the layout" in capsys.readouterr().err


def test_fine_tune_warns_other_config_refuses(caplog):
    bank = ScheduleBank.load(SCHEDULES_DIR / "FLUX.1-dev" / "256x256-20steps.json")
    config = dict(get_architecture(FLUX).meta_transformer().config)
    assert bank.check_transformer(config, weights_sha256="a" * 64) is True  # no hash recorded: nothing to compare
    hashed = bank.model_copy(update={"weights_sha256": "b" * 64})
    with caplog.at_level(logging.WARNING, logger="ecad.bank"):
        assert hashed.check_transformer(config, weights_sha256="a" * 64) is False
    assert "other weights" in caplog.text and "a fine-tune?" in caplog.text
    assert hashed.check_transformer(config, weights_sha256="b" * 64) is True
    from ecad.bank import BankError

    with pytest.raises(BankError, match="calibrated for a transformer with fingerprint"):
        bank.check_transformer({**config, "num_layers": 18})
