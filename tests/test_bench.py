"""ecad-bench end to end on a tiny PixArt pipeline, and its parts: the cache-context shim, MACs and
memory probes, failing methods, hypervolume, bisection of thresholds, verdicts beyond the spread."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from ecad.adapters import get_adapter
from ecad.bench import competitors as C
from ecad.bench.report import hypervolume_2d, summarize, verdict, write_report
from ecad.bench.runner import MAX_PSNR, Point, Split, relative_reward_interval, run_experiment
from ecad.bench.tuning import MAX_FINALISTS, Bar, bisection_knobs, finalists
from ecad.cost import FittedCost
from ecad.generate import generate, load_pipeline
from ecad.heuristics import fora
from ecad.hooks import cache_schedule
from ecad.setting import Setting
from serving_helpers import heuristic_bank
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
    # a report holding a fitted cost under "model", as bench_actions writes: here one second per
    # giga-MAC, so its prediction is the analytic MACs speedup
    cost_model = tmp_path / "fit.json"
    features = ("macs:attn1", "macs:attn2", "macs:ff", "macs:block_other")
    cost_model.write_text(json.dumps({"model": FittedCost(features, (1e-9,) * 4).to_dict()}))
    args = ["--model", str(path), "--bank", str(bank_path), "--out", str(out), "--no-progress",
            "--methods", "no-cache,ecad,fora,diffusers-fbcache", "--held-out-prompts", "2", "--seeds", "0,1",
            "--calibration-prompts", "1", "--batch-size", "2", "--timing-batch-sizes", "2,1", "--quick",
            "--transfer-steps", "12", "--transfer-prompts", "2", "--transfer-size", "48"]
    (tmp_path / "bad.json").write_text("{}")
    assert main([*args, "--cost-model", str(tmp_path / "bad.json")]) == 2  # named, before anything is rendered
    rc = main([*args, "--cost-model", str(cost_model)])
    assert rc == 0
    data = _strict_json((out / "results.json").read_text())
    # the deciding points of schedule families were ranked by the fitted cost's prediction
    assert data["meta"]["finalists_ranked_by"] == f"fitted cost ({cost_model})"
    by_label = {p["label"]: p for p in data["experiments"][0]["points"]}
    assert by_label["fora-2"]["predicted_speedup"] == pytest.approx(by_label["fora-2"]["macs_speedup"], rel=1e-9)
    assert by_label["diffusers-fbcache:0.45"]["predicted_speedup"] is None  # no static schedule to predict
    for name in ("pareto.png", "pareto_macs.png", "grid.png", "transfer.png"):
        _png(out / name)
    readme = (out / "README.md").read_text()
    assert "## Verdict per quality bar" in readme and "diffusers-fbcache" in readme and "shim" in readme

    # the report names the model and the bank relative to its own folder, not by this machine's paths
    meta = data["meta"]
    assert (out / meta["model_path"]).resolve() == path.resolve()
    assert (out / meta["bank"]).resolve() == bank_path.resolve() and not Path(meta["bank"]).is_absolute()
    main_exp, *transfer = data["experiments"]
    assert [e["setting"]["name"] for e in transfer] == ["12-steps", "48px"]
    assert main_exp["reference_reproducible"] is True
    points = {p["label"]: p for p in main_exp["points"]}
    assert {"no-cache", "ecad:fora-2", "ecad:fora-3-ff", "fora-2", "fora-6", "diffusers-fbcache:0.45"} <= set(points)
    ref, f2 = points["no-cache"], points["fora-2"]
    assert ref["quality"]["calibration"]["psnr"] == MAX_PSNR  # identical to itself
    assert ref["quality"]["held-out"]["psnr"] == MAX_PSNR
    assert f2["quality"]["held-out"]["psnr"] < MAX_PSNR
    # the reference is timed in every round at both batch sizes, around every few deciding points
    assert main_exp["timing_batch_sizes"] == [2, 1] and main_exp["timed_rounds"] == 2
    for size in ("2", "1"):
        assert ref["timing"][size]["ratios"] == [1.0, 1.0]
        assert len(ref["timing"][size]["times_s"]) >= 4
    assert ref["speedup"] == 1.0
    deciding = [p for p in main_exp["points"] if p["deciding"]]
    assert deciding and all(p["speedup_source"] == "rounds" for p in deciding)
    for p in deciding:
        for size in ("2", "1"):
            speed = p["timing"][size]["speed"]
            assert speed["rounds"] == 2 and speed["min"] <= speed["median"] <= speed["max"]
        assert p["speedup"] == p["timing"]["2"]["speed"]["median"]
        assert "calibration" in p["quality"]  # deciding points are scored on the calibration split too
    others = [p for p in main_exp["points"] if not p["deciding"] and p["status"] == "ok" and p["kind"] != "reference"]
    assert all(p["speedup_source"] == "screen" and p["speedup"] == p["speedup_screen"] > 0 for p in others)
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
    assert [b["key"] for b in summary["bars"]] == ["35db_psnr_only", "30db_psnr_only"]  # no reward on the tiny model
    for b in summary["bars"]:
        assert [v["batch_size"] for v in b["verdicts"]] == [2, 1]
        for fam in summary["families"]:  # the point ranked fastest at the bar is always timed
            clearing = [p for p in main_exp["points"] if p["family"] == fam and p["status"] == "ok"
                        and p["quality"]["held-out"]["psnr"] >= b["psnr"] and p["kind"] != "reference"]
            if clearing:
                ranked = max(clearing, key=lambda p: p["predicted_speedup"] or p["macs_speedup"])
                assert b["key"] in ranked["deciding"], fam
        for v in b["verdicts"]:  # a paired per-round ratio wherever both sides were timed in the same rounds
            assert ("paired" in v) == bool(v.get("ecad") and v.get("other")), v
            if "paired" in v:
                assert v["paired"]["rounds"] == 2 and v["paired"]["min"] <= v["paired"]["max"]
        for fam, best in b["fastest"].items():  # each family's fastest point at the bar was timed and clears it
            assert best["speedup_source"] == "rounds" and best["psnr"] >= b["psnr"], fam
    # FirstBlockCache decides on the whole batch: it was scored again at batch 1, the schedules were not
    assert all("held-out@b1" in p["quality"] for p in fbc) and "held-out@b1" not in f2["quality"]
    for b in summary["bars"]:
        other = b["verdicts"][1].get("other_point")
        if other and other["label"].startswith("diffusers-fbcache"):
            assert points[other["label"]]["quality"]["held-out@b1"]["psnr"] >= b["psnr"]
    assert set(summary["dominance"]) == {p["label"] for p in main_exp["points"]
                                         if p["kind"] in ("heuristic", "competitor") and p["status"] == "ok"}
    # transfer: the bank schedules were resampled to 12 steps
    t12 = {p["label"]: p for p in transfer[0]["points"]}
    assert t12["ecad:fora-2"]["quality"]["held-out"]["psnr"] < MAX_PSNR
    assert t12["no-cache"]["quality"]["held-out"]["psnr"] == MAX_PSNR
    # ranked by the same fitted cost, predicting at the transfer's own setting
    for experiment in transfer:
        fora2 = next(p for p in experiment["points"] if p["label"] == "fora-2")
        assert fora2["predicted_speedup"] == pytest.approx(fora2["macs_speedup"], rel=1e-9)


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


def test_deciding_points_are_the_ones_saving_most_macs(tiny, monkeypatch):
    """Every FORA n clears a 0 dB bar: only points within 90% of the family's best MACs are timed."""
    import ecad.bench.runner as runner

    seen = []

    def recording(points, *args, **kwargs):
        seen.extend(p.macs_speedup for p in points)
        return finalists(points, *args, **kwargs)

    monkeypatch.setattr(runner, "finalists", recording)
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    methods = C.engine_methods(layout, STEPS, component_range=())[:2]  # no-cache, fora n = 2..9
    exp = run_experiment(pipe, methods, SETTING, [Split("held-out", PROMPTS, [0])], batch_size=2, rounds=2,
                         timing_batch_sizes=[1], bars=[Bar(0.0, False)], progress=False, log=lambda _: None)
    assert seen and all(m is not None and m > 0 for m in seen)  # MACs are known when the finalists are picked
    fora_points = [p for p in exp.points if p.method.family == "fora"]
    best = max(p.macs_speedup for p in fora_points)
    deciding = [p for p in fora_points if p.deciding]
    within = [p for p in fora_points if p.macs_speedup >= 0.9 * best]
    assert len(deciding) == min(len(within), MAX_FINALISTS) >= 2 and all(p in within for p in deciding)
    assert all(p.speedup_source == ("rounds" if p.deciding else "screen") for p in fora_points)


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


def _psnr_falls_with(threshold):
    return {"psnr": 50.0 - 100.0 * threshold, "reward_rel": 1.0 - threshold / 10}


def test_bisection_pins_the_fastest_threshold_at_each_bar():
    scored = {t: _psnr_falls_with(t) for t in (0.05, 0.1, 0.2, 0.3)}
    bars = [Bar(35.0, True), Bar(30.0, False), Bar(60.0, False)]  # 60 dB: cleared by no threshold
    tried = {}
    while new := bisection_knobs(scored, bars, tolerance=1.01, tried=tried, max_steps=12):
        assert all(k not in scored for k in new)
        scored.update({k: _psnr_falls_with(k) for k in new})
    best = {b: max(k for k in scored if b.meets(scored[k])) for b in bars[:2]}
    assert 0.148 < best[bars[0]] <= 0.15  # 50 - 100 t >= 35
    assert 0.198 < best[bars[1]] <= 0.2
    assert bars[2] not in tried
    # every threshold clears the bar: nothing to bisect; the step budget is respected
    assert bisection_knobs({0.1: {"psnr": 40.0}, 0.2: {"psnr": 39.0}}, [Bar(35.0, False)]) == []
    assert len(bisection_knobs({0.1: {"psnr": 40}, 0.4: {"psnr": 20}}, [Bar(35.0, False)], max_steps=0)) == 0
    # the reward part of a bar counts: 0.1 clears 35 dB but loses 3% reward
    assert not Bar(35.0, True).meets({"psnr": 40.0, "reward_rel": 0.97})
    assert Bar(35.0, False).meets({"psnr": 40.0, "reward_rel": 0.97})


def test_finalists_are_the_fastest_by_macs_within_the_margin():
    method = C.Method([])

    def point(label, macs, psnr, screen):
        p = Point(method, label, label, macs_speedup=macs, speedup_screen=screen)
        p.quality["held-out"] = {"psnr": psnr}
        return p

    pts = [point("a", 3.0, 36.0, 2.0), point("b", 2.8, 37.0, 2.2), point("c", 2.0, 40.0, 1.6),
           point("d", 4.0, 20.0, 3.0)]
    assert [p.label for p in finalists(pts, Bar(35.0, False), "held-out")] == ["a", "b"]
    assert [p.label for p in finalists(pts, Bar(38.0, False), "held-out")] == ["c"]
    assert finalists(pts, Bar(45.0, False), "held-out") == []
    # a fitted cost's prediction, where the points have one, ranks them instead of MACs
    pts[0].predicted_speedup, pts[1].predicted_speedup, pts[2].predicted_speedup = 1.5, 2.0, 1.9
    assert [p.label for p in finalists(pts, Bar(35.0, False), "held-out")] == ["b", "c"]


def test_a_speed_model_ranks_the_deciding_points_of_schedule_families(tiny):
    """With a fitted cost that says FORA's larger n is slower (a made-up machine), the deciding
    FORA points are the small n: the prediction, not MACs, picked them."""
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    methods = C.engine_methods(layout, STEPS, component_range=())[:2]  # no-cache, fora n = 2..9
    exp = run_experiment(pipe, methods, SETTING, [Split("held-out", PROMPTS, [0])], batch_size=2, rounds=1,
                         timing_batch_sizes=[1], bars=[Bar(0.0, False)], progress=False, log=lambda _: None,
                         speed_model=lambda schedule: 1.0 + schedule.recompute_fraction)
    fora = [p for p in exp.points if p.method.family == "fora"]
    assert all(p.predicted_speedup == 1.0 + p.method.schedule(p.knob).recompute_fraction for p in fora)
    deciding = sorted(p.knob for p in fora if p.deciding)
    assert deciding and deciding[0] == min(p.knob for p in fora), "the most recomputing FORA ranks first"


def test_winner_only_beyond_the_spread():
    def best(median, lo, hi):
        return {"speed": {"8": {"median": median, "min": lo, "max": hi, "rounds": 5}}}

    assert verdict(best(2.0, 1.9, 2.1), best(1.7, 1.6, 1.95), "fora", 8)["verdict"] == "tie within spread"
    won = verdict(best(2.0, 1.9, 2.1), best(1.7, 1.6, 1.85), "fora", 8)
    assert won["winner"] == "ecad" and won["ratio"] == pytest.approx(2.0 / 1.7)
    assert verdict(best(1.5, 1.4, 1.6), best(1.7, 1.65, 1.8), "fora", 8)["winner"] == "fora"
    assert verdict(None, best(1.7, 1.6, 1.8), "fora", 8)["winner"] == "fora"
    assert verdict(best(1.7, 1.6, 1.8), None, None, 8)["winner"] == "ecad"


def test_paired_round_ratios_are_reported_beside_the_unchanged_verdict():
    def timed(*ratios):
        return {"speed": {"8": {"median": sorted(ratios)[len(ratios) // 2], "min": min(ratios), "max": max(ratios),
                                "rounds": len(ratios), "ratios": list(ratios)}}}

    # Both drift together round by round: the spreads overlap, each round ECAD leads by 1.2x.
    v = verdict(timed(2.4, 1.8, 2.16), timed(2.0, 1.5, 1.8), "fbc", 8)
    assert v["verdict"] == "tie within spread"
    assert v["paired"] == {"median": pytest.approx(1.2), "min": pytest.approx(1.2), "max": pytest.approx(1.2),
                           "rounds": 3}
    # Rounds that do not pair up (another count) give no paired ratio.
    assert "paired" not in verdict(timed(2.4, 1.8, 2.2), timed(2.0, 1.5), "fbc", 8)


def test_batch_one_verdict_judges_batch_dependent_methods_by_their_batch_one_images():
    from ecad.bench.report import _verdict_at

    class Threshold(C.Method):
        family, kind, batch_dependent = "fbc", "competitor", True

    class Schedules(C.Method):
        family, kind = "ecad", "ecad"

    fbc, ecad = Threshold([]), Schedules([])

    def point(method, label, psnr, psnr_b1, speeds):
        p = Point(method, label, label)
        p.quality = {"held-out": {"psnr": psnr}}
        if psnr_b1 is not None:
            p.quality["held-out@b1"] = {"psnr": psnr_b1}
        p.timing = {bs: {"ratios": [s * 0.95, s, s * 1.05]} for bs, s in speeds.items()}
        return p

    fast = point(fbc, "fbc:0.19", 35.6, 33.7, {8: 2.0, 1: 2.4})  # clears 35 dB at batch 8 only
    slow = point(fbc, "fbc:0.15", 37.0, 36.4, {8: 1.7, 1: 1.8})
    mine = point(ecad, "ecad:a", 35.5, None, {8: 1.9, 1: 2.0})  # a schedule: the same images at any batch size
    v = _verdict_at([fast, slow, mine], Bar(35.0, False), "held-out", 1, [8, 1])
    assert v["other_point"]["label"] == "fbc:0.15" and v["other_point"]["psnr"] == 36.4
    assert v["ecad_point"]["label"] == "ecad:a" and v["winner"] == "ecad"
    # without a batch-1 score the batch-dependent point cannot clear the bar at batch 1
    del slow.quality["held-out@b1"]
    assert _verdict_at([fast, slow, mine], Bar(35.0, False), "held-out", 1, [8, 1])["other_point"] is None


def test_relative_reward_interval_brackets_the_mean():
    ref = torch.linspace(0.5, 1.0, 32)
    same = relative_reward_interval(ref, ref)
    assert same == pytest.approx((1.0, 1.0))
    worse = ref * torch.linspace(0.9, 1.0, 32)
    lo, hi = relative_reward_interval(worse, ref)
    assert lo < float(worse.mean() / ref.mean()) < hi < 1.0
    assert relative_reward_interval(worse, ref) == (lo, hi)  # seeded: the same interval every time


def test_cli_help_explains():
    from ecad.cli.bench import build_parser

    text = build_parser().format_help()
    for word in ("cache-dit", "shim", "held-out", "--bank", "--methods", "transfer", "hypervolume", "bisected",
                 "--quick", "spread", "TaylorSeer", "unconditional"):
        assert word in text


def test_paired_ratios_of_the_committed_report_pair_the_same_rounds():
    import importlib.util

    from ecad.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("paired_verdicts", REPO_ROOT / "scripts" / "paired_verdicts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = json.loads((REPO_ROOT / "docs" / "benchmarks" / "ecad-scenes" / "results.json").read_text())
    rows = module.paired_rows(results)
    points = {p["label"]: p for p in results["experiments"][0]["points"]}
    assert len(rows) == 8  # 4 bars x 2 batch sizes, all timed in 4 rounds
    for row in rows:
        mine, other = (points[row[k]]["timing"][str(row["batch_size"])]["ratios"] for k in ("ecad", "other"))
        paired = sorted(a / b for a, b in zip(mine, other))
        assert row["paired"]["rounds"] == len(mine) == len(other) == 4
        assert (row["paired"]["min"], row["paired"]["max"]) == (pytest.approx(paired[0]), pytest.approx(paired[-1]))


def test_timing_noise_times_each_entry_run_between_two_no_cache_runs_by_both_clocks(monkeypatch):
    import importlib.util

    import ecad.timing
    from ecad.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("timing_noise", REPO_ROOT / "scripts" / "timing_noise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    clock = {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(ecad.timing.time, "perf_counter", lambda: clock["wall"])  # the one timing protocol's clocks
    monkeypatch.setattr(ecad.timing.time, "thread_time", lambda: clock["cpu"])
    # (wall, cpu) seconds of successive renders: 2 warm-up calls, then (no-cache, entry, no-cache) per round
    costs = iter([(9, 9), (9, 9), (4, 2), (1, 1), (2, 2), (3, 3), (2, 1), (3, 1)])
    calls = []

    def render(cached):
        calls.append(cached)
        wall, cpu = next(costs)
        clock["wall"] += wall
        clock["cpu"] += cpu

    result = module.measure(render, rounds=2, log=lambda message: None)
    assert calls == [False, True, False, True, False, False, True, False]
    assert result["wall"]["ratios"] == [(4 + 2) / 2 / 1, (3 + 3) / 2 / 2]
    assert result["cpu"]["ratios"] == [(2 + 2) / 2 / 1, (3 + 1) / 2 / 1]
    assert result["wall"]["speedup"] == {"median": 2.25, "min": 1.5, "max": 3.0, "spread_over_median": 1.5 / 2.25}
    assert result["cpu"]["entry_seconds"]["values"] == [1, 1]
    # /proc/stat columns: user nice system idle iowait irq softirq steal
    load = module.machine_load([10, 0, 5, 100, 0, 0, 0, 1], [60, 0, 15, 130, 10, 0, 0, 11])
    assert load["idle_share"] == pytest.approx(40 / 110) and load["steal_share"] == pytest.approx(10 / 110)
    assert module.machine_load(None, [1] * 8) is None
