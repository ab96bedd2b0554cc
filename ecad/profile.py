"""Latency on this hardware: a bank's hardware profile (`profile_bank`), and schedules timed
against no-cache for a fitted cost (`time_schedules`).

Runs follow `ecad.timing`'s protocol (entry order reshuffled each round) and are summarised by
the median, so a busy machine slows every entry alike instead of biasing the ones measured last.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import torch
from tqdm.auto import tqdm

from ecad.bank import HardwareProfile, ScheduleBank, device_name, pipeline_hardware_key
from ecad.schedule import CacheSchedule
from ecad.setting import Setting
from ecad.timing import TimedCall, Timings, time_rounds

logger = logging.getLogger(__name__)

DEFAULT_PROFILE_PROMPT = "a red circle at the top left"


def profile_bank(
    pipe,
    bank: ScheduleBank,
    *,
    batch_size: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    time_budget_s: float | None = None,
    prompt: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> HardwareProfile:
    """Median wall-clock ms of one pipeline call per entry, at the bank's setting.

    ``time_budget_s`` bounds the whole measurement: after the first complete round, no new
    round starts once it is spent (at least one timed round always runs).
    """
    from ecad.generate import generate  # the engine's single generation path

    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    device = str(pipe.device)
    dtype = str(pipe.transformer.dtype).removeprefix("torch.")
    threads = torch.get_num_threads() if device.startswith("cpu") else None
    prompt = prompt or bank.calibration.get("prompts", [DEFAULT_PROFILE_PROMPT])[0]
    schedules = {entry.id: entry.cache_schedule() for entry in bank.entries}

    def run(schedule) -> None:
        generate(pipe, [prompt] * batch_size, [seed + i for i in range(batch_size)], bank.setting, schedule)

    total = len(schedules) * (warmup + repeats)
    with tqdm(total=total, desc="profiling schedules", unit="run", disable=not progress) as bar:
        calls = {entry_id: TimedCall(lambda s=schedule: run(s)) for entry_id, schedule in schedules.items()}
        timings = time_rounds(calls, rounds=repeats, warmup=warmup, order="shuffle", seed=seed,
                              time_budget_s=time_budget_s, progress=bar.update)
    if timings.rounds < repeats:
        logger.warning("profiling time budget %.0f s spent after %d timed rounds", time_budget_s, timings.rounds)
    return HardwareProfile(
        key=pipeline_hardware_key(pipe, batch_size),
        device=device,
        device_name=device_name(device),
        dtype=dtype,
        batch_size=batch_size,
        num_threads=threads,
        measured_at=datetime.now(timezone.utc),
        repeats=timings.rounds,
        latency_ms={entry_id: 1000.0 * timings.median_s(entry_id) for entry_id in schedules},
    )


def time_schedules(
    pipe,
    setting: Setting,
    schedules: dict[str, CacheSchedule],
    *,
    rounds: int = 5,
    reference_every: int = 4,
    calls_per_timing: int = 2,
    prompt: str = DEFAULT_PROFILE_PROMPT,
    seed: int = 0,
    progress: bool = True,
) -> Timings:
    """Each schedule's speedup over no-cache on this machine (one image per call), for a cost fit.

    `ecad.timing`'s protocol with no-cache (key ``"no-cache"``) as the reference: shuffled rounds,
    no-cache before, after and between every ``reference_every`` schedules, a schedule's ratio the
    mean of the no-cache runs just around it over its own time (a round of hundreds of schedules
    lasts minutes: a reference timed once per round would carry the machine's drift over them). A
    timing is the mean of ``calls_per_timing`` images in a row (one short image varies by tens of %).
    """
    from ecad.generate import generate

    if "no-cache" in schedules:
        raise ValueError("'no-cache' is the reference's key: name the schedule otherwise")

    def call(schedule: CacheSchedule | None) -> TimedCall:
        return TimedCall(lambda: generate(pipe, [prompt], [seed], setting, schedule), repeats=calls_per_timing)

    calls = {"no-cache": call(None), **{key: call(s) for key, s in schedules.items()}}
    with tqdm(total=len(schedules) * (rounds + 1), desc="timing schedules", unit="run", disable=not progress) as bar:
        return time_rounds(calls, rounds=rounds, warmup=1, reference="no-cache", reference_every=reference_every,
                           order="shuffle", seed=seed, progress=bar.update)
