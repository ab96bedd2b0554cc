"""A video model served: the tiny Wan 2.1 through the serving core and the real `bentoml serve`, its
answers MP4s (H.264) that PyAV decodes to the frames `ecad.generate` makes with the same schedule."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys

import numpy as np
import pytest
import requests
import torch

from ecad.bank import ScheduleBank
from ecad.cost import image_macs
from ecad.generate import generate, load_pipeline, native_num_frames, native_resolution
from ecad.serving import (
    FrameLimits, GenerateRequest, RequestError, RequestLimits, ScheduleServer, ServingConfig, VideoEncoderMissing,
    tensor_to_mp4,
)
from ecad.serving.media import to_uint8
from ecad.setting import Setting
from ecad.tiny import TINY_SHAPES, build_tiny_pipeline
from serving_helpers import heuristic_bank, running_server, synthetic_profile

HEIGHT, WIDTH, FRAMES = TINY_SHAPES["wan"]  # 32 x 32, 5 frames (2 latent frames)
SETTING = Setting(HEIGHT, WIDTH, 6, 4.5, FRAMES)
FPS = 16  # Wan 2.1's
needs_av = pytest.mark.skipif(importlib.util.find_spec("av") is None,
                              reason="serving video needs PyAV (pip install av)")


def decode(mp4: bytes) -> tuple[np.ndarray, dict]:
    """uint8 [F, H, W, 3] frames of an MP4, and its stream's codec, pixel format and frame rate."""
    import av

    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        info = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "fps": float(stream.average_rate)}
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    return frames, info


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    model = build_tiny_pipeline("wan", root / "tiny-wan")
    pipe = load_pipeline(model)
    bank = heuristic_bank(pipe, str(model), SETTING)
    # ms proportional to MACs, one torch thread: selection does not depend on a tiny model's timings
    path = bank.with_profile(synthetic_profile(bank, ms_per_gmac=10_000, num_threads=1)).save(root / "bank.json")
    return model, pipe, path


# -- without a server ---------------------------------------------------------------------------


def test_setting_frames_name_the_bank_and_leave_image_settings_as_they_were():
    assert SETTING.name == "32x32-5frames-6steps" and Setting.from_dict(SETTING.to_dict()) == SETTING
    image = Setting(32, 32, 4, 4.5)
    assert "num_frames" not in image.to_dict() and image.name == "32x32-4steps"
    with pytest.raises(ValueError, match="Setting.num_frames must be a positive integer"):
        Setting(32, 32, 4, 4.5, 0)


def test_video_pipeline_defaults_and_cost_follow_the_frames(wan):
    model, pipe, _ = wan
    assert native_resolution(pipe) == native_resolution(str(model)) == (480, 832)  # WanPipeline's defaults
    assert native_num_frames(pipe) == native_num_frames(str(model)) == 81
    # one code path: a video's MACs grow with its latent frames ((frames - 1) // 4 + 1), and a
    # setting without frames is costed at the pipeline's default
    one, five, six, nine = (image_macs(pipe, SETTING.with_changes(num_frames=f)) for f in (1, 5, 6, 9))
    assert one < five == six < nine
    assert image_macs(pipe, Setting(HEIGHT, WIDTH, 6, 4.5)) == image_macs(pipe, SETTING.with_changes(num_frames=81))


def test_generate_returns_a_video_pipelines_frames(wan):
    _, pipe, _ = wan
    frames = generate(pipe, ["a red cat", "a dog"], [0, 1], SETTING)
    assert frames.shape == (2, FRAMES, 3, HEIGHT, WIDTH) and frames.dtype == torch.float32


def test_frame_counts_are_checked_naming_the_field():
    limits = RequestLimits(SETTING, 100, 2, 16, 64, 64, 1, 10, frames=FrameLimits(step=4, maximum=17))
    assert limits.shape(num_frames=9).setting.num_frames == 9 and limits.shape().setting.num_frames == FRAMES
    for bad in (0, 6, 21):
        with pytest.raises(RequestError, match=r"must be 1 \+ a multiple of 4 between 1 and 17") as err:
            limits.shape(num_frames=bad)
        assert err.value.field == "num_frames"
    images = RequestLimits(Setting(32, 32, 4, 4.5), 100, 2, 8, 64, 64, 1, 10)
    with pytest.raises(RequestError, match="makes images") as err:
        images.shape(num_frames=5)
    assert err.value.field == "num_frames" and images.view()["num_frames"] is None


def test_without_pyav_a_video_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(VideoEncoderMissing, match="pip install av"):
        tensor_to_mp4(torch.zeros(FRAMES, 3, HEIGHT, WIDTH), FPS)


@needs_av
def test_mp4_is_h264_a_browser_plays_and_near_the_frames():
    # soft colour gradients moving across the frames (noise is what 4:2:0 H.264 keeps worst)
    ramp = torch.linspace(0, 1, WIDTH).expand(HEIGHT, WIDTH)
    frames = torch.stack([torch.stack([0.3 + 0.4 * ramp.roll(i, 1), 0.4 + 0.3 * ramp.T, 0.5 - 0.2 * ramp])
                          for i in range(FRAMES)])
    mp4 = tensor_to_mp4(frames, FPS)
    assert mp4[4:8] == b"ftyp" and mp4.find(b"moov") < mp4.find(b"mdat")  # index first: plays while loading
    decoded, info = decode(mp4)
    assert info == {"codec": "h264", "pix_fmt": "yuv420p", "fps": FPS}
    assert decoded.shape == (FRAMES, HEIGHT, WIDTH, 3)
    error = decoded.astype(float) - to_uint8(frames)
    assert 10 * np.log10(255**2 / (error**2).mean()) > 30  # dB PSNR (35 measured: lossy, near)
    assert tensor_to_mp4(frames, FPS) == mp4  # the same frames, the same bytes


@needs_av
def test_served_in_process_is_bit_exact_with_generate(wan):
    model, pipe, path = wan
    server = ScheduleServer(ServingConfig(model=str(model), bank=str(path), latency_window=0, latency_margin=1.0,
                                          latency_fit_s=0), pipe=pipe)
    try:
        assert server.limits.view()["num_frames"] == [1, FRAMES * 4 - 3, 4]  # 4x the bank's frames, 1 + 4k
        request = server.resolve(GenerateRequest(prompt="a red cat", seed=3, schedule_id="fora-2", num_images=2))
        result = server.generate(request)
        schedule = server.default_bank.schedule_for("fora-2", request.shape.setting)
        assert torch.equal(result.images, generate(pipe, ["a red cat"] * 2, [3, 4], SETTING, schedule))
        assert result.media_type == "video/mp4" and result.report().num_frames == FRAMES
        longer = server.generate(server.resolve(GenerateRequest(prompt="a", seed=1, num_frames=9)))
        assert longer.images.shape[1] == 9
        assert any("9 frames differ from the bank's 5" in note for note in longer.notes)
    finally:
        server.close()


# -- `bentoml serve` ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(wan, tmp_path_factory):
    model, _, path = wan
    env = {"ECAD_MODEL": str(model), "ECAD_BANK": str(path), "ECAD_NUM_THREADS": "1", "ECAD_LATENCY_WINDOW": "0",
           "ECAD_LATENCY_MARGIN": "1", "ECAD_TIMEOUT_S": "300", "ECAD_LATENCY_FIT_S": "0"}
    with running_server(env, home=tmp_path_factory.mktemp("video-server")) as url:
        yield url


def post(url, body, path="/generate"):
    return requests.post(url + path, data=json.dumps(body), headers={"content-type": "application/json"}, timeout=120)


@needs_av
def test_served_video_is_the_mp4_of_generates_frames(served, wan):
    _, pipe, _ = wan
    pinned = {"prompt": "a blue dog", "seed": 5, "schedule_id": "fora-2", "latency_ms": 1e5}
    r = post(served, pinned, "/generate/video")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4" and r.headers["X-ECAD-Schedule-Id"] == "fora-2"
    assert r.headers["X-ECAD-Num-Frames"] == str(FRAMES) and r.headers["X-ECAD-Budget-Met"] == "true"
    # The same prompt, seed and schedule here: the same frames, so the same MP4, byte for byte.
    bank = ScheduleBank.load(wan[2])
    expected = generate(pipe, ["a blue dog"], [5], SETTING, bank.entry("fora-2").cache_schedule())
    assert r.content == tensor_to_mp4(expected[0], FPS)
    decoded, info = decode(r.content)
    assert decoded.shape == (FRAMES, HEIGHT, WIDTH, 3) and info["codec"] == "h264" and info["fps"] == FPS

    body = post(served, {**pinned, "num_images": 2, "num_frames": 9}).json()
    assert body["media_type"] == "video/mp4" and body["num_frames"] == 9 and len(body["images"]) == 2
    assert [decode(base64.b64decode(v))[0].shape for v in body["images"]] == [(9, HEIGHT, WIDTH, 3)] * 2


@needs_av
@pytest.mark.parametrize("path", ["/generate", "/generate/video"])
def test_bad_frame_counts_get_400s_naming_the_field(served, path):
    for bad in (6, 0, 1001):
        r = post(served, {"prompt": "a", "num_frames": bad}, path)
        assert r.status_code == 400 and r.json()["field"] == "num_frames", r.text
        assert "must be 1 + a multiple of 4 between 1 and 17" in r.json()["error"]


@needs_av
def test_png_route_names_the_video_route_and_the_views_show_frames(served):
    r = post(served, {"prompt": "a"}, "/generate/png")
    assert r.status_code == 400 and "POST /generate/video" in r.json()["error"]
    assert requests.get(served + "/schedules", timeout=10).json()["limits"]["num_frames"] == [1, 17, 4]
    chosen = requests.get(served + "/select", params={"num_frames": "9", "latency_ms": "1e5"}, timeout=10)
    assert chosen.status_code == 200 and any("32x32-9frames-6steps" in note for note in chosen.json()["notes"])
    spec = requests.get(served + "/docs.json", timeout=10).json()
    assert list(spec["paths"]["/generate/video"]["post"]["responses"]["200"]["content"]) == ["video/mp4"]


@needs_av
def test_playground_plays_the_video(served, tmp_path):
    """The playground shows a video model's answer as a playing <video> of its size and frames
    (headless Chromium; skipped without it, as tests/test_ui_e2e.py)."""
    import os

    from test_ui_e2e import CHROMIUM, CHROMIUM_ARGS

    playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_ARGS)
        try:
            page = context.new_page()
            page.set_viewport_size({"width": 1360, "height": 860})
            page.goto(f"{served}/ui/")
            playwright.expect(page.locator("#selection")).to_have_attribute("data-state", "ready", timeout=15_000)
            playwright.expect(page.locator("#fact-setting")).to_contain_text(f"{FRAMES} frames")
            page.click("#generate")
            result = page.locator(".result-main")
            playwright.expect(result).to_have_attribute("data-loaded", "true", timeout=30_000)
            shown = result.locator("video").evaluate(
                "v => ({width: v.videoWidth, height: v.videoHeight, duration: v.duration, loop: v.loop})")
            page.screenshot(path=str(tmp_path / "playground-video.png"))
        finally:
            context.close()
    assert shown["width"] == WIDTH and shown["height"] == HEIGHT and shown["loop"]
    assert shown["duration"] == pytest.approx(FRAMES / FPS, abs=1 / FPS)  # every frame, at the model's rate
