"""ScheduleServer in-process: validation, planning, generation, profiling, learning, cancellation."""

import re
import threading
import time

import numpy as np

import pytest
import torch
from pydantic import ValidationError

from datetime import datetime, timezone

from ecad.bank import BankError, HardwareProfile, ScheduleBank, device_name, hardware_key
from ecad.deadline import DeadlineExceeded, RequestCancelled, monotonic_ms
from ecad.generate import generate, load_pipeline
from ecad.serving import (
    GenerateRequest, Infeasible, Overloaded, RequestError, ScheduleServer, ServingConfig, load_banks,
)
from ecad.paths import REPO_ROOT
from ecad.planning import RequestShape
from ecad.setting import Setting
from serving_helpers import heuristic_bank
from ecad.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline

STEPS = 6
SIZE = TINY_IMAGE_SIZE
SETTING = Setting(SIZE, SIZE, STEPS, 4.5)
REPO_BANK = REPO_ROOT / "schedules" / "ecad-scenes" / "32x32-20steps.json"


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
    return ScheduleServer(ServingConfig(model=str(model), bank=str(path), latency_window=0, latency_margin=1.0,
                                        latency_fit_s=0), pipe=pipe)


def test_startup_profiles_unprofiled_hardware_without_touching_the_file(tiny_setup):
    model, bank_path, pipe = tiny_setup
    fresh = ScheduleServer(ServingConfig(model=str(model), bank=str(bank_path), profile_repeats=1, latency_fit_s=0),
                           pipe=pipe)
    assert set(fresh.default_bank.profile.latency_ms) == {"no-cache", "fora-2", "fora-3", "fora-4"}
    assert all(ms > 0 for ms in fresh.default_bank.profile.latency_ms.values())
    assert ScheduleBank.load(bank_path).profiles == []  # persist_profile is off by default
    persisted = ScheduleServer(ServingConfig(model=str(model), bank=str(bank_path), profile_repeats=1,
                                             persist_profile=True, latency_fit_s=0), pipe=pipe)
    assert ScheduleBank.load(bank_path).profile(persisted.default_bank.profile.key) == persisted.default_bank.profile


def test_stored_profile_is_reused(tiny_setup, server, tmp_path):
    model, _, pipe = tiny_setup
    path = server.default_bank.bank.save(tmp_path / "profiled.json")
    again = ScheduleServer(ServingConfig(model=str(model), bank=str(path), latency_fit_s=0), pipe=pipe)
    assert again.default_bank.profile == server.default_bank.profile


def test_predictions_promise_the_observed_tail(tiny_setup, server):
    model, _, pipe = tiny_setup
    learning = ScheduleServer(ServingConfig(model=str(model), bank=str(server.default_bank.path), latency_margin=1.25,
                                            latency_window=5, latency_fit_s=0), pipe=pipe)
    served = learning.default_bank
    request = learning.resolve(GenerateRequest(prompt="a", seed=1, schedule_id="fora-3"))
    profiled = served.profile.latency_ms["fora-3"]
    # The synthetic profile is far from reality, and the warm-up's second round taught the tail so:
    # the first request is predicted from what this machine does now, not the cold margin.
    first = learning.plan(request).predicted_ms
    assert first != pytest.approx(profiled * 1.25)
    assert first == pytest.approx(profiled * served.latency.factors(["fora-3"], served.profiled_shape)["fora-3"])
    actual = [learning.generate(request).actual_ms for _ in range(5)]
    # Then the prediction is the p90 of what this entry took (the last 5: the window).
    expected = profiled * float(np.quantile(np.array(actual) / profiled, 0.9))
    assert learning.plan(request).predicted_ms == pytest.approx(expected, rel=1e-9)


def test_the_first_request_after_start_is_predicted_like_any_other(tiny_setup, tmp_path):
    """A stored profile measured on another day (here: several times too fast) would make the first
    requests miss their budgets by far; the warm-up's observed round calibrates the tail first."""
    from serving_helpers import synthetic_profile

    model, bank_path, pipe = tiny_setup
    bank = ScheduleBank.load(bank_path)
    profile = synthetic_profile(bank, ms_per_gmac=1500)  # a few times too fast (the tail learns up to 20x)
    path = bank.with_profile(profile).save(tmp_path / "bank.json")
    fresh = ScheduleServer(ServingConfig(model=str(model), bank=str(path), latency_fit_s=0), pipe=pipe)
    results = [fresh.generate(fresh.resolve(GenerateRequest(prompt="a", seed=seed, schedule_id="fora-4")))
               for seed in range(4)]
    ratios = [r.actual_ms / r.predicted_ms for r in results]
    assert results[0].actual_ms > 2 * profile.latency_ms["fora-4"], results[0].actual_ms  # the profile is wrong
    assert ratios[0] < 1.5 and ratios[0] < 2.0 * min(ratios[1:]), ratios
    fresh.close()


def test_mismatched_bank_is_refused(tmp_path_factory, tiny_setup):
    _, bank_path, _ = tiny_setup
    other = build_tiny_pipeline("flux", tmp_path_factory.mktemp("other") / "flux")
    with pytest.raises(BankError, match="fingerprint"):
        ScheduleServer(ServingConfig(model=str(other), bank=str(bank_path)))


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "\x00\x00"}, "prompt"),
        ({"prompt": "a", "negative_prompt": "b\x00"}, "negative_prompt"),
        ({"prompt": "a", "num_images": 0}, "num_images"),
        ({"prompt": "a", "width": 0}, "width"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "a", "width": SIZE + 1}, "width"),
        ({"prompt": "a", "height": SIZE * 100}, "height"),
        ({"prompt": "a", "num_images": 9}, "num_images"),
        ({"prompt": "a", "num_inference_steps": 101}, "num_inference_steps"),
        ({"prompt": "a", "num_inference_steps": 1}, "num_inference_steps"),  # the multistep solver needs 2
    ],
)
def test_model_dependent_limits_name_the_field(server, fields, field):
    with pytest.raises(RequestError) as info:
        server.resolve(GenerateRequest(**fields))
    assert info.value.field == field


@pytest.mark.parametrize(
    "fields, field",
    [({"prompt": "a", "latency_ms": -1}, "latency_ms"), ({"prompt": "a", "latency_ms": float("nan")}, "latency_ms"),
     ({"prompt": "a", "latency_ms": 1e12}, "latency_ms"), ({"prompt": "a", "latency_ms": True}, "latency_ms"),
     ({"prompt": "a", "seed": -1}, "seed"), ({"prompt": "a", "bogus": 1}, "bogus"),
     ({"prompt": "a", "num_images": "1"}, "num_images"), ({"prompt": "a", "on_infeasible": "wait"}, "on_infeasible"),
     ({"latency_ms": 5}, "prompt")],
)
def test_static_bounds_are_pydantic_errors_naming_the_field(fields, field):
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate(fields)
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_limits_come_from_the_model(server):
    limits = server.limits.view()
    # diffusers' PixArt pipeline checks multiples of 8 whatever the VAE factor x patch says.
    assert limits["width"][2] == limits["height"][2] == 8
    assert limits["num_inference_steps"] == [2, 100]
    for width in range(8, 24, 4):
        if width % 8:
            with pytest.raises(RequestError):
                server.resolve(GenerateRequest(prompt="a", width=width))
        else:
            result = server.generate(server.resolve(GenerateRequest(prompt="a", width=width, num_inference_steps=2)))
            assert result.images.shape[-1] == width


def test_without_ecad_bank_every_bank_of_the_model_is_found_and_none_is_an_error(tmp_path, monkeypatch):
    import ecad.bank_catalog as catalog

    monkeypatch.setattr(catalog, "SCHEDULES_DIR", tmp_path / "package")
    with pytest.raises(BankError, match="no schedule bank for model 'org/tiny'.*ECAD_BANK"):
        load_banks(ServingConfig(model="org/tiny"))
    folder = tmp_path / "extra" / "tiny"
    folder.mkdir(parents=True)
    (folder / "64x64-20steps.json").write_text("{}")  # unreadable: skipped with a warning
    with pytest.raises(BankError, match="no schedule bank"):
        load_banks(ServingConfig(model="org/tiny", bank_dirs=(str(tmp_path / "extra"),)))
    bank = ScheduleBank.load(REPO_BANK).model_copy(update={"model": "org/tiny"})
    bank.save(folder / "32x32-20steps.json")
    bank.save(folder / "48x48-20steps.json")
    found = load_banks(ServingConfig(model="org/tiny", bank_dirs=(str(tmp_path / "extra"),)))
    assert [path.name for path in found] == ["32x32-20steps.json", "48x48-20steps.json"]
    assert all(bank.model == "org/tiny" for bank in found.values())
    named = load_banks(ServingConfig(model="org/tiny", bank=str(REPO_BANK)))
    assert list(named) == [REPO_BANK]


def test_generation_matches_the_library_with_the_chosen_schedule(server, tiny_setup):
    _, _, pipe = tiny_setup
    request = server.resolve(GenerateRequest(prompt="a red cat", seed=7, num_images=2))
    result = server.generate(request)
    assert result.schedule_id == "no-cache"  # no budget: best quality
    assert result.budget_met is None
    expected = generate(pipe, ["a red cat"] * 2, [7, 8], SETTING,
                        schedule=server.default_bank.schedules["no-cache"])
    assert torch.equal(result.images, expected)
    assert result.media_type == "image/png"
    assert len(result.encoded()) == 2 and result.encoded()[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_picks_a_faster_schedule_and_the_images_follow_it(server, tiny_setup):
    _, _, pipe = tiny_setup
    fastest = min(server.default_bank.profile.latency_ms, key=server.default_bank.profile.latency_ms.get)
    budget = server.default_bank.profile.latency_ms[fastest] * 1.0001
    request = server.resolve(GenerateRequest(prompt="a red cat", seed=3, latency_ms=budget))
    plan = server.plan(request)
    assert plan.entry_id != "no-cache" and plan.on_time
    result = server.generate(request)
    expected = generate(pipe, ["a red cat"], [3], SETTING,
                        schedule=server.default_bank.schedules[result.schedule_id])
    assert torch.equal(result.images, expected)


def test_impossible_budget_serves_the_fastest_and_says_so(server):
    request = server.resolve(GenerateRequest(prompt="a", seed=1, latency_ms=0.001))
    fastest = server.plan(request).entry_id
    result = server.generate(request)
    assert result.schedule_id == fastest and result.budget_met is False
    assert any("cannot be met" in n for n in result.notes)


def test_other_steps_and_size_are_moved_and_noted(server):
    request = server.resolve(GenerateRequest(prompt="a", seed=1, num_inference_steps=9, width=SIZE * 2))
    result = server.generate(request)
    assert result.images.shape == (1, 3, SIZE, SIZE * 2)
    assert any("moved by noise level" in n for n in result.notes) and any("resolution" in n for n in result.notes)


def test_queue_wait_counts_against_the_budget(server):
    request = server.resolve(GenerateRequest(prompt="a", seed=1, latency_ms=1e6))
    result = server.generate(request, arrival_ms=monotonic_ms() - 400_000)  # arrived 400 s ago
    assert result.queue_ms >= 4e5
    no_cache_ms = server.default_bank.profile.latency_ms["no-cache"]
    # 1e6 ms minus the 4e5 already waited still fits every entry: best quality.
    assert result.schedule_id == "no-cache" and result.predicted_ms == pytest.approx(no_cache_ms)


def test_deadline_passed_while_queued_never_starts(server):
    request = server.resolve(GenerateRequest(prompt="a", seed=1))
    with pytest.raises(DeadlineExceeded, match="not started"):
        server.generate(request, deadline_ms=monotonic_ms() - 1000)


def test_deadline_stops_a_running_call_and_the_next_call_is_clean(server, tiny_setup):
    _, _, pipe = tiny_setup
    request = server.resolve(GenerateRequest(prompt="a", seed=5, latency_ms=1e6))
    clean = server.generate(request)
    calls = []

    def slow_step(module, args):
        calls.append(1)
        time.sleep(0.3)

    handle = pipe.transformer.register_forward_pre_hook(slow_step)
    try:
        with pytest.raises(DeadlineExceeded):
            server.generate(request, deadline_ms=monotonic_ms() + 1000)  # the run needs >= 6 x 0.3 s
    finally:
        handle.remove()
    assert 1 <= len(calls) < STEPS  # stopped between steps, not run to the end
    again = server.generate(request)
    assert again.schedule_id == clean.schedule_id and torch.equal(again.images, clean.images)


class StepLog(list):
    """(slot, time) of every transformer call (one denoising step) in any slot of ``server``, each
    made to take at least ``seconds``; ``with StepLog(server) as steps:`` removes the hooks after."""

    def __init__(self, server, seconds: float = 0.0) -> None:
        super().__init__()
        self._handles = [pipe.transformer.register_forward_pre_hook(self._hook(i, seconds))
                         for i, pipe in enumerate(server.queue.slots)]

    def _hook(self, slot: int, seconds: float):
        def hook(module, args):
            self.append((slot, time.monotonic()))
            time.sleep(seconds)
        return hook

    def __enter__(self) -> "StepLog":
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def slots(self) -> str:
        """The slot of each step in order, e.g. "0001111110000": who computed when."""
        return "".join(str(slot) for slot, _ in self)


def wait_until(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f} s: {what}"
        time.sleep(0.01)


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Run ``fn`` in a thread; the dict gets its "result" or "error"."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_bounded_queue_answers_overloaded(server):
    server.config.max_queue, saved = 0, server.config.max_queue
    try:
        with pytest.raises(Overloaded):
            server.generate(server.resolve(GenerateRequest(prompt="a")))
    finally:
        server.config.max_queue = saved


def test_oversized_request_is_refused_at_once_with_the_prediction_the_limit_and_how_to_split_it(server):
    request = server.resolve(GenerateRequest(prompt="a", num_images=8, num_inference_steps=100,
                                             width=SIZE * 4, height=SIZE * 4))
    fastest_one = min(e.predicted_ms for e in server.default_bank.predict(RequestShape(request.shape.setting, 1)))
    server.config.timeout_s, saved = 3.5 * fastest_one / 1000.0, server.config.timeout_s  # 3 images fit, not 4
    try:
        with StepLog(server) as steps, pytest.raises(RequestError) as info:
            server.generate(request)
    finally:
        server.config.timeout_s = saved
    assert steps == []  # refused before the pipeline ran a step
    assert re.search(r"predicted \d+ ms with the fastest schedule, over this server's \d+ s limit; split it into "
                     r"3 requests of at most 3 image\(s\)", str(info.value)), str(info.value)


def test_reject_policy_answers_infeasible_with_the_predicted_wait(server):
    request = server.resolve(GenerateRequest(prompt="a", latency_ms=0.001, on_infeasible="reject"))
    with pytest.raises(Infeasible, match="cannot be met") as info:
        server.generate(request)
    assert info.value.predicted_wait_ms >= 0
    served = server.generate(server.resolve(GenerateRequest(prompt="a", seed=1, latency_ms=0.001)))
    assert served.budget_met is False  # "fastest", the default, serves it flagged


def test_a_short_request_runs_between_two_steps_of_a_long_one_which_then_finishes_bit_exact(server, tiny_setup):
    """Step-level preemption: the long request pauses at its next step boundary in slot 0, the
    short one runs all its steps in slot 1, then the long one continues; its images are exactly
    those of an uninterrupted run (and of the library)."""
    _, _, pipe = tiny_setup
    long = server.resolve(GenerateRequest(prompt="long", seed=1, num_inference_steps=40, schedule_id="fora-2"))
    short = server.resolve(GenerateRequest(prompt="short", seed=2, latency_ms=1e6))
    with StepLog(server, seconds=0.05) as steps:
        runner, outcome = in_thread(server.generate, long)
        wait_until(lambda: len(steps) >= 3, "the long request runs")
        quick = server.generate(short)
        runner.join()
    slow = outcome["result"]
    at = steps.slots().index("1")
    # The short one started within one step of the long one and ran all its steps in the other slot.
    assert steps.slots() == "0" * at + "1" * STEPS + "0" * (40 - at), steps.slots()
    assert quick.queue_ms < slow.paused_ms and slow.paused_ms > 0 and any("paused 1 time" in n for n in slow.notes)
    assert slow.queue_ms >= slow.paused_ms
    alone = server.generate(long)
    assert alone.paused_ms == 0 and torch.equal(alone.images, slow.images)
    assert slow.encoded() == alone.encoded()
    setting = SETTING.with_changes(num_inference_steps=40)
    bank = server.default_bank
    assert torch.equal(slow.images, generate(pipe, ["long"], [1], setting, bank.schedule_for("fora-2", setting)))
    assert torch.equal(quick.images, generate(pipe, ["short"], [2], SETTING, bank.schedules[quick.schedule_id]))


def test_slot_views_share_every_weight_and_keep_their_own_hooks_and_scheduler(server):
    first, second = server.queue.slots
    tensors = lambda m: [t.data_ptr() for t in [*m.parameters(), *m.buffers()]]  # noqa: E731
    assert tensors(first.transformer) == tensors(second.transformer)
    assert second.transformer is not first.transformer and second.scheduler is not first.scheduler
    assert second.vae is first.vae and second.text_encoder is first.text_encoder
    assert not hasattr(second.transformer, "_diffusers_hook") or not second.transformer._diffusers_hook.hooks


def test_cancelled_running_request_stops_within_a_step_and_frees_the_pipeline(server):
    first = server.resolve(GenerateRequest(prompt="a", seed=1, num_inference_steps=40, schedule_id="no-cache"))
    gone = threading.Event()
    with StepLog(server, seconds=0.1) as steps:
        runner, outcome = in_thread(server.generate, first, cancelled=gone)
        wait_until(lambda: len(steps) >= 2, "the first request runs")
        gone.set()
        cancelled_at = time.monotonic()
        runner.join()
        next_one = server.generate(server.resolve(GenerateRequest(prompt="b", seed=2, schedule_id="no-cache")))
    assert isinstance(outcome["error"], RequestCancelled)
    first_steps = [t for _, t in steps[:-STEPS]]
    assert len(first_steps) < 40 and sum(t > cancelled_at for t in first_steps) <= 1  # the step under way at most
    assert next_one.images.shape[0] == 1 and min(t for _, t in steps[-STEPS:]) > max(first_steps)


def test_cancelled_while_queued_leaves_the_queue(server):
    long = server.resolve(GenerateRequest(prompt="a", seed=1, num_inference_steps=40, schedule_id="no-cache"))
    longer = server.resolve(GenerateRequest(prompt="b", seed=2, num_inference_steps=60, schedule_id="no-cache"))
    gone = threading.Event()
    with StepLog(server, seconds=0.05) as steps:
        runner, _ = in_thread(server.generate, long)
        wait_until(lambda: len(steps) >= 2, "the first request runs")
        waiter, outcome = in_thread(server.generate, longer, cancelled=gone)  # shortest first: it waits
        wait_until(lambda: server.queue.queue_length() == 1, "the second request queues")
        gone.set()
        waiter.join()
        assert server.queue.queue_length() == 0
        runner.join()
    assert isinstance(outcome["error"], RequestCancelled) and "queued" in str(outcome["error"])
    assert steps.slots() == "0" * 40  # the longer one never ran, the first was not paused for it
    server.generate(server.resolve(GenerateRequest(prompt="a", seed=1)))  # the queue is usable


def test_concurrent_requests_equal_sequential_ones(server):
    """Requests arriving together are planned, some paused for others between steps: each gets
    exactly what the same schedule gives alone, outside the server (no shared state)."""
    budgets = [None, 1e6, 0.001, None, 0.001, 1e6]
    requests = [server.resolve(GenerateRequest(prompt=f"p{i}", seed=i, latency_ms=b, num_inference_steps=6 + 2 * i))
                for i, b in enumerate(budgets)]
    with StepLog(server, seconds=0.01):
        started = [in_thread(server.generate, r) for r in requests]
        for thread, _ in started:
            thread.join()
    results = [outcome["result"] for _, outcome in started]
    assert len({r.schedule_id for r in results}) >= 2  # different budgets, different schedules
    for request, result in zip(requests, results):
        setting = request.shape.setting
        alone = generate(server.pipe, [request.prompt], [request.seed], setting,
                         schedule=server.default_bank.schedule_for(result.schedule_id, setting))
        assert torch.equal(alone, result.images)


@pytest.mark.parametrize("batching", ["auto", "off"])
def test_requests_of_one_schedule_and_setting_share_a_call_where_it_pays(tiny_setup, server, batching):
    """Three requests queued behind another, pinned to one entry at one setting: with a latency model
    whose fixed part per call dominates (as on this CPU at the bank's size) they run as one call of
    three images, each image exactly its share of that batched call; with batching off, one by one,
    each exactly its solo run."""
    from ecad.serving.latency import LatencyModel, RequestCost

    model, _, pipe = tiny_setup
    config = ServingConfig(model=str(model), bank=str(server.default_bank.path), latency_window=0,
                           latency_margin=1.0, latency_fit_s=0, batching=batching)
    batcher = ScheduleServer(config, pipe=pipe)
    served = batcher.default_bank
    served.cost = RequestCost(pipe, LatencyModel({"calls": 1.0, "macs": 1e-9}, unit="test"))
    served._costs.cache_clear()  # the costs counted with the MACs-only model
    ahead = batcher.resolve(GenerateRequest(prompt="ahead", seed=9, num_inference_steps=40, schedule_id="no-cache",
                                            latency_ms=1e6))  # a budget: planned before requests without one
    batch = [batcher.resolve(GenerateRequest(prompt=f"p{i}", seed=i, schedule_id="fora-3")) for i in range(3)]
    with StepLog(batcher, seconds=0.02):
        first, _ = in_thread(batcher.generate, ahead)
        wait_until(lambda: batcher.queue._running is not None, "the first request runs")
        started = [in_thread(batcher.generate, r) for r in batch]
        wait_until(lambda: batcher.queue.queue_length() == 3, "the three queue")
        for thread, _ in [(first, None), *started]:
            thread.join()
    results = [outcome["result"] for _, outcome in started]
    schedule = served.schedules["fora-3"]
    if batching == "auto":
        assert [r.batch_images for r in results] == [3, 3, 3]
        together = generate(pipe, ["p0", "p1", "p2"], [0, 1, 2], SETTING, schedule)
        assert all(torch.equal(r.images, together[i:i + 1]) for i, r in enumerate(results))
        assert all(any("batched with 2 other" in n for n in r.notes) for r in results)
    else:
        assert [r.batch_images for r in results] == [1, 1, 1]
        assert all(torch.equal(r.images, generate(pipe, [f"p{i}"], [i], SETTING, schedule))
                   for i, r in enumerate(results))
    batcher.close()


def test_views(server):
    view = server.bank_view()
    assert [e["id"] for e in view["entries"]] == ["no-cache", "fora-2", "fora-3", "fora-4"]
    assert view["limits"] == server.limits.view()
    chosen = server.select_view(None)
    assert chosen["schedule_id"] == "no-cache"
    with pytest.raises(RequestError) as info:
        server.select_view(100.0, width=SIZE + 1)
    assert info.value.field == "width"


def test_a_pinned_schedule_is_served_and_unknown_ids_are_refused(server, tiny_setup):
    _, _, pipe = tiny_setup
    result = server.generate(server.resolve(GenerateRequest(prompt="a", seed=2, schedule_id="fora-3", latency_ms=1e6)))
    assert result.schedule_id == "fora-3" and result.budget_met
    expected = generate(pipe, ["a"], [2], SETTING, schedule=server.default_bank.schedules["fora-3"])
    assert torch.equal(result.images, expected)
    with pytest.raises(RequestError) as info:
        server.resolve(GenerateRequest(prompt="a", schedule_id="nope"))
    assert info.value.field == "schedule_id"


def test_banks_store_a_model_folder_relative_to_themselves_and_keep_the_umask_mode(tiny_setup, tmp_path):
    import json
    import os
    import shutil
    import stat

    model, bank_path, _ = tiny_setup
    bank = ScheduleBank.load(bank_path)
    checkout = tmp_path / "checkout"
    (checkout / "models").mkdir(parents=True)
    os.symlink(model, checkout / "models" / "m")
    bank = bank.model_copy(update={"model": str(checkout / "models" / "m")})
    out = bank.save(checkout / "schedules" / "m" / "bank.json")
    assert json.loads(out.read_text())["model"] == "../../models/m"
    # Another checkout with its own model: its bank loads its model, whatever the cwd.
    other = tmp_path / "other"
    shutil.copytree(checkout, other, symlinks=True)
    assert ScheduleBank.load(other / "schedules" / "m" / "bank.json").model == str(other / "models" / "m")
    hub = bank.model_copy(update={"model": "org/some-model"}).save(tmp_path / "hub.json")
    assert json.loads(hub.read_text())["model"] == "org/some-model"
    old = os.umask(0o022)
    try:
        fresh = bank.save(tmp_path / "fresh.json")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        os.chmod(fresh, 0o640)
        bank.save(fresh)  # rewriting (ecad-profile) keeps the file's mode
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_the_committed_bank_finds_its_model_from_any_directory(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    bank = ScheduleBank.load(REPO_ROOT / "schedules" / "ecad-scenes" / "32x32-20steps.json")
    assert bank.model == str(REPO_ROOT / "models" / "ecad-scenes")
    assert bank.calibration["scorer_kwargs"]["component_kwargs"]["scenes-reward"]["model_dir"] == bank.model
    # Saved in another folder, the model and the metadata's copy of its path both follow the file.
    moved = bank.save(tmp_path / "a" / "b" / "moved.json")
    stored = json.loads(moved.read_text())
    assert stored["calibration"]["scorer_kwargs"]["component_kwargs"]["scenes-reward"]["model_dir"] == stored["model"]
    assert ScheduleBank.load(moved).model == bank.model


def test_profile_cli_stores_a_profile_and_refuses_bad_options(tiny_setup, tmp_path, capsys):
    from ecad.cli.profile import main as profile_main

    model, shared_bank_path, _ = tiny_setup
    bank_path = ScheduleBank.load(shared_bank_path).model_copy(update={"profiles": []}).save(tmp_path / "bank.json")
    out = tmp_path / "profiled.json"
    assert profile_main([str(bank_path), "--model", str(model), "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert profile_main([str(bank_path), "--model", str(model), "--repeats", "1", "--warmup", "0",
                         "--output", str(out)]) == 0
    profiled = ScheduleBank.load(out)
    (profile,) = profiled.profiles
    assert set(profile.latency_ms) == {e.id for e in profiled.entries} and profile.repeats == 1
    assert ScheduleBank.load(bank_path).profiles == []  # --output leaves the original alone


def test_a_guidance_reuse_entry_is_served_and_runs_without_it_at_guidance_1(tiny_setup, tmp_path):
    from ecad.bank import BankEntry
    from ecad.cost import image_macs
    from ecad.schedule import CacheSchedule
    from serving_helpers import synthetic_profile

    model, bank_path, pipe = tiny_setup
    bank = ScheduleBank.load(bank_path)
    fora3 = bank.entry("fora-3").cache_schedule()
    guided = CacheSchedule.from_actions(fora3.actions, fora3.layout, fora3.skip, np.arange(STEPS) % 2 == 1)
    entry = BankEntry(id="fora-3-guided", schedule=guided.to_dict(), macs=image_macs(pipe, SETTING, guided),
                      quality={"recompute_fraction": guided.recompute_fraction}, source="heuristic")
    bank = bank.model_copy(update={"entries": [*bank.entries, entry]})
    path = bank.with_profile(synthetic_profile(bank)).save(tmp_path / "bank.json")
    server = ScheduleServer(ServingConfig(model=str(model), bank=str(path), latency_window=0, latency_margin=1.0),
                            pipe=pipe)
    result = server.generate(server.resolve(GenerateRequest(prompt="a", seed=3, schedule_id="fora-3-guided")))
    assert torch.equal(result.images, generate(pipe, ["a"], [3], SETTING, schedule=guided))
    # without classifier-free guidance there is no unconditional half: the same entry runs both "halves"
    no_cfg = Setting(SIZE, SIZE, STEPS, 1.0)
    result = server.generate(server.resolve(GenerateRequest(prompt="a", seed=3, schedule_id="fora-3-guided",
                                                            guidance_scale=1.0)))
    assert result.schedule_id == "fora-3-guided"
    assert torch.equal(result.images, generate(pipe, ["a"], [3], no_cfg, schedule=fora3))


def test_every_ecad_variable_is_read_by_serving_config_and_documented_in_the_readme():
    import re

    from ecad.serving.config import ENV_VARS

    code = "".join(path.read_text() for folder in ("ecad", "server") for path in (REPO_ROOT / folder).rglob("*.py"))
    named_in_code = set(re.findall(r"\bECAD_[A-Z0-9_]+", code))
    readme = (REPO_ROOT / "README.md").read_text()
    documented = re.findall(r"^\| `(ECAD_[A-Z0-9_]+)` \| [^|]+ \| [^|]+ \|$", readme, re.M)
    assert len(documented) == len(set(documented))
    assert named_in_code == set(ENV_VARS) == set(documented)
    fields = ServingConfig.__dataclass_fields__
    assert all(name in fields for name, _ in ENV_VARS.values())


def test_serving_config_from_env_parses_each_variable_and_names_a_bad_one():
    import os

    env = {"ECAD_MAX_QUEUE": "3", "ECAD_BANK": "", "ECAD_BANK_DIRS": f"a{os.pathsep}b", "ECAD_PERSIST_PROFILE": "1",
           "ECAD_NUM_THREADS": "2", "ECAD_TIMEOUT_S": "2.5", "UNRELATED": "x"}
    config = ServingConfig.from_env(env)
    assert (config.max_queue, config.bank, config.bank_dirs, config.persist_profile, config.num_threads,
            config.timeout_s) == (3, None, ("a", "b"), True, 2, 2.5)
    assert ServingConfig.from_env({}) == ServingConfig()
    with pytest.raises(ValueError, match="ECAD_TIMEOUT_S='soon'"):
        ServingConfig.from_env({"ECAD_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match="ECAD_PERSIST_PROFILE='maybe': expected 1 or 0"):
        ServingConfig.from_env({"ECAD_PERSIST_PROFILE": "maybe"})
