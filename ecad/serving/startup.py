"""Start-up, done once: load the pipeline and its banks, learn the model's limits, profile, fit
the latency model, warm up.

Everything slow or model-specific happens here; requests then only plan and run.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ecad.bank import HardwareProfile, ScheduleBank, pipeline_hardware_key
from ecad.deadline import DeadlineExceeded, pipeline_deadline
from ecad.generate import generate, native_num_frames, native_resolution, pipeline_vae_scale_factor
from ecad.planning import LatencyQuantiles, RequestShape
from ecad.profile import DEFAULT_PROFILE_PROMPT
from ecad.serving.banks import ServedBank
from ecad.serving.config import ServingConfig, load_banks
from ecad.serving.latency import LatencyModel, RequestCost, fit_latency_model, latency_design
from ecad.serving.request import FrameLimits, RequestLimits, ResolvedRequest
from ecad.setting import Setting
from ecad.transfer import TransferQualityModel, noise_levels

logger = logging.getLogger(__name__)


def start(config: ServingConfig, pipe=None) -> tuple[Any, dict[str, ServedBank], RequestLimits]:
    """The pipeline (loaded unless given), its served banks by id (the default bank first, each
    with the latency model) and the request limits. The warm-up comes once the queue exists
    (``warm_up``)."""
    from ecad.adapters import get_adapter
    from ecad.generate import load_pipeline

    if config.num_threads and config.device.startswith("cpu"):
        torch.set_num_threads(config.num_threads)
    if config.bank:  # a named bank that cannot be read fails before the pipeline is loaded
        load_banks(config)
    if pipe is None:
        pipe = load_pipeline(config.model, device=config.device, dtype=getattr(torch, config.dtype))
    video = get_adapter(pipe).video
    found = load_banks(config, dict(pipe.transformer.config))
    if video is not None:  # every video bank states its frames (the pipeline's default where the file does not)
        default_frames = native_num_frames(pipe) or video.default_frames
        found = {path: bank if bank.num_frames else bank.model_copy(update={"num_frames": default_frames})
                 for path, bank in found.items()}
    found = default_first(found, native_resolution(pipe))
    settings = [bank.setting for bank in found.values()]
    setting = settings[0]
    multiple = accepted_size_multiple(pipe, setting, int(get_adapter(pipe).spatial_multiple(pipe)))
    frames = None
    if video is not None:
        most = max(s.num_frames for s in settings) * config.max_side_factor
        frames = FrameLimits(step=video.temporal_compression,
                             maximum=(most - 1) // video.temporal_compression * video.temporal_compression + 1)
    limits = RequestLimits(
        setting=setting, max_prompt_chars=config.max_prompt_chars, max_images=config.max_images,
        spatial_multiple=multiple,
        max_height=max(s.height for s in settings) * config.max_side_factor,
        max_width=max(s.width for s in settings) * config.max_side_factor,
        min_steps=minimum_steps(pipe, setting, max(1, config.max_steps), multiple), max_steps=config.max_steps,
        frames=frames,
    )
    # The profiling budget is shared: banks without a stored profile get equal parts of it.
    unprofiled = sum(stored_profile(pipe, bank) is None for bank in found.values())
    budget_s = config.profile_time_budget_s / max(1, unprofiled)
    names = [path.name for path in found]
    levels = functools.cache(lambda setting: noise_levels(pipe, setting))
    profiled = {path: ensure_profile(pipe, bank, path, config, budget_s) for path, bank in found.items()}
    cost = RequestCost(pipe, latency_model(pipe, *next(iter(profiled.values())), limits, config))
    banks: dict[str, ServedBank] = {}
    for path, (bank, profile) in profiled.items():
        bank_id = path.name if names.count(path.name) == 1 else str(path)
        tail = LatencyQuantiles(config.latency_quantile, config.latency_window, config.latency_margin,
                                home=RequestShape(bank.setting, profile.batch_size))
        banks[bank_id] = ServedBank(bank_id, path, bank, profile, tail, cost, noise_levels=levels,
                                    transfer_quality=TransferQualityModel.beside(path))
    return pipe, banks, limits


def latency_model(pipe, bank: ScheduleBank, profile: HardwareProfile, limits: RequestLimits,
                  config: ServingConfig) -> LatencyModel:
    """The latency model fitted on runs around the default ``bank`` (``ecad.serving.latency``):
    its entry without caching, its fastest and its median entry by ``profile``; the MACs alone
    if ``config.latency_fit_s`` is 0."""
    if config.latency_fit_s <= 0:
        return LatencyModel.macs_only()
    by_ms = sorted(profile.latency_ms, key=profile.latency_ms.get)
    no_cache = bank.no_cache_entry().id
    chosen = dict.fromkeys([no_cache, by_ms[0], by_ms[len(by_ms) // 2]])
    schedules = {i: None if i == no_cache else bank.entry(i).cache_schedule() for i in chosen}
    runs = latency_design(bank.setting, schedules, min_steps=limits.min_steps,
                          max_side=(limits.max_height, limits.max_width), multiple=limits.spatial_multiple)
    started = time.perf_counter()
    model = fit_latency_model(pipe, runs, time_budget_s=config.latency_fit_s, prompt=DEFAULT_PROFILE_PROMPT)
    logger.info("latency model: %d runs in %.0f s, prices %s", len(runs), time.perf_counter() - started,
                model.view()["prices_ms"])
    return model


def default_first(banks: dict[Path, ScheduleBank], native: tuple[int, int]) -> dict[Path, ScheduleBank]:
    """Catalogue order, with the first bank made for the model's native resolution moved to the
    front (the default bank); if none is, the catalogue's first bank is the default."""
    native_paths = [p for p, b in banks.items() if (b.setting.height, b.setting.width) == native][:1]
    return {p: banks[p] for p in [*native_paths, *(p for p in banks if p not in native_paths)]}


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


def minimum_steps(pipe, setting: Setting, upper: int, multiple: int = 8) -> int:
    """The fewest denoising steps the scheduler runs (a multistep solver may need 2): tried at a
    small size the pipeline accepts (the VAE factor, rounded up to the accepted ``multiple``; one
    frame of a video), one run per count until one completes."""
    side = -(-max(pipeline_vae_scale_factor(pipe), 8) // multiple) * multiple
    small = setting.with_changes(height=side, width=side, num_frames=1 if setting.num_frames else None)
    for steps in range(1, min(upper, 4) + 1):
        try:
            generate(pipe, [DEFAULT_PROFILE_PROMPT], [0], small.with_changes(num_inference_steps=steps))
            return steps
        except (IndexError, ValueError, RuntimeError) as err:
            logger.info("scheduler refuses %d step(s): %s: %s", steps, type(err).__name__, err)
    return min(upper, 4)


def stored_profile(pipe, bank: ScheduleBank) -> HardwareProfile | None:
    """The bank's profile for this pipeline's hardware, if it has one for every entry."""
    profile = bank.profile(pipeline_hardware_key(pipe, batch_size=1))
    return profile if profile is not None and set(profile.latency_ms) == {e.id for e in bank.entries} else None


def ensure_profile(pipe, bank: ScheduleBank, bank_path: Path, config: ServingConfig,
                   time_budget_s: float) -> tuple[ScheduleBank, HardwareProfile]:
    """This hardware's stored profile, or a fresh one measured now (written back if asked)."""
    profile = stored_profile(pipe, bank)
    if profile is not None:
        logger.info("%s: using stored latency profile %s", bank_path.name, profile.key)
        return bank, profile
    from ecad.profile import profile_bank

    logger.info("%s: no latency profile for this hardware: profiling %d schedules (budget %.0f s)",
                bank_path.name, len(bank.entries), time_budget_s)
    profile = profile_bank(pipe, bank, repeats=config.profile_repeats, time_budget_s=time_budget_s, progress=False)
    bank = bank.with_profile(profile)
    if config.persist_profile:
        bank.save(bank_path)
        logger.info("stored profile %s in %s", profile.key, bank_path)
    return bank, profile


def warm_up(queue, banks: dict[str, ServedBank]) -> None:
    """Run requests through the path every request takes before the first one arrives, in every
    slot (``PipelineQueue.warm_up``): the slot's worker thread, its transformer view, the
    between-steps hook, the cache hooks of each kind of entry, the PNG encoder. Per bank (each has
    its own resolution and steps): the entry without caching, the best, the fastest and the
    median, twice. The first round pays for lazy initialisation (the first call of a fresh process,
    view or code path is several times slower) and teaches nothing; the second teaches the latency
    tail how fast this machine is *now* against the profile (which may have been measured on a
    quieter day), so the first request is predicted like any later one."""
    for observe in (False, True):
        for served in banks.values():
            latency = served.profile.latency_ms
            by_ms = sorted(latency, key=latency.get)
            best = max(served.quality, key=lambda i: (served.quality[i].value, -latency[i]))
            entries = dict.fromkeys([served.bank.no_cache_entry().id, best, by_ms[0], by_ms[len(by_ms) // 2]])
            request = ResolvedRequest(DEFAULT_PROFILE_PROMPT, None, None, 0, RequestShape(served.bank.setting), served)
            for entry_id in entries:
                took = queue.warm_up(request, entry_id, observe=observe)
                logger.info("warm-up%s of %s with %s: %s ms per slot", " (observed)" if observe else "", served.id,
                            entry_id, ", ".join(f"{t:.0f}" for t in took))
