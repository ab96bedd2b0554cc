import json

import numpy as np
import pytest

from ecad.bank import BankEntry, BankError, HardwareProfile, ScheduleBank, fingerprint
from ecad.schedule import BlockGroup, BlockLayout, CacheSchedule

LAYOUT = BlockLayout((BlockGroup("transformer_blocks", 2, ("attn1", "attn2", "ff")),))
STEPS = 4


def fora(n: int) -> CacheSchedule:
    return CacheSchedule.from_step_mask(LAYOUT, np.arange(STEPS) % n == 0)


def make_bank(**overrides) -> ScheduleBank:
    data = dict(
        model="tiny",
        model_fingerprint=fingerprint({"num_layers": 2}),
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=4.5,
        scorer="fidelity",
        quality_metric="psnr",
        entries=[
            BankEntry(id="no-cache", schedule=fora(1).to_dict(), macs=100, quality={"psnr": 99.0}, source="no-cache"),
            BankEntry(id="fora-2", schedule=fora(2).to_dict(), macs=55, quality={"psnr": 30.0}, source="heuristic"),
        ],
    )
    data.update(overrides)
    return ScheduleBank(**data)


def test_save_load_round_trip(tmp_path):
    bank = make_bank()
    path = bank.save(tmp_path / "sub" / "bank.json")
    loaded = ScheduleBank.load(path)
    assert loaded == bank
    assert loaded.entry("fora-2").cache_schedule() == fora(2)
    assert loaded.no_cache_entry().id == "no-cache"
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp files


def test_profiles_are_replaced_by_key(tmp_path):
    from datetime import datetime, timezone

    def profile(ms):
        return HardwareProfile(key="cpu/x/float32/bs1/t1", device="cpu", device_name="x", dtype="float32",
                               batch_size=1, num_threads=1, measured_at=datetime.now(timezone.utc), repeats=3,
                               latency_ms={"no-cache": ms, "fora-2": ms / 2})

    bank = make_bank().with_profile(profile(10.0)).with_profile(profile(20.0))
    assert len(bank.profiles) == 1 and bank.profile("cpu/x/float32/bs1/t1").latency_ms["no-cache"] == 20.0
    assert ScheduleBank.load(bank.save(tmp_path / "b.json")) == bank


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(entries=[d["entries"][1]]), "no-cache"),
        (lambda d: d["entries"][1].update(id="no-cache"), "duplicate entry ids"),
        (lambda d: d.update(num_inference_steps=5), "steps"),
        (lambda d: d["entries"][1].update(quality={"ssim": 0.5}), "psnr"),
        (lambda d: d["entries"][1].update(macs=-1), "macs"),
        (lambda d: d["entries"][1].update(id="bad id!"), "entry id"),
        (lambda d: d.update(unknown_field=1), "unknown_field"),
        (lambda d: d.update(format_version=7), "format_version"),
        (lambda d: d["entries"][1]["schedule"].update(bits="!!"), "fora-2"),
        (lambda d: d.update(profiles=[{"key": "k", "device": "cpu", "device_name": "x", "dtype": "float32",
                                       "batch_size": 1, "measured_at": "2026-01-01T00:00:00Z", "repeats": 1,
                                       "latency_ms": {"ghost": 1.0}}]), "ghost"),
        (lambda d: d.update(profiles=[{"key": "k", "device": "cpu", "device_name": "x", "dtype": "float32",
                                       "batch_size": 1, "measured_at": "2026-01-01T00:00:00Z", "repeats": 1,
                                       "latency_ms": {"no-cache": -3.0}}]), "positive"),
    ],
)
def test_invalid_banks_are_refused_naming_file_and_problem(tmp_path, mutate, message):
    data = json.loads(make_bank().model_dump_json())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BankError) as info:
        ScheduleBank.load(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_step_zero_reuse_is_refused(tmp_path):
    data = json.loads(make_bank().model_dump_json())
    mask = fora(2).mask.copy()
    mask[0, 0, 0] = False
    data["entries"][1]["schedule"] = CacheSchedule(mask, LAYOUT).to_dict()
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match="step 0"):
        ScheduleBank.load(tmp_path / "b.json")


@pytest.mark.parametrize("content, message", [(None, "not found"), ("{not json", "not valid JSON"), ("[]", "invalid bank")])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bank.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BankError, match=message):
        ScheduleBank.load(path)


def test_fingerprint_mismatch_is_refused():
    bank = make_bank()
    bank.check_transformer({"num_layers": 2, "_name_or_path": "/elsewhere"})  # bookkeeping keys ignored
    with pytest.raises(BankError, match="recalibrate"):
        bank.check_transformer({"num_layers": 3})


def test_committed_bundled_bank_macs_match_the_cost_model():
    """The bank's `macs` are what `image_macs` counts today (a stale count would mislead the
    playground and anyone ranking entries by MACs)."""
    from ecad.cost import image_macs
    from ecad.generate import load_pipeline
    from ecad.paths import SCHEDULES_DIR

    bank = ScheduleBank.load(SCHEDULES_DIR / "ecad-scenes" / "32x32-20steps.json")
    pipe = load_pipeline(bank.model)
    assert [e.macs for e in bank.entries] == [image_macs(pipe, bank.setting, e.cache_schedule()) for e in bank.entries]
