"""The real `bentoml serve` on 127.0.0.1, driven over HTTP; stopped by its pid."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from ecad.generate import load_pipeline
from ecad.setting import Setting
from serving_helpers import heuristic_bank, running_server, synthetic_profile
from ecad.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline

SIZE = TINY_IMAGE_SIZE
STEPS = 6
SERVED_ENV: dict[str, str] = {}  # the module server's environment


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    model = build_tiny_pipeline("pixart-alpha", root / "tiny-pixart")
    pipe = load_pipeline(model)
    bank = heuristic_bank(pipe, str(model), Setting(SIZE, SIZE, STEPS, 4.5))
    # The server runs with one torch thread; its profile key says so.
    bank_path = bank.with_profile(synthetic_profile(bank, ms_per_gmac=10_000, num_threads=1)).save(root / "bank.json")
    # A short queue, so that the load test below can see the overload answer.
    # The latency model is the MACs alone (no start-up fit): predictions are deterministic here.
    env = {"ECAD_MODEL": str(model), "ECAD_BANK": str(bank_path), "ECAD_NUM_THREADS": "1",
           "ECAD_LATENCY_WINDOW": "0", "ECAD_LATENCY_MARGIN": "1", "ECAD_TIMEOUT_S": "300", "ECAD_MAX_QUEUE": "2",
           "ECAD_LATENCY_FIT_S": "0"}
    env["BENTOML_HOME"] = str(root / "bentoml-home")  # shared on purpose by the metrics test
    SERVED_ENV.update(env)
    with running_server(env, home=root / "server") as url:
        yield url


def post(url, body, path="/generate", timeout=60):
    return requests.post(url + path, data=json.dumps(body), headers={"content-type": "application/json"},
                         timeout=timeout)


def test_generate_json_envelope_and_headers(served):
    r = post(served, {"prompt": "a red cat", "seed": 3, "num_images": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["schedule_id"] == "no-cache" and body["budget_met"] is None and body["seed"] == 3
    assert body["media_type"] == "image/png" and body["num_frames"] is None and "X-ECAD-Num-Frames" not in r.headers
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in body["images"]]
    assert [im.size for im in images] == [(SIZE, SIZE)] * 2
    assert r.headers["X-ECAD-Schedule-Id"] == "no-cache"
    assert body["bank"] == r.headers["X-ECAD-Bank"] == "bank.json"  # ECAD_BANK: that one bank
    assert float(r.headers["X-ECAD-Actual-Ms"]) > 0
    quality = body["quality"]  # at the bank's own setting: the bank's figure, not an estimate
    assert quality["estimated"] is False and quality["metric"] in r.headers["X-ECAD-Quality"]
    assert "measured" in r.headers["X-ECAD-Quality"]


def test_budget_is_respected_and_reported(served):
    schedules = requests.get(served + "/schedules", timeout=10).json()
    by_ms = sorted(schedules["entries"], key=lambda e: e["predicted_ms"])
    budget = by_ms[1]["predicted_ms"] * 1.001  # fits the second-fastest entry and the fastest
    expected = requests.get(served + "/select", params={"latency_ms": budget}, timeout=10).json()
    r = post(served, {"prompt": "a red cat", "seed": 1, "latency_ms": budget})
    assert r.status_code == 200, r.text
    assert r.json()["schedule_id"] == expected["schedule_id"] != "no-cache"
    assert r.json()["predicted_ms"] <= budget
    impossible = post(served, {"prompt": "a", "seed": 1, "latency_ms": 0.001})
    assert impossible.json()["schedule_id"] == by_ms[0]["id"]
    assert impossible.headers["X-ECAD-Budget-Met"] == "false" and impossible.json()["budget_met"] is False
    assert any("cannot be met" in n for n in impossible.json()["notes"])


def test_png_route(served):
    # 100 s is far beyond what any entry needs here (predicted ~1 s at most): planned on time with
    # the best entry, and met.
    r = post(served, {"prompt": "a", "seed": 2, "latency_ms": 1e5}, path="/generate/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (SIZE, SIZE)
    assert r.headers["X-ECAD-Schedule-Id"] == "no-cache" and r.headers["X-ECAD-Seed"] == "2"
    assert r.headers["X-ECAD-Budget-Met"] == "true"
    assert float(r.headers["X-ECAD-Queue-Ms"]) + float(r.headers["X-ECAD-Actual-Ms"]) <= 1e5
    video = post(served, {"prompt": "a"}, path="/generate/video")  # an image model: the route to use instead
    assert video.status_code == 400 and "POST /generate/png" in video.json()["error"]
    frames = post(served, {"prompt": "a", "num_frames": 5})
    assert frames.status_code == 400 and frames.json()["field"] == "num_frames"
    several = post(served, {"prompt": "a", "num_images": 2}, path="/generate/png")
    assert several.status_code == 400 and several.json()["field"] == "num_images"
    assert "less than or equal to 1" in several.json()["error"]


def test_bentoml_client_with_keyword_arguments_on_both_routes(served):
    import bentoml

    pinned = dict(prompt="a blue dog", seed=5, latency_ms=1e5, schedule_id="fora-2")
    with bentoml.SyncHTTPClient(served) as client:
        body = client.generate(**pinned)
        image = client.generate_png(**pinned)
        refused = None
        try:
            client.generate(prompt="a", width=SIZE + 1)
        except bentoml.exceptions.BentoMLException as err:
            refused = err
    assert body["schedule_id"] == "fora-2" and body["bank"] == "bank.json" and body["seed"] == 5
    assert body["latency_ms"] == 1e5 and body["budget_met"] is True and body["num_images"] == 1
    assert (body["width"], body["height"], body["num_inference_steps"]) == (SIZE, SIZE, STEPS)
    (png,) = [base64.b64decode(b) for b in body["images"]]
    assert isinstance(image, Image.Image) and image.format == "PNG" and image.size == (SIZE, SIZE)
    # The same prompt, seed and schedule: the same pixels on both routes, and the same PNG bytes.
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(png))))
    assert post(served, pinned, path="/generate/png").content == png
    assert refused is not None and refused.error_code == 400 and "width: must be a multiple of 8" in str(refused)


def test_docs_show_the_request_and_response_schemas(served):
    spec = requests.get(served + "/docs.json", timeout=10).json()
    generate = spec["paths"]["/generate"]["post"]
    request_schema = generate["requestBody"]["content"]["application/json"]["schema"]
    fields = {"prompt", "latency_ms", "seed", "num_images", "width", "height", "schedule_id", "on_infeasible"}
    assert fields <= set(request_schema["properties"]) and request_schema["required"] == ["prompt"]
    response_schema = generate["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"schedule_id", "bank", "predicted_ms", "budget_met", "images"} <= set(response_schema["properties"])
    png = spec["paths"]["/generate/png"]["post"]
    assert list(png["responses"]["200"]["content"]) == ["image/*"]
    assert png["requestBody"]["content"]["application/json"]["schema"]["properties"]["num_images"]["maximum"] == 1


JSON = "application/json"


@pytest.mark.parametrize(
    "raw, content_type, problem",
    [
        ('{"prompt": "a", "latency', JSON, "not valid JSON"),  # truncated
        ("prompt=a", JSON, "not valid JSON"),
        (b'{"prompt": "\xff\xfe"}', JSON, "not valid UTF-8"),
        ('{"prompt": "a", "x": ' + "[" * 5000 + "]" * 5000 + "}", JSON, "nests deeper"),
        ('{"prompt": "a", "x": ' + "[" * 10 + "]" * 10 + "}", JSON, "nests deeper"),
        ('{"prompt": "a"}', "image/png", "content-type must be application/json"),
        ('{"prompt": "a"}', "", "content-type must be application/json"),
        ("null", JSON, "JSON object"),
        ('"a cat"', JSON, "JSON object"),
        ("5", JSON, "JSON object"),
        ("[]", JSON, "JSON object"),
        ('{"prompt": "a", "latency_ms": true}', JSON, "latency_ms"),
        ('{"prompt": "\\u0000\\u0000"}', JSON, "prompt"),
        ('{"prompt": "a", "width": 12}', JSON, "width: must be a multiple of 8"),  # a multiple of 4: was a 500
        ('{"prompt": "a", "height": 36}', JSON, "height: must be a multiple of 8"),
        ('{"prompt": "a", "num_inference_steps": 1}', JSON, "num_inference_steps: must be between 2"),  # was a 500
        ('{"prompt": "a", "num_images": "1"}', JSON, "num_images"),
        ('{"prompt": "a", "on_infeasible": "wait"}', JSON, "on_infeasible"),
    ],
)
@pytest.mark.parametrize("path", ["/generate", "/generate/png"])
def test_malformed_bodies_get_400s_naming_the_problem(served, raw, content_type, problem, path):
    r = requests.post(served + path, data=raw.encode() if isinstance(raw, str) else raw,
                      headers={"content-type": content_type}, timeout=30)
    assert r.status_code == 400, r.text
    assert problem in r.json()["error"]


@pytest.mark.parametrize(
    "raw, field",
    [
        ('{"prompt": "a", "latency_ms": -5}', "latency_ms"),
        ('{"prompt": "a", "latency_ms": NaN}', "latency_ms"),
        ('{"prompt": "a", "latency_ms": 1e300}', "latency_ms"),
        ('{"prompt": ""}', "prompt"),
        ('{"prompt": "   "}', "prompt"),
        (json.dumps({"prompt": "x" * 5000}), "prompt"),
        ('{"prompt": "a", "width": 33}', "width"),
        ('{"prompt": "a", "height": 100000}', "height"),
        ('{"prompt": "a", "num_images": 50}', "num_images"),
        ('{"prompt": "a", "colour": "red"}', "colour"),
        ('{"prompt": "a", "seed": "abc"}', "seed"),
        ('{"latency_ms": 5}', "prompt"),
    ],
)
def test_bad_inputs_get_clear_400s(served, raw, field):
    r = requests.post(served + "/generate", data=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_schedules_select_and_metrics(served):
    schedules = requests.get(served + "/schedules", timeout=10).json()
    assert {e["id"] for e in schedules["entries"]} == {"no-cache", "fora-2", "fora-3", "fora-4"}
    assert all(e["profiled_ms"] > 0 for e in schedules["entries"])
    assert schedules["limits"]["width"][2] == 8 and schedules["limits"]["num_inference_steps"][0] == 2
    assert [b["bank"] for b in schedules["banks"]] == [schedules["bank"]] == ["bank.json"]
    assert schedules["banks"][0]["entries"] == schedules["entries"]
    chosen = requests.get(served + "/select", params={"latency_ms": "100"}, timeout=10).json()
    assert chosen["bank"] == "bank.json" and chosen["schedule_id"] in {e["id"] for e in schedules["entries"]}
    bad = requests.get(served + "/select", params={"latency_ms": "-1"}, timeout=10)
    assert bad.status_code == 400 and "latency_ms" in bad.json()["error"]
    unknown = requests.get(served + "/select", params={"latency_ms": "100", "prompt": "a"}, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["field"] == "prompt"
    assert "unknown query parameter" in unknown.json()["error"]
    shaped = requests.get(served + "/select", params={"width": "12"}, timeout=10)
    assert shaped.status_code == 400 and shaped.json()["field"] == "width"
    post(served, {"prompt": "a", "seed": 9, "latency_ms": 1e5})
    metrics = requests.get(served + "/metrics", timeout=10).text
    assert "ecad_requests" in metrics and "ecad_generation_seconds" in metrics and "ecad_budget_requests" in metrics
    assert requests.get(served + "/livez", timeout=10).status_code == 200


def test_overload_is_answered_503_with_retry_after(served):
    """20 requests from 8 clients against a queue of 2: some must be turned away, none lost."""

    def one(i):
        r = post(served, {"prompt": f"load {i}", "seed": i, "num_inference_steps": 30, "latency_ms": 1e5})
        return r.status_code, r.headers.get("Retry-After"), (r.json() if r.status_code != 200 else {})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(20)))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    busy = [(retry, body) for s, retry, body in results if s == 503]
    assert busy and statuses.count(200) >= 3, statuses
    assert all(retry == "1" and "server busy" in body["error"] for retry, body in busy)


def test_oversized_request_is_refused_at_once(served):
    # 8 images x 100 steps at 4 times the side, pinned to no-cache: predicted far over the 300 s timeout
    # (attention grows with the square of the tokens), at once.
    body = {"prompt": "a", "num_images": 8, "num_inference_steps": 100, "width": SIZE * 4, "height": SIZE * 4,
            "schedule_id": "no-cache"}
    started = time.monotonic()
    r = post(served, body)
    assert time.monotonic() - started < 10  # at once: the run itself would take minutes
    assert r.status_code == 400
    refusal = r"predicted \d{6,} ms with the fastest schedule, over this server's 300 s limit; (split it|even one)"
    assert re.search(refusal, r.json()["error"]), r.json()["error"]


def test_reject_policy_answers_429_with_retry_after(served):
    r = post(served, {"prompt": "a", "latency_ms": 0.01, "on_infeasible": "reject"})
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1 and r.json()["predicted_wait_ms"] >= 0
    assert "cannot be met" in r.json()["error"]


def cancelled_count(url) -> float:
    metrics = requests.get(url + "/metrics", timeout=10).text
    found = re.search(r'^ecad_requests_total\{outcome="cancelled",schedule="none"\} ([0-9.]+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_request_behind_a_disconnected_client_starts_within_a_step(served):
    # 100 steps of 3 images at 96x96: several seconds here; the client leaves after 1.5 s. It has a
    # (generous) budget, so the planner keeps it ahead of the next request, which has none.
    slow = {"prompt": "slow", "seed": 1, "num_images": 3, "num_inference_steps": 100, "width": SIZE * 3,
            "height": SIZE * 3, "schedule_id": "no-cache", "latency_ms": 1e6}
    cancelled_before = cancelled_count(served)
    left_at = {}

    def leave_early():
        try:
            left_at["answer"] = post(served, slow, timeout=1.5).text
        except requests.exceptions.ReadTimeout:
            left_at["t"] = time.monotonic()

    leaver = threading.Thread(target=leave_early)
    leaver.start()
    time.sleep(0.5)
    sent = time.monotonic()
    r = post(served, {"prompt": "next", "seed": 2, "num_inference_steps": 2, "schedule_id": "no-cache"})
    leaver.join()
    assert r.status_code == 200 and "t" in left_at, left_at
    assert cancelled_count(served) == cancelled_before + 1  # stopped, not run to its end
    started = sent + r.json()["queue_ms"] / 1000.0
    # The next one starts once the slow one stops between steps: after the client left, and long
    # before the seconds the slow one still needed (generous for a loaded box).
    assert left_at["t"] < started < left_at["t"] + 3.0, (started - left_at["t"])


def test_a_short_request_is_not_held_behind_a_long_one_and_the_long_one_keeps_its_bytes(served):
    """The long/short probe in small: a long request without a budget pauses between two of its
    steps while a short one with a budget runs, then finishes with the bytes of an undisturbed run."""
    long = {"prompt": "long", "seed": 4, "num_images": 8, "num_inference_steps": 100, "width": SIZE * 2,
            "height": SIZE * 2, "schedule_id": "no-cache"}  # seconds here: ten times the sleep below
    alone = post(served, long, timeout=300)
    assert alone.status_code == 200 and alone.json()["paused_ms"] == 0
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, served, long, timeout=300)
        time.sleep(0.5)
        short = post(served, {"prompt": "short", "seed": 5, "latency_ms": 1e5, "num_inference_steps": 2})
        paused = running.result()
    assert short.status_code == 200 and paused.status_code == 200
    step_ms = alone.json()["actual_ms"] / 100
    # Waited for the step under way at most (generous: 3 steps and 1 s for a loaded box).
    assert short.json()["queue_ms"] < 3 * step_ms + 1000, (short.json()["queue_ms"], step_ms)
    assert paused.json()["paused_ms"] > 0 and paused.headers["X-ECAD-Paused-Ms"] != "0.0"
    assert any("paused 1 time" in n for n in paused.json()["notes"])
    assert paused.json()["images"] == alone.json()["images"]  # the same PNG bytes


def test_same_prompt_seed_schedule_gives_identical_bytes_alone_and_under_load(served):
    pinned = {"prompt": "a red cat", "seed": 11, "schedule_id": "fora-2", "latency_ms": 1e5}
    alone = post(served, pinned).json()["images"]

    def one(i):
        body = pinned if i % 3 == 0 else {"prompt": f"other {i}", "seed": i, "latency_ms": [50, 200, 1e5][i % 3]}
        return i, post(served, body)

    with ThreadPoolExecutor(2) as pool:  # 2 clients: within the queue of 2
        results = list(pool.map(one, range(9)))
    pinned_results = [r for i, r in results if i % 3 == 0]
    assert all(r.status_code == 200 for r in pinned_results)
    assert all(r.json()["images"] == alone for r in pinned_results)


def string_fields(model) -> list[str]:
    """The fields of a request model whose JSON schema admits a string."""
    def admits_string(schema: dict) -> bool:
        return schema.get("type") == "string" or any(admits_string(s) for s in schema.get("anyOf", []))

    return [name for name, schema in model.model_json_schema()["properties"].items() if admits_string(schema)]


def test_the_string_fields_are_the_ones_the_unicode_test_covers():
    from ecad.serving import GeneratePngRequest, GenerateRequest

    expected = ["prompt", "negative_prompt", "schedule_id", "on_infeasible"]
    assert string_fields(GenerateRequest) == string_fields(GeneratePngRequest) == expected


@pytest.mark.parametrize("text", ["a \ud800 b", "\udc00", "ends high \ud83d"], ids=["lone-high", "lone-low", "at-end"])
@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "schedule_id", "on_infeasible"])
@pytest.mark.parametrize("path", ["/generate", "/generate/png"])
def test_invalid_unicode_in_any_string_field_is_a_400_naming_the_field(served, path, field, text):
    """JSON can spell lone UTF-16 surrogates (``"\\ud800"``); the parser accepts them, nothing
    downstream can encode them: a 400 naming the field, never a 500."""
    body = {"prompt": "a", "seed": 1, field: text}
    raw = json.dumps(body)  # ensure_ascii: the surrogate travels as the \\ud800 escape
    assert "\\u" in raw
    r = requests.post(served + path, data=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and "lone UTF-16 surrogate" in r.json()["error"]


def test_a_key_with_invalid_unicode_is_a_400_too(served):
    r = requests.post(served + "/generate", data='{"prompt": "a", "x\\udc00": 1}',
                      headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["field"] == "x\\udc00"
    valid = post(served, {"prompt": "emoji \U0001F600 are fine", "seed": 1, "num_inference_steps": 2})
    assert valid.status_code == 200, valid.text


def test_bad_bank_exits_non_zero_with_the_cause(tmp_path):
    bank = tmp_path / "bank.json"
    bank.write_text('{"format_version": 1, "model": "x", "entries": []')
    started = time.monotonic()
    cause = r"(?s)server exited with [1-9].*cannot serve: .*bank.json: not valid JSON"
    with pytest.raises(RuntimeError, match=cause) as info:
        with running_server({"ECAD_BANK": str(bank)}, home=tmp_path / "server", ready_timeout_s=30):
            pass
    assert time.monotonic() - started < 30, info.value


def test_every_bank_of_the_model_is_served_by_setting_and_named_in_the_answer(tmp_path):
    model = build_tiny_pipeline("pixart-alpha", tmp_path / "tiny-pixart")
    pipe = load_pipeline(model)
    settings = [Setting(SIZE, SIZE, STEPS, 4.5), Setting(24, 24, 5, 4.5)]
    for setting in settings:
        bank = heuristic_bank(pipe, str(model), setting)
        bank.with_profile(synthetic_profile(bank, num_threads=1)).save(
            tmp_path / "banks" / "tiny-pixart" / f"{setting.name}.json")
    env = {"ECAD_MODEL": str(model), "ECAD_BANK_DIRS": str(tmp_path / "banks"), "ECAD_NUM_THREADS": "1"}
    with running_server(env, home=tmp_path / "server") as url:
        view = requests.get(url + "/schedules", timeout=10).json()
        assert [b["bank"] for b in view["banks"]] == [f"{s.name}.json" for s in settings]
        small = post(url, {"prompt": "a", "seed": 1, "width": 24, "height": 24, "num_inference_steps": 5},
                     path="/generate/png")
        assert small.status_code == 200 and small.headers["X-ECAD-Bank"] == "24x24-5steps.json"
        assert "X-ECAD-Notes" not in small.headers
        nearest = post(url, {"prompt": "a", "seed": 1, "width": 24, "height": 24, "num_inference_steps": 6}).json()
        assert nearest["bank"] == "24x24-5steps.json" and "no bank for 24x24-6steps" in nearest["notes"][0]
        assert post(url, {"prompt": "a", "seed": 1}).json()["bank"] == f"{settings[0].name}.json"


@pytest.mark.parametrize("case", ["named bank", "catalogue", "broken model"])
def test_bank_for_another_model_or_unreadable_model_exits_non_zero_with_the_cause(tmp_path, case):
    """Checked in the serve process before any worker starts (config files only, no weights)."""
    import shutil

    from ecad.paths import REPO_ROOT

    other_models_bank = REPO_ROOT / "schedules" / "ecad-scenes" / "32x32-20steps.json"
    model = build_tiny_pipeline("pixart-alpha", tmp_path / "tiny-pixart")
    env = {"ECAD_MODEL": str(model), "ECAD_BANK": str(other_models_bank)}
    cause = r"calibrated for a transformer with fingerprint .* but the loaded transformer has"
    if case == "catalogue":  # the other model's bank filed under this model's name
        (tmp_path / "banks" / "tiny-pixart").mkdir(parents=True)
        shutil.copy(other_models_bank, tmp_path / "banks" / "tiny-pixart" / "32x32-20steps.json")
        env = {"ECAD_MODEL": str(model), "ECAD_BANK_DIRS": str(tmp_path / "banks")}
        cause = r"no schedule bank for model .*tiny-pixart' for its transformer config"
    elif case == "broken model":
        (model / "transformer" / "config.json").write_text("{not json")
        cause = r"cannot read the transformer config of .*tiny-pixart"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"(?s)server exited with [1-9].*cannot serve: .*{cause}") as info:
        with running_server(env, home=tmp_path / "server", ready_timeout_s=30):
            pass
    assert time.monotonic() - started < 30, info.value


def test_two_servers_with_one_home_keep_separate_metrics_with_bounded_labels(served, tmp_path):
    """`served` runs with its own BENTOML_HOME; a second server sharing it must not wipe its
    metrics, and random paths must not become label values."""
    import uuid

    post(served, {"prompt": "counted", "seed": 1, "latency_ms": 1e5})
    junk = [f"/no-such-{uuid.uuid4().hex}" for _ in range(5)]
    for path in junk:
        assert requests.get(served + path, timeout=10).status_code == 404
    before = requests.get(served + "/metrics", timeout=10).text
    assert not any(p in before for p in junk) and 'route="other",status="404"' in before
    assert re.search(r'ecad_http_requests_total\{route="/generate",status="200"\} [1-9]', before)
    ok = re.compile(r'^ecad_requests_total\{outcome="ok",schedule="[^"]+"\} ([0-9.]+)$', re.M)
    assert sum(float(n) for n in ok.findall(before)) >= 1, before
    with running_server(SERVED_ENV, home=tmp_path / "second") as second:
        assert sum(float(n) for n in ok.findall(requests.get(second + "/metrics", timeout=10).text)) == 0
        after = requests.get(served + "/metrics", timeout=10).text
    assert sum(float(n) for n in ok.findall(after)) >= sum(float(n) for n in ok.findall(before)), after
