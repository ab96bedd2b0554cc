"""Start-up, done once: load the pipeline and its bank, learn the model's limits, profile, warm up.

Everything slow or model-specific happens here; requests then only plan and run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ecad.bank import HardwareProfile, ScheduleBank, hardware_key
from ecad.deadline import DeadlineExceeded, pipeline_deadline
from ecad.generate import generate
from ecad.planning import RequestShape
from ecad.profile import DEFAULT_PROFILE_PROMPT
from ecad.serving.config import ServingConfig, load_bank
from ecad.serving.request import RequestLimits
from ecad.setting import Setting

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A pipeline with its bank, ready to serve: what start-up hands to the request path."""

    pipe: object
    bank_path: Path
    bank: ScheduleBank
    profile: HardwareProfile
    schedules: dict  # entry id -> CacheSchedule
    quality: dict[str, float]  # entry id -> the bank's ranking metric
    limits: RequestLimits

    @property
    def profiled_shape(self) -> RequestShape:
        return RequestShape(self.bank.setting, self.profile.batch_size)


def start(config: ServingConfig, pipe=None) -> LoadedModel:
    from ecad.adapters import get_adapter
    from ecad.generate import load_pipeline

    if config.num_threads and config.device.startswith("cpu"):
        torch.set_num_threads(config.num_threads)
    bank_path, bank = load_bank(config)
    if pipe is None:
        pipe = load_pipeline(config.model, device=config.device, dtype=getattr(torch, config.dtype))
    bank.check_transformer(dict(pipe.transformer.config), source=str(bank_path))
    schedules = {entry.id: entry.cache_schedule() for entry in bank.entries}
    setting = bank.setting
    limits = RequestLimits(
        setting=setting, max_prompt_chars=config.max_prompt_chars, max_images=config.max_images,
        spatial_multiple=accepted_size_multiple(pipe, setting, int(get_adapter(pipe).spatial_multiple(pipe))),
        max_height=setting.height * config.max_side_factor, max_width=setting.width * config.max_side_factor,
        min_steps=minimum_steps(pipe, setting, max(1, config.max_steps)), max_steps=config.max_steps,
    )
    bank, profile = ensure_profile(pipe, bank, bank_path, schedules, config)
    loaded = LoadedModel(pipe, bank_path, bank, profile, schedules,
                         {entry.id: entry.quality[bank.quality_metric] for entry in bank.entries}, limits)
    warm_up(loaded)
    return loaded


def _inputs_accepted(pipe, setting: Setting) -> bool:
    """Whether the pipeline's own input checks pass for ``setting`` (stopped at the first step)."""
    try:
        with pipeline_deadline(pipe, 0.0):  # long past: the first transformer call stops the run
            generate(pipe, [DEFAULT_PROFILE_PROMPT], [0], setting)
    except DeadlineExceeded:
        return True
    except ValueError:
        return False
    return True


def accepted_size_multiple(pipe, setting: Setting, model_multiple: int) -> int:
    """The smallest multiple of the adapter's (VAE factor x patch) that the pipeline accepts.

    Pipelines may check more than the model needs (diffusers' PixArt pipelines want multiples of
    8 whatever the VAE): a size one multiple above the bank's is tried, doubling until accepted.
    """
    multiple = model_multiple
    for _ in range(4):
        if _inputs_accepted(pipe, setting.with_changes(height=setting.height + multiple,
                                                       width=setting.width + multiple)):
            return multiple
        multiple *= 2
    raise RuntimeError(f"the pipeline refuses every size tried around {setting.width}x{setting.height}")


def minimum_steps(pipe, setting: Setting, upper: int) -> int:
    """The fewest denoising steps the scheduler runs (a multistep solver may need 2): tried at a
    small size, one run per count until one completes."""
    m = pipe.vae_scale_factor
    small = setting.with_changes(height=max(m, 8), width=max(m, 8))
    for steps in range(1, min(upper, 4) + 1):
        try:
            generate(pipe, [DEFAULT_PROFILE_PROMPT], [0], small.with_changes(num_inference_steps=steps))
            return steps
        except (IndexError, ValueError, RuntimeError) as err:
            logger.info("scheduler refuses %d step(s): %s: %s", steps, type(err).__name__, err)
    return min(upper, 4)


def ensure_profile(pipe, bank: ScheduleBank, bank_path: Path, schedules: dict,
                   config: ServingConfig) -> tuple[ScheduleBank, HardwareProfile]:
    """This hardware's stored profile, or a fresh one measured now (written back if asked)."""
    device = str(pipe.device)
    dtype = str(pipe.transformer.dtype).removeprefix("torch.")
    threads = torch.get_num_threads() if device.startswith("cpu") else None
    key = hardware_key(device, dtype, 1, threads)
    profile = bank.profile(key)
    if profile is not None and set(profile.latency_ms) == set(schedules):
        logger.info("using stored latency profile %s", key)
        return bank, profile
    from ecad.profile import profile_bank

    logger.info("no latency profile for %s: profiling %d schedules (budget %.0f s)",
                key, len(schedules), config.profile_time_budget_s)
    profile = profile_bank(pipe, bank, repeats=config.profile_repeats,
                           time_budget_s=config.profile_time_budget_s, progress=False)
    bank = bank.with_profile(profile)
    if config.persist_profile:
        bank.save(bank_path)
        logger.info("stored profile %s in %s", key, bank_path)
    return bank, profile


def warm_up(loaded: LoadedModel) -> None:
    """One call per code path before the first request: the first call of a fresh process is
    several times slower (lazy init), which would both miss that request's budget and teach
    the latency estimate a wrong ratio."""
    latency = loaded.profile.latency_ms
    fastest = min(latency, key=latency.get)
    for entry_id in dict.fromkeys([loaded.bank.no_cache_entry().id, fastest]):
        started = time.perf_counter()
        generate(loaded.pipe, [DEFAULT_PROFILE_PROMPT], [0], loaded.bank.setting, loaded.schedules[entry_id])
        logger.info("warm-up with %s: %.0f ms", entry_id, (time.perf_counter() - started) * 1000)
