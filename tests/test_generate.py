"""generate(), load_pipeline(), tiny pipelines and the ecad-generate CLI."""

import pytest
import torch

from engine_helpers import STEPS, tiny_dir, tiny_pipe  # noqa: F401
from ecad.adapters import get_adapter
from ecad.generate import generate
from ecad.heuristics import fora
from ecad.hooks import get_cache_handle
from ecad.schedule import ScheduleError
from ecad.setting import Setting
from ecad.tiny import TINY_IMAGE_SIZE as SIZE


def gen(pipe, prompts, seeds, **kw):
    return generate(pipe, prompts, seeds, Setting(SIZE, SIZE, STEPS, 4.5), **kw)


def test_generate_shape_determinism_and_schedule(tiny_pipe):
    pipe = tiny_pipe
    lay = get_adapter(pipe).layout(pipe.transformer)
    images = gen(pipe, ["a red cat", "a blue dog"], [1, 2])
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert torch.equal(gen(pipe, ["a red cat", "a blue dog"], [1, 2]), images)
    # image i depends on its own seed, not on the batch it is in (up to batched-matmul rounding)
    alone = gen(pipe, ["a blue dog"], [2])
    torch.testing.assert_close(alone[0], images[1], atol=1e-4, rtol=0)
    cached = gen(pipe, ["a red cat", "a blue dog"], [1, 2], schedule=fora(lay, STEPS, 2))
    assert not torch.equal(cached, images)
    assert get_cache_handle(pipe) is None  # removed after the call
    with pytest.raises(ScheduleError, match="resample"):
        gen(pipe, ["a cat"], [0], schedule=fora(lay, STEPS + 1, 2))
    with pytest.raises(ValueError, match="seeds"):
        gen(pipe, ["a cat", "a dog"], [0])


def test_tiny_pipeline_is_small_and_reused(tmp_path_factory):
    path = tiny_dir(tmp_path_factory, "pixart-sigma")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 1_000_000
    mtime = (path / "transformer").stat().st_mtime_ns
    assert tiny_dir(tmp_path_factory, "pixart-sigma") == path
    assert (path / "transformer").stat().st_mtime_ns == mtime


def test_cli_generate(tmp_path_factory, tmp_path, capsys):
    from PIL import Image

    from ecad.cli.generate import main

    model = tiny_dir(tmp_path_factory, "pixart-alpha")
    out = tmp_path / "img.png"
    assert main(["--model", str(model), "--prompt", "a red cat", "--schedule", "fora-2", "--steps", "4",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (SIZE, SIZE)
    assert "fewer transformer MACs" in capsys.readouterr().out
    schedule_file = tmp_path / "s.json"
    from ecad.generate import load_pipeline

    pipe = load_pipeline(model)
    schedule_file.write_text(fora(get_adapter(pipe).layout(pipe.transformer), 8, 3).to_json())
    assert main(["--model", str(model), "--prompt", "a cat", "--schedule", str(schedule_file), "--steps", "4",
                 "--out", str(out)]) == 0
    assert "moving schedule from 8 to 4 steps by noise level" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown schedule"):
        main(["--model", str(model), "--prompt", "a cat", "--schedule", "nope", "--out", str(out)])
