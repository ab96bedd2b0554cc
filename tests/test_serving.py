"""ScheduleServer in-process: validation, selection, generation, profiling, learning."""

import threading

import pytest
import torch

from datetime import datetime, timezone

from ecad.bank import BankError, HardwareProfile, ScheduleBank, device_name, hardware_key
from ecad.deadline import DeadlineExceeded
from ecad.generate import generate, load_pipeline
from ecad.serving import GenerateRequest, Overloaded, RequestError, ScheduleServer, ServingConfig
from ecad.setting import Setting
from ecad.testing import heuristic_bank
from ecad.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline

STEPS = 6
SIZE = TINY_IMAGE_SIZE
SETTING = Setting(SIZE, SIZE, STEPS, 4.5)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    model = build_tiny_pipeline("pixart-alpha", root / "tiny-pixart")
    pipe = load_pipeline(model)
    bank = heuristic_bank(pipe, str(model), SETTING)
    bank_path = bank.save(root / "bank.json")
    return model, bank_path, pipe


@pytest.fixture(scope="module")
def server(tiny_setup, tmp_path_factory):
    """A server whose profile is synthetic (ms proportional to MACs) and that does not learn, so
    selection is deterministic: a tiny model's real timings are noise."""
    model, bank_path, pipe = tiny_setup
    bank = ScheduleBank.load(bank_path)
    profile = HardwareProfile(
        key=hardware_key("cpu", "float32", 1, torch.get_num_threads()), device="cpu", device_name=device_name("cpu"),
        dtype="float32", batch_size=1, num_threads=torch.get_num_threads(), measured_at=datetime.now(timezone.utc),
        repeats=1, latency_ms={e.id: e.macs / 1e5 for e in bank.entries},
    )
    path = bank.with_profile(profile).save(tmp_path_factory.mktemp("profiled") / "bank.json")
    return ScheduleServer(ServingConfig(model=str(model), bank=str(path), latency_learning_rate=0.0), pipe=pipe)


def test_startup_profiles_unprofiled_hardware_without_touching_the_file(tiny_setup):
    model, bank_path, pipe = tiny_setup
    fresh = ScheduleServer(ServingConfig(model=str(model), bank=str(bank_path), profile_repeats=1), pipe=pipe)
    assert set(fresh.profile.latency_ms) == {"no-cache", "fora-2", "fora-3", "fora-4"}
    assert all(ms > 0 for ms in fresh.profile.latency_ms.values())
    assert ScheduleBank.load(bank_path).profiles == []  # persist_profile is off by default
    persisted = ScheduleServer(ServingConfig(model=str(model), bank=str(bank_path), profile_repeats=1,
                                             persist_profile=True), pipe=pipe)
    assert ScheduleBank.load(bank_path).profile(persisted.profile.key) == persisted.profile


def test_stored_profile_is_reused(tiny_setup, server, tmp_path):
    model, _, pipe = tiny_setup
    path = server.bank.save(tmp_path / "profiled.json")
    again = ScheduleServer(ServingConfig(model=str(model), bank=str(path)), pipe=pipe)
    assert again.profile == server.profile


def test_observed_latencies_correct_predictions(tiny_setup, server):
    model, _, pipe = tiny_setup
    learning = ScheduleServer(ServingConfig(model=str(model), bank=str(server.bank_path), latency_learning_rate=0.5),
                              pipe=pipe)
    request = learning.resolve(GenerateRequest(prompt="a", seed=1))
    before = learning.plan(request).choice.predicted_ms
    result = learning.generate(request)
    after = learning.plan(request).choice.predicted_ms
    # The synthetic profile is far from reality; one observation moves the prediction halfway.
    assert after == pytest.approx(0.5 * before + 0.5 * result.actual_ms, rel=1e-6)


def test_mismatched_bank_is_refused(tmp_path_factory, tiny_setup):
    _, bank_path, _ = tiny_setup
    other = build_tiny_pipeline("flux", tmp_path_factory.mktemp("other") / "flux")
    with pytest.raises(BankError, match="fingerprint"):
        ScheduleServer(ServingConfig(model=str(other), bank=str(bank_path)))


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "a", "width": SIZE + 1}, "width"),
        ({"prompt": "a", "height": SIZE * 100}, "height"),
        ({"prompt": "a", "num_images": 9}, "num_images"),
        ({"prompt": "a", "num_inference_steps": 101}, "num_inference_steps"),
    ],
)
def test_model_dependent_limits_name_the_field(server, fields, field):
    with pytest.raises(RequestError) as info:
        server.resolve(GenerateRequest(**fields))
    assert info.value.field == field


@pytest.mark.parametrize(
    "fields",
    [{"prompt": ""}, {"prompt": "a", "latency_ms": -1}, {"prompt": "a", "latency_ms": float("nan")},
     {"prompt": "a", "latency_ms": 1e12}, {"prompt": "a", "seed": -1}, {"prompt": "a", "bogus": 1}],
)
def test_static_bounds_are_pydantic_errors(fields):
    with pytest.raises(ValueError):
        GenerateRequest(**fields)


def test_generation_matches_the_library_with_the_chosen_schedule(server, tiny_setup):
    _, _, pipe = tiny_setup
    request = server.resolve(GenerateRequest(prompt="a red cat", seed=7, num_images=2))
    result = server.generate(request)
    assert result.schedule_id == "no-cache"  # no budget: best quality
    assert result.budget_met is None
    expected = generate(pipe, ["a red cat"] * 2, [7, 8], SETTING,
                        schedule=server.schedules["no-cache"])
    assert torch.equal(result.images, expected)
    assert len(result.png_bytes()) == 2 and result.png_bytes()[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_picks_a_faster_schedule_and_the_images_follow_it(server, tiny_setup):
    _, _, pipe = tiny_setup
    fastest = min(server.profile.latency_ms, key=server.profile.latency_ms.get)
    budget = server.profile.latency_ms[fastest] * server.corrector.corrections([fastest])[fastest] * 1.0001
    request = server.resolve(GenerateRequest(prompt="a red cat", seed=3, latency_ms=budget))
    plan = server.plan(request)
    assert plan.choice.entry_id != "no-cache" and plan.choice.budget_met
    result = server.generate(request)
    expected = generate(pipe, ["a red cat"], [3], SETTING,
                        schedule=server.schedules[result.schedule_id])
    assert torch.equal(result.images, expected)


def test_impossible_budget_serves_the_fastest_and_says_so(server):
    request = server.resolve(GenerateRequest(prompt="a", seed=1, latency_ms=0.001))
    fastest = server.plan(request).choice.entry_id  # before: each call teaches the corrector
    result = server.generate(request)
    assert result.schedule_id == fastest and result.budget_met is False
    assert any("cannot be met" in n for n in result.notes)


def test_other_steps_and_size_are_resampled_and_noted(server):
    request = server.resolve(GenerateRequest(prompt="a", seed=1, num_inference_steps=9, width=SIZE * 2))
    result = server.generate(request)
    assert result.images.shape == (1, 3, SIZE, SIZE * 2)
    assert any("resampled" in n for n in result.notes) and any("resolution" in n for n in result.notes)


def test_queue_wait_counts_against_the_budget(server):
    request = server.resolve(GenerateRequest(prompt="a", latency_ms=1e6))
    assert server.plan(request, waited_ms=0).choice.budget_ms == 1e6
    assert server.plan(request, waited_ms=4e5).choice.budget_ms == 6e5


def test_deadline_passed_while_queued_never_starts(server):
    import time

    request = server.resolve(GenerateRequest(prompt="a", seed=1))
    with pytest.raises(DeadlineExceeded, match="not started"):
        server.generate(request, deadline=time.monotonic() - 1)


def test_deadline_stops_a_running_call_and_the_next_call_is_clean(server, tiny_setup):
    import time

    _, _, pipe = tiny_setup
    request = server.resolve(GenerateRequest(prompt="a", seed=5, latency_ms=1e6))
    clean = server.generate(request)
    calls = []

    def slow_step(module, args):
        calls.append(1)
        time.sleep(0.05)

    handle = pipe.transformer.register_forward_pre_hook(slow_step)
    try:
        with pytest.raises(DeadlineExceeded):
            server.generate(request, deadline=time.monotonic() + 0.12)
    finally:
        handle.remove()
    assert 1 <= len(calls) < STEPS  # stopped between steps, not run to the end
    again = server.generate(request)
    assert again.schedule_id == clean.schedule_id and torch.equal(again.images, clean.images)


def test_bounded_queue_answers_overloaded(server):
    server._lock.acquire()
    try:
        server.config.max_queue, saved = 0, server.config.max_queue
        with pytest.raises(Overloaded):
            server.generate(server.resolve(GenerateRequest(prompt="a")))
    finally:
        server.config.max_queue = saved
        server._lock.release()


def test_concurrent_requests_equal_sequential_ones(server):
    budgets = [None, 1e6, 0.001, None, 0.001, 1e6]
    requests = [server.resolve(GenerateRequest(prompt=f"p{i}", seed=i, latency_ms=b)) for i, b in enumerate(budgets)]
    results = [None] * len(requests)

    def work(i):
        results[i] = server.generate(requests[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.schedule_id for r in results}) >= 2  # different budgets, different schedules
    for request, result in zip(requests, results):
        # Exactly what the same schedule gives alone, outside the server (no shared state).
        alone = generate(server.pipe, [request.prompt], [request.seed], SETTING,
                         schedule=server.schedules[result.schedule_id])
        assert torch.equal(alone, result.images)


def test_views(server):
    view = server.bank_view()
    assert [e["id"] for e in view["entries"]] == ["no-cache", "fora-2", "fora-3", "fora-4"]
    assert view["limits"]["width"][2] == server.spatial_multiple
    chosen = server.select_view(None)
    assert chosen["schedule_id"] == "no-cache"
    with pytest.raises(RequestError):
        server.select_view(100.0, width=SIZE + 1)


def test_a_pinned_schedule_is_served_and_unknown_ids_are_refused(server, tiny_setup):
    _, _, pipe = tiny_setup
    result = server.generate(server.resolve(GenerateRequest(prompt="a", seed=2, schedule_id="fora-3", latency_ms=1e6)))
    assert result.schedule_id == "fora-3" and result.budget_met
    expected = generate(pipe, ["a"], [2], SETTING, schedule=server.schedules["fora-3"])
    assert torch.equal(result.images, expected)
    with pytest.raises(RequestError) as info:
        server.resolve(GenerateRequest(prompt="a", schedule_id="nope"))
    assert info.value.field == "schedule_id"
