"""Measure every bank entry's latency on this hardware and store it as a hardware profile.

Runs are interleaved (entry order reshuffled each round) and summarised by the median, so a
busy machine slows every entry alike instead of biasing the ones measured last.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from datetime import datetime, timezone

import torch
from tqdm.auto import tqdm

from ecad.bank import HardwareProfile, ScheduleBank, device_name, pipeline_hardware_key

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

    def run(entry_id: str) -> float:
        start = time.perf_counter()
        generate(pipe, [prompt] * batch_size, [seed + i for i in range(batch_size)], bank.setting,
                 schedules[entry_id])
        return (time.perf_counter() - start) * 1000.0

    started = time.monotonic()
    rng = random.Random(seed)
    order = list(schedules)
    total = len(order) * (warmup + repeats)
    samples: dict[str, list[float]] = {entry_id: [] for entry_id in order}
    with tqdm(total=total, desc="profiling schedules", unit="run", disable=not progress) as bar:
        for round_index in range(warmup + repeats):
            if round_index > warmup and time_budget_s is not None and time.monotonic() - started > time_budget_s:
                logger.warning("profiling time budget %.0f s spent after %d timed rounds", time_budget_s, round_index - warmup)
                break
            rng.shuffle(order)
            for entry_id in order:
                ms = run(entry_id)
                if round_index >= warmup:
                    samples[entry_id].append(ms)
                bar.update(1)
    done = min(len(v) for v in samples.values())
    return HardwareProfile(
        key=pipeline_hardware_key(pipe, batch_size),
        device=device,
        device_name=device_name(device),
        dtype=dtype,
        batch_size=batch_size,
        num_threads=threads,
        measured_at=datetime.now(timezone.utc),
        repeats=done,
        latency_ms={entry_id: statistics.median(v) for entry_id, v in samples.items()},
    )
