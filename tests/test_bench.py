"""ecad-bench end to end on a tiny PixArt pipeline, and its parts: the cache-context shim, MACs and
memory probes, failing methods, hypervolume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from ecad.adapters import get_adapter
from ecad.bench import competitors as C
from ecad.bench.report import hypervolume_2d, summarize, write_report
from ecad.bench.runner import MAX_PSNR, Split, run_experiment
from ecad.generate import generate, load_pipeline
from ecad.heuristics import fora
from ecad.hooks import cache_schedule
from ecad.setting import Setting
from ecad.testing import heuristic_bank
from ecad.tiny import build_tiny_pipeline

STEPS = 10
SETTING = Setting(32, 32, STEPS, 4.5)
PROMPTS = ["a red cat", "a blue dog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_pipeline("pixart-alpha", tmp_path_factory.mktemp("bench") / "tiny-alpha")
    return path, load_pipeline(path)


def _strict_json(text: str):
    def bad(value):
        raise ValueError(f"non-standard JSON constant {value}")

    return json.loads(text, parse_constant=bad)


def _png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_cli_end_to_end_on_tiny_pipeline(tiny, tmp_path):
    from ecad.cli.bench import main

    path, pipe = tiny
    bank = heuristic_bank(pipe, str(path), Setting(32, 32, STEPS, 4.5),
                          names=("no-cache", "fora-2", "fora-3-ff"))
    bank_path = bank.save(tmp_path / "bank.json")
    out = tmp_path / "out"
    rc = main(["--model", str(path), "--bank", str(bank_path), "--out", str(out), "--no-progress",
               "--methods", "no-cache,ecad,fora,diffusers-fbcache", "--held-out-prompts", "2", "--seeds", "0,1",
               "--calibration-prompts", "1", "--batch-size", "2", "--transfer-steps", "12",
               "--transfer-prompts", "2", "--transfer-size", "48"])
    assert rc == 0
    data = _strict_json((out / "results.json").read_text())
    for name in ("pareto.png", "pareto_macs.png", "grid.png", "transfer.png"):
        _png(out / name)
    readme = (out / "README.md").read_text()
    assert "## Goal" in readme and "diffusers-fbcache" in readme and "shim" in readme

    main_exp, *transfer = data["experiments"]
    assert [e["setting"]["name"] for e in transfer] == ["12-steps", "48px"]
    assert main_exp["reference_reproducible"] is True
    points = {p["label"]: p for p in main_exp["points"]}
    assert {"no-cache", "ecad:fora-2", "ecad:fora-3-ff", "fora-2", "fora-6", "diffusers-fbcache:0.7"} <= set(points)
    ref, f2 = points["no-cache"], points["fora-2"]
    for split in ("held-out", "calibration"):
        assert ref["quality"][split]["psnr"] == MAX_PSNR  # identical to itself
        assert f2["quality"][split]["psnr"] < MAX_PSNR
    assert ref["speedup"] == 1.0 and len(ref["times_s"]) == main_exp["timed_rounds"] >= 2
    assert f2["changes_output"] and ref["cache_bytes_peak"] == 0 and f2["cache_bytes_peak"] > 0
    # measured MACs (probe hooks) equal the analytic schedule MACs for engine schedules
    for label in ("no-cache", "fora-2", "fora-4", "ecad:fora-3-ff"):
        p = points[label]
        assert p["macs_per_image"] == pytest.approx(p["analytic_macs_per_image"], rel=1e-9)
    assert points["fora-2"]["macs_speedup"] > 1.5
    # the diffusers cache ran through the shim, changed the output, did less work, failed without the shim
    fbc = [p for p in main_exp["points"] if p["family"] == "diffusers-fbcache"]
    assert all(p["status"] == "ok" and p["uses_shim"] for p in fbc)
    assert any(p["changes_output"] for p in fbc)
    assert all(p["macs_per_image"] <= ref["macs_per_image"] for p in fbc)
    assert max(p["macs_speedup"] for p in fbc) > 1.2
    assert fbc[0]["as_shipped"].startswith("error: ValueError: No cache context is set")
    summary = main_exp["summary"]["held-out"]
    assert set(summary["families"]) == {"no-cache", "ecad", "fora", "diffusers-fbcache"}
    assert set(summary["dominance"]) == {p["label"] for p in main_exp["points"]
                                         if p["kind"] in ("heuristic", "competitor") and p["status"] == "ok"}
    # transfer: the bank schedules were resampled to 12 steps
    t12 = {p["label"]: p for p in transfer[0]["points"]}
    assert t12["ecad:fora-2"]["quality"]["held-out"]["psnr"] < MAX_PSNR
    assert t12["no-cache"]["quality"]["held-out"]["psnr"] == MAX_PSNR


class Broken(C.Method):
    family, kind, api, knob_name = "broken", "competitor", "test", "x"

    def enable(self, pipe, knob):
        raise RuntimeError("this method cannot run here")

    def disable(self, pipe):
        pass


def test_failing_method_is_reported_not_dropped(tiny, tmp_path):
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    setting = SETTING
    methods = [C.engine_methods(layout, STEPS)[0], C.ScheduleMethod("fora", "heuristic", {"fora-2": fora(layout, STEPS, 2)}),
               Broken([1, 2])]
    exp = run_experiment(pipe, methods, setting, [Split("held-out", PROMPTS, [0])], batch_size=1, progress=False)
    broken = [p for p in exp.points if p.method.family == "broken"]
    assert len(broken) == 2 and all(p.status == "error" and "cannot run here" in p.error for p in broken)
    write_report(tmp_path, {"model": "tiny", "command": "test", "when": "now", "machine": "cpu", "versions": {},
                            "threads": 1}, [exp])
    readme = (tmp_path / "README.md").read_text()
    assert "| broken | broken:1 | test | `probe: RuntimeError: this method cannot run here` |" in readme
    data = _strict_json((tmp_path / "results.json").read_text())
    assert data["experiments"][0]["summary"]["held-out"]["families"]["broken"]["ok"] == 0


def test_shim_runs_diffusers_caches_and_leaves_no_state(tiny):
    _, pipe = tiny
    ref = generate(pipe, PROMPTS, [0, 1], SETTING)
    setting = SETTING
    for method in C.diffusers_methods(setting):
        method.prepare(pipe, setting, lambda: generate(pipe, PROMPTS[:1], [0], SETTING))
        knob = method.knobs[-1]
        method.enable(pipe, knob)
        try:
            counter = C.MacsCounter(pipe, height=32, width=32, num_images=2, guidance_scale=4.5)
            first = generate(pipe, PROMPTS, [0, 1], SETTING)
            counter.remove()
            second = generate(pipe, PROMPTS, [0, 1], SETTING)  # state is reset between pipeline calls
        finally:
            method.disable(pipe)
        full = C.MacsCounter(pipe, height=32, width=32, num_images=2, guidance_scale=4.5)
        generate(pipe, PROMPTS, [0, 1], SETTING)
        full.remove()
        assert torch.equal(first, second), method.family
        assert not torch.equal(first, ref), f"{method.family} changed nothing"
        assert counter.total < full.total, method.family
    assert torch.equal(generate(pipe, PROMPTS, [0, 1], SETTING), ref)  # removal restores the pipeline exactly
    assert getattr(pipe.transformer, "_diffusers_hook", None) is None or not any(
        getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in pipe.transformer.modules())


def test_memory_probe_agrees_with_engine_bytes(tiny):
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    method = C.ScheduleMethod("fora", "heuristic", {"fora-2": fora(layout, STEPS, 2)})
    method.enable(pipe, "fora-2")
    try:
        sampler = C.MemorySampler(pipe, method)
        generate(pipe, PROMPTS, [0, 1], SETTING)
        sampler.remove()
        handle = C.get_cache_handle(pipe)
        assert sampler.peak == handle.peak_bytes_held > 0
    finally:
        method.disable(pipe)
    with cache_schedule(pipe, None):
        pass
    assert C.tensor_bytes([{"a": torch.zeros(10), "b": [torch.zeros(5, dtype=torch.float64)]}, torch.nn.Linear(3, 3)]) == 80


def test_hypervolume_and_goal_summary():
    ref = (1.0, 20.0)
    assert hypervolume_2d([], ref) == 0.0
    assert hypervolume_2d([(2.0, 30.0)], ref) == pytest.approx(10.0)
    # staircase: (3, 25) adds (3-1)*(25-20), (2, 30) adds (2-1)*(30-25)
    assert hypervolume_2d([(2.0, 30.0), (3.0, 25.0), (1.5, 22.0)], ref) == pytest.approx(15.0)
    assert hypervolume_2d([(0.9, 40.0), (3.0, 19.0)], ref) == 0.0
    assert math.isfinite(hypervolume_2d([(2.0, MAX_PSNR)], ref))


def test_cli_help_explains():
    from ecad.cli.bench import build_parser

    text = build_parser().format_help()
    for word in ("cache-dit", "shim", "held-out", "--bank", "--methods", "transfer", "hypervolume"):
        assert word in text
