"""A server with several banks of one model: each request is served from the bank made for its
setting (bit-exact with the library), the nearest one (its schedules moved by noise level, its
quality estimated, and noted) when none is."""

import numpy as np
import pytest
import torch

from ecad.bank import ScheduleBank
from ecad.generate import generate, load_pipeline
from ecad.serving import GenerateRequest, RequestError, ScheduleServer, ServingConfig
from ecad.setting import Setting
from serving_helpers import heuristic_bank, synthetic_profile
from ecad.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline
from ecad.transfer import transfer_to_setting

NATIVE = Setting(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 6, 4.5)  # the tiny pipeline's own resolution
SMALL = Setting(24, 24, 5, 4.5)  # its file name sorts first: the default bank is the native one anyway


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("banks")
    model = build_tiny_pipeline("pixart-alpha", root / "tiny-pixart")
    pipe = load_pipeline(model)
    folder = root / "schedules" / "tiny-pixart"
    for setting in (NATIVE, SMALL):
        bank = heuristic_bank(pipe, str(model), setting)
        bank.with_profile(synthetic_profile(bank, num_threads=1)).save(folder / f"{setting.name}.json")
    return model, root / "schedules", pipe


@pytest.fixture(scope="module")
def server(tiny):
    model, bank_dir, pipe = tiny
    return ScheduleServer(ServingConfig(model=str(model), bank_dirs=(str(bank_dir),), latency_window=0, latency_fit_s=0,
                                        latency_margin=1.0), pipe=pipe)


def expected_images(pipe, bank_path, entry_id, prompt, seed, setting):
    bank = ScheduleBank.load(bank_path)
    schedule = transfer_to_setting(bank.entry(entry_id).cache_schedule(), pipe, bank.setting, setting)
    return generate(pipe, [prompt], [seed], setting, schedule)


def test_the_default_bank_is_the_one_at_the_models_native_resolution(server):
    assert list(server.banks) == [f"{NATIVE.name}.json", f"{SMALL.name}.json"]
    assert server.default_bank is server.banks[f"{NATIVE.name}.json"]
    assert server.default_bank.bank.setting == NATIVE and server.limits.setting == NATIVE
    result = server.generate(server.resolve(GenerateRequest(prompt="a", seed=1, schedule_id="fora-2")))
    assert result.request.served.id == f"{NATIVE.name}.json" and result.notes == []


@pytest.mark.parametrize("setting", [NATIVE, SMALL], ids=lambda s: s.name)
@pytest.mark.parametrize("entry_id", ["fora-3", None])
def test_each_setting_is_served_from_its_own_bank_bit_exact(server, tiny, setting, entry_id):
    _, bank_dir, pipe = tiny
    body = dict(prompt="a red cat", seed=11, width=setting.width, height=setting.height,
                num_inference_steps=setting.num_inference_steps, schedule_id=entry_id)
    result = server.generate(server.resolve(GenerateRequest(**body)))
    assert result.request.served.id == f"{setting.name}.json"
    assert result.notes == []  # made for it: no resampling, no scaling
    assert result.schedule_id == entry_id or (entry_id is None and result.schedule_id == "no-cache")
    bank_path = bank_dir / "tiny-pixart" / result.request.served.id
    assert torch.equal(result.images, expected_images(pipe, bank_path, result.schedule_id, "a red cat", 11, setting))


def test_a_setting_without_a_bank_gets_the_nearest_moved_by_noise_level_and_noted(server, tiny):
    _, bank_dir, pipe = tiny
    wanted = NATIVE.with_changes(num_inference_steps=5)  # the native resolution, the small bank's steps
    request = server.resolve(GenerateRequest(prompt="a", seed=5, num_inference_steps=5, schedule_id="fora-2"))
    assert request.served is server.default_bank  # same resolution beats same steps
    result = server.generate(request)
    assert result.request.served.id == f"{NATIVE.name}.json"
    assert any(n.startswith(f"no bank for {wanted.name}") and "moved by noise level from 6 to 5 steps" in n
               for n in result.notes), result.notes
    assert any("quality is not measured at this setting" in n for n in result.notes), result.notes
    quality = result.report().quality  # the response says so too, beside the value
    own = server.default_bank.quality["fora-2"]
    assert (quality.estimated, quality.basis, quality.value) == (True, "not measured at this setting", own.value)
    at_home = server.generate(server.resolve(GenerateRequest(prompt="a", seed=5, schedule_id="fora-2"))).report()
    assert not at_home.quality.estimated and at_home.quality.value == own.value
    assert at_home.quality.metric == server.default_bank.bank.quality_metric
    bank_path = bank_dir / "tiny-pixart" / result.request.served.id
    assert torch.equal(result.images, expected_images(pipe, bank_path, "fora-2", "a", 5, wanted))


@pytest.mark.parametrize("steps, guidance", [(6, 4.5), (9, 4.5), (4, 4.5), (6, 1.0), (9, 1.0)])
def test_schedule_for_is_the_entry_moved_by_noise_level_without_guidance_reuse_at_guidance_1(
        server, tiny, steps, guidance):
    from ecad.planning import LatencyQuantiles
    from ecad.schedule import CacheSchedule
    from ecad.serving import ServedBank
    from ecad.transfer import noise_levels, transfer_schedule

    pipe = tiny[2]
    default = server.default_bank
    fora3 = default.schedules["fora-3"]
    guided = CacheSchedule.from_actions(fora3.actions, fora3.layout, fora3.skip, np.arange(fora3.num_steps) % 2 == 1)
    entry = default.bank.entry("fora-3").model_copy(update={"id": "guided", "schedule": guided.to_dict()})
    bank = default.bank.model_copy(update={"entries": [*default.bank.entries, entry]})
    served = ServedBank("b.json", default.path, bank, default.profile, LatencyQuantiles(),
                        noise_levels=lambda setting: noise_levels(pipe, setting))
    setting = NATIVE.with_changes(num_inference_steps=steps, guidance_scale=guidance)
    for entry_id, schedule in (("fora-3", fora3), ("guided", guided)):
        prepared = served.schedule_for(entry_id, setting)
        expected = schedule if steps == NATIVE.num_inference_steps else transfer_schedule(
            schedule, noise_levels(pipe, NATIVE), noise_levels(pipe, setting))
        if guidance <= 1:
            expected = expected.without_guidance_reuse()
        assert prepared.num_steps == steps and prepared == expected
        prepared.validate(num_steps=steps)
        assert served.schedule_for(entry_id, setting) is prepared  # prepared once
    assert served.schedule_for("guided", setting).guidance_reuse.any() == (guidance > 1) or steps < 6
    assert served.schedule_for("fora-3", NATIVE) == fora3  # the bank's own setting: its own schedule


def test_budgets_are_planned_with_the_chosen_banks_profile(server, tiny):
    _, bank_dir, pipe = tiny
    small = server.banks[f"{SMALL.name}.json"]
    fastest = min(small.profile.latency_ms, key=small.profile.latency_ms.get)
    budget = small.profile.latency_ms[fastest] * 1.0001
    fields = dict(prompt="b", seed=2, width=SMALL.width, height=SMALL.height, latency_ms=budget,
                  num_inference_steps=SMALL.num_inference_steps)
    request = server.resolve(GenerateRequest(**fields))
    plan = server.plan(request)
    assert plan.entry_id == fastest and plan.on_time
    assert plan.predicted_ms == pytest.approx(small.profile.latency_ms[fastest])  # that bank's, not the default's
    result = server.generate(request)
    assert torch.equal(result.images, expected_images(pipe, bank_dir / "tiny-pixart" / result.request.served.id, fastest,
                                                      "b", 2, SMALL))


def test_views_list_every_bank_and_keep_the_default_at_the_top(server):
    view = server.bank_view()
    assert view["bank"] == f"{NATIVE.name}.json" and view["width"] == NATIVE.width
    assert [b["bank"] for b in view["banks"]] == [f"{NATIVE.name}.json", f"{SMALL.name}.json"]
    assert [(b["width"], b["num_inference_steps"]) for b in view["banks"]] == [(32, 6), (24, 5)]
    assert view["banks"][0]["entries"] == view["entries"]
    assert [e["id"] for e in view["banks"][1]["entries"]] == ["no-cache", "fora-2", "fora-3", "fora-4"]
    assert view["limits"]["width"][1] == NATIVE.width * 4  # the largest bank's side x max_side_factor
    chosen = server.select_view(None, width=SMALL.width, height=SMALL.height, num_inference_steps=5)
    assert chosen["bank"] == f"{SMALL.name}.json" and chosen["notes"] == []
    elsewhere = server.select_view(None, width=SMALL.width, height=SMALL.height, num_inference_steps=6)
    assert elsewhere["bank"] == f"{SMALL.name}.json" and "no bank for 24x24-6steps" in elsewhere["notes"][0]


def test_unknown_schedule_ids_are_checked_against_the_chosen_bank(server):
    with pytest.raises(RequestError, match=f"unknown entry 'nope' in bank {SMALL.name}.json") as info:
        server.resolve(GenerateRequest(prompt="a", width=24, height=24, num_inference_steps=5, schedule_id="nope"))
    assert info.value.field == "schedule_id"


def test_each_bank_learns_its_own_latency_and_gets_its_share_of_the_profiling_budget(tiny, monkeypatch):
    import ecad.profile

    model, bank_dir, pipe = tiny
    budgets = []
    real = ecad.profile.profile_bank

    def recording(pipe, bank, **kwargs):
        budgets.append(kwargs["time_budget_s"])
        return real(pipe, bank, **kwargs)

    monkeypatch.setattr(ecad.profile, "profile_bank", recording)
    unprofiled = bank_dir.parent / "unprofiled" / "tiny-pixart"
    for path in sorted((bank_dir / "tiny-pixart").glob("*.json")):
        ScheduleBank.load(path).model_copy(update={"profiles": []}).save(unprofiled / path.name)
    learning = ScheduleServer(ServingConfig(model=str(model), bank_dirs=(str(unprofiled.parent),), profile_repeats=1,
                                            profile_time_budget_s=30, latency_window=8, latency_fit_s=0), pipe=pipe)
    assert budgets == [15, 15]
    assert all(set(b.profile.latency_ms) == set(b.schedules) for b in learning.banks.values())
    native, small = learning.banks.values()
    before = {b.id: b.latency.factors(["no-cache"], b.profiled_shape) for b in (native, small)}
    request = learning.resolve(GenerateRequest(prompt="a", seed=1, schedule_id="no-cache"))
    for _ in range(4):
        learning.generate(request)
    assert native.latency.factors(["no-cache"], native.profiled_shape) != before[native.id]  # observed
    assert small.latency.factors(["no-cache"], small.profiled_shape) == before[small.id]  # another bank's entry


def test_an_invalid_transfer_is_never_served(server, tiny):
    """A forecast right after the first recompute is valid where calibrated and invalid after
    nearest-index resampling to fewer steps: whatever the requested steps, what runs is valid."""
    from ecad.planning import LatencyQuantiles
    from ecad.schedule import FORECAST, RECOMPUTE, REUSE, CacheSchedule
    from ecad.serving import ServedBank
    from ecad.transfer import noise_levels

    pipe = tiny[2]
    default = server.default_bank
    layout = default.schedules["no-cache"].layout
    actions = np.full((NATIVE.num_inference_steps, layout.num_blocks, layout.num_components), REUSE, np.int8)
    actions[0] = actions[1] = RECOMPUTE
    actions[2:, 0, 0] = FORECAST
    risky = CacheSchedule.from_actions(actions, layout)
    risky.validate()
    with pytest.raises(ValueError, match="forecast"):
        risky.resample(4).validate()  # what nearest-index resampling would have served
    entry = default.bank.entry("fora-3").model_copy(update={"id": "risky", "schedule": risky.to_dict()})
    bank = default.bank.model_copy(update={"entries": [*default.bank.entries, entry]})
    for levels in (lambda setting: noise_levels(pipe, setting), None):  # by noise level, or by index where unknown
        served = ServedBank("b.json", default.path, bank, default.profile, LatencyQuantiles(), noise_levels=levels)
        for steps in range(2, 13):
            served.schedule_for("risky", NATIVE.with_changes(num_inference_steps=steps)).validate(num_steps=steps)


def test_quality_away_from_the_banks_setting_is_an_estimate_that_says_so(server):
    from ecad.planning import LatencyQuantiles
    from ecad.serving import ServedBank
    from ecad.transfer import MetricFit, TransferQualityModel

    default = server.default_bank
    metric = default.bank.quality_metric
    own = default.quality_at(NATIVE)
    assert own == default.quality and not any(q.estimated for q in own.values())
    unmeasured = default.quality_at(NATIVE.with_changes(num_inference_steps=9))
    assert unmeasured["fora-2"].estimated and unmeasured["fora-2"].basis == "not measured at this setting"
    assert unmeasured["no-cache"] == own["no-cache"]  # the reference itself at every step count
    # a transfer model that says each doubling of the steps costs 5 units of quality, +-1
    model = TransferQualityModel(default.bank.model, NATIVE.num_inference_steps,
                                 {metric: MetricFit((0.0, 1.0, -5.0, 0.0, 0.0, 0.0), (-1.0, 1.0))}, (3, 12))
    served = ServedBank("b.json", default.path, default.bank, default.profile, LatencyQuantiles(), transfer_quality=model)
    at12 = served.quality_at(NATIVE.with_changes(num_inference_steps=12))["fora-2"]
    assert at12.estimated and at12.basis == "transfer model"
    assert at12.value == pytest.approx(own["fora-2"].value - 5.0)
    assert (at12.low, at12.high) == (pytest.approx(at12.value - 1.0), pytest.approx(at12.value + 1.0))
    assert "estimated" in at12.label(metric) and "transfer model" in at12.label(metric)
