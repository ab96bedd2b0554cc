"""ecad-bench end to end on a tiny PixArt pipeline, and its parts: selection on validation and the
verdict on held-out prompts and seeds, resuming, the cache-context shim, memory probes, failing
methods, hypervolume, bisection of thresholds, the paired verdict, fewer steps, another step count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from ecad.adapters import get_adapter
from ecad.bench import competitors as C
from ecad.bench.report import hypervolume_2d, write_report
from ecad.bench.runner import MAX_PSNR, Point, Split, relative_reward_interval, run_experiment
from ecad.bench.tuning import MAX_FINALISTS, Bar, bisection_knobs, finalists
from ecad.cost import FittedCost, image_macs
from ecad.generate import generate, load_pipeline
from ecad.heuristics import fora
from ecad.hooks import cache_schedule
from ecad.setting import Setting
from serving_helpers import heuristic_bank
from ecad.tiny import build_tiny_pipeline

STEPS = 10
SETTING = Setting(32, 32, STEPS, 4.5)
PROMPTS = ["a red cat", "a blue dog"]
HELD_OUT = ["a green bird", "a yellow car"]


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


def _run_cli(path, bank_path, out, work, *extra):
    from ecad.cli.bench import main

    args = ["--model", str(path), "--bank", str(bank_path), "--out", str(out), "--work-dir", str(work), "--no-progress",
            "--methods", "no-cache,ecad,fora,fewer-steps,diffusers-fbcache", "--validation-prompts", "2",
            "--validation-seeds", "2", "--held-out-prompts", "2", "--held-out-seeds", "2", "--batch-size", "2",
            "--quick", "--rounds", "2", "--max-rounds", "3", "--latency-prompts", "3", *extra]
    return main(args)


def test_cli_end_to_end_on_tiny_pipeline(tiny, tmp_path):
    path, pipe = tiny
    bank = heuristic_bank(pipe, str(path), SETTING, names=("no-cache", "fora-2", "fora-3-ff", "taylorseer-2",
                                                           "block-skip-2"))
    bank_path = bank.save(tmp_path / "bank.json")
    out, work = tmp_path / "out", tmp_path / "work"
    # a report holding a fitted cost under "model", as bench_actions writes: here one second per
    # giga-MAC, so its prediction is the analytic MACs speedup
    cost_model = tmp_path / "fit.json"
    features = ("macs:attn1", "macs:attn2", "macs:ff", "macs:block_other")
    cost_model.write_text(json.dumps({"model": FittedCost(features, (1e-9,) * 4).to_dict()}))
    (tmp_path / "bad.json").write_text("{}")
    assert _run_cli(path, bank_path, out, work, "--cost-model", str(tmp_path / "bad.json")) == 2  # before rendering
    assert _run_cli(path, bank_path, out, work, "--cost-model", str(cost_model)) == 0
    data = _strict_json((out / "results.json").read_text())
    meta, exp = data["meta"], data["experiment"]
    assert meta["finalists_ranked_by"] == f"fitted cost ({cost_model})"
    for name in ("pareto.png", "pareto_macs.png", "grid.png"):
        _png(out / name)
    readme = (out / "README.md").read_text()
    for heading in ("## Verdict per quality bar", "## Fewer denoising steps", "## Latency you can promise",
                    "## Hypervolume and dominance", "## MACs: runtime counter"):
        assert heading in readme
    # the report names the model and the bank relative to its own folder, not by this machine's paths
    assert (out / meta["model_path"]).resolve() == path.resolve()
    assert (out / meta["banks"]["bank"]).resolve() == bank_path.resolve() and not Path(meta["banks"]["bank"]).is_absolute()

    # selection on validation, verdict on held-out prompts AND seeds neither calibration nor validation used
    splits = {s["name"]: s for s in exp["splits"]}
    assert splits["validation"]["seeds"] == [1000, 1001] and splits["held-out"]["seeds"] == [2000, 2001]
    calibration = meta["calibration_split"]
    for a, b in (("validation", "held-out"),):
        assert not set(splits[a]["prompts"]) & set(splits[b]["prompts"])
        assert not set(splits[a]["seeds"]) & set(splits[b]["seeds"])
    for name in ("validation", "held-out"):
        assert not set(splits[name]["prompts"]) & set(calibration["prompts"])
        assert not set(splits[name]["seeds"]) & set(calibration["seeds"])
    points = {p["label"]: p for p in exp["points"]}
    assert {"no-cache", "ecad:fora-2", "fora-2", "steps-4", "steps-9", "diffusers-fbcache:0.45"} <= set(points)
    assert exp["reference_reproducible"] is True
    assert points["no-cache"]["quality"]["validation"]["psnr"] == MAX_PSNR
    assert points["fora-2"]["quality"]["validation"]["psnr"] < MAX_PSNR
    assert all(p["predicted_speedup"] is None for p in exp["points"] if p["family"] in ("diffusers-fbcache", "fewer-steps"))
    assert points["fora-2"]["predicted_speedup"] == pytest.approx(points["fora-2"]["macs_speedup"], rel=1e-9)
    assert [b["key"] for b in exp["bars_summary"]] == ["35db_psnr_only", "30db_psnr_only"]  # no reward on the tiny model
    for b in exp["bars_summary"]:
        assert b["picks"], b["bar"]
        for family, pick in b["picks"].items():
            p = points[pick["label"]]
            assert pick["selected_on"] == "validation" and pick["passes_validation"] and b["key"] in p["picked"]
            assert p["quality"]["validation"]["psnr"] >= b["psnr"]  # cleared the bar where it was chosen
            assert pick["passes_held_out"] == (p["quality"]["held-out"]["psnr"] >= b["psnr"])
            assert pick["speed"]["rounds"] >= 2 and pick["speed"]["interval"][0] <= pick["speed"]["median"]
            # among its family's points that clear the bar on validation, none ranks faster by the model
            clearing = [q for q in exp["points"] if q["family"] == family and q["status"] == "ok"
                        and q["quality"]["validation"]["psnr"] >= b["psnr"]]
            rank = max(q["predicted_speedup"] or q["macs_speedup"] for q in clearing)
            assert (p["predicted_speedup"] or p["macs_speedup"]) >= 0.9 * rank - 1e-12, family
        for v in b["verdicts"]:
            if v["paired"]:
                lo, hi = v["paired"]["interval"]
                assert lo <= v["paired"]["median"] <= hi and v["paired"]["rounds"] >= 2
                assert v["winner"] == ("ecad" if lo > 1 else v["other_family"] if hi < 1 else None)
    # the verdict rounds: no-cache and every pick in each; the timing's ratios pair round by round
    verdict = exp["timings"]["verdict"]
    assert 2 <= verdict["rounds"] <= 3
    assert all(len(r) == verdict["rounds"] for r in verdict["ratios"].values())
    # every static point's runtime MACs equal image_macs; fewer steps included
    assert exp["macs_check"]["differ"] == 0 and exp["macs_check"]["static_points"] >= 10
    assert points["steps-5"]["macs_speedup"] == pytest.approx(STEPS / 5)
    # latency: static points cost the same for every prompt
    latency = exp["latency"]["summary"]
    assert latency["no-cache"]["macs_margin_95"] == 0 and latency["no-cache"]["prompts"] == 3
    for label, row in latency.items():
        if row["static"]:
            assert row["macs_distinct"] == 1, label
    fbc = [p for p in exp["points"] if p["family"] == "diffusers-fbcache"]
    assert all(p["status"] == "ok" and p["uses_shim"] for p in fbc)
    assert fbc[0]["as_shipped"].startswith("error: ValueError: No cache context is set")
    rows = exp["settings_rows"]
    assert [r["bar"] for r in rows] == ["psnr>=35", "psnr>=30"] and all(r["steps"] == STEPS for r in rows)
    assert set(rows[0]) >= {"steps", "bar", "ecad", "transfer", "resampled", "best_other", "best_other_name"}

    # rerunning the same command resumes: nothing is rendered again, the picks are the same
    import ecad.bench.runner as runner

    calls = []
    original = runner.render
    try:
        runner.render = lambda *a, **k: calls.append(len(a[3])) or original(*a, **k)
        assert _run_cli(path, bank_path, out, work, "--cost-model", str(cost_model)) == 0
    finally:
        runner.render = original
    again = _strict_json((out / "results.json").read_text())["experiment"]
    # only the reproducibility check's two no-cache batches and the as-shipped probe ran
    assert sum(calls) <= 2 * 2 + 2
    assert [{f: p["label"] for f, p in b["picks"].items()} for b in again["bars_summary"]] == \
        [{f: p["label"] for f, p in b["picks"].items()} for b in exp["bars_summary"]]
    assert again["timings"]["verdict"]["ratios"] == verdict["ratios"]
    # another run in the same folder is refused, not mixed in
    assert _run_cli(path, bank_path, out, work, "--validation-seeds", "3") == 2


def test_another_step_count_compares_the_bank_moved_by_noise_level_and_resampled(tiny, tmp_path):
    """At another step count, the source bank enters twice: moved by noise level (ecad-transfer) and
    resampled by nearest index (ecad-resampled), each selected on validation like every method."""
    from ecad.bench.report import settings_rows
    from ecad.bench.runner import BenchConfig
    from ecad.bench.tuning import default_bars
    from ecad.transfer import noise_levels, transfer_schedule, transferred_id

    path, pipe = tiny
    source = heuristic_bank(pipe, str(path), SETTING, names=("no-cache", "fora-2", "fora-3", "taylorseer-2"))
    target = SETTING.with_changes(num_inference_steps=20)
    layout = get_adapter(pipe).layout(pipe.transformer)
    bars = default_bars(False)
    transfer = C.bank_method(source, pipe, target, bars, how="transfer")
    resampled = C.bank_method(source, pipe, target, bars, how="resampled")
    with pytest.raises(ValueError, match="source bank"):
        C.bank_method(source, pipe, target, bars, how="bank")
    assert (transfer.family, resampled.family) == ("ecad-transfer", "ecad-resampled")
    f2 = source.entry("fora-2").cache_schedule()
    moved = transfer.schedule(transferred_id("fora-2", SETTING, target))  # named after its source entry
    assert moved == transfer_schedule(f2, noise_levels(pipe, SETTING), noise_levels(pipe, target))
    assert resampled.schedule("fora-2") == f2.resample(20)
    # FORA n=2 at 10 steps keeps its recomputes per noise interval at 20 (about every 4th step);
    # resampling keeps its share of recomputes (every other step)
    assert moved.recompute_fraction < resampled.schedule("fora-2").recompute_fraction
    methods = [C.engine_methods(layout, 20)[0], transfer, resampled,
               C.ScheduleMethod("fora", "heuristic", {"fora-2": fora(layout, 20, 2), "fora-4": fora(layout, 20, 4)})]
    exp = run_experiment(pipe, methods, target, Split("validation", PROMPTS, [1000]), Split("held-out", HELD_OUT, [2000]),
                         config=BenchConfig(batch_size=2, bars=(Bar(0.0, False),), min_rounds=1, max_rounds=1,
                                            selection_rounds=1, latency_prompts=0), progress=False, log=lambda _: None)
    assert exp.ecad_families == ["ecad-transfer", "ecad-resampled"]
    picks = exp.picks["0db_psnr_only"]
    assert {"ecad-transfer", "ecad-resampled", "fora"} <= set(picks)
    assert all(p.quality["validation"]["images"] == 2 and "held-out" in p.quality for p in picks.values())
    assert [v.ecad_family for v in exp.verdicts()] == ["ecad-transfer", "ecad-resampled"]
    row, = settings_rows(exp)
    assert row["steps"] == 20 and row["bar"] == "psnr>=0" and row["ecad"] is None
    assert row["transfer"] == picks["ecad-transfer"].macs_speedup and row["resampled"] == picks["ecad-resampled"].macs_speedup
    assert row["best_other_name"] == picks["fora"].label


class Broken(C.Method):
    family, kind, api, knob_name = "broken", "competitor", "test", "x"

    def enable(self, pipe, knob):
        raise RuntimeError("this method cannot run here")

    def disable(self, pipe):
        pass


def _config(**changes):
    from ecad.bench.runner import BenchConfig

    return BenchConfig(**{"batch_size": 2, "min_rounds": 1, "max_rounds": 1, "selection_rounds": 2,
                          "latency_prompts": 0, **changes})


def _splits():
    return Split("validation", PROMPTS, [1000]), Split("held-out", HELD_OUT, [2000])


def test_failing_method_is_reported_not_dropped(tiny, tmp_path):
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    methods = [C.engine_methods(layout, STEPS)[0], C.ScheduleMethod("fora", "heuristic", {"fora-2": fora(layout, STEPS, 2)}),
               Broken([1, 2])]
    exp = run_experiment(pipe, methods, SETTING, *_splits(), config=_config(), progress=False, log=lambda _: None)
    broken = [p for p in exp.points if p.method.family == "broken"]
    assert len(broken) == 2 and all(p.status == "error" and "cannot run here" in p.error for p in broken)
    write_report(tmp_path, {"model": "tiny", "command": "test", "when": "now", "machine": "cpu", "versions": {},
                            "threads": 1}, exp)
    readme = (tmp_path / "README.md").read_text()
    assert "| broken | broken:1 | test | `validation split: RuntimeError: this method cannot run here` |" in readme
    data = _strict_json((tmp_path / "results.json").read_text())
    assert "broken" not in data["experiment"]["hypervolume"]["families"]


def test_splits_must_share_no_prompt_and_no_seed(tiny):
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    methods = C.engine_methods(layout, STEPS)[:1]
    with pytest.raises(ValueError, match="share 1 seeds"):
        run_experiment(pipe, methods, SETTING, Split("validation", PROMPTS, [1000]), Split("held-out", HELD_OUT, [1000]),
                       config=_config(), progress=False)
    with pytest.raises(ValueError, match="share 1 prompts"):
        run_experiment(pipe, methods, SETTING, Split("validation", PROMPTS, [1000]),
                       Split("held-out", [PROMPTS[0]], [2000]), config=_config(), progress=False)


def test_finalists_saving_most_macs_are_timed_and_the_fastest_is_picked(tiny, monkeypatch):
    """Every FORA n clears a 0 dB bar: only points within 90% of the family's best MACs are finalists,
    the finalists are timed in selection rounds on validation images, and the fastest is the pick."""
    import ecad.bench.runner as runner

    seen = []

    def recording(points, *args, **kwargs):
        seen.extend(p.macs_speedup for p in points)
        return finalists(points, *args, **kwargs)

    monkeypatch.setattr(runner, "finalists", recording)
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    methods = C.engine_methods(layout, STEPS, component_range=())[:2]  # no-cache, fora n = 2..9
    exp = run_experiment(pipe, methods, SETTING, *_splits(), config=_config(bars=(Bar(0.0, False),)),
                         progress=False, log=lambda _: None)
    assert seen and all(m is not None and m > 0 for m in seen)  # MACs are known when the finalists are picked
    fora_points = [p for p in exp.points if p.method.family == "fora"]
    best = max(p.macs_speedup for p in fora_points)
    final = [p for p in fora_points if p.finalist]
    within = [p for p in fora_points if p.macs_speedup >= 0.9 * best]
    assert len(final) == min(len(within), MAX_FINALISTS) >= 2 and all(p in within for p in final)
    pick = exp.picks["0db_psnr_only"]["fora"]
    speeds = {p.label: exp.speed(p, "selection")["median"] for p in final}
    assert pick in final and speeds[pick.label] == max(speeds.values())
    assert exp.selection_timings.rounds == 2 and set(exp.selection_timings.ratios) == set(speeds)
    # only the picks render the held-out images and are timed in the verdict rounds
    assert [p.label for p in fora_points if "held-out" in p.quality] == [pick.label]
    assert set(exp.verdict_timings.ratios) == {pick.label}


def test_pruned_points_stop_early_and_clear_no_bar(tiny):
    """A point far below the lowest bar on the first part of the validation images is not rendered further."""
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    methods = C.engine_methods(layout, STEPS, component_range=())[:2]
    val = Split("validation", PROMPTS + ["a green bird", "a pink hat"], [1000])
    exp = run_experiment(pipe, methods, SETTING, val, Split("held-out", ["a grey cat"], [2000]),
                         config=_config(bars=(Bar(200.0, False),), prune_margin_db=1.0), progress=False,
                         log=lambda _: None)
    fora_points = [p for p in exp.points if p.method.family == "fora"]
    assert fora_points and all(p.quality["validation"]["pruned"] and p.quality["validation"]["images"] == 2
                               for p in fora_points)
    assert exp.reference().quality["validation"]["images"] == 4 and not exp.picks


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
        p = Point(method, label, label, macs_speedup=macs)
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


def test_a_speed_model_ranks_the_finalists_of_schedule_families(tiny):
    """With a fitted cost that says FORA's larger n is slower (a made-up machine), the finalists
    are the small n: the prediction, not MACs, chose them."""
    _, pipe = tiny
    layout = get_adapter(pipe).layout(pipe.transformer)
    methods = C.engine_methods(layout, STEPS, component_range=())[:2]  # no-cache, fora n = 2..9
    exp = run_experiment(pipe, methods, SETTING, *_splits(), config=_config(bars=(Bar(0.0, False),)),
                         progress=False, log=lambda _: None,
                         speed_model=lambda schedule: 1.0 + schedule.recompute_fraction)
    fora = [p for p in exp.points if p.method.family == "fora"]
    assert all(p.predicted_speedup == 1.0 + p.method.schedule(p.knob).recompute_fraction for p in fora)
    final = sorted(p.knob for p in fora if p.finalist)
    assert final and final[0] == min(p.knob for p in fora), "the most recomputing FORA ranks first"


def _timings(ratios: dict[str, list[float]]):
    from ecad.timing import Timings

    rounds = len(next(iter(ratios.values())))
    return Timings(["no-cache", *ratios], "no-cache", wall_s={"no-cache": [1.0] * rounds},
                   ratios={k: list(v) for k, v in ratios.items()})


def test_the_verdict_is_the_paired_ratio_with_a_winner_only_where_its_interval_excludes_one():
    from ecad.bench.verdict import bar_verdicts

    class Family(C.Method):
        def __init__(self, family, kind):
            super().__init__([])
            self.family, self.kind = family, kind

    ecad, fbc, fora_m = Family("ecad", "ecad"), Family("fbc", "competitor"), Family("fora", "heuristic")
    mine, theirs, slow = Point(ecad, "a", "ecad:a"), Point(fbc, "b", "fbc:b"), Point(fora_m, "c", "fora-c")
    bar = Bar(35.0, False)
    picks = {bar.key: {"ecad": mine, "fbc": theirs, "fora": slow}}
    # both drift together round by round: min-max spreads overlap, yet ECAD leads by 1.2x in every round
    drift = [2.4, 1.8, 2.16, 2.0, 2.3, 1.9, 2.2, 1.7, 2.5, 2.05]
    timings = _timings({"ecad:a": [1.2 * d for d in drift], "fbc:b": drift, "fora-c": [0.6 * d for d in drift]})
    v, = bar_verdicts([bar], picks, timings, ["ecad"])
    assert v.other_family == "fbc"  # the fastest other family in the same rounds
    assert v.paired.median == pytest.approx(1.2) and v.paired.interval == pytest.approx((1.2, 1.2))
    assert max(drift) > 1.2 * min(drift)  # the spreads overlap: a spread verdict would call a tie
    assert v.winner == "ecad" and v.text.startswith("ecad faster: 1.20x")
    # a lead that flips from round to round: no winner
    mixed = _timings({"ecad:a": [2.0, 2.2, 1.8, 2.1, 1.9, 2.0], "fbc:b": [2.1, 1.9, 2.0, 2.0, 2.1, 1.8],
                      "fora-c": [1.0] * 6})
    v, = bar_verdicts([bar], picks, mixed, ["ecad"])
    assert v.winner is None and v.paired.interval[0] < 1 < v.paired.interval[1] and "includes 1" in v.text
    assert v.relative_width == pytest.approx((v.paired.interval[1] - v.paired.interval[0]) / v.paired.median)
    # nothing else clears the bar: ECAD wins by default; ECAD clears nothing: the other does
    v, = bar_verdicts([bar], {bar.key: {"ecad": mine}}, timings, ["ecad"])
    assert v.winner == "ecad" and v.paired is None
    v, = bar_verdicts([bar], {bar.key: {"fbc": theirs}}, timings, ["ecad"])
    assert v.winner == "fbc"


def test_prefilter_keeps_the_fastest_entries_near_each_bar():
    from ecad.bench.tuning import Candidate, prefilter

    def c(i, psnr, reward, speed):
        return Candidate(i, None, psnr, reward, speed)

    cands = [c("fast-bad", 20.0, 0.5, 5.0), c("a", 34.0, 0.99, 3.0), c("b", 36.0, 0.95, 2.5), c("c", 37.0, 1.0, 2.0),
             c("d", 40.0, 1.0, 1.5), c("e", 31.0, 0.99, 4.0), c("unknown", None, None, 1.2)]
    bars = [Bar(35.0, True), Bar(30.0, False)]
    kept = prefilter(cands, bars, per_bar=2)
    # >= 35 dB + reward: within 1.5 dB and reward >= 93%: a (34), b (0.95), c, d, unknown -> a, b;
    # >= 30 dB: e, a, b, ... -> e, a
    assert [k.id for k in kept] == ["e", "a", "b"]
    assert [k.id for k in prefilter(cands, bars, per_bar=10)] == ["e", "a", "b", "c", "d", "unknown"]


def test_latency_summary_gives_the_margin_a_budget_needs():
    from ecad.bench import latency

    records = [{"macs": {"static": 100.0, "threshold": 100.0 + i}, "seconds": {"static": 1.0, "threshold": 1.0 + i / 100}}
               for i in range(101)]
    table = latency.summarize(records, ["static", "threshold", "missing"])
    assert set(table) == {"static", "threshold"}
    assert table["static"]["macs_margin_95"] == 0 and table["static"]["macs_distinct"] == 1
    t = table["threshold"]
    assert (t["macs"]["p5"], t["macs"]["p50"], t["macs"]["p95"]) == pytest.approx((105, 150, 195))
    assert t["macs_margin_95"] == pytest.approx(195 / 150 - 1) and t["seconds_margin_95"] == pytest.approx(1.95 / 1.5 - 1)


def test_fewer_steps_are_judged_against_the_full_step_no_cache_image(tiny):
    _, pipe = tiny
    method = C.fewer_steps_method(STEPS)
    assert method.knobs == list(range(4, STEPS))
    assert method.setting_for(SETTING, 6).num_inference_steps == 6
    assert method.analytic_macs(pipe, SETTING, 5) * 2 == image_macs(pipe, SETTING)
    layout = get_adapter(pipe).layout(pipe.transformer)
    exp = run_experiment(pipe, [C.engine_methods(layout, STEPS)[0], method], SETTING, *_splits(),
                         config=_config(bars=(Bar(0.0, False),)), progress=False, log=lambda _: None)
    few = {p.knob: p for p in exp.points if p.method.family == "fewer-steps"}
    assert few[5].macs_speedup == pytest.approx(2.0) and few[5].macs_per_image == few[5].analytic_macs_per_image
    assert few[5].quality["validation"]["psnr"] < MAX_PSNR and few[9].changes_output


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
    for word in ("cache-dit", "shim", "held-out", "VALIDATION", "--bank", "--source-bank", "--methods", "paired",
                 "hypervolume", "bisected", "--quick", "spread", "TaylorSeer", "unconditional", "fewer-steps",
                 "--settings-rows", "--work-dir", "latency", "interval"):
        assert word in text, word


def test_committed_report_selects_on_validation_and_judges_on_unseen_seeds():
    """The committed run (docs/benchmarks/ecad-scenes/): every pick chosen on validation, held-out
    seeds disjoint from calibration's and validation's, a paired verdict with its interval per bar,
    the fewer-steps family and the latency table."""
    from ecad.paths import REPO_ROOT

    folder = REPO_ROOT / "docs" / "benchmarks" / "ecad-scenes"
    data = json.loads((folder / "results.json").read_text())
    meta, exp = data["meta"], data["experiment"]
    splits = {s["name"]: s for s in exp["splits"]}
    calibration = set(meta["calibration_split"]["seeds"])
    assert not set(splits["held-out"]["seeds"]) & (calibration | set(splits["validation"]["seeds"]))
    assert not set(splits["validation"]["seeds"]) & calibration
    assert not set(splits["held-out"]["prompts"]) & (set(meta["calibration_split"]["prompts"])
                                                     | set(splits["validation"]["prompts"]))
    assert len(exp["bars_summary"]) == 4
    for b in exp["bars_summary"]:
        assert b["picks"] and all(p["selected_on"] == "validation" and p["passes_held_out"] is not None
                                  for p in b["picks"].values())
        v = b["verdicts"][0]
        if v["paired"]:
            lo, hi = v["paired"]["interval"]
            assert v["winner"] == ("ecad" if lo > 1 else v["other_family"] if hi < 1 else None)
    points = [p for p in exp["points"] if p["family"] == "fewer-steps"]
    assert sorted(p["knob_value"] for p in points) == list(range(4, 20))
    held_out_images = len(splits["held-out"]["prompts"]) * len(splits["held-out"]["seeds"])
    assert exp["latency"]["summary"]["no-cache"]["prompts"] == min(64, held_out_images)  # --latency-prompts 64
    assert exp["macs_check"]["differ"] == 0
    readme = (folder / "README.md").read_text()
    assert "## Latency you can promise" in readme and "selected_on" in readme


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


def test_knob_grids_are_as_fine_at_another_step_count():
    """At 20 steps the interval knobs are 2, 3, 4; at 50 the same fractions of the run join them."""
    assert C.intervals(20) == [2, 3, 4] and C.intervals(12) == [2, 3, 4]
    assert C.intervals(50) == [2, 3, 4, 5, 8, 10] and C.intervals(50, (2, 3, 5)) == [2, 3, 5, 8, 12]
    assert {k.interval for k in C.taylorseer_knobs(50)} == set(C.intervals(50))
    assert len(C.pab_knobs(steps=20)) == 12 and len(C.fastercache_knobs(steps=20)) == 12


def test_noise_level_transfers_are_prefiltered_by_the_transfer_models_estimate(tiny, tmp_path):
    """At another step count the transfer family's candidates are the entries the transfer model
    says land near a bar there, not the ones whose source scores are near it."""
    from ecad.transfer import MetricFit, TransferQualityModel

    path, pipe = tiny
    source = heuristic_bank(pipe, str(path), SETTING, names=("no-cache", "fora-2", "fora-3", "taylorseer-2"))
    psnr = {"no-cache": 60.0, "fora-2": 36.0, "fora-3": 34.0, "taylorseer-2": 35.5}
    source = source.model_copy(update={"quality_metric": "psnr", "entries": [
        e.model_copy(update={"quality": {"psnr": psnr[e.id]}}) for e in source.entries]})
    target = SETTING.with_changes(num_inference_steps=20)
    bars = (Bar(35.0, False),)
    as_stored = C.bank_method(source, pipe, target, bars, how="transfer", per_bar=10)
    assert len(as_stored.schedules) == 3
    # a model that says every entry loses 20 dB at the target: none lands near 35 dB
    losing = TransferQualityModel(source.model, SETTING.num_inference_steps,
                                  {"psnr": MetricFit((-20.0, 1.0, 0.0, 0.0, 0.0, 0.0), (-1.0, 1.0))}, (20,))
    notes = []
    moved = C.bank_method(source, pipe, target, bars, how="transfer", per_bar=10, transfer_quality=losing,
                          log=notes.append)
    assert moved.schedules == {} and any("transfer model" in n for n in notes)
    folder = tmp_path / "transfer-quality"
    folder.mkdir()
    (folder / "other.json").write_text(json.dumps(losing.to_dict()))
    assert TransferQualityModel.beside(tmp_path / "bank.json") == losing  # another bank's fit of the model
