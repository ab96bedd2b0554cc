"""Another run's renders, reused: search the same candidates under a new cost without rendering again.

What a render yields (every metric, per prompt x seed image) depends on the model, the prompts,
seeds and setting, the scorers and the actions; the cost objective does not enter it. So a run
whose evaluator differs from this one's only in its cost ("macs" vs "fitted", or another fitted
model) has already paid for the quality of every schedule it tried. Its memo records are copied
into this run's memo with the cost recomputed by this run's rule (a deterministic one: MACs or a
fitted model; a measured latency cannot be recomputed). A copied record counts 0 images rendered
(this run rendered nothing for it), so images-rendered comparisons stay honest.

`ecad-calibrate --renders-from RUN_DIR` uses it for the search's memo and, with the same rule, for
the validation re-scoring's (`validation-N/` of both runs).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ecad.search.engine.run_folder import Memo, MemoRecord, read_memo, scoring_differences

#: config entries that may differ between runs whose renders are interchangeable: the cost (its
#: label and model with it) and the objectives the search maximises
IGNORED = ("cost", "cost_model", "cost_label", "objectives")


class ReuseError(ValueError):
    pass


def check_same_renders(config: dict[str, Any], source: Path) -> None:
    """Raise `ReuseError` unless the run folder ``source`` renders as a run with ``config`` does."""
    path = Path(source) / "config.json"
    if not path.is_file():
        raise ReuseError(f"{source} is not a calibration run folder (no config.json)")
    differ = scoring_differences(config, json.loads(path.read_text()), ignore=IGNORED)
    if differ:
        raise ReuseError(f"{source} renders differently: its config differs in {', '.join(differ)} "
                         "(only the cost may differ)")


def import_renders(memo: Memo, config: dict[str, Any], sources: list[Path],
                   cost_of: Callable[[np.ndarray], tuple[float, int]]) -> int:
    """Copy into ``memo`` (a run bound to ``config``) every record of the ``sources`` run folders
    that it lacks, with ``cost_of(bits) -> (cost, MACs)`` as their cost. Returns how many were copied.

    Records keep their label and racing stage; they count as generation 0 with 0 images rendered.
    Sources are read in order; the first record of a key wins (a later one is the same render).
    """
    for source in sources:
        check_same_renders(config, source)
    copied = 0
    for source in sources:
        memo_path = Path(source) / "memo.jsonl"
        for record in read_memo(memo_path, memo.space)[0] if memo_path.exists() else []:
            if record.key in memo:
                continue
            cost, macs = cost_of(record.bits)
            memo.add(MemoRecord(key=record.key, bits=record.bits, generation=0, label=record.label,
                                stage=record.stage, images=0,
                                result=replace(record.result, cost=float(cost), macs=int(macs))))
            copied += 1
    return copied
