"""End-to-end test of the playground page: the real BentoML server, a tiny pipeline, headless Chromium.

Starts `bentoml serve server.service:ECAD` on a free 127.0.0.1 port with a tiny random PixArt
pipeline and a small bank for it, loads /ui/ in Debian's Chromium (driven by the `playwright`
Python package with `executable_path`, so Playwright downloads no browser of its own), moves the
latency slider, checks the page shows exactly what `GET /select` answers for that budget, clicks
Generate, checks the image and the schedule id, and saves a screenshot
(`docs/images/playground.png` when ECAD_UI_SCREENSHOT is set to that path, otherwise in tmp).

Needs: /usr/bin/chromium and the `playwright` package (scripts/install-browser.sh installs both);
skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("ECAD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STEPS = 8
SCREENSHOT_VIEWPORT = {"width": 1360, "height": 860}
READY_TIMEOUT_S = 150  # server start: imports (~10 s) + loading + profiling the bank


# -- a small bank for the tiny pipeline ------------------------------------------------------


def build_bank(model_dir: Path, bank_path: Path) -> Path:
    """no-cache, a few heuristics and two made-up "ecad" entries, with a made-up quality score.

    The score grows with the fraction of recomputed components (no-cache is the best); the ecad
    entries get a small bonus so the front has both kinds. No latency profile: the server
    profiles the bank on this machine when it starts, as it would on new hardware.
    """
    from ecad.adapters import get_adapter
    from ecad.bank import BankEntry, ScheduleBank
    from ecad.cost import image_macs
    from ecad.generate import load_pipeline
    from ecad.schedule import CacheSchedule
    from ecad.setting import Setting
    from serving_helpers import heuristic_bank, synthetic_profile
    from ecad.tiny import TINY_IMAGE_SIZE

    pipe = load_pipeline(model_dir)
    setting = Setting(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, STEPS, 4.5)
    base = heuristic_bank(pipe, str(model_dir), setting, names=("no-cache", "fora-2", "fora-3", "fora-5", "tgate-4"))
    layout = get_adapter(pipe).layout(pipe.transformer)
    rng = np.random.default_rng(0)
    made_up = []
    for i, keep in enumerate((0.75, 0.45)):
        mask = rng.random(CacheSchedule.full(layout, STEPS).mask.shape) < keep
        mask[0] = True
        schedule = CacheSchedule(mask, layout)
        macs = image_macs(pipe, setting, schedule)
        made_up.append(BankEntry(id=f"ecad-demo-{i + 1}", schedule=schedule.to_dict(), macs=macs, quality={}, source="ecad"))
    entries = []
    for entry in [*base.entries, *made_up]:
        fraction = float(entry.cache_schedule().mask.mean())
        score = 0.55 + 0.35 * fraction + (0.04 if entry.source == "ecad" else 0.0)
        entries.append(entry.model_copy(update={"quality": {"synthetic": round(score, 4)}}))
    bank = ScheduleBank(**{
        **base.model_dump(exclude={"entries", "scorer", "quality_metric", "created_at"}),
        "entries": entries, "scorer": "synthetic (test bank: score rises with recomputed work)",
        "quality_metric": "synthetic",
    })
    # A stored profile (latency proportional to MACs) for a 1-thread server: the tiny model's real
    # timings are noise on a busy machine, and the page must match a /select that stays put.
    return bank.with_profile(synthetic_profile(bank, ms_per_gmac=10_000, num_threads=1)).save(bank_path)


# -- the server ------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def browser_ready():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found; run scripts/install-browser.sh (Debian chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Python package 'playwright' not installed; run scripts/install-browser.sh")


@pytest.fixture(scope="module")
def server(browser_ready, tmp_path_factory):
    from serving_helpers import running_server
    from ecad.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("ui-e2e")
    os_env_extra: dict[str, str] = {}
    if os.environ.get("ECAD_UI_MODEL"):  # e.g. the bundled model and its bank, for a docs screenshot
        model_dir, bank_path = os.environ["ECAD_UI_MODEL"], os.environ.get("ECAD_UI_BANK", "")
    else:
        scale = os.environ.get("ECAD_UI_SCALE", "tiny")
        model_dir = build_tiny_pipeline("pixart-alpha", root / f"pixart-alpha-{scale}", scale=scale)
        bank_path = build_bank(Path(model_dir), root / "bank.json")
        # Deterministic selection: trust the stored profile instead of learning from noisy timings.
        os_env_extra = {"ECAD_LATENCY_WINDOW": "0"}
    env = {
        "ECAD_MODEL": str(model_dir),
        "ECAD_BANK": str(bank_path),  # empty: the server's default bank for the model
        "ECAD_NUM_THREADS": "1",
        "ECAD_PROFILE_BUDGET_S": os.environ.get("ECAD_PROFILE_BUDGET_S", "30"),
        **os_env_extra,
    }
    with running_server(env, home=root / "server", ready_timeout_s=READY_TIMEOUT_S) as base:
        yield base


# -- the test --------------------------------------------------------------------------------


def safe_budget(entries: list[dict]) -> float:
    """A budget inside the widest gap between two entries' predicted latencies, nearer its top.

    Far below the next entry's prediction (slider rounding), and farther above the fitting one's:
    the server subtracts the time a request spent queued from its budget, which must not push the
    chosen entry out.
    """
    ms = sorted(e["predicted_ms"] for e in entries)
    gap, low = max((b - a, a) for a, b in zip(ms, ms[1:]))
    return low + 0.75 * gap


def test_playground_end_to_end(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    bank = get_json(f"{server}/schedules")
    assert len(bank["entries"]) >= 3
    target = safe_budget(bank["entries"])
    screenshot = Path(os.environ.get("ECAD_UI_SCREENSHOT", tmp_path / "playground.png"))
    errors: list[str] = []

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport=SCREENSHOT_VIEWPORT,
        )
        try:
            page = context.new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            # Fully offline: every request goes to this server (images arrive as data: URLs).
            foreign: list[str] = []
            page.on("request", lambda req: None if req.url.startswith((server + "/", "data:")) else foreign.append(req.url))
            # (A refused request also logs "Failed to load resource" to the console: expected.)
            page.on("console", lambda msg: errors.append(msg.text)
                    if msg.type == "error" and "Failed to load resource" not in msg.text else None)
            page.goto(f"{server}/")  # redirects to /ui/
            assert page.url.endswith("/ui/")
            selection = page.locator("#selection")
            expect(selection).to_have_attribute("data-state", "ready", timeout=15_000)
            expect(page.locator("#plot .pt")).to_have_count(len(bank["entries"]))
            expect(page.locator("#plot .pt.nocache")).to_have_count(1)

            # Move the slider: click on its track where the target budget lies.
            slider = page.locator("#budget")
            lo, hi = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
            box = slider.bounding_box()
            thumb = 18
            fx = (target - lo) / (hi - lo)
            page.mouse.click(box["x"] + thumb / 2 + fx * (box["width"] - thumb), box["y"] + box["height"] / 2)
            budget = slider.input_value()
            assert abs(float(budget) - target) < (hi - lo) * 0.05, (budget, target)
            expect(selection).to_have_attribute("data-budget", budget, timeout=10_000)
            expect(selection).to_have_attribute("data-state", "ready")
            expected = get_json(f"{server}/select?latency_ms={budget}")
            assert page.locator("#selected-id").inner_text() == expected["schedule_id"]
            assert page.locator(f"#plot .pt.selected[data-id='{expected['schedule_id']}']").count() == 1

            # Hovering a point names the entry.
            no_cache = page.locator("#plot .pt.nocache")
            no_cache.locator(".hit").hover()
            expect(page.locator("#tooltip .tip-id")).to_have_text(no_cache.get_attribute("data-id"))
            page.mouse.move(5, 5)

            # Generate with that budget.
            page.fill("#prompt", "a red circle at the top left")
            page.fill("#seed", "7")
            page.click("#generate")
            result = page.locator(".result-main")
            expect(result).to_have_attribute("data-loaded", "true", timeout=30_000)
            assert result.locator(".result-id").inner_text() == expected["schedule_id"]
            assert result.locator("img").evaluate("img => img.naturalWidth") == bank["width"]
            assert result.locator(".m-budget").get_attribute("data-met") in ("true", "false")
            # After a generation the page re-reads the server's (corrected) choice for the budget.
            expect(selection).to_have_attribute("data-state", "ready", timeout=10_000)
            now = get_json(f"{server}/select?latency_ms={budget}")
            assert page.locator("#selected-id").inner_text() == now["schedule_id"]

            # API errors are shown, readably: a blank prompt is refused by the server.
            page.fill("#prompt", "   ")
            page.click("#generate")
            error = page.locator("#errors .error")
            expect(error).to_contain_text("prompt", timeout=10_000)
            expect(error).to_contain_text("HTTP 400")
            page.click("#errors .error-close")
            page.fill("#prompt", "a red circle at the top left")
            # ... and so is a negative seed (by the request model's bounds: the error lists the field).
            page.fill("#seed", "-1")
            page.click("#generate")
            expect(error).to_contain_text("seed", timeout=10_000)
            expect(page.locator("#seed")).to_have_class("invalid")
            page.click("#errors .error-close")
            page.fill("#seed", "7")

            # Compare: the same prompt and seed, pinned to the no-cache schedule.
            page.click("#compare")
            reference = page.locator(".result-ref")
            expect(reference).to_have_attribute("data-loaded", "true", timeout=30_000)
            expect(page.locator(".result-main")).to_have_attribute("data-loaded", "true")
            no_cache_id = next(e["id"] for e in bank["entries"] if e["source"] == "no-cache")
            assert reference.locator(".result-id").inner_text() == no_cache_id
            expect(reference.locator(".cap-label")).to_have_text("Reference")
            expect(selection).to_have_attribute("data-state", "ready", timeout=10_000)
            assert not page.locator("#errors .error").count()

            page.evaluate("window.scrollTo(0, 0)")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    assert screenshot.stat().st_size > 10_000
    assert not errors, errors
    assert not foreign, f"the page fetched from elsewhere than its server: {foreign}"
