"""One code path from prompts to images (or videos), shared by the CLI, calibration, the server and benchmarks."""

from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

import torch

from .adapters import get_adapter
from .hooks import cache_schedule
from .schedule import CacheSchedule, ScheduleError
from .setting import Setting


def load_pipeline(model_id_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, **kwargs: Any):
    """Load a diffusers pipeline (a local folder works offline) and check ecad supports its transformer.

    Extra kwargs go to `DiffusionPipeline.from_pretrained`. The progress bar is disabled.
    """
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model_id_or_path), dtype=dtype, **kwargs)
    get_adapter(pipe)  # fail now, naming the supported transformers, rather than at the first request
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def transformer_skeleton(model: str):
    """(transformer on the meta device, its config dict) for a local folder or hub id.

    What needs only the layout or the config (the search driver, the server's pre-start checks)
    reads the config files and no weights.
    """
    import diffusers
    from accelerate import init_empty_weights

    index = diffusers.DiffusionPipeline.load_config(model)
    _, class_name = index["transformer"]
    cls = getattr(diffusers, class_name)
    config = cls.load_config(model, subfolder="transformer")
    with init_empty_weights():
        transformer = cls.from_config(config)
    return transformer, dict(config)


def _call_defaults(model: Any) -> dict[str, Any]:
    """The pipeline's own defaults for `height`, `width` and `num_frames` (the integers its
    `__call__` signature gives; Wan: 480, 832, 81; PixArt: none, it derives them). `model` is a
    loaded pipeline, or a local folder / hub id (its class named by `model_index.json`)."""
    import diffusers

    if isinstance(model, (str, os.PathLike)):
        cls = getattr(diffusers, diffusers.DiffusionPipeline.load_config(str(model))["_class_name"], None)
    else:
        cls = type(model)
    if cls is None:
        return {}
    parameters = inspect.signature(cls.__call__).parameters
    return {name: parameters[name].default for name in ("height", "width", "num_frames")
            if name in parameters and isinstance(parameters[name].default, int)}


def native_resolution(model: Any) -> tuple[int, int]:
    """(height, width) the model makes when none is given.

    `model` is a loaded pipeline, or a local folder / hub id (read from its config files, no
    weights). A video pipeline makes the size its call's defaults state (Wan: 480x832); an image
    pipeline its default sample size x the VAE factor: PixArt keeps the sample size in the transformer
    config; FLUX's pipeline sets its own `default_sample_size` (128 latents, 1024 px)."""
    defaults = _call_defaults(model)
    if {"height", "width", "num_frames"} <= set(defaults):
        return defaults["height"], defaults["width"]
    if not isinstance(model, (str, os.PathLike)):
        sample = getattr(model, "default_sample_size", None) or model.transformer.config.get("sample_size")
        side = int(sample) * pipeline_vae_scale_factor(model)
        return side, side
    _, config = transformer_skeleton(model)
    side = int(config.get("sample_size") or 64) * vae_scale_factor(model)
    return side, side


def native_num_frames(model: Any) -> int | None:
    """Frames of each video the pipeline makes when none is given (its call's default; Wan: 81);
    None for an image pipeline."""
    return _call_defaults(model).get("num_frames")


def pipeline_vae_scale_factor(pipe: Any) -> int:
    """A loaded pipeline's spatial VAE factor (video pipelines name it `vae_scale_factor_spatial`)."""
    return int(getattr(pipe, "vae_scale_factor", None) or getattr(pipe, "vae_scale_factor_spatial", None) or 8)


def vae_scale_factor(model: str | os.PathLike) -> int:
    """The VAE's downsampling factor of a model folder / hub id, from its config (no weights)."""
    import diffusers

    vae = diffusers.AutoencoderKL.load_config(str(model), subfolder="vae")
    return 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)


def _per_prompt(pipe: Any) -> str:
    """The pipeline's name for items per prompt (video pipelines: `num_videos_per_prompt`)."""
    parameters = inspect.signature(type(pipe).__call__).parameters
    return "num_videos_per_prompt" if "num_videos_per_prompt" in parameters else "num_images_per_prompt"


def _as_list(value: str | Sequence[str] | None, n: int, what: str) -> list[str] | None:
    if value is None or isinstance(value, str):
        return None if value is None else [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"got {len(value)} {what} for {n} prompts")
    return value


@torch.no_grad()
def generate(pipe: Any, prompts: str | Sequence[str], seeds: int | Sequence[int], setting: Setting,
             schedule: CacheSchedule | None = None, *, negative_prompt: str | Sequence[str] | None = None,
             **pipeline_kwargs: Any) -> torch.Tensor:
    """Images for `prompts` (one per prompt, image i from `seeds[i]`) as float [N, 3, H, W] in [0, 1];
    for a video pipeline, videos as float [N, F, 3, H, W] (F: `setting.num_frames`, else the pipeline's).

    Each image gets its own `torch.Generator`, so the initial noise of image i depends only on
    its seed. `schedule` (steps must equal `setting.num_inference_steps`; see
    `CacheSchedule.resample`) is applied for this call only. `setting.guidance_scale` is passed as
    is (PixArt: CFG; FLUX: the distilled guidance embedding); extra kwargs go to the pipeline,
    e.g. FLUX `true_cfg_scale=4.0` with a `negative_prompt`.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    if schedule is not None and schedule.num_steps != setting.num_inference_steps:
        raise ScheduleError(
            f"schedule has {schedule.num_steps} steps but num_inference_steps={setting.num_inference_steps}; "
            f"use schedule.resample({setting.num_inference_steps})"
        )
    if schedule is not None and schedule.guidance_reuse.any() and setting.guidance_scale <= 1.0:
        raise ScheduleError(
            f"the schedule reuses guidance at {int(schedule.guidance_reuse.sum())} steps, but guidance_scale="
            f"{setting.guidance_scale} runs no classifier-free guidance; use a guidance scale > 1"
        )
    device = getattr(pipe, "_execution_device", None) or pipe.device
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    kwargs = {**get_adapter(pipe).pipeline_call_kwargs(pipe), **pipeline_kwargs}
    negative = _as_list(negative_prompt, len(prompts), "negative prompts")
    if negative is not None:
        kwargs["negative_prompt"] = negative
    if setting.num_frames is not None:
        kwargs["num_frames"] = setting.num_frames
    with cache_schedule(pipe, schedule):
        out = pipe(
            prompt=prompts, num_inference_steps=setting.num_inference_steps,
            guidance_scale=setting.guidance_scale, height=setting.height, width=setting.width,
            generator=generators, output_type="pt", **{_per_prompt(pipe): 1}, **kwargs,
        )
    return (out.frames if hasattr(out, "frames") else out.images).float()
