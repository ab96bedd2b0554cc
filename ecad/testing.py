"""Helpers for tests and demos: a schedule bank of heuristic schedules for any pipeline.

The quality numbers here are a stand-in (the fraction of recomputed work), so a bank built this
way exercises selection and serving end to end without a calibration run. Real banks come from
``ecad-calibrate``.
"""

from __future__ import annotations

from typing import Sequence

from ecad.adapters import get_adapter
from ecad.bank import BankEntry, ScheduleBank, fingerprint
from ecad.cost import schedule_macs
from ecad.heuristics import heuristic_suite


def heuristic_bank(
    pipe,
    model: str,
    *,
    height: int,
    width: int,
    num_inference_steps: int,
    guidance_scale: float,
    names: Sequence[str] = ("no-cache", "fora-2", "fora-3", "fora-4"),
) -> ScheduleBank:
    adapter = get_adapter(pipe)
    layout = adapter.layout(pipe.transformer)
    suite = heuristic_suite(layout, num_inference_steps)
    unknown = sorted(set(names) - set(suite))
    if unknown:
        raise ValueError(f"unknown heuristics {unknown}; available: {sorted(suite)}")
    batch, calls = adapter.transformer_batch(pipe, 1, guidance_scale=guidance_scale)
    entries = []
    for name in names:
        schedule = suite[name]
        macs = schedule_macs(schedule, pipe, height=height, width=width, batch_size=batch,
                             text_len=adapter.text_len(pipe), calls_per_step=calls)
        entries.append(BankEntry(
            id=name, schedule=schedule.to_dict(), macs=macs,
            quality={"recompute_fraction": schedule.recompute_fraction},
            source="no-cache" if schedule.mask.all() else "heuristic",
        ))
    return ScheduleBank(
        model=model, model_fingerprint=fingerprint(dict(pipe.transformer.config)), height=height, width=width,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, scorer="none (test bank)",
        quality_metric="recompute_fraction", entries=entries,
    )


def synthetic_profile(bank: ScheduleBank, *, ms_per_gmac: float = 10.0, num_threads: int | None = None):
    """A hardware profile for this machine with latency proportional to MACs (deterministic).

    Tests use it so that selection does not depend on a tiny model's noisy timings.
    """
    from datetime import datetime, timezone

    import torch

    from ecad.bank import HardwareProfile, device_name, hardware_key

    threads = num_threads or torch.get_num_threads()
    return HardwareProfile(
        key=hardware_key("cpu", "float32", 1, threads), device="cpu", device_name=device_name("cpu"),
        dtype="float32", batch_size=1, num_threads=threads, measured_at=datetime.now(timezone.utc), repeats=1,
        latency_ms={entry.id: entry.macs / 1e9 * ms_per_gmac for entry in bank.entries},
    )
