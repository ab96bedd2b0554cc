"""A finished search as a schedule bank (``ecad.bank``): what serving loads.

:func:`bank_records` chooses the records (the front, the heuristics it does not beat beyond their
noise, no-cache); :func:`front_to_bank` makes each a ``BankEntry`` with the schedule its genes
stand for (``ModelTask.genome``), cheapest first; :func:`write_bank` saves it atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecad.search.optimizer.evaluation import CandidateResult
from ecad.search.optimizer.loop import SearchResult
from ecad.search.optimizer.noise import NOISE_Z, bootstrap_interval, could_be_nondominated, optimistic_point
from ecad.search.optimizer.task import BANK_SEED_PREFIX, SearchTask
from ecad.search.task import ModelTask


def bank_records(task: SearchTask, result: SearchResult, z: float = NOISE_Z) -> list:
    """The records a bank holds: the front; every seeded heuristic the front does not beat beyond
    its noise (racing's test: its optimistic bound, mean + ``z`` standard errors on each quality
    objective, is not dominated), so a bank never drops a named baseline on a few images' luck; and
    no-cache."""
    records = list(result.front)
    on_bank = {r.key for r in records}
    front_F = task.objective_matrix(r.result for r in records)
    for seed in result.seed_records:
        heuristic = not (seed.label or "").startswith(BANK_SEED_PREFIX)
        if heuristic and seed.key not in on_bank and seed.stage is None and seed.result.samples and could_be_nondominated(
                optimistic_point(seed.result, task.objectives, task.quality_metric, z), front_F):
            records.append(seed)
            on_bank.add(seed.key)
    no_cache_key = task.key(task.space.all_recompute())
    if no_cache_key not in on_bank:
        records.append(result.memo[no_cache_key])
    return records


def _intervals(result: CandidateResult | None) -> dict[str, tuple[float, float]] | None:
    if result is None or not result.samples:
        return None
    return {name: bootstrap_interval(values) for name, values in sorted(result.samples.items())}


def front_to_bank(task: ModelTask, result: SearchResult, *, calibration: dict[str, Any],
                  validation: dict[str, CandidateResult] | None = None):
    """Front entries (ids ``ecad-...``/heuristic names), no-cache always included, cheapest first.

    ``validation``: the records re-scored on validation prompts (``optimizer.loop.rescore``);
    entries then carry those means, and bootstrap intervals over the validation images (else over
    the calibration images, when the evaluator reported per-image values).
    """
    from ecad.bank import BankEntry, ScheduleBank

    scorer = task.description.scorer
    records = bank_records(task, result)
    no_cache_key = task.key(task.space.all_recompute())
    entries = []
    for record in sorted(records, key=lambda r: (r.result.cost, -r.result.quality, r.key)):
        if record.key == no_cache_key:
            entry_id, source = "no-cache", "no-cache"
        elif record.label and record.label.startswith(BANK_SEED_PREFIX):  # an earlier search's entry
            entry_id, source = record.label[len(BANK_SEED_PREFIX):], "ecad"
        elif record.label:
            entry_id, source = record.label, "heuristic"
        else:
            entry_id, source = record.searched_id(), "ecad"
        entries.append(
            BankEntry(
                id=entry_id,
                schedule=task.genome.decode(record.bits).to_dict(),
                macs=int(record.result.macs or 0),
                quality={**record.result.metrics, scorer: record.result.quality},
                source=source,
                validation=None if validation is None else validation[record.key].metrics,
                interval=_intervals(record.result if validation is None else validation[record.key]),
            )
        )
    return ScheduleBank(
        model=task.description.model,
        model_fingerprint=task.description.model_fingerprint,
        **task.setting.to_dict(),
        scorer=scorer,
        quality_metric=task.objectives[0] if task.objectives else scorer,
        objectives=list(task.objectives) or None,
        calibration=calibration,
        entries=entries,
    )


def write_bank(task: ModelTask, result: SearchResult, path: str | Path, *, calibration: dict[str, Any],
               validation: dict[str, CandidateResult] | None = None) -> Path:
    return front_to_bank(task, result, calibration=calibration, validation=validation).save(path)
