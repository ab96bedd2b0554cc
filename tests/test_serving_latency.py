"""The latency model: what a pipeline call's work is at any setting, how its prices are fitted, and
how a bank's profile is scaled with it to a request's shape."""

import time

import pytest
import torch

from ecad.generate import generate, load_pipeline
from ecad.planning import LatencyQuantiles, RequestShape
from ecad.serving import ServedBank
from ecad.serving.latency import (
    FEATURES, LatencyModel, RequestCost, call_work, fit_latency_model, fit_prices, latency_design, timing_unit,
)
from ecad.setting import Setting
from ecad.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline
from serving_helpers import heuristic_bank, synthetic_profile

SETTING = Setting(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 6, 4.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("latency")
    model = build_tiny_pipeline("pixart-alpha", root / "tiny-pixart")
    pipe = load_pipeline(model)
    bank = heuristic_bank(pipe, str(model), SETTING)
    return pipe, bank.with_profile(synthetic_profile(bank))


def test_call_work_counts_per_call_overheads_once_and_per_image_work_per_image(tiny):
    pipe, bank = tiny
    schedule = bank.entry("fora-3").cache_schedule()
    work = call_work(pipe, SETTING, schedule)
    one, four = work.features(1), work.features(4)
    assert set(one) == set(FEATURES)
    assert all(four[k] == one[k] for k in work.per_call) and all(four[k] == 4 * one[k] for k in work.per_image)
    assert one["recomputes"] < call_work(pipe, SETTING).features(1)["recomputes"]  # caching recomputes less
    assert one["pixel_steps"] == SETTING.pixels * SETTING.num_inference_steps


def test_a_side_twice_as_long_costs_more_than_four_times_the_macs(tiny):
    """Attention is quadratic in the tokens: the MACs grow faster than the pixels."""
    pipe, _ = tiny
    small = call_work(pipe, SETTING).features(1)["macs"]
    large = call_work(pipe, SETTING.with_changes(height=2 * SETTING.height, width=2 * SETTING.width)).features(1)["macs"]
    assert large > 4 * small


def test_fit_prices_recovers_the_prices_of_known_work(tiny):
    pipe, bank = tiny
    truth = {"calls": 12.0, "recomputes": 0.2, "block_runs": 0.05, "pixels": 0.004, "macs": 3e-8, "pixel_steps": 5e-4}
    runs = latency_design(SETTING, {"no-cache": None, "fora-4": bank.entry("fora-4").cache_schedule(),
                                    "fora-2": bank.entry("fora-2").cache_schedule()},
                          min_steps=2, max_side=(4 * TINY_IMAGE_SIZE,) * 2, multiple=8)
    work = [call_work(pipe, run.setting, run.schedule).features(run.num_images) for run in runs]
    ms = [LatencyModel(truth).cost(w) for w in work]
    fitted = LatencyModel(fit_prices(work, ms))
    assert all(fitted.cost(w) == pytest.approx(m, rel=1e-3) for w, m in zip(work, ms))
    assert all(p >= 0 for p in fitted.prices.values())


def test_the_design_spans_sizes_steps_and_images_within_the_limits(tiny):
    _, bank = tiny
    schedules = {"no-cache": None, "fast": bank.entry("fora-4").cache_schedule(), "mid": None}
    runs = latency_design(SETTING, schedules, min_steps=2, max_side=(3 * TINY_IMAGE_SIZE, 4 * TINY_IMAGE_SIZE),
                          multiple=8)
    assert {r.setting.width for r in runs} == {TINY_IMAGE_SIZE, 2 * TINY_IMAGE_SIZE, 4 * TINY_IMAGE_SIZE}
    assert max(r.setting.height for r in runs) == 3 * TINY_IMAGE_SIZE  # clipped to the limit
    assert {r.setting.num_inference_steps for r in runs} == {2, SETTING.num_inference_steps}
    assert {r.num_images for r in runs} == {1, 2}
    big = [r for r in runs if r.setting.width == 4 * TINY_IMAGE_SIZE]
    assert {r.name.split("@")[0]: r.setting.num_inference_steps for r in big} == {"no-cache": 2, "fast": 6, "mid": 2}
    assert all(r.schedule is None or r.schedule.num_steps == r.setting.num_inference_steps for r in runs)
    assert len({r.name for r in runs}) == len(runs)


def test_the_fitted_model_predicts_a_setting_it_was_not_fitted_on(tiny):
    """Measured, generously: a held-out setting (3x the side, 9 steps, 3 images) within a factor of 2."""
    pipe, bank = tiny
    torch.set_num_threads(1)
    runs = latency_design(SETTING, {"no-cache": None, "fora-4": bank.entry("fora-4").cache_schedule()},
                          min_steps=2, max_side=(4 * TINY_IMAGE_SIZE,) * 2, multiple=8)
    model = fit_latency_model(pipe, runs, time_budget_s=60, prompt="a red circle")
    assert model.unit == timing_unit(pipe) == "cpu" and model.fit_error[0] > 0.5 and model.fit_error[1] < 2.0
    held_out = SETTING.with_changes(height=3 * TINY_IMAGE_SIZE, width=3 * TINY_IMAGE_SIZE, num_inference_steps=9)
    took = []
    for _ in range(2):
        started = time.thread_time()
        generate(pipe, ["a red circle"] * 3, [0, 1, 2], held_out)
        took.append((time.thread_time() - started) * 1000.0)
    predicted = model.cost(call_work(pipe, held_out).features(3))
    assert 0.5 < min(took) / predicted < 2.0, (min(took), predicted)


def test_a_served_bank_scales_its_profile_by_the_model_and_keeps_it_where_it_was_measured(tiny):
    pipe, bank = tiny
    model = LatencyModel({"calls": 10.0, "pixels": 0.01, "macs": 1e-8})
    home = RequestShape(SETTING)
    served = ServedBank("b.json", None, bank, bank.profiles[0], LatencyQuantiles(home=home), RequestCost(pipe, model))
    profile = bank.profiles[0].latency_ms
    assert served.expected_ms(home, ["fora-2"]) == {"fora-2": profile["fora-2"]}
    bigger = RequestShape(SETTING.with_changes(height=2 * SETTING.height, width=2 * SETTING.width), 3)
    schedule = served.schedule_for("fora-2", bigger.setting)
    ratio = model.cost(call_work(pipe, bigger.setting, schedule).features(3)) / model.cost(
        call_work(pipe, SETTING, served.schedules["fora-2"]).features(1))
    assert served.expected_ms(bigger, ["fora-2"])["fora-2"] == pytest.approx(profile["fora-2"] * ratio)
    # Until it has seen anything the tail trusts the model (the cold margin at home, times 1 elsewhere).
    (predicted,) = served.predict(bigger, ["fora-2"])
    assert predicted.predicted_ms == pytest.approx(profile["fora-2"] * ratio * 1.1)
    without = ServedBank("b.json", None, bank, bank.profiles[0], LatencyQuantiles(home=home))
    with pytest.raises(ValueError, match="no latency model"):
        without.predict(bigger)
