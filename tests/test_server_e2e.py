"""The real `bentoml serve` on 127.0.0.1, driven over HTTP; stopped by its pid."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from ecad.generate import load_pipeline
from ecad.setting import Setting
from ecad.testing import heuristic_bank, running_server, synthetic_profile
from ecad.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline

SIZE = TINY_IMAGE_SIZE
STEPS = 6


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    model = build_tiny_pipeline("pixart-alpha", root / "tiny-pixart")
    pipe = load_pipeline(model)
    bank = heuristic_bank(pipe, str(model), Setting(SIZE, SIZE, STEPS, 4.5))
    # The server runs with one torch thread; its profile key says so.
    bank_path = bank.with_profile(synthetic_profile(bank, ms_per_gmac=10_000, num_threads=1)).save(root / "bank.json")
    (root / "prom").mkdir()
    env = {"ECAD_MODEL": str(model), "ECAD_BANK": str(bank_path), "ECAD_NUM_THREADS": "1",
           "ECAD_LATENCY_LEARNING_RATE": "0", "ECAD_TIMEOUT_S": "20", "PROMETHEUS_MULTIPROC_DIR": str(root / "prom")}
    with running_server(env, home=root / "server") as url:
        yield url


def post(url, body, path="/generate", **kw):
    return requests.post(url + path, data=json.dumps(body), headers={"content-type": "application/json"},
                         timeout=60, **kw)


def test_generate_json_envelope_and_headers(served):
    r = post(served, {"prompt": "a red cat", "seed": 3, "num_images": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["schedule_id"] == "no-cache" and body["budget_met"] is None and body["seed"] == 3
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in body["images"]]
    assert [im.size for im in images] == [(SIZE, SIZE)] * 2
    assert r.headers["X-ECAD-Schedule-Id"] == "no-cache"
    assert float(r.headers["X-ECAD-Actual-Ms"]) > 0


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
    r = post(served, {"prompt": "a", "seed": 2, "latency_ms": 1e5}, path="/generate/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (SIZE, SIZE)
    assert r.headers["X-ECAD-Budget-Met"] in ("true", "false")
    several = post(served, {"prompt": "a", "num_images": 2}, path="/generate/png")
    assert several.status_code == 400 and several.json()["field"] == "num_images"


def test_bentoml_client(served):
    import bentoml

    with bentoml.SyncHTTPClient(served) as client:
        body = client.generate({"prompt": "a blue dog", "seed": 5})
    assert body["schedule_id"] == "no-cache" and len(body["images"]) == 1


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
    bad = requests.get(served + "/select", params={"latency_ms": "-1"}, timeout=10)
    assert bad.status_code == 400 and "latency_ms" in bad.json()["error"]
    post(served, {"prompt": "a", "seed": 9, "latency_ms": 1e5})
    metrics = requests.get(served + "/metrics", timeout=10).text
    assert "ecad_requests" in metrics and "ecad_generation_seconds" in metrics and "ecad_budget_requests" in metrics
    assert requests.get(served + "/livez", timeout=10).status_code == 200


def test_bounded_load_mixed_budgets(served):
    schedules = requests.get(served + "/schedules", timeout=10).json()
    times = sorted(e["predicted_ms"] for e in schedules["entries"])
    budgets = [None, times[0] * 0.5, times[1] * 1.01, times[-1] * 1.01, 1e5]

    def one(i):
        body = {"prompt": f"load {i}", "seed": i}
        if budgets[i % len(budgets)] is not None:
            body["latency_ms"] = budgets[i % len(budgets)]
        r = post(served, body)
        return r.status_code, (r.json() if r.status_code == 200 else r.text)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(100)))
    statuses = [s for s, _ in results]
    assert len(results) == 100 and all(s < 500 for s in statuses), statuses
    ok = [b for s, b in results if s == 200]
    assert len(ok) + statuses.count(429) == 100
    with_budget = [b for b in ok if b["latency_ms"] is not None and b["predicted_ms"] <= b["latency_ms"]]
    hit_rate = sum(b["budget_met"] for b in with_budget) / max(1, len(with_budget))
    print(f"load: {len(ok)} ok, {statuses.count(429)} rejected; feasible budgets met: {hit_rate:.0%}")
