"""The found front as a schedule bank (``ecad.bank.ScheduleBank``): what serving loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecad.search.loop import SearchResult
from ecad.search.model_task import schedule_of
from ecad.search.task import SearchTask


def front_to_bank(task: SearchTask, result: SearchResult, *, calibration: dict[str, Any]):
    """Front entries (ids ``ecad-...``/heuristic names), no-cache always included, cheapest first."""
    from ecad.bank import BankEntry, ScheduleBank

    evaluator = task.evaluator.kwargs
    scorer = task.description["scorer"]
    records = list(result.front)
    no_cache_key = task.key(task.space.all_recompute())
    if all(r.key != no_cache_key for r in records):
        records.append(result.memo[no_cache_key])
    entries = []
    for record in sorted(records, key=lambda r: (r.result.cost, -r.result.quality, r.key)):
        if record.key == no_cache_key:
            entry_id, source = "no-cache", "no-cache"
        elif record.label:
            entry_id, source = record.label, "heuristic"
        else:
            entry_id, source = f"ecad-g{record.generation}-{record.key[:8]}", "ecad"
        entries.append(
            BankEntry(
                id=entry_id,
                schedule=schedule_of(task, record.bits).to_dict(),
                macs=int(record.result.macs or 0),
                quality={**record.result.metrics, scorer: record.result.quality},
                source=source,
            )
        )
    return ScheduleBank(
        model=task.description["model"],
        model_fingerprint=task.description["model_fingerprint"],
        height=evaluator["height"],
        width=evaluator["width"],
        num_inference_steps=evaluator["num_inference_steps"],
        guidance_scale=evaluator["guidance_scale"],
        scorer=scorer,
        quality_metric=scorer,
        calibration=calibration,
        entries=entries,
    )


def write_bank(task: SearchTask, result: SearchResult, path: str | Path, *, calibration: dict[str, Any]) -> Path:
    return front_to_bank(task, result, calibration=calibration).save(path)
