"""The seed schedules of a search's initial population, as gene vectors of its genome.

Two sources: every heuristic of ``ecad.heuristics.heuristic_suite`` (labelled by its name), and
the entries of earlier banks (``ecad-calibrate --seed-bank``, labelled ``"bank:<id>"``). Each is
its real schedule: one the searched actions cannot express is left out, never replaced by a
lookalike (a reuse-only search gets no forecast or block-skip seed).
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
