"""The seed schedules of a search's initial population, as gene vectors of its genome.

Three sources: every heuristic of ``ecad.heuristics.heuristic_suite`` (labelled by its name), the
entries of earlier banks at the same setting (``ecad-calibrate --seed-bank``, labelled
``"bank:<id>"``), and the entries of a bank made for another step count, moved here by noise level
(``--transfer-from``, labelled ``"bank:<id>:<source setting>"``: a warm start for a new setting).
Each is its real schedule: one the searched actions cannot express is left out, never replaced by
a lookalike (a reuse-only search gets no forecast or block-skip seed).
"""

from __future__ import annotations

import numpy as np

from ecad.schedule import ScheduleError
from ecad.search.genome import Genome
from ecad.search.optimizer.task import BANK_SEED_PREFIX


def heuristic_seeds(genome: Genome) -> list[tuple[str, np.ndarray]]:
    """Every heuristic of the suite the genome can express, as (name, genes)."""
    from ecad.heuristics import heuristic_suite

    return _expressible(genome, heuristic_suite(genome.layout, genome.num_steps).items())


def bank_seeds(genome: Genome, bank) -> list[tuple[str, np.ndarray]]:
    """A schedule bank's entries as ("bank:<id>", genes), to warm-start a search from an earlier
    front. ``BankError`` unless the bank is for the genome's layout and step count."""
    from ecad.bank import BankError

    schedules = []
    for entry in bank.entries:
        schedule = entry.cache_schedule()
        if schedule.layout != genome.layout or schedule.num_steps != genome.num_steps:
            raise BankError(f"seed bank entry {entry.id} is for another layout or {schedule.num_steps} steps, "
                             f"not {genome.num_steps} steps of this model")
        schedules.append((BANK_SEED_PREFIX + entry.id, schedule))
    return _expressible(genome, schedules)


def _expressible(genome: Genome, schedules) -> list[tuple[str, np.ndarray]]:
    seeds = []
    for label, schedule in schedules:
        try:
            seeds.append((label, genome.encode(schedule)))
        except ScheduleError:
            continue
    return seeds


def transferred_seeds(genome: Genome, bank, model, setting, *, count: int = 40,
                      floor: tuple[str, float] | None = None) -> list[tuple[str, np.ndarray]]:
    """Up to ``count`` entries of ``bank`` (made for another step count of the same model) moved
    to ``setting`` by noise level (`ecad.transfer`), as ("bank:<id>:<bank setting>", genes).

    Which entries: those whose score on ``floor``'s metric (``(metric, value)``: its validation
    score where the bank has one) is at least the value, spread evenly over their MACs; entries
    that land on the same schedule count once. ``model`` is the pipeline or its folder (for the
    scheduler's noise levels)."""
    from ecad.bank import BankError
    from ecad.transfer import noise_levels, transfer_schedule

    source = bank.entries[0].cache_schedule()
    if source.layout != genome.layout:
        raise BankError(f"--transfer-from bank {bank.model} {bank.setting.name} is for another model layout")
    candidates = [e for e in bank.entries if e.id != bank.no_cache_entry().id
                  and (floor is None or floor[0] not in e.quality or e.score(floor[0]) >= floor[1])]
    source_levels, target_levels = noise_levels(model, bank.setting), noise_levels(model, setting)
    schedules: dict[str, tuple[str, object]] = {}
    for entry in sorted(candidates, key=lambda e: e.macs):
        schedule = transfer_schedule(entry.cache_schedule(), source_levels, target_levels)
        schedules.setdefault(schedule.hash, (f"{BANK_SEED_PREFIX}{entry.id}:{bank.setting.name}", schedule))
    chosen = list(schedules.values())
    if len(chosen) > count:
        chosen = [chosen[int(i)] for i in np.unique(np.linspace(0, len(chosen) - 1, count).round())]
    return _expressible(genome, chosen)
