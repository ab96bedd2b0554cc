"""Start-up, done once: load the pipeline and its banks, learn the model's limits, profile, warm up.

Everything slow or model-specific happens here; requests then only plan and run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ecad.bank import HardwareProfile, ScheduleBank, pipeline_hardware_key
from ecad.bank_catalog import CatalogBank, choose_bank
from ecad.deadline import DeadlineExceeded, pipeline_deadline
from ecad.generate import generate, native_resolution
from ecad.planning import RequestShape
from ecad.profile import DEFAULT_PROFILE_PROMPT
from ecad.serving.config import ServingConfig, load_banks
from ecad.serving.request import RequestLimits
from ecad.setting import Setting

logger = logging.getLogger(__name__)


@dataclass
class ServedBank:
    """One bank as served: its entries' schedules and quality, and this hardware's profile."""

    id: str  # what responses name it by: its file name (its path if two share a name)
    path: Path
    bank: ScheduleBank
    profile: HardwareProfile
    schedules: dict  # entry id -> CacheSchedule
    quality: dict[str, float]  # entry id -> the bank's ranking metric

    @property
    def profiled_shape(self) -> RequestShape:
        return RequestShape(self.bank.setting, self.profile.batch_size)


@dataclass(frozen=True)
class BankPick:
    """The bank serving a request: made for its setting (`exact`), or the nearest, and why."""

    served: ServedBank
    exact: bool
    reason: str


@dataclass
class LoadedModel:
    """A pipeline with its banks, ready to serve: what start-up hands to the request path.

    ``banks[0]`` is the default bank: its setting fills a request's omitted fields. The
    single-bank names (``bank``, ``profile``, ``schedules``...) are the default bank's."""

    pipe: object
    banks: list[ServedBank]
    limits: RequestLimits

    default = property(lambda self: self.banks[0])
    bank_path = property(lambda self: self.default.path)
    bank = property(lambda self: self.default.bank)
    profile = property(lambda self: self.default.profile)
    schedules = property(lambda self: self.default.schedules)
    quality = property(lambda self: self.default.quality)
    profiled_shape = property(lambda self: self.default.profiled_shape)

    def served(self, bank_id: str) -> ServedBank:
        return next(b for b in self.banks if b.id == bank_id)

    def choose(self, setting: Setting) -> BankPick:
        """The bank made for ``setting``, else the nearest (``ecad.bank_catalog.choose_bank``)."""
        choice = choose_bank([CatalogBank(b.path, b.bank) for b in self.banks], setting)
        served = next(b for b in self.banks if b.path == choice.path)
        return BankPick(served, choice.exact, choice.reason)


def start(config: ServingConfig, pipe=None) -> LoadedModel:
    from ecad.adapters import get_adapter
    from ecad.generate import load_pipeline

    if config.num_threads and config.device.startswith("cpu"):
        torch.set_num_threads(config.num_threads)
    if config.bank:  # a named bank that cannot be read fails before the pipeline is loaded
        load_banks(config)
    if pipe is None:
        pipe = load_pipeline(config.model, device=config.device, dtype=getattr(torch, config.dtype))
    found = default_first(load_banks(config, dict(pipe.transformer.config)), native_resolution(pipe))
    setting = found[0].bank.setting
    limits = RequestLimits(
        setting=setting, max_prompt_chars=config.max_prompt_chars, max_images=config.max_images,
        spatial_multiple=accepted_size_multiple(pipe, setting, int(get_adapter(pipe).spatial_multiple(pipe))),
        max_height=max(c.bank.setting.height for c in found) * config.max_side_factor,
        max_width=max(c.bank.setting.width for c in found) * config.max_side_factor,
        min_steps=minimum_steps(pipe, setting, max(1, config.max_steps)), max_steps=config.max_steps,
    )
    # The profiling budget is shared: banks without a stored profile get equal parts of it.
    unprofiled = sum(stored_profile(pipe, c.bank) is None for c in found)
    budget_s = config.profile_time_budget_s / max(1, unprofiled)
    names = [c.path.name for c in found]
    banks = []
    for c in found:
        schedules = {entry.id: entry.cache_schedule() for entry in c.bank.entries}
        bank, profile = ensure_profile(pipe, c.bank, c.path, schedules, config, budget_s)
        banks.append(ServedBank(c.path.name if names.count(c.path.name) == 1 else str(c.path), c.path, bank,
                                profile, schedules, {e.id: e.quality[bank.quality_metric] for e in bank.entries}))
    loaded = LoadedModel(pipe, banks, limits)
    for served in banks:
        warm_up(pipe, served)
    return loaded


def default_first(banks: list[CatalogBank], native: tuple[int, int]) -> list[CatalogBank]:
    """Catalogue order, with the first bank made for the model's native resolution moved to the
    front (the default bank); if none is, the catalogue's first bank is the default."""
    native_banks = [c for c in banks if (c.bank.setting.height, c.bank.setting.width) == native]
    return [*native_banks[:1], *(c for c in banks if c not in native_banks[:1])]


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


def stored_profile(pipe, bank: ScheduleBank) -> HardwareProfile | None:
    """The bank's profile for this pipeline's hardware, if it has one for every entry."""
    profile = bank.profile(pipeline_hardware_key(pipe, batch_size=1))
    return profile if profile is not None and set(profile.latency_ms) == {e.id for e in bank.entries} else None


def ensure_profile(pipe, bank: ScheduleBank, bank_path: Path, schedules: dict,
                   config: ServingConfig, time_budget_s: float) -> tuple[ScheduleBank, HardwareProfile]:
    """This hardware's stored profile, or a fresh one measured now (written back if asked)."""
    profile = stored_profile(pipe, bank)
    if profile is not None:
        logger.info("%s: using stored latency profile %s", bank_path.name, profile.key)
        return bank, profile
    from ecad.profile import profile_bank

    logger.info("%s: no latency profile for this hardware: profiling %d schedules (budget %.0f s)",
                bank_path.name, len(schedules), time_budget_s)
    profile = profile_bank(pipe, bank, repeats=config.profile_repeats, time_budget_s=time_budget_s, progress=False)
    bank = bank.with_profile(profile)
    if config.persist_profile:
        bank.save(bank_path)
        logger.info("stored profile %s in %s", profile.key, bank_path)
    return bank, profile


def warm_up(pipe, served: ServedBank) -> None:
    """One call per code path before the first request: the first call of a fresh process is
    several times slower (lazy init), which would both miss that request's budget and teach
    the latency estimate a wrong ratio. Once per bank: each has its own resolution and steps."""
    latency = served.profile.latency_ms
    fastest = min(latency, key=latency.get)
    for entry_id in dict.fromkeys([served.bank.no_cache_entry().id, fastest]):
        started = time.perf_counter()
        generate(pipe, [DEFAULT_PROFILE_PROMPT], [0], served.bank.setting, served.schedules[entry_id])
        logger.info("warm-up of %s with %s: %.0f ms", served.id, entry_id, (time.perf_counter() - started) * 1000)
